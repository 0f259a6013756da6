"""Quantizing a tiny multimodal family model with its shipped practice and comparing the reload with float."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.models.resolve import create_adapter
from modelslim_core.reference_runtime import load_quantized_model
from modelslim_vlm.dataset import load_vlm_dataset
from modelslim_vlm.dataset.media import decode_sample
from tests.tiny_models import REPO


def practice_file(practice: str, dataset: Path, path: Path, edit: Callable[[dict], None] | None = None) -> Path:
    """A shipped practice calibrated on `dataset`, saved unsharded, changed by `edit`, written to `path`."""
    config = yaml.safe_load((REPO / "practices" / practice).read_text(encoding="utf-8"))
    config["spec"]["dataset"] = str(dataset)
    config["spec"]["save"][0]["part_file_size"] = 0
    if edit is not None:
        edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def quantize_vlm(model: Path, out: Path, model_type: str, practice: str, dataset: Path,
                 edit: Callable[[dict], None] | None = None, tags: list[str] | None = None) -> Path:
    path = practice_file(practice, dataset, out.parent / f"{out.name}.yaml", edit)
    return run_quant(QuantArgs(str(model), str(out), model_type, config_path=str(path), device="cpu", tags=tags))


def multimodal_inputs(model_type: str, model: Path, index: Path) -> dict[str, torch.Tensor]:
    """The processor inputs of the set's image + video entry."""
    adapter = create_adapter(model_type, model, False)
    sample = adapter.usable_sample(load_vlm_dataset(str(index), "Describe.")[3])
    return adapter.build_inputs(decode_sample(sample, adapter.audio_sampling_rate))


def logits_error(model_type: str, model: Path, out: Path, index: Path) -> float:
    inputs = multimodal_inputs(model_type, model, index)
    float_model = create_adapter(model_type, model, False).load_model(torch.float32)
    with torch.no_grad():
        reference = float_model(**inputs).logits
        logits = load_quantized_model(model, out)(**inputs).logits
    return ((logits - reference).norm() / reference.norm()).item()


def read_tensors(directory: Path, pattern: str) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files in `directory` matching `pattern`, by name."""
    from safetensors import safe_open

    found = {}
    for file in directory.glob(pattern):
        with safe_open(file, framework="pt") as handle:
            found.update({name: handle.get_tensor(name) for name in handle.keys()})
    return found


def quantize_and_read(model: Path, out: Path, model_type: str, practice: str, dataset: Path):
    """quantize_vlm, then (output directory, the source's tensors, the output's tensors) for release-layout checks."""
    out = quantize_vlm(model, out, model_type, practice, dataset)
    return out, read_tensors(model, "model*.safetensors"), read_tensors(out, "quant_model_weights*.safetensors")
