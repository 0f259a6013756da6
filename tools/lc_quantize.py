"""llm-compressor's side of tools/bench_real_model.py: quantize one model with one scheme and save it.

Runs INSIDE a separate environment that has llm-compressor installed (never the project's): it imports
nothing from ModelSlim. The calibration texts are tokenized exactly as ModelSlim's calibration does (the
model's tokenizer with its default special tokens, one text per sample, cut at the model's positions), so
both tools see the same tokens. The output is a compressed-tensors checkpoint that the benchmark evaluates
with the same code as ModelSlim's own output.

Usage (by the benchmark):
    <llm-compressor venv>/bin/python tools/lc_quantize.py --model DIR --out DIR --scheme NAME --calib FILE.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def calibration_dataset(model_dir: str, calib: Path):
    """A datasets.Dataset of pre-tokenized samples, one per calibration text."""
    from datasets import Dataset
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    limit = getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", None)
    options = {"truncation": True, "max_length": limit} if limit else {}
    texts = [json.loads(line)["inputs_pretokenized"] for line in calib.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    encoded = [tokenizer(text, **options) for text in texts]
    return Dataset.from_dict({"input_ids": [e["input_ids"] for e in encoded],
                              "attention_mask": [e["attention_mask"] for e in encoded]}), tokenizer, len(texts)


def _int(bits: int, strategy: str, symmetric: bool = True, group_size: int | None = None):
    from compressed_tensors.quantization import QuantizationArgs

    return QuantizationArgs(num_bits=bits, type="int", strategy=strategy, symmetric=symmetric,
                            group_size=group_size)


def recipe(scheme: str, group_size: int):
    """The llm-compressor recipe equivalent to one of the benchmark's ModelSlim schemes."""
    from compressed_tensors.quantization import QuantizationScheme
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

    ignore = ["lm_head"]
    if scheme == "W8A16":  # its W8A16 preset is grouped (128); the ModelSlim row is per channel
        channel = QuantizationScheme(targets=["Linear"], weights=_int(8, "channel"))
        return QuantizationModifier(config_groups={"group_0": channel}, ignore=ignore)
    if scheme == "W8A8_DYNAMIC":
        return QuantizationModifier(targets="Linear", scheme="W8A8", ignore=ignore)
    if scheme == "w8a8 practice":  # its documented int8 recipe: SmoothQuant 0.8, then GPTQ W8A8 (dynamic tokens)
        return [SmoothQuantModifier(smoothing_strength=0.8), GPTQModifier(targets="Linear", scheme="W8A8", ignore=ignore)]
    if scheme == "W4A16 gptq":
        group = QuantizationScheme(targets=["Linear"], weights=_int(4, "group", group_size=group_size))
        return GPTQModifier(config_groups={"group_0": group}, ignore=ignore)
    if scheme == "w4a8 practice":  # on a dense model the practice writes W8A8_DYNAMIC (vLLM-Ascend's dense W4A8 limit)
        return QuantizationModifier(targets="Linear", scheme="W8A8", ignore=ignore)
    if scheme == "W8A8 static":
        static = QuantizationScheme(targets=["Linear"], weights=_int(8, "channel"),
                                    input_activations=_int(8, "tensor", symmetric=False))
        return QuantizationModifier(config_groups={"group_0": static}, ignore=ignore)
    raise SystemExit(f"lc_quantize: unknown scheme {scheme!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--scheme", required=True)
    parser.add_argument("--calib", required=True, type=Path)
    parser.add_argument("--group_size", type=int, default=128)
    args = parser.parse_args()

    import torch
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    torch.set_grad_enabled(False)
    dataset, tokenizer, samples = calibration_dataset(args.model, args.calib)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
    longest = max(len(ids) for ids in dataset["input_ids"])
    oneshot(model=model, dataset=dataset, recipe=recipe(args.scheme, args.group_size),
            num_calibration_samples=samples, max_seq_length=longest, shuffle_calibration_samples=False)
    model.save_pretrained(args.out, save_compressed=True)
    tokenizer.save_pretrained(args.out)


if __name__ == "__main__":
    main()
