"""float_sparse (W16A16S) and sparse_quant (W8A8S) end to end on tiny models: every saved tensor by name,
dtype, shape and tag (format-and-runners.md §1.5), the sparsity and the FP16 grid in what was saved, the
reference runtime rebuilding each layer exactly as the quantizer simulated it, and logits close to float."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from modelslim_core.reference_runtime import load_quantized_model
from modelslim_core.sparsity.admm import prune_count
from modelslim_core.sparsity.fp16_compression import round_mantissa
from tests.quant_runs import quantize_capturing

STATIC_W8A8 = ("{act: {scope: per_tensor, dtype: int8, symmetric: false, method: minmax}, "
               "weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}}")
PROCESSORS = {
    "W16A16S": "{type: float_sparse, sparse_ratio: 0.3}",
    "W8A8S": f"{{type: sparse_quant, sparse_ratio: 0.3, qconfig: {STATIC_W8A8}}}",
}
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
TEXTS = ["Sparse layers are checked by reloading what was saved.", "def f(x):\n    return 3 * x + 1",
         "稀疏化减少权重存储。", "Q: What is 12 * 7? A: 84."]


def config_text(process: str, dataset: Path) -> str:
    return (f"apiversion: modelslim_v1\nspec:\n  runner: layer_wise\n  process:\n    - {process}\n"
            f"  save: [{{type: ascendv1_saver, part_file_size: 0}}]\n  dataset: {dataset}\n")


@pytest.fixture(scope="module", params=[("W16A16S", torch.float16), ("W8A8S", torch.float16), ("W8A8S", torch.bfloat16)],
                ids=lambda p: f"{p[0]}-{str(p[1]).split('.')[-1]}")
def sparse_run(request, tiny_models, tmp_path_factory):
    tag, dtype = request.param
    tmp = tmp_path_factory.mktemp(tag)
    dataset = tmp / "calib.jsonl"
    dataset.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS))
    config = tmp / "sparse.yaml"
    config.write_text(config_text(PROCESSORS[tag], dataset))
    model_dir, out = tiny_models("qwen2", dtype), tmp / "out"
    captured = quantize_capturing(model_dir, config, out)
    return {"tag": tag, "dtype": dtype, "model_dir": model_dir, "out": out, "captured": captured,
            "tensors": load_file(out / "quant_model_weights.safetensors"),
            "description": json.loads((out / "quant_model_description.json").read_text())}


def expected_tensors(tag: str, dtype: torch.dtype, out: int, inp: int, bias: bool) -> dict[str, tuple[torch.dtype, tuple, str]]:
    """suffix -> (dtype, shape, tag) per format-and-runners.md §1.5."""
    if tag == "W16A16S":
        specs = {"weight": (torch.float16, (out, inp), tag)}
        if bias:
            specs["bias"] = (torch.float16, (out,), tag)
        return specs
    deq = torch.float32 if dtype == torch.bfloat16 else torch.int64
    return {
        "weight": (torch.int8, (out, inp), tag),
        "quant_bias": (torch.int32, (out,), tag),
        "input_scale": (torch.float32, (1,), tag),
        "input_offset": (torch.float32, (1,), tag),
        "deq_scale": (deq, (out,), tag),
        "bias": (torch.float32, (out,), "FLOAT"),
    }


def test_every_tensor_has_the_spec_name_dtype_shape_and_tag(sparse_run):
    tensors, description, tag = sparse_run["tensors"], sparse_run["description"], sparse_run["tag"]
    float_model = AutoModelForCausalLM.from_pretrained(sparse_run["model_dir"], dtype=sparse_run["dtype"])
    expected: dict[str, tuple] = {}
    for name, module in float_model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(LINEARS):
            specs = expected_tensors(tag, sparse_run["dtype"], module.out_features, module.in_features, module.bias is not None)
            expected.update({f"{name}.{suffix}": spec for suffix, spec in specs.items()})
    linear_names = {n.rsplit(".", 1)[0] for n in expected}
    for name, param in float_model.named_parameters():
        if name.rsplit(".", 1)[0] not in linear_names:
            expected[name] = (sparse_run["dtype"], tuple(param.shape), "FLOAT")
    assert set(tensors) == set(expected)
    for name, (dtype, shape, tensor_tag) in expected.items():
        assert (tensors[name].dtype, tuple(tensors[name].shape), description[name]) == (dtype, shape, tensor_tag), name
    assert description["model_quant_type"] == tag
    assert description["group_size"] == 0


def test_saved_weights_are_pruned_to_the_ratio_and_match_the_simulation(sparse_run):
    tensors = sparse_run["tensors"]
    for name, layer in sparse_run["captured"].items():
        saved = tensors[f"{name}.weight"]
        zeros = int((saved == 0).sum())
        assert zeros >= prune_count(saved.numel(), 0.3), name
        assert zeros <= prune_count(saved.numel(), 0.3) + saved.numel() // 50, name  # a few flushed tiny weights at most
        if sparse_run["tag"] == "W16A16S":
            assert torch.equal(saved, layer.qweight.values)
            off_grid = (saved.float() != round_mantissa(saved.float())).float().mean().item()
            assert off_grid <= 0.02 + 1e-9, name   # only the 2% full-precision exceptions leave the 2-bit grid
        else:
            assert torch.equal(saved, layer.qweight.codes)


def test_reference_runtime_reproduces_each_layer_and_stays_close_to_float(sparse_run):
    model_dir, out = sparse_run["model_dir"], sparse_run["out"]
    reloaded = load_quantized_model(model_dir, out)
    torch.manual_seed(0)
    for name, layer in sparse_run["captured"].items():
        x = torch.randn(5, layer.in_features)
        # float16: an activation code can round the other way between the in-memory simulation and the saved
        # scale (one input step, ~1e-3 here); bf16/fp32 runs still agree to 1e-4
        tolerance = 2e-3 if sparse_run["dtype"] == torch.float16 else 1e-4
        ours, theirs = reloaded.get_submodule(name)(x), layer(x)
        assert torch.allclose(ours, theirs, rtol=tolerance, atol=tolerance), (name, (ours - theirs).abs().max().item())
    float_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.randint(0, 1000, (2, 24))
    with torch.no_grad():
        reference, quantized = float_model(ids).logits, reloaded(ids).logits
    cosine = torch.nn.functional.cosine_similarity(reference.flatten(), quantized.flatten(), dim=0).item()
    assert cosine > 0.98, cosine


def test_excluded_layers_stay_float_and_a_bf16_model_gets_fp16_sparse_layers(tiny_models, tmp_path):
    dataset = tmp_path / "calib.jsonl"
    dataset.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS))
    config = tmp_path / "mlp.yaml"
    config.write_text(config_text('{type: float_sparse, sparse_ratio: 0.5, exclude: ["*self_attn*"]}', dataset))
    model_dir, out = tiny_models("qwen2", torch.bfloat16), tmp_path / "out"
    quantize_capturing(model_dir, config, out)
    tensors = load_file(out / "quant_model_weights.safetensors")
    description = json.loads((out / "quant_model_description.json").read_text())
    for layer in range(2):
        prefix = f"model.layers.{layer}"
        assert description[f"{prefix}.self_attn.q_proj.bias"] == "FLOAT"
        assert tensors[f"{prefix}.self_attn.q_proj.weight"].dtype == torch.bfloat16
        down = tensors[f"{prefix}.mlp.down_proj.weight"]
        assert (down.dtype, description[f"{prefix}.mlp.down_proj.weight"]) == (torch.float16, "W16A16S")
        assert int((down == 0).sum()) >= prune_count(down.numel(), 0.5)
    assert description["model_quant_type"] == "W16A16S"
    load_quantized_model(model_dir, out)  # strict: every tensor accounted for
