"""Running a quantization in a test and keeping the quantizer's own layers to compare the checkpoint against."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.quant.quantized_linear import QuantizedLinear
from modelslim_save_ascend import ascendv1


STATIC_ACT = "{scope: per_tensor, dtype: int8, symmetric: false, method: minmax}"
DYNAMIC_ACT = "{scope: per_token, dtype: int8, symmetric: true, method: minmax}"
WEIGHT_SYM = "{scope: per_channel, dtype: int8, symmetric: true, method: minmax}"
WEIGHT_ASYM = "{scope: per_channel, dtype: int8, symmetric: false, method: minmax}"
#: Process items of a calibrated MLA/MoE run (smoothing, then static W8A8; MLA's kv_b_proj stays float).
SMOOTHED_STATIC_MLA = f"""\
    - {{type: iter_smooth, alpha: 0.5}}
    - type: linear_quant
      qconfig:
        act: {STATIC_ACT}
        weight: {WEIGHT_SYM}
      exclude: ["*kv_b_proj"]
"""


def mixed_config(dataset: Path, down_weight: str = WEIGHT_SYM) -> str:
    """One checkpoint with every foundation type: attention W8A8, gate/up W8A8_DYNAMIC, down_proj W8A16."""
    return f"""\
apiversion: modelslim_v1
spec:
  runner: layer_wise
  process:
    - type: group
      configs:
        - {{type: linear_quant, qconfig: {{act: {STATIC_ACT}, weight: {WEIGHT_SYM}}}, include: ["*self_attn*"]}}
        - {{type: linear_quant, qconfig: {{act: {DYNAMIC_ACT}, weight: {WEIGHT_SYM}}}, include: ["*gate_proj", "*up_proj"]}}
        - {{type: linear_quant, qconfig: {{weight: {down_weight}}}, include: ["*down_proj"]}}
  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {dataset}
"""


def write_mixed_run(directory: Path, label: str) -> Path:
    """A two-sample calibration set (Latin and CJK text) and mixed_config over it in `directory`; the config."""
    dataset = directory / "calib.jsonl"
    dataset.write_text(f'{{"text": "{label} calibration text, with numbers 1 2 3."}}\n{{"text": "第二个样本。"}}\n')
    config = directory / "mixed.yaml"
    config.write_text(mixed_config(dataset))
    return config


def flow(mapping: dict) -> str:
    """A one-line YAML flow mapping of a flat dict."""
    return "{" + ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in mapping.items()) + "}"


#: The layout tests write every ascendv1 type, also those vLLM-Ascend refuses at load time; they target MindIE
#: LLM (which reads the same format and is not checked). What each engine loads is tested in tests/engines.
LAYOUT_TAGS = ["MindIE"]


def quantize_capturing(model_dir: Path, config: Path, out: Path, saver: type = ascendv1.AscendV1Saver) -> dict[str, QuantizedLinear]:
    """Run `msmodelslim quant` with `config`; returns a copy of every QuantizedLinear as `saver` saved it."""
    captured: dict[str, QuantizedLinear] = {}
    original = saver._write_quantized

    def spy(self, prefix, layer):
        captured[prefix] = copy.deepcopy(layer)  # layer_wise releases the original after saving
        original(self, prefix, layer)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(saver, "_write_quantized", spy)
        run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(config), device="cpu",
                            tags=LAYOUT_TAGS))
    return captured


def corrupt(out: Path, tmp_path: Path, edit) -> Path:
    """A copy of checkpoint `out` (one weight file, sharded or not) after `edit(tensors, description)` changed it."""
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (weights,) = broken.glob("quant_model_weights*.safetensors")
    tensors = load_file(weights)
    description = json.loads((broken / "quant_model_description.json").read_text())
    edit(tensors, description)
    save_file(tensors, weights)
    (broken / "quant_model_description.json").write_text(json.dumps(description))
    return broken


def parse_process_item(process: str):
    """The validated config of one `spec.process` item written as a YAML flow mapping."""
    import yaml

    from modelslim_core.protocol.config import parse_quant_config

    raw = yaml.safe_load(f"apiversion: modelslim_v1\nspec:\n  process:\n    - {process}\n  save: [{{type: ascendv1_saver}}]\n")
    return parse_quant_config(raw, "c.yaml").spec.process[0]


def assert_config_error(process: str, *needles: str) -> None:
    """Loading the item fails with a ConfigError whose message names every needle (YAML path, field, reason)."""
    from modelslim_core.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        parse_process_item(process)
    for needle in needles:
        assert needle in str(error.value), str(error.value)


def checkpoint_digest(out: Path) -> dict[str, str]:
    """File name -> sha256 of every top-level file of a checkpoint, except quant_report.json (it holds timings,
    so it differs between any two runs)."""
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
            if p.is_file() and p.name != "quant_report.json"}


#: `--tag` for runs that write QuaRot online rotations with ascendv1_saver: vLLM-Ascend applies none of them (its
#: schemes read no heads_rotation / kronecker_rotation_*), so such runs are refused for it and target MindIE LLM.
ONLINE_ROTATIONS_TARGET = ["MindIE"]
