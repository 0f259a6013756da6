"""Reading back a compressed-tensors checkpoint for `msmodelslim eval`.

The ascendv1 formats are rebuilt by our reference runtime; a compressed-tensors checkpoint is rebuilt by its
real third-party reader instead (transformers with the compressed-tensors package, decompressed on the
device), so `eval` measures what vLLM's users get, with that reader's activation simulation. The layer tags
in the report are our export tags, recovered from each `config_groups` scheme.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelslim_core.errors import UsageError

QUANT_METHOD = "compressed-tensors"


def quantization_config(quant_path: Path) -> dict[str, Any] | None:
    """The checkpoint's compressed-tensors `quantization_config`, or None for any other format."""
    config_file = quant_path / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text(encoding="utf-8")).get("quantization_config")
    return config if isinstance(config, dict) and config.get("quant_method") == QUANT_METHOD else None


def scheme_tag(group: dict[str, Any]) -> str:
    """Our export tag for one config group (the inverse of what compressed_tensors_saver writes)."""
    weights, act = group["weights"], group.get("input_activations")
    if weights["type"] == "float":
        return "W8A8FP8_DYNAMIC"
    bits = weights["num_bits"]
    if act is None:
        return f"W{bits}A16"
    tag = f"W{bits}A8" + ("_DYNAMIC" if act.get("dynamic") else "")
    return tag + ("_PER_GROUP" if bits == 4 and weights.get("strategy") == "group" else "")


def layer_tags(config: dict[str, Any], model: nn.Module) -> dict[str, str]:
    """Module name -> tag for every quantized linear (groups target `Linear` or exact names)."""
    ignored = set(config.get("ignore") or [])
    tags: dict[str, str] = {}
    for group in config["config_groups"].values():
        tag = scheme_tag(group)
        if group["targets"] == ["Linear"]:
            tags.update({name: tag for name, module in model.named_modules()
                         if isinstance(module, nn.Linear) and name not in ignored})
        else:
            tags.update({name: tag for name in group["targets"]})
    return tags


def model_quant_type(tags: dict[str, str]) -> str:
    kinds = sorted(set(tags.values()))
    return kinds[0] if len(kinds) == 1 else "+".join(kinds) if kinds else "FLOAT"


def load_ct_model(quant_path: Path, causal: bool, device: torch.device) -> nn.Module:
    """The checkpoint decompressed by transformers; a clear error when its compressed-tensors reader is missing."""
    try:
        import compressed_tensors  # noqa: F401, PLC0415 - only this format needs it
    except ImportError:
        raise UsageError(
            f"{quant_path} is a compressed-tensors checkpoint, and reading it needs the compressed-tensors package.",
            "install it (`uv pip install compressed-tensors`, or the `modelslim[interop]` extra) and run eval again.",
        ) from None
    from transformers import AutoModel, AutoModelForCausalLM  # noqa: PLC0415

    factory = AutoModelForCausalLM if causal else AutoModel
    model = factory.from_pretrained(quant_path, dtype=torch.float32, local_files_only=True).eval().to(device)
    with torch.no_grad():  # the reader decompresses on the first forward; eval also calls single linears
        model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
    return model
