"""Translating a deprecated `modelslim_v0` config into the equivalent `modelslim_v1` config.

A v0 spec mirrors the legacy Python API: `anti_cfg` (AntiOutlierConfig: `anti_method` m1–m6 and its
parameters), `calib_cfg` (QuantConfig: bits, activation method, symmetric weights, group size, disabled
layer names, ...), `calib_params` (Calibrator: `disable_level`), `calib_save_params` (`save_type`,
`part_file_size`), `anti_params`, `batch_size`, `anti_dataset`, `calib_dataset`.

The translation (our mapping, documented in README.md "modelslim_v0 configs"):

| v0 | v1 |
|---|---|
| anti_method m1 (SmoothQuant) | `smooth_quant` (alpha, default 0.5) |
| anti_method m2 (SmoothQuant with shift) | `iter_smooth` on norm-linear, symmetric false (alpha, default 0.5) |
| anti_method m3 (AWQ) | `awq` with the calibration weight scheme as weight_qconfig |
| anti_method m4 (smooth optimisation) | `iter_smooth` on all subgraph kinds (alpha, default 0.9) |
| anti_method m5 (CBQ) | refused: no v1 processor |
| anti_method m6 (flex smooth) | `flex_smooth_quant` (alpha/beta if given, otherwise searched) |
| w_bit/a_bit/is_dynamic/act_method/w_sym/group_size/w_method | one `linear_quant` qconfig |
| disable_names | that linear_quant's `exclude` (and every mix_cfg processor's) |
| pdmix: true (W8A8 only) | activations `int8/pd_mix/asym` minmax (W8A8_MIX) |
| use_kvcache_quant: true | a `dynamic_cache` processor (int8 per-channel KV cache, C8) grouped with the linear_quant |
| calib_params.mix_cfg {pattern: type} | a `group` of one linear_quant per pattern (exact names first, then the patterns in file order, each excluding the earlier ones; `float` patterns are only excluded), then the base linear_quant excluding them all |
| calib_dataset | `dataset` |
| calib_save_params.save_type [safe_tensor], part_file_size | `ascendv1_saver` (`compressed_tensors_saver` for W4A16 and per-group W4A8, which vLLM-Ascend loads only in that format) |

Fields without an equivalent are refused, each naming the field (sparse/low-bit W8A8S settings, including
the outlier threshold `use_sigma`/`sigma_factor`, `mm_tensor`
per-tensor weights, `act_method: 3`, `pr` < 1, `disable_level` > L0, a separate `anti_dataset`, numpy
output, unknown keys). Fields that only steered the legacy implementation (`dev_type`, `dev_id`,
`batch_size`, `anti_params.norm_class_name`) are dropped and listed in the header comment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modelslim_core.errors import ConfigError
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.protocol.saver_choice import ASCEND_SAVER, saver_for
from modelslim_core.protocol.yaml_io import dump_yaml

V0 = "modelslim_v0"
V1 = "modelslim_v1"
#: What the reference used when calib_dataset was unset is not shipped; this set is.
DEFAULT_DATASET = "mix_calib.jsonl"

SPEC_KEYS = ("anti_cfg", "anti_params", "calib_cfg", "calib_params", "calib_save_params", "batch_size",
             "anti_dataset", "calib_dataset")
ANTI_KEYS = ("anti_method", "w_bit", "a_bit", "dev_type", "dev_id", "alpha", "beta", "w_sym")
CALIB_KEYS = ("w_bit", "a_bit", "disable_names", "dev_type", "dev_id", "act_method", "pr", "w_sym", "mm_tensor",
              "is_dynamic", "group_size", "w_method", "co_sparse", "is_lowbit", "fraction", "nonuniform",
              "open_outlier", "use_kvcache_quant", "pdmix", "use_sigma", "sigma_factor")
#: calib_cfg fields that select legacy features with no v1 equivalent, refused unless left at their default.
NO_EQUIVALENT = {
    "use_sigma": (False, "the sigma-based outlier threshold of v0's low-bit sparse quantization (use_sigma) has no "
                         "published definition and no modelslim_v1 equivalent; for sparse weights write a modelslim_v1 "
                         "config with `sparse_quant` (W8A8S) or `float_sparse` (W16A16S)"),
    "sigma_factor": (None, "sigma_factor sets the outlier threshold of v0's low-bit sparse quantization, which has no "
                           "modelslim_v1 equivalent; for sparse weights write a modelslim_v1 config with "
                           "`sparse_quant` (W8A8S) or `float_sparse` (W16A16S)"),
    "co_sparse": (False, "v0's sparse compression (co_sparse) has no exact modelslim_v1 equivalent; for W8A8S write "
                         "a modelslim_v1 config with the `sparse_quant` processor (ADMM pruning to a sparse_ratio)"),
    "is_lowbit": (False, "low-bit sparse quantization (is_lowbit) has no modelslim_v1 processor; for W8A8S write a "
                         "modelslim_v1 config with the `sparse_quant` processor"),
    "fraction": (None, "the low-bit outlier fraction (fraction) belongs to v0's low-bit W8A8S, which has no "
                       "modelslim_v1 equivalent; `sparse_quant` prunes to a sparse_ratio instead"),
    "nonuniform": (False, "non-uniform quantization (nonuniform) has no modelslim_v1 equivalent"),
    "open_outlier": (True, "switching the weight outlier handling (open_outlier) off has no modelslim_v1 equivalent"),
    "mm_tensor": (False, "per-tensor weight quantization (mm_tensor: true) has no modelslim_v1 scheme; "
                         "v1 quantizes weights per channel or per group"),
}
ACT_METHODS = {1: "minmax", 2: "histogram"}
#: calib_params.mix_cfg types -> (w_bit, a_bit, is_dynamic); `float` keeps the layers unquantized.
MIX_TYPES = {"w8a8": (8, 8, False), "w8a16": (8, 16, False), "w8a8_dynamic": (8, 8, True),
             "w4a8_dynamic": (4, 8, True), "float": None}
#: The int8 KV cache of use_kvcache_quant (C8), as modelslim_v1's dynamic_cache takes it.
KV_CACHE_QCONFIG = {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}
W_METHODS = {"minmax": "minmax", "gptq": "gptq", "ssz": "ssz"}
SMOOTHING_DEFAULT_ALPHA = {"m1": 0.5, "m2": 0.5, "m4": 0.9}


@dataclass
class Translation:
    """The v1 mapping and the notes printed above it (dropped fields, defaults that differ)."""

    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_yaml(self, source: str) -> str:
        header = [f"# Translated from {V0} ({source}) by msmodelslim convert-config."]
        header += [f"# {note}" for note in self.notes]
        return "\n".join(header) + "\n" + dump_yaml(self.config)


class _Fields:
    """Reads one v0 mapping, remembering the YAML path for errors and refusing keys it does not know."""

    def __init__(self, value: Any, path: str, known: tuple[str, ...], source: str):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {path}: must be a mapping, got {type(value).__name__}.",
                              "check the indentation of this block.")
        unknown = [key for key in value if key not in known]
        if unknown:
            raise ConfigError(
                f"{source}: {path}.{unknown[0]}: not a {V0} field this translator knows, so the file cannot be "
                f"translated to {V1} safely.",
                f"known fields of {path}: {', '.join(known)}. If the file is already written for {V1}, set "
                f"`apiversion: {V1}`; otherwise write the {V1} config by hand (see README.md 'YAML protocol').",
            )
        self.value, self.path, self.source = value, path, source

    def get(self, key: str, default: Any = None) -> Any:
        return self.value.get(key, default)

    def refuse(self, key: str, why: str, hint: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.path}.{key}: {why}; there is no {V1} equivalent, so the config "
                           "cannot be translated.", hint)


def _weight_qconfig(calib: _Fields) -> dict[str, Any]:
    w_bit = calib.get("w_bit", 8)
    if w_bit not in (4, 8):
        raise calib.refuse("w_bit", f"{w_bit}-bit weights are not supported", "use w_bit 8 or 4.")
    method_name = str(calib.get("w_method", "MinMax")).lower()
    if method_name not in W_METHODS:
        raise calib.refuse("w_method", f"weight method {calib.get('w_method')!r} is not available",
                           "use MinMax, GPTQ or SSZ.")
    group_size = calib.get("group_size", 0) or 0
    weight: dict[str, Any] = {
        "scope": "per_group" if group_size else "per_channel",
        "dtype": f"int{w_bit}",
        "symmetric": bool(calib.get("w_sym", True)),
        "method": W_METHODS[method_name],
    }
    if group_size:
        weight["ext"] = {"group_size": group_size}
    return weight


def _act_qconfig(calib: _Fields) -> dict[str, Any] | None:
    a_bit = calib.get("a_bit", 8)
    if calib.get("pdmix", False):
        if (calib.get("w_bit", 8), a_bit, calib.get("is_dynamic", False), calib.get("group_size", 0) or 0) != (8, 8, False, 0):
            raise ConfigError(f"{calib.source}: {calib.path}.pdmix: pdmix (dynamic per-token activations for prefill, "
                              "static for decode: W8A8_MIX) exists only for W8A8 (w_bit 8, a_bit 8, is_dynamic "
                              "false, per-channel weights).",
                              "set w_bit: 8, a_bit: 8 and is_dynamic: false, or remove pdmix.")
        return {"scope": "pd_mix", "dtype": "int8", "symmetric": False, "method": "minmax"}
    if a_bit == 16:
        return None  # weight-only
    if a_bit != 8:
        raise calib.refuse("a_bit", f"{a_bit}-bit activations are not supported", "use a_bit 8 or 16.")
    if calib.get("is_dynamic", False):
        return {"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"}
    act_method = calib.get("act_method", 1)
    if act_method not in ACT_METHODS:
        raise calib.refuse("act_method", f"activation method {act_method} (automatic mix of min-max and histogram) "
                           "is not available", "use act_method 1 (min-max) or 2 (histogram).")
    return {"scope": "per_tensor", "dtype": "int8", "symmetric": False, "method": ACT_METHODS[act_method]}


def _linear_quant(calib: _Fields, notes: list[str]) -> dict[str, Any]:
    for key, (default, why) in NO_EQUIVALENT.items():
        if key in calib.value and calib.get(key) != default:
            raise calib.refuse(key, why, f"remove {calib.path}.{key} (or set it to {default}) to translate the rest.")
    pr = calib.get("pr", 1.0)
    if pr != 1.0:
        raise calib.refuse("pr", f"quantizing activations with probability {pr} during calibration is a legacy "
                           "heuristic", f"remove {calib.path}.pr (or set it to 1.0).")
    for key in ("dev_type", "dev_id"):
        if key in calib.value:
            notes.append(f"{calib.path}.{key} dropped: the device comes from --device.")
    qconfig: dict[str, Any] = {}
    act = _act_qconfig(calib)
    if act is not None:
        qconfig["act"] = act
    qconfig["weight"] = _weight_qconfig(calib)
    _check_exportable(calib, qconfig)
    disabled = calib.get("disable_names", []) or []
    if not isinstance(disabled, list) or not all(isinstance(name, str) for name in disabled):
        raise ConfigError(f"{calib.source}: {calib.path}.disable_names: must be a list of layer names.",
                          "e.g. disable_names: [lm_head, model.layers.0.mlp.down_proj]")
    return {"type": "linear_quant", "qconfig": qconfig, "include": ["*"], "exclude": list(disabled)}


def _is_wildcard(pattern: str) -> bool:
    return any(char in pattern for char in "*?[{")


def _mix_qconfig(calib: _Fields, w_bit: int, a_bit: int, dynamic: bool) -> dict[str, Any]:
    """The qconfig of one mix_cfg type: its bits, the calibration's methods, per-channel weights."""
    fields = _Fields({**calib.value, "w_bit": w_bit, "a_bit": a_bit, "is_dynamic": dynamic, "group_size": 0,
                      "pdmix": False, "w_sym": calib.get("w_sym", True) if w_bit == 8 else True},
                     calib.path, CALIB_KEYS, calib.source)
    act = _act_qconfig(fields)
    qconfig = {"act": act} if act is not None else {}
    qconfig["weight"] = _weight_qconfig(fields)
    _check_exportable(fields, qconfig)
    return qconfig


def _mix_items(params: _Fields, calib: _Fields, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One linear_quant per calib_params.mix_cfg pattern, in the reference's priority (exact names, then
    wildcards in file order): each excludes the layers an earlier pattern took (and disable_names), and the
    base linear_quant excludes them all (it is dropped when a `*` pattern leaves it nothing). `float` patterns
    only exclude."""
    mix = params.get("mix_cfg")
    if not mix:
        return []
    path = f"{params.path}.mix_cfg"
    if not isinstance(mix, dict) or not all(isinstance(key, str) for key in mix):
        raise ConfigError(f"{params.source}: {path}: must map layer-name patterns to quantization types.",
                          "e.g. mix_cfg: {'*.mlp.*': w8a8_dynamic, '*': w8a8}")
    disabled = list(base["exclude"])
    items: list[dict[str, Any]] = []
    earlier: list[str] = []
    for pattern in [p for p in mix if not _is_wildcard(p)] + [p for p in mix if _is_wildcard(p)]:
        kind = mix[pattern]
        if kind not in MIX_TYPES:
            raise ConfigError(f"{params.source}: {path}.{pattern}: unknown type {kind!r}.",
                              f"use one of: {', '.join(MIX_TYPES)}.")
        if MIX_TYPES[kind] is not None:
            items.append({"type": "linear_quant", "qconfig": _mix_qconfig(calib, *MIX_TYPES[kind]),
                          "include": [pattern], "exclude": disabled + earlier})
        earlier.append(pattern)
    base["exclude"] = disabled + earlier
    return items


def _check_exportable(calib: _Fields, qconfig: dict[str, Any]) -> None:
    """The bit/activation combination must be a scheme modelslim_v1 can export (e.g. not static int8
    activations with int4 weights)."""
    try:
        LinearQConfig.model_validate(qconfig)
    except ValidationError:
        combination = f"w_bit {calib.get('w_bit', 8)} with a_bit {calib.get('a_bit', 8)}"
        if calib.get("a_bit", 8) == 8:
            combination += " dynamic" if calib.get("is_dynamic", False) else " static"
        raise calib.refuse("w_bit", f"{combination} (w_sym {calib.get('w_sym', True)}, group_size "
                           f"{calib.get('group_size', 0) or 0}) has no exportable scheme",
                           "use w_bit 8, or w_bit 4 with a_bit 16 or with is_dynamic: true and w_sym: true.") from None


def _smoothing(anti: _Fields, weight_qconfig: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    method = anti.get("anti_method", "m1")
    alpha, beta = anti.get("alpha"), anti.get("beta")
    for key in ("dev_type", "dev_id"):
        if key in anti.value:
            notes.append(f"{anti.path}.{key} dropped: the device comes from --device.")
    for key in ("w_bit", "a_bit", "w_sym"):
        if key in anti.value:
            notes.append(f"{anti.path}.{key} dropped: the quantization scheme comes from calib_cfg.")
    if method == "m1":
        return {"type": "smooth_quant", "alpha": float(alpha or SMOOTHING_DEFAULT_ALPHA["m1"]), "symmetric": True}
    if method == "m2":
        return {"type": "iter_smooth", "alpha": float(alpha or SMOOTHING_DEFAULT_ALPHA["m2"]), "symmetric": False,
                "enable_subgraph_type": ["norm-linear"]}
    if method == "m3":
        weight = dict(weight_qconfig)
        if weight.get("method") == "gptq":
            weight["method"] = "minmax"  # AWQ's search needs a data-free weight quantizer
        return {"type": "awq", "weight_qconfig": weight}
    if method == "m4":
        return {"type": "iter_smooth", "alpha": float(alpha or SMOOTHING_DEFAULT_ALPHA["m4"]), "symmetric": True}
    if method == "m5":
        raise anti.refuse("anti_method", "m5 (CBQ, cross-block reconstruction) has no modelslim_v1 processor",
                          "use m6 (flex_smooth_quant) or m4 (iter_smooth) instead.")
    if method == "m6":
        entry: dict[str, Any] = {"type": "flex_smooth_quant"}
        if alpha is not None:
            entry["alpha"] = float(alpha)
        if beta is not None:
            entry["beta"] = float(beta)
        return entry
    raise ConfigError(f"{anti.source}: {anti.path}.anti_method: unknown method {method!r}.",
                      "use one of m1, m2, m3, m4, m6 (m5 has no modelslim_v1 equivalent).")


def _saver_type(qconfigs: list[dict[str, Any]], notes: list[str]) -> str:
    """ascendv1_saver, unless a scheme is one vLLM-Ascend cannot load from it (W4A16, per-group W4A8): those
    went to legacy engines in v0 and go to the compressed-tensors format now."""
    export_types = {LinearQConfig.model_validate(qconfig).export_type for qconfig in qconfigs}
    saver = saver_for(export_types)
    if saver != ASCEND_SAVER:
        notes.append(f"saved with {saver}: ascendv1_saver cannot write {', '.join(sorted(export_types))} "
                     "(vLLM-Ascend does not load it from an ascendv1 checkpoint).")
    return saver


def _saver(save: _Fields, saver_type: str) -> dict[str, Any]:
    save_type = save.get("save_type", ["safe_tensor"])
    save_types = [save_type] if isinstance(save_type, str) else list(save_type or [])
    if any(kind != "safe_tensor" for kind in save_types):
        raise save.refuse("save_type", f"output types {save_types} include more than safe_tensor (numpy output was "
                          "for legacy engines)", "use save_type: [safe_tensor].")
    saver: dict[str, Any] = {"type": saver_type}
    if "part_file_size" in save.value:
        saver["part_file_size"] = save.get("part_file_size") or 0
    return saver


def translate_v0(raw: dict[str, Any], source: str) -> Translation:
    """The modelslim_v1 equivalent of a modelslim_v0 document; ConfigError naming the field otherwise."""
    spec = _Fields(raw.get("spec"), "spec", SPEC_KEYS, source)
    notes: list[str] = []
    calib = _Fields(spec.get("calib_cfg"), "spec.calib_cfg", CALIB_KEYS, source)
    if "calib_cfg" not in spec.value:
        raise ConfigError(f"{source}: spec.calib_cfg: this field is required to translate a {V0} config.",
                          "add calib_cfg with at least w_bit and a_bit.")
    calib_params = _Fields(spec.get("calib_params"), "spec.calib_params", ("disable_level", "mix_cfg"), source)
    level = str(calib_params.get("disable_level", "L0"))
    if level != "L0":
        raise calib_params.refuse("disable_level", f"automatic float fallback of the most sensitive layers ({level})",
                                  "set disable_level: L0 and list the layers to keep float in calib_cfg.disable_names.")
    linear_quant = _linear_quant(calib, notes)
    process: list[dict[str, Any]] = []
    if spec.get("anti_cfg") is not None:
        anti = _Fields(spec.get("anti_cfg"), "spec.anti_cfg", ANTI_KEYS, source)
        process.append(_smoothing(anti, linear_quant["qconfig"]["weight"], notes))
        anti_params = _Fields(spec.get("anti_params"), "spec.anti_params", ("norm_class_name",), source)
        if anti_params.value:
            notes.append("spec.anti_params.norm_class_name dropped: model adapters find the norms themselves.")
    mixed = _mix_items(calib_params, calib, linear_quant)
    quant_items = [*mixed, linear_quant] if "*" not in linear_quant["exclude"] else mixed
    if not quant_items:
        raise ConfigError(f"{source}: spec.calib_params.mix_cfg: every layer is mapped to float, so nothing would be "
                          "quantized.", "map some patterns to a quantization type (w8a8, w8a8_dynamic, ...).")
    if calib.get("use_kvcache_quant", False):
        quant_items.append({"type": "dynamic_cache", "qconfig": dict(KV_CACHE_QCONFIG)})
    process.append(quant_items[0] if len(quant_items) == 1 else {"type": "group", "configs": quant_items})
    dataset = spec.get("calib_dataset")
    if dataset is None:
        notes.append(f"spec.calib_dataset unset: using {DEFAULT_DATASET}.")
        dataset = DEFAULT_DATASET
    anti_dataset = spec.get("anti_dataset")
    if anti_dataset is not None and anti_dataset != dataset and spec.get("anti_cfg") is not None:
        raise spec.refuse("anti_dataset", f"a separate anti-outlier dataset ({anti_dataset}) is not supported: in "
                          f"{V1} smoothing and quantization calibrate on the stage's one dataset",
                          "remove spec.anti_dataset or set it to the calib_dataset.")
    if "batch_size" in spec.value:
        notes.append("spec.batch_size dropped: calibration samples are processed one at a time.")
    save = _saver(_Fields(spec.get("calib_save_params"), "spec.calib_save_params", ("save_type", "part_file_size"),
                          source), _saver_type([item["qconfig"] for item in quant_items if item["type"] == "linear_quant"], notes))
    config: dict[str, Any] = {"apiversion": V1}
    if isinstance(raw.get("metadata"), dict):
        config["metadata"] = raw["metadata"]
    config["spec"] = {"runner": "auto", "process": process, "save": [save], "dataset": dataset}
    return Translation(config, notes)
