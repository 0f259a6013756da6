"""ModelSlim's own Qwen2 module (models/qwen2_native.py) against transformers' Qwen2ForCausalLM, bit for bit.

The native module exists only to skip transformers' model-code imports (torch._dynamo, torch.distributed.tensor);
it must compute exactly what transformers computes, or every Qwen2 checkpoint would change. The README main
job's checkpoint bytes are pinned separately (tests/cli/test_quant_e2e.py::README_MAIN_JOB_DIGEST).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config
from transformers.models.qwen2 import modeling_qwen2

from modelslim_core.models import qwen2_native
from modelslim_core.models.checkpoint_names import CheckpointNames
from modelslim_core.models.qwen2 import Qwen2Adapter
from tests.tiny_models import EXAMPLE_MODEL, REPO, make_tiny_model

GEOMETRY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128)


def _random_pair(dtype: torch.dtype, **overrides) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformers' model, the native one) with the same random weights (biases included) in `dtype`."""
    config = Qwen2Config(**{**GEOMETRY, **overrides})
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    reference = modeling_qwen2.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if name.endswith(".bias") or "norm" in name:
                param.normal_(0, 0.5)
    reference.to(dtype)
    native = qwen2_native.Qwen2ForCausalLM(config).eval().to(dtype)
    native.load_state_dict(reference.state_dict())
    return reference, native


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kv_heads", [2, 4])  # grouped-query attention and plain multi-head
def test_decoder_layer_and_logits_are_bit_identical(dtype, kv_heads):
    reference, native = _random_pair(dtype, num_key_value_heads=kv_heads)
    ids = torch.randint(0, GEOMETRY["vocab_size"], (2, 37))
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        got = native(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        hidden = torch.randn(2, 37, GEOMETRY["hidden_size"], dtype=dtype)
        positions = torch.arange(37).unsqueeze(0)
        cos_sin = reference.model.rotary_emb(hidden, positions)
        assert all(torch.equal(a, b) for a, b in zip(cos_sin, native.model.rotary_emb(hidden, positions)))
        layer_expected = reference.model.layers[1](hidden, attention_mask=None, position_embeddings=cos_sin,
                                                   position_ids=positions)
        layer_got = native.model.layers[1](hidden, attention_mask=None, position_embeddings=cos_sin,
                                           position_ids=positions)
    assert got.dtype == expected.dtype == dtype
    assert torch.equal(got, expected)
    assert torch.equal(layer_got, layer_expected)


def test_module_tree_matches_transformers():
    """Processors and savers find sites by module path and class name: both trees must read the same."""
    reference, native = _random_pair(torch.float32, tie_word_embeddings=True)
    assert [(n, type(m).__name__) for n, m in native.named_modules()] == \
        [(n, type(m).__name__) for n, m in reference.named_modules()]
    assert [n for n, _ in native.named_parameters(remove_duplicate=False)] == \
        [n for n, _ in reference.named_parameters(remove_duplicate=False)]
    assert native.lm_head.weight is native.model.embed_tokens.weight


def test_padded_batches_are_refused():
    _, native = _random_pair(torch.float32)
    ids = torch.randint(0, GEOMETRY["vocab_size"], (1, 5))
    with pytest.raises(ValueError, match="unpadded"):
        native(input_ids=ids, attention_mask=torch.tensor([[0, 1, 1, 1, 1]]))


def test_adapter_loads_the_same_model_as_transformers(tmp_path):
    path = make_tiny_model(tmp_path / "qwen2", "qwen2", torch.bfloat16)
    adapter = Qwen2Adapter("Qwen2-7B", path)
    assert adapter.native
    for dtype in (torch.float32, torch.bfloat16):
        native = adapter.load_model(dtype)
        reference = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True).eval()
        assert isinstance(native, qwen2_native.Qwen2ForCausalLM)
        ours, theirs = dict(native.state_dict()), dict(reference.state_dict())
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)
        assert all(torch.equal(a, b) for a, b in zip(native.buffers(), reference.buffers()))
        ids = torch.randint(0, 200, (1, 50))
        with torch.no_grad():
            assert torch.equal(native(input_ids=ids, use_cache=False).logits,
                               reference(input_ids=ids, use_cache=False).logits)


def test_transformers_renames_no_qwen2_tensor(tmp_path):
    """The native adapter skips transformers' conversion rules (an expensive import): they must be the identity."""
    config = json.loads((EXAMPLE_MODEL / "config.json").read_text())
    names = CheckpointNames.for_config(config)
    reference = modeling_qwen2.Qwen2ForCausalLM(Qwen2Config(**GEOMETRY))
    for name, _ in reference.named_parameters(remove_duplicate=False):
        assert names.tensor_name(name) == name


@pytest.mark.parametrize("change, native", [
    ({}, True),
    ({"use_sliding_window": True}, False),
    ({"layer_types": ["full_attention", "sliding_attention"]}, False),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, False),
    ({"architectures": ["Qwen2ForSequenceClassification"]}, False),
    ({"hidden_act": "gelu"}, False),
    ({"quantization_config": {"quant_method": "fp8"}}, False),
])
def test_only_plain_qwen2_configs_are_built_natively(change, native):
    config = json.loads((EXAMPLE_MODEL / "config.json").read_text())
    assert qwen2_native.native_config_ok({**config, **change}) is native


def test_loading_the_example_imports_no_compiler_or_distributed_tensor():
    code = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from modelslim_core.models.qwen2 import Qwen2Adapter\n"
        f"model = Qwen2Adapter('Qwen2-demo', Path({str(EXAMPLE_MODEL)!r})).load_model(torch.float32)\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch.distributed.tensor', 'transformers.modeling_utils')"
        " if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(REPO), timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_heads_wider_than_the_gqa_limit_repeat_kv_heads_bit_identically(dtype):
    """Past 256 channels per head sdpa gets the KV heads repeated instead of `enable_gqa`: the other branch."""
    reference, native = _random_pair(dtype, head_dim=288)
    ids = torch.randint(0, GEOMETRY["vocab_size"], (2, 9))
    with torch.no_grad():
        assert torch.equal(native(input_ids=ids, use_cache=False).logits,
                           reference(input_ids=ids, use_cache=False).logits)
