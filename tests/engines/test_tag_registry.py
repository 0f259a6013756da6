"""The tag registry is the one place for the format: it covers every tag anything writes, its entries resolve
to working exporters and kernels, and registering one tag is all a new tag needs for the consumers to see it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from modelslim.app.dry_run import linear_bytes
from modelslim_core.errors import ConfigError
from modelslim_core.formats.engines import check_target_engines, refusals
from modelslim_core.formats.registry import LOADS, VLLM_ASCEND, TagFormat, TagRegistry
from modelslim_core.formats.tags import ASCENDV1, TAGS
from modelslim_core.quant.schemes import EXPORT_TYPES
from modelslim_core.reference_runtime.kernels import KERNELS, LinearShape
from modelslim_core.runtime.processor import LayerScheme
from modelslim_save_ascend.ascendv1 import AscendV1Saver
from modelslim_save_ascend.compressed_tensors_saver import CompressedTensorsSaver
from modelslim_save_ascend.description import MODEL_QUANT_TYPE_RANK
from modelslim_save_ascend.linear_export import EXPORTERS
from modelslim_save_ascend.mindie import MindieFormatSaver
from tests.engines.test_refusals import spec


def test_every_tag_a_scheme_or_saver_can_write_is_registered():
    written = set(EXPORT_TYPES.values()) | AscendV1Saver.writes | CompressedTensorsSaver.writes | MindieFormatSaver.writes
    assert written - set(TAGS.tags()) == set()
    assert {"C8", "FAQuant", "QUAROT", "QUAROT_ONLINE", "W8A8S", "W16A16S"} <= set(TAGS.tags())


def test_entries_resolve_and_agree_with_their_kernels():
    for fmt in TAGS:
        if fmt.kind != "linear" or ASCENDV1 not in fmt.savers:
            assert fmt.exporter is None and fmt.kernel is None, fmt.tag
            continue
        assert callable(fmt.load_exporter()), fmt.tag
        kernel = KERNELS[fmt.tag]
        assert kernel.tag == fmt.tag
        expected = kernel.expected(LinearShape(64, 128, False, torch.bfloat16, name="model.layers.0.mlp.down_proj"))
        assert "weight" in expected, fmt.tag
        assert fmt.weight_bits in (4, 8, 16) and fmt.act_bits in (4, 8, 16), fmt.tag
    assert KERNELS["WFP8AFP8_DYNAMIC"] is KERNELS["W8A8FP8_DYNAMIC"]  # the reference's name reads back


def test_consumers_are_views_of_the_registry():
    assert set(EXPORTERS) == {f.tag for f in TAGS if f.exporter}
    assert AscendV1Saver.writes == TAGS.written_by("ascendv1_saver")
    assert MODEL_QUANT_TYPE_RANK[:4] == ("FLOAT", "W16A16S", "W8A16", "W8A8_DYNAMIC")
    assert MODEL_QUANT_TYPE_RANK[-1] == "W4A4_MXFP4_DUALSCALE"
    assert "W4A8_DYNAMIC" not in MODEL_QUANT_TYPE_RANK  # engines detect it per layer
    assert linear_bytes("W4A4_DYNAMIC", 64, 128, 2) == 64 * 128 // 2 + 64 * 16


@pytest.fixture
def registry_with_a_new_tag() -> TagRegistry:
    """A copy of the registry plus one new tag (reusing W8A16's exporter and kernel), registered once."""
    registry = TagRegistry()
    for fmt in TAGS:
        registry.register(fmt)
    registry.register(TagFormat("W2A16_NEW", "linear", "a tag added for this test", weight_bits=2, act_bits=16,
                                rank=99, exporter=TAGS["W8A16"].exporter, kernel=TAGS["W8A16"].kernel,
                                savers=frozenset({ASCENDV1}), alternative="use W8A16 until an engine loads it"))
    return registry


def test_adding_a_tag_is_one_registration(registry_with_a_new_tag):
    registry = registry_with_a_new_tag
    # saver and description: written by ascendv1_saver, with an exporter, ranked
    assert "W2A16_NEW" in registry.written_by("ascendv1_saver")
    assert callable(registry.exporters()["W2A16_NEW"])
    assert registry.ranking()[-1] == "W2A16_NEW"
    # reference runtime: a kernel reads it back
    assert registry.kernels()["W2A16_NEW"].expected(LinearShape(8, 16, False, torch.float16))["weight"].shape == (8, 16)
    # dry-run: its size from its bit width
    assert linear_bytes("W2A16_NEW", 64, 128, 2, registry) == 64 * 128 * 2 // 8 + 64 * 16
    # load-time refusal: no engine loads it yet, so vLLM-Ascend refuses it with its alternative ...
    (refusal,) = refusals(VLLM_ASCEND, [LayerScheme("W2A16_NEW", "spec.process[0]", ("*mlp*",))], {}, registry)
    assert str(refusal) == ("spec.process[0] (layers *mlp*): W2A16_NEW is not a scheme vLLM-Ascend loads; instead, "
                            "use W8A16 until an engine loads it")
    # ... and once its entry says vLLM-Ascend loads it, nothing is refused
    loaded = TagRegistry()
    for fmt in registry:
        loaded.register(dataclasses.replace(fmt, engines={VLLM_ASCEND: LOADS}) if fmt.tag == "W2A16_NEW" else fmt)
    assert refusals(VLLM_ASCEND, [LayerScheme("W2A16_NEW", "spec.process[0]")], {}, loaded) == []


def test_a_tag_is_registered_once():
    registry = TagRegistry()
    registry.register(TagFormat("X", "linear", "x"))
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(TagFormat("X", "linear", "x"))


def test_the_refusal_reads_the_registry_it_is_given():
    bare = TagRegistry()
    with pytest.raises(ConfigError, match="W8A8 is not a scheme vLLM-Ascend loads"):
        check_target_engines(spec("{type: linear_quant, qconfig: {act: {scope: per_tensor, dtype: int8, symmetric: false, "
                                  "method: minmax}, weight: {scope: per_channel, dtype: int8, symmetric: true, "
                                  "method: minmax}}}"), None, {}, "c.yaml", bare)
