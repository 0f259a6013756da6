"""The reference runtime: exact integer GEMM, kernels equal to the quantizer's simulation, strict loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelslim_core.errors import CheckpointError
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.quantized_linear import LinearQuantizer, QuantizedLinear
from modelslim_core.reference_runtime import load_quantized_model
from modelslim_core.formats.kernels.int_gemm import int8_matmul
from modelslim_core.formats.kernels import KERNELS, LinearShape
from modelslim_save_ascend.linear_export import EXPORTERS, ExportDtypes
from tests.quant_runs import corrupt, quantize_capturing, write_mixed_run

ACT = {
    "static": {"scope": "per_tensor", "dtype": "int8", "symmetric": False, "method": "minmax"},
    "dynamic": {"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"},
}
WEIGHT = {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}


@pytest.mark.parametrize("k", [64, 1024, 1040, 3000])
def test_int8_matmul_is_exact(k):
    generator = torch.Generator().manual_seed(k)
    x = torch.randint(-128, 128, (5, 7, k), generator=generator, dtype=torch.int8)
    w = torch.full((9, k), -128, dtype=torch.int8)  # worst case magnitudes
    w[1::2] = torch.randint(-128, 128, (4, k), generator=generator, dtype=torch.int8)
    expected = (x.to(torch.int64) @ w.to(torch.int64).T).double()
    assert torch.equal(int8_matmul(x, w), expected)


def quantized(kind: str, source_dtype: torch.dtype, bias: bool) -> tuple[QuantizedLinear, torch.Tensor]:
    """A quantized random layer, calibrated (static) on inputs with an outlier channel, plus test inputs."""
    torch.manual_seed(0)
    linear = nn.Linear(48, 24, bias=bias)
    x = torch.randn(3, 10, 48)
    x[..., 5] *= 8
    if kind == "w8a16":
        qconfig = LinearQConfig.model_validate({"weight": {**WEIGHT, "symmetric": False}})
        return LinearQuantizer(qconfig).quantize("layer", linear), x
    quantizer = LinearQuantizer(LinearQConfig.model_validate({"act": ACT[kind], "weight": WEIGHT}))
    if kind == "dynamic":
        return quantizer.quantize("layer", linear), x
    calibrating = quantizer.calibrating("layer", linear)
    calibrating(x)
    return calibrating.finish(), x


@pytest.mark.parametrize("source_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind, bias", [("static", True), ("static", False), ("dynamic", True), ("dynamic", False), ("w8a16", True)])
def test_kernel_from_saved_tensors_equals_the_quantizer_simulation(kind, bias, source_dtype):
    layer, x = quantized(kind, source_dtype, bias)
    exported = {suffix: tensor for suffix, tensor, _ in EXPORTERS[layer.export_type]("layer", layer, ExportDtypes(source_dtype, source_dtype == torch.bfloat16))}
    shape = LinearShape(layer.out_features, layer.in_features, bias, source_dtype, "layer")
    kernel = KERNELS[layer.export_type]
    assert {k: (v.dtype, tuple(v.shape)) for k, v in exported.items()} == {
        k: (spec.dtypes[0], spec.shape) for k, spec in kernel.expected(shape).items()
    }
    runtime = kernel.build({k: v.to(source_dtype) if k == "bias" and kind != "static" else v for k, v in exported.items()}, shape)
    simulated, integer = layer(x), runtime(x)
    if kind == "static":  # quant_bias rounds bias/deq_scale and the zero-point term: at most half a deq_scale step
        tolerance = 0.5 * layer.act.scale * layer.qweight.scale.reshape(-1) + 1e-5
        bias_rounding = 0 if layer.bias is None else (layer.bias - layer.bias.to(source_dtype).float()).abs()
        assert ((integer - simulated).abs() <= tolerance + bias_rounding).all()
    else:
        bias_rounding = 0 if layer.bias is None else (layer.bias - layer.bias.to(source_dtype).float()).abs().max()
        assert (integer - simulated).abs().max() <= 1e-4 + bias_rounding


# --- whole checkpoints -----------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def quantized_run(tiny_models, tmp_path_factory):
    """A mixed W8A8 / W8A8_DYNAMIC / W8A16 checkpoint of a tiny fp16 Qwen2, and the quantizer's own modules."""
    tmp = tmp_path_factory.mktemp("runtime")
    config = write_mixed_run(tmp, "Runtime")
    model_dir = tiny_models("qwen2", torch.float16)
    out = tmp / "out"
    return model_dir, out, quantize_capturing(model_dir, config, out)


def test_runtime_layers_reproduce_the_quantizer_per_layer(quantized_run):
    model_dir, out, captured = quantized_run
    model = load_quantized_model(model_dir, out)
    modules = dict(model.named_modules())
    assert len(captured) == 2 * 7
    torch.manual_seed(1)
    for name, layer in captured.items():
        x = torch.randn(4, layer.in_features)
        simulated, integer = layer(x), modules[name](x)
        scale = simulated.abs().max()
        assert (integer - simulated).abs().max() <= 2e-3 * scale, name


def test_runtime_logits_match_the_float_model(quantized_run):
    from transformers import AutoModelForCausalLM

    model_dir, out, _ = quantized_run
    ids = torch.arange(1, 40).reshape(1, -1)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(input_ids=ids).logits
    logits = load_quantized_model(model_dir, out)(input_ids=ids).logits
    assert ((logits - reference).norm() / reference.norm()).item() < 0.05


Q = "model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t, d: t.__setitem__(f"{Q}.weight", t[f"{Q}.weight"].float()), f"{Q}.weight is float32 [64, 64], expected int8 [64, 64]"),
        (lambda t, d: t.__setitem__(f"{Q}.quant_bias", t[f"{Q}.quant_bias"][:10]), f"{Q}.quant_bias is int32 [10], expected int32 [64]"),
        (lambda t, d: (t.__setitem__(f"{Q}.scale_typo", t.pop(f"{Q}.input_scale")),
                       d.__setitem__(f"{Q}.scale_typo", d.pop(f"{Q}.input_scale"))), f"{Q}.input_scale is missing"),
        (lambda t, d: d.__setitem__(f"{Q}.weight", "W2A2_UNKNOWN"), "tagged 'W2A2_UNKNOWN', a type the reference runtime does not know"),
        (lambda t, d: t.pop("model.norm.weight"), "model.norm.weight is described"),
        (lambda t, d: (t.pop("model.norm.weight"), d.pop("model.norm.weight")), "model.norm.weight is missing"),
    ],
)
def test_a_corrupted_tensor_is_named(quantized_run, tmp_path, edit, message):
    model_dir, out, _ = quantized_run
    with pytest.raises(CheckpointError) as info:
        load_quantized_model(model_dir, corrupt(out, tmp_path, edit))
    assert message in str(info.value)


def test_mismatched_model_and_non_checkpoint(quantized_run, tiny_models):
    model_dir, out, _ = quantized_run
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_quantized_model(tiny_models("qwen3", torch.float16), out)
    with pytest.raises(CheckpointError, match="is not a quantized checkpoint"):
        load_quantized_model(model_dir, model_dir)


def test_the_skeleton_is_never_initialised_and_every_tensor_is_read(quantized_run):
    """The runtime builds its skeleton on `meta` (no random init): every parameter and buffer it ends with holds
    data, and the float tensors are the checkpoint's (here: the fp16 source's, the scheme changes none of them)."""
    from transformers import AutoModelForCausalLM

    from modelslim_core.reference_runtime.loader import build_skeleton

    model_dir, out, _ = quantized_run
    assert all(p.is_meta for p in build_skeleton(model_dir, torch.float32).parameters())
    model = load_quantized_model(model_dir, out)
    assert not [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    source = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.1.input_layernorm.weight"):
        assert torch.equal(model.get_parameter(name), source[name]), name


def test_each_weight_file_is_opened_twice_at_most(quantized_run, monkeypatch):
    """Opening a safetensors file parses its whole header: once to list the tensors, once to read them, not once
    per tensor (which made loading a 1,000-tensor checkpoint quadratic)."""
    from modelslim_core.reference_runtime import checkpoint

    model_dir, out, _ = quantized_run
    opened = []
    real_open = checkpoint.safe_open
    monkeypatch.setattr(checkpoint, "safe_open", lambda file, **kw: opened.append(file) or real_open(file, **kw))
    load_quantized_model(model_dir, out)
    files = set(opened)
    assert files and len(opened) <= 2 * len(files)


def test_a_tensor_left_on_meta_is_named(tmp_path):
    from modelslim_core.reference_runtime.loader import check_materialized

    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    model[1].weight = nn.Parameter(torch.empty(2, device="meta"))

    class Checkpoint:
        path = tmp_path

    with pytest.raises(CheckpointError, match=r"found no value for 1\.weight"):
        check_materialized(model, Checkpoint())
