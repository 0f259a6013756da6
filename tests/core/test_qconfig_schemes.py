"""The scheme/method/ext/export tables: every valid pair loads and has an implementation, and every invalid
one fails when the YAML is loaded, with a message that names the path and lists the valid options."""

from __future__ import annotations

import pytest

from modelslim_core.errors import ConfigError
from modelslim_core.protocol.config import parse_quant_config
from modelslim_core.protocol.qconfig import LinearQConfig, QConfig
from modelslim_core.quant.methods import STATIC_OBSERVERS, build_dynamic_act, build_weight_quantizer, is_static
from modelslim_core.formats.export_types import EXPORT_TYPES
from modelslim_core.quant.schemes import ACT_METHODS, WEIGHT_METHODS
from modelslim_core.formats.kernels import KERNELS
from modelslim_save_ascend.ct_layout import CT_WRITES
from modelslim_save_ascend.linear_export import EXPORTERS

TOKEN = {"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"}
INT4_PC = {"scope": "per_channel", "dtype": "int4", "symmetric": True, "method": "minmax"}


def qconfig(scheme, method: str, **ext) -> dict:
    return {"dtype": scheme.dtype, "scope": scheme.scope, "symmetric": scheme.symmetric, "method": method, "ext": ext}


def error_of(act: dict | None, weight: dict) -> str:
    item = {"type": "linear_quant", "qconfig": {"weight": weight, **({"act": act} if act else {})}}
    raw = {"apiversion": "modelslim_v1", "spec": {"process": [{"type": "group", "configs": [item]}], "save": [{"type": "ascendv1_saver"}]}}
    with pytest.raises(ConfigError) as info:
        parse_quant_config(raw, "t.yaml")
    message = str(info.value)
    assert "spec.process[0].configs[0].qconfig" in message
    return message


def scope_ext(scheme) -> dict:
    """The ext keys a scope requires (per_group: group_size; dual_scale: dual_block_size)."""
    return {"group_size": 32} if scheme.scope == "per_group" else {"dual_block_size": 64} if scheme.scope == "dual_scale" else {}


def test_every_table_entry_has_an_implementation_an_exporter_and_a_kernel():
    for scheme, methods in WEIGHT_METHODS.items():
        for method in methods:
            ext = scope_ext(scheme)
            assert build_weight_quantizer(QConfig(**qconfig(scheme, method, **ext))).qconfig.method == method
    for scheme, methods in ACT_METHODS.items():
        for method in methods:
            act = QConfig(**qconfig(scheme, method, **scope_ext(scheme)))
            assert method in STATIC_OBSERVERS if is_static(act) else build_dynamic_act(act) is not None
    for tag in set(EXPORT_TYPES.values()):  # ascendv1 tags are reloadable; the others go to compressed-tensors
        assert (tag in EXPORTERS and tag in KERNELS) or (tag in CT_WRITES and tag not in EXPORTERS), tag
    assert set(EXPORT_TYPES.values()) - set(EXPORTERS) == {"W4A16", "W4A8_DYNAMIC_PER_GROUP"}


@pytest.mark.parametrize(("act", "weight"), list(EXPORT_TYPES), ids=lambda s: str(s))
def test_every_exportable_pair_validates(act, weight):
    act_method = "none" if act.dtype == "float" else "minmax"
    ext = {"group_size": 64} if weight.scope == "per_group" else scope_ext(weight)
    weight_method = "minmax" if "minmax" in WEIGHT_METHODS[weight] else next(iter(WEIGHT_METHODS[weight]))
    parsed = LinearQConfig.model_validate({"act": qconfig(act, act_method, **scope_ext(act)),
                                           "weight": qconfig(weight, weight_method, **ext)})
    assert parsed.export_type == EXPORT_TYPES[(act, weight)]


@pytest.mark.parametrize(
    ("act", "weight", "fragments"),
    [
        ({**TOKEN, "scope": "per_tensor", "dtype": "int4"}, INT4_PC,
         ["act scheme int4/per_tensor/sym is not supported", "int4/per_token/sym (minmax)", "int8/pd_mix/asym (minmax)"]),
        (TOKEN, {**INT4_PC, "scope": "per_group"}, ["weight scope per_group needs ext.group_size, an integer > 0 (input columns per group)"]),
        (TOKEN, {**INT4_PC, "method": "histogram"}, ["weight method 'histogram' is not available for int4/per_channel/sym",
                                                      "available: gptq, minmax, ssz"]),
        (TOKEN, {**INT4_PC, "method": "ssz", "ext": {"step": 10, "groupsize": 64}},
         ["ext keys ['groupsize'] are not used by method 'ssz'", "did you mean 'group_size'?", "allowed: step"]),
        (TOKEN, {**INT4_PC, "method": "gptq", "ext": {"percdamp": 0}}, ["ext.percdamp must be a number > 0", "got 0"]),
        (TOKEN, {**INT4_PC, "method": "gptq", "ext": {"block_size": 12.5}}, ["ext.block_size must be an integer > 0"]),
        (TOKEN, {**INT4_PC, "method": "gptq", "ext": {"block_size": True}}, ["ext.block_size must be an integer > 0"]),
        (TOKEN, {**INT4_PC, "method": "ssz", "ext": {"step": 0}}, ["ext.step must be an integer >= 1"]),
        (TOKEN, {**INT4_PC, "scope": "per_group", "method": "gptq", "ext": {"group_size": -64}}, ["ext.group_size must be an integer > 0"]),
        ({**TOKEN, "scope": "per_tensor", "ext": {"aggregation_type": "median"}}, {**INT4_PC, "dtype": "int8"},
         ["ext.aggregation_type must be 'max' or 'mean'"]),
        ({**TOKEN, "dtype": "mxfp8", "scope": "per_block", "ext": {"axes": 0}}, {**INT4_PC, "dtype": "mxfp4", "scope": "per_block"},
         ["ext.axes must be -1"]),
        ({**TOKEN, "scope": "per_tensor"}, INT4_PC, ["act int8/per_tensor/sym with weight int4/per_channel/sym cannot be exported",
                                                     "act int8/per_token/sym + weight int4/per_channel/sym -> W4A8_DYNAMIC"]),
        (TOKEN, {**INT4_PC, "symmetric": False}, ["cannot be exported"]),  # W4A8_DYNAMIC weights are symmetric only
        (TOKEN, {**INT4_PC, "scope": "per_group", "symmetric": False, "ext": {"group_size": 64}},
         ["act int8/per_token/sym with weight int4/per_group/asym cannot be exported"]),
    ],
)
def test_invalid_combinations_fail_at_load_with_the_valid_options(act, weight, fragments):
    message = error_of(act, weight)
    for fragment in fragments:
        assert fragment in message


def test_mx_and_fp8_schemes_have_only_their_own_methods():
    message = error_of({**TOKEN, "dtype": "fp8_e4m3"}, {**INT4_PC, "dtype": "fp8_e4m3", "method": "gptq"})
    assert "weight method 'gptq' is not available for fp8_e4m3/per_channel/sym; available: minmax" in message
