"""Data-free stages stream a layer linear by linear (in the checkpoint's dtype) and write the same checkpoint
as a run that holds whole units; large weights are quantized and copied a block of rows at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import modelslim_core.quant.row_blocks as row_blocks_module
from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.io.safetensors_stream import ShardedSafetensorsWriter
from modelslim_core.protocol.qconfig import QConfig
from modelslim_core.quant.methods import build_weight_quantizer
from modelslim_core.quant.row_blocks import quantize_by_rows, row_blocks, row_slice
from modelslim_core.runtime.unit import Unit
from modelslim_runners.pieces import linear_pieces
from modelslim_runners.placement import LayerWisePlacement
from tests.quant_runs import checkpoint_digest

WEIGHTS = {
    "int8 per channel sym": dict(scope="per_channel", dtype="int8", symmetric=True, method="minmax"),
    "int4 per group asym": dict(scope="per_group", dtype="int4", symmetric=False, method="minmax", ext={"group_size": 16}),
    "fp8 per channel": dict(scope="per_channel", dtype="fp8_e4m3", symmetric=True, method="minmax"),
    "mxfp4": dict(scope="per_block", dtype="mxfp4", symmetric=True, method="minmax"),
}


@pytest.fixture
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row blocks of 1 KiB, so tiny models exercise every block path."""
    monkeypatch.setattr(row_blocks_module, "BLOCK_BYTES", 1024)


def test_row_blocks_cover_every_row_once() -> None:
    assert list(row_blocks(10, 64, block_bytes=3 * 64 * 4)) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert list(row_blocks(2, 10**9, block_bytes=1)) == [(0, 1), (1, 2)]  # a row wider than a block: one row each


@pytest.mark.parametrize("scheme", WEIGHTS)
def test_quantizing_by_row_blocks_is_bit_identical(scheme: str, tiny_blocks: None) -> None:
    quantizer = build_weight_quantizer(QConfig(**WEIGHTS[scheme]))
    assert quantizer.rows_independent
    weight = (torch.randn(37, 64, generator=torch.Generator().manual_seed(1)) * 0.05).to(torch.bfloat16)
    weight[5, 3] = 1.5  # an outlier row
    whole = quantizer.quantize(weight)
    blocked = quantize_by_rows(quantizer.quantize, weight)
    assert whole._buffers.keys() == blocked._buffers.keys()
    for name, value in whole._buffers.items():
        assert torch.equal(value.view(torch.uint8) if value.dtype.is_floating_point and value.element_size() == 1 else value,
                           blocked._buffers[name].view(torch.uint8) if value.dtype.is_floating_point and value.element_size() == 1
                           else blocked._buffers[name]), name
    assert torch.equal(row_slice(blocked, 4, 9).dequantize(), whole.dequantize()[4:9])


def test_ssz_is_not_split_into_row_blocks() -> None:
    """SSZ stops once every row has converged: rows quantized apart could take other step counts."""
    assert not build_weight_quantizer(QConfig(scope="per_channel", dtype="int8", symmetric=True, method="ssz")).rows_independent


def test_writing_a_tensor_in_row_blocks_gives_the_same_file(tmp_path: Path) -> None:
    tensors = {"a.weight": torch.randn(9, 5).to(torch.bfloat16), "b.bias": torch.arange(4, dtype=torch.int32)}
    for directory, blocked in ((tmp_path / "whole", False), (tmp_path / "blocks", True)):
        directory.mkdir()
        with ShardedSafetensorsWriter(directory, "w", 0) as writer:
            for name, value in tensors.items():
                if blocked:
                    writer.write_blocks(name, value.dtype, list(value.shape), iter([value[:4], value[4:]]))
                else:
                    writer.write(name, value)
    assert (tmp_path / "whole" / "w.safetensors").read_bytes() == (tmp_path / "blocks" / "w.safetensors").read_bytes()
    assert torch.equal(load_file(tmp_path / "blocks" / "w.safetensors")["a.weight"], tensors["a.weight"])


def test_a_short_block_stream_is_refused(tmp_path: Path) -> None:
    from modelslim_core.errors import SaveError

    with ShardedSafetensorsWriter(tmp_path, "w", 0) as writer, pytest.raises(SaveError, match="received 8 of its 16"):
        writer.write_blocks("t", torch.float32, [4], iter([torch.zeros(2)]))


def test_pieces_partition_a_unit_in_module_order() -> None:
    from torch import nn

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.ModuleDict({"q": nn.Linear(4, 4), "norm": nn.LayerNorm(4), "o": nn.Linear(4, 4)})
            self.mlp = nn.Linear(4, 8)
            self.post_norm = nn.LayerNorm(8)

    unit = Unit("model.layers.0", Layer(), 0)
    pieces = linear_pieces(unit)
    assert [p.label for p in pieces] == ["(root)", "attn.q", "attn.norm", "attn.o", "mlp", "post_norm"]
    paths = [path for path, _ in unit.module.named_modules()]
    assert [path for path in paths if sum(p.covers(path) for p in pieces) != 1] == []
    covered_in_order = [next(i for i, p in enumerate(pieces) if p.covers(path)) for path in paths]
    assert covered_in_order == sorted(covered_in_order)


CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: {runner}
  process:
    - type: linear_quant
      qconfig:
        act: {{scope: per_token, dtype: int8, symmetric: true, method: minmax}}
        weight: {{scope: per_channel, dtype: int8, symmetric: true, method: minmax}}
      exclude: ["*kv_b_proj*"]
  save: [{{type: ascendv1_saver, part_file_size: {shard}}}]
"""


@pytest.mark.parametrize(("arch", "model_type"), [("qwen2", "Qwen2.5-7B-Instruct"), ("deepseek_v3", "DeepSeek-V3")])
def test_streamed_layer_wise_checkpoint_equals_model_wise(arch: str, model_type: str, tiny_models, tmp_path: Path,
                                                         tiny_blocks: None, cli_env, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_models(arch)
    entered: list[Unit] = []
    original_enter = LayerWisePlacement.enter
    monkeypatch.setattr(LayerWisePlacement, "enter", lambda self, unit: (entered.append(unit), original_enter(self, unit)))
    digests = []
    for runner in ("model_wise", "layer_wise"):
        config = tmp_path / f"{runner}.yaml"
        config.write_text(CONFIG.format(runner=runner, shard=0.0002))
        out = tmp_path / runner
        run_quant(QuantArgs(str(model), str(out), model_type, config_path=str(config), device="cpu"))
        digests.append({k: v for k, v in checkpoint_digest(out).items() if not k.endswith("_best_practice.yaml")})
    assert len(digests[0]) > 3  # sharded: several weight files and the index
    assert digests[0] == digests[1]
    assert entered and not any(unit.whole for unit in entered)  # the layer-wise run went linear by linear
    assert all(p.is_meta for unit in entered for p in unit.module.parameters())  # every piece was released


def test_a_streamed_linear_finds_its_site_in_its_own_subtree() -> None:
    """The one-subtree fast path of linear_sites gives what filtering the whole layer's sites gives."""
    from torch import nn

    from modelslim_core.runtime.unit import module_linear_sites

    layer = nn.Module()
    layer.attn = nn.Module()
    layer.attn.q_proj = nn.Linear(4, 4, device="meta")
    layer.experts = nn.ModuleList(nn.Sequential(nn.Linear(4, 8, device="meta"), nn.Linear(8, 4, device="meta"))
                                  for _ in range(3))
    unit = Unit("model.layers.1", layer, 1)
    for piece in linear_pieces(unit):
        fast = module_linear_sites(layer, unit.name, piece.subtrees[0]) if piece.subtrees else []
        full = [site for site in module_linear_sites(layer, unit.name) if piece.subtrees and piece.covers_site(site.name)]
        assert [(s.name, s.module) for s in fast] == [(s.name, s.module) for s in full]
    assert [s.name for s in module_linear_sites(layer, "model.layers.1", "experts.2")] == [
        "model.layers.1.experts.2.0", "model.layers.1.experts.2.1"]
    site = module_linear_sites(layer, "m", "experts.1.0")[0]
    site.replace(nn.Identity())
    assert isinstance(layer.experts[1][0], nn.Identity)
