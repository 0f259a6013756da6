"""The default adapter on architectures no family knows: generic block discovery, an encoder end to end."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from transformers import AutoModel

from modelslim_core.models.default import DefaultAdapter, largest_block_stack
from modelslim_core.models.resolve import adapter_class_for
from modelslim_core.reference_runtime import load_quantized_model
from tests.moe._helpers import quantize, relative_logit_error, saved, static_w8a8_config
from tests.tiny_models import make_tiny_encoder



@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("bert"))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(8, 8) for _ in range(6)])  # bare linears: not a block stack
        self.small = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(4)])
        self.big = nn.ModuleList([nn.Sequential(nn.Linear(8, 64), nn.Linear(64, 8)) for _ in range(2)])
        self.mixed = nn.ModuleList([nn.Sequential(nn.Linear(8, 512)), nn.ReLU()])  # not identical blocks


def test_the_largest_stack_of_identical_blocks_is_chosen():
    name, stack = largest_block_stack(_Net())
    assert name == "big" and len(stack) == 2


def test_an_unknown_encoder_resolves_to_the_default_adapter(encoder):
    cls, reason = adapter_class_for("my-bert-encoder", "bert")
    assert cls is DefaultAdapter and "generic" in reason
    adapter = DefaultAdapter("my-bert-encoder", encoder)
    model = adapter.load_model(torch.float32)
    assert type(model).__name__ == "BertModel"
    assert [u.name for u in adapter.units(model)] == ["encoder.layer.0", "encoder.layer.1"]


@pytest.mark.parametrize("runner", ["model_wise", "layer_wise"])
def test_encoder_quantizes_end_to_end_with_static_activations(encoder, tmp_path, caplog, runner):
    dataset = tmp_path / "calib.jsonl"
    dataset.write_text('{"text": "the quick brown fox"}\n{"text": "every token, 1 2 3!"}\n')
    config = tmp_path / "static.yaml"
    config.write_text(static_w8a8_config("*", runner, dataset))
    caplog.set_level(logging.INFO)
    out = quantize(encoder, tmp_path / "out", "my-bert-encoder", config)
    assert "the units are the 2 BertLayer blocks of encoder.layer" in caplog.text
    description, metas = saved(out)
    for linear in ("attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense"):
        assert description[f"encoder.layer.1.{linear}.weight"] == "W8A8"
        assert metas[f"encoder.layer.1.{linear}.input_scale"] == (torch.float32, (1,))
    assert description["pooler.dense.weight"] == "FLOAT" and description["embeddings.word_embeddings.weight"] == "FLOAT"
    ids = torch.tensor([[2, 45, 46, 47, 48, 3]])
    with torch.no_grad():
        reference = AutoModel.from_pretrained(encoder, dtype=torch.float32)(input_ids=ids).last_hidden_state
        hidden = load_quantized_model(encoder, out)(input_ids=ids).last_hidden_state
    assert 0 < ((hidden - reference).norm() / reference.norm()).item() < 0.05


def test_encoder_with_the_default_w8a8_practice(encoder, tmp_path):
    out = quantize(encoder, tmp_path / "out", "my-bert-encoder", quant_type="w8a8")
    assert "default-w8a8" in (out / "my-bert-encoder_best_practice.yaml").read_text()
    description, _ = saved(out)
    assert description["encoder.layer.0.attention.self.key.weight"] == "W8A8_DYNAMIC"
    load_quantized_model(encoder, out)  # strict conformance of every tensor


def test_an_unknown_decoder_quantizes_through_the_default_adapter(tiny_models, tmp_path, caplog):
    model = tiny_models("mistral", torch.bfloat16)
    dataset = tmp_path / "calib.jsonl"
    dataset.write_text('{"text": "An architecture without a family adapter."}\n')
    config = tmp_path / "static.yaml"
    config.write_text(static_w8a8_config("*", "layer_wise", dataset))
    caplog.set_level(logging.INFO)
    out = quantize(model, tmp_path / "out", "my-mistral", config)
    assert "the units are the 2 MistralDecoderLayer blocks of model.layers" in caplog.text
    assert saved(out)[0]["model.layers.1.mlp.down_proj.weight"] == "W8A8"
    assert 0 < relative_logit_error(model, out, torch.arange(3, 40).reshape(1, -1)) < 0.05


def test_blocks_that_pass_state_to_each_other_are_refused_not_miscalibrated(encoder, tmp_path):
    """T5 blocks hand `position_bias` from block 0 to the next ones: chaining hidden states alone would be wrong."""
    from transformers import T5Config, T5EncoderModel

    from modelslim_core.errors import ModelError

    model_dir = tmp_path / "t5"
    model_dir.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"):
        if (encoder / name).is_file():
            (model_dir / name).write_bytes((encoder / name).read_bytes())
    config = T5Config(vocab_size=200, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    T5EncoderModel(config).save_pretrained(model_dir)
    dataset = tmp_path / "calib.jsonl"
    dataset.write_text('{"text": "the quick brown fox"}\n')
    static = tmp_path / "static.yaml"
    static.write_text(static_w8a8_config("*", "model_wise", dataset))
    with pytest.raises(ModelError, match="pass each other more than their hidden states"):
        quantize(model_dir, tmp_path / "out", "my-t5-encoder", static)
    out = quantize(model_dir, tmp_path / "dynamic", "my-t5-encoder", quant_type="w8a8")  # data-free: fine
    assert saved(out)[0]["encoder.block.1.layer.1.DenseReluDense.wi.weight"] == "W8A8_DYNAMIC"


def test_calibration_texts_longer_than_the_positions_are_cut_to_fit(encoder, tmp_path, caplog):
    dataset = tmp_path / "calib.jsonl"
    long_text = " ".join(["the quick brown fox"] * 100)  # ~400 tokens; this BERT has 128 positions
    dataset.write_text(f'{{"text": "{long_text}"}}\n{{"text": "every token, 1 2 3!"}}\n')
    config = tmp_path / "static.yaml"
    config.write_text(static_w8a8_config("*", "layer_wise", dataset))
    out = quantize(encoder, tmp_path / "out", "my-bert-encoder", config)
    assert "1 of 2 calibration samples reach the model's maximum input length of 128 tokens" in caplog.text
    assert "max_position_embeddings in config.json" in caplog.text
    load_quantized_model(encoder, out)
