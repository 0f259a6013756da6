"""`msmodelslim analyze` and `msmodelslim tune` (the CLI, in process) on the shipped VLM and MoE practices (group items, layer_wise and auto
runners): tiny Qwen2.5-VL, Qwen3-MoE and DeepSeek-V3 models with one function-preserving outlier MLP, the
analysis on the service's own samples, routed experts as one unit, routers never quantized, and the
rollback reaching the group child that selects the rolled-back layers (and only it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from modelslim.app.analyze import AnalyzeArgs, analysis_samples, run_analyze
from modelslim.cli.main import main
from tests.tiny_models import REPO, make_tiny_model
from tests.tune._helpers import inject_outliers, write_calib
from tests.vlm.media_files import media_set
from tests.vlm.tiny_vlm import make_qwen2_5_vl

pytestmark = pytest.mark.usefixtures("cli_env")
#: Large enough that dynamic per-token int8 activations of the outlier MLP lose most of their channels.
FACTOR = 5000.0
VLM_TYPE = "Qwen2.5-VL-7B-Instruct"
MOE = {  # arch -> (model type, practice, perplexity target between "outlier MLP quantized" and "left float")
    "qwen3_moe": ("Qwen3-30B-A3B", "qwen3_moe/qwen3_moe-w8a8.yaml", 1.0001),
    "deepseek_v3": ("DeepSeek-V3", "deepseek_v3/deepseek_v3-w8a8.yaml", 1.0003),
}


def practice(relative: str, dataset: Path) -> dict:
    """A shipped practice with its dataset replaced (and its YAML anchor holders dropped)."""
    raw = yaml.safe_load((REPO / "practices" / relative).read_text(encoding="utf-8"))
    config = {key: raw[key] for key in ("apiversion", "metadata", "spec")}
    config["spec"]["dataset"] = str(dataset)
    config["spec"]["save"][0]["part_file_size"] = 0
    return config


def write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def tune(model: Path, model_type: str, template: dict, save: Path, calib: Path, max_ratio: float, scope: str) -> dict:
    """`msmodelslim tune` (in process), returning its tune_report.json."""
    document = {"strategy": {"type": "binary_fallback", "template": template, "rollback_path": "spec.process.0.exclude",
                             "analysis_scope": scope},
                "evaluation": {"type": "perplexity", "dataset": str(calib), "max_ratio": max_ratio}}
    config = write(save.parent / f"{save.name}.yaml", document)
    assert main(["tune", "--model_path", str(model), "--save_path", str(save), "--config", str(config), "--device", "cpu",
                 "--model_type", model_type]) == 0
    return json.loads((save / "tune_report.json").read_text())


def description(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "quant_model_description.json").read_text())


# -- VLM ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm-tune")
    model = inject_outliers(make_qwen2_5_vl(root / "model", torch.float32), {"model.layers.1.mlp": FACTOR})
    template = practice("qwen2_5_vl/qwen2.5-vl-w8a8.yaml", media_set(root / "media"))
    return model, template, write_calib(root / "calib.jsonl")


def test_vlm_analysis_runs_the_multimodal_prompts_and_ranks_the_language_model(vlm, tmp_path):
    model, template, _ = vlm
    samples = analysis_samples(template, "practice", model, VLM_TYPE, template["spec"]["dataset"], 2, torch.device("cpu"))
    assert len(samples) == 2 and all("pixel_values" in s or "pixel_values_videos" in s for s in samples)
    assert main(["analyze", "linear", "--model_path", str(model), "--model_type", VLM_TYPE, "--output_dir",
                 str(tmp_path / "out"), "--config_path", str(write(tmp_path / "p.yaml", template)), "--device", "cpu",
                 "--topk", "1"]) == 0
    report = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert report["dataset"] == template["spec"]["dataset"]  # the config's media set, not a text default
    units = [row["unit"] for row in report["units"]]
    assert units[0] == "model.language_model.layers.1.mlp.down_proj"
    assert all(unit.startswith("model.language_model.layers.") for unit in units)  # the towers stay float
    assert len(units) == 14 and report["exclude"] == ["model.language_model.layers.1.mlp.down_proj"]


@pytest.mark.slow
def test_vlm_tune_rolls_the_outlier_layer_back_through_the_group(vlm, tmp_path):
    model, template, calib = vlm
    report = tune(model, VLM_TYPE, template, tmp_path / "run", calib, 1.0001, "layer")
    assert report["rolled_back"] == ["model.language_model.layers.1.*"]
    assert report["rounds"][0]["metric"] > 1.0001 >= report["rounds"][-1]["metric"]
    tuned = yaml.safe_load((tmp_path / "run" / "tuned_config.yaml").read_text())
    children = tuned["spec"]["process"][0]["configs"]
    assert [child["exclude"] for child in children] == [["model.language_model.layers.1.*"]] * 2  # attention and MLP
    saved = description(tmp_path / "run" / "quant_model")
    assert saved["model.layers.1.self_attn.q_proj.weight"] == saved["model.layers.1.mlp.down_proj.weight"] == "FLOAT"
    assert saved["model.layers.0.self_attn.q_proj.weight"] == "W8A8"
    assert saved["model.layers.0.mlp.down_proj.weight"] == "W8A8_DYNAMIC"
    assert {tag for name, tag in saved.items() if name.startswith("visual.")} == {"FLOAT"}
    judged = json.loads((tmp_path / "run" / "quant_model" / "eval_report.json").read_text())  # eval on a VLM
    assert judged["metric"] == "perplexity" and {layer["tag"] for layer in judged["layers"]} == {"W8A8", "W8A8_DYNAMIC"}


# -- MoE ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    """arch -> (model with an outlier in every routed expert of layer 1, its practice, a text calibration set)."""
    root = tmp_path_factory.mktemp("moe-tune")
    calib = write_calib(root / "calib.jsonl")
    built = {}
    for arch, (_, relative, _) in MOE.items():
        model = make_tiny_model(root / arch, arch, torch.float32)
        inject_outliers(model, {f"model.layers.1.mlp.experts.{e}": FACTOR for e in range(4)})
        built[arch] = model, practice(relative, calib), calib
    return built


@pytest.mark.parametrize("arch", list(MOE))
def test_moe_analysis_groups_a_layers_experts_and_never_ranks_the_router(moe, arch, tmp_path):
    model, template, calib = moe[arch]
    report = run_analyze(AnalyzeArgs("linear", str(model), MOE[arch][0], str(tmp_path / "out"),
                                     config_path=str(write(tmp_path / "p.yaml", template)), device="cpu", topk=2))
    rows = {row["unit"]: row for row in report["units"]}
    top = report["units"][0]
    assert top["unit"] == top["pattern"] == "model.layers.1.mlp.experts.*" and top["linears"] == 12  # 4 experts x 3
    assert not any(".experts.0." in unit or unit.endswith(".gate") for unit in rows)
    if arch == "deepseek_v3":  # shared experts are dense linears, ranked one by one; layer 0 is a dense MLP
        assert rows["model.layers.1.mlp.shared_experts.down_proj"]["linears"] == 1
        assert "model.layers.0.mlp.down_proj" in rows and "model.layers.2.mlp.experts.*" in rows
        assert not any("kv_b_proj" in unit for unit in rows)  # the practice keeps it float


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(MOE))
def test_moe_tune_rolls_back_a_layers_experts_together(moe, arch, tmp_path):
    model, template, calib = moe[arch]
    model_type, _, max_ratio = MOE[arch]
    report = tune(model, model_type, template, tmp_path / "run", calib, max_ratio, "linear")
    assert report["rolled_back"] == ["model.layers.1.mlp.experts.*"]
    tuned = yaml.safe_load((tmp_path / "run" / "tuned_config.yaml").read_text())
    attention, mlp = tuned["spec"]["process"][0]["configs"]
    assert mlp["exclude"] == ["model.layers.1.mlp.experts.*"] and "model.layers.1.mlp.experts.*" not in attention.get("exclude", [])
    saved = description(tmp_path / "run" / "quant_model")
    for expert in range(4):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            assert saved[f"model.layers.1.mlp.experts.{expert}.{proj}.weight"] == "FLOAT"
            assert saved[f"model.layers.2.mlp.experts.{expert}.{proj}.weight" if arch == "deepseek_v3"
                         else f"model.layers.0.mlp.experts.{expert}.{proj}.weight"] == "W8A8_DYNAMIC"
    assert saved["model.layers.1.mlp.gate.weight"] == "FLOAT"  # the router
    assert saved["model.layers.1.self_attn.o_proj.weight"] == "W8A8"
    if arch == "deepseek_v3":
        assert saved["model.layers.1.mlp.shared_experts.down_proj.weight"] == "W8A8_DYNAMIC"
