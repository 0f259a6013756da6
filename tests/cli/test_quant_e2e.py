"""`msmodelslim quant` end to end in a subprocess on tiny Qwen2 / Qwen3 / Llama checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from modelslim.app.quick_quant import QuantArgs, run_quant
from tests.quant_runs import checkpoint_digest

REPO = Path(__file__).resolve().parents[2]

RUNNER_CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: {runner}
  process:
    - type: group
      configs:
        - type: linear_quant
          qconfig:
            act: {{scope: per_tensor, dtype: int8, symmetric: false, method: minmax}}
            weight: {{scope: per_channel, dtype: int8, symmetric: true, method: minmax}}
          include: ["*self_attn*"]
        - type: linear_quant
          qconfig:
            act: {{scope: per_token, dtype: int8, symmetric: true, method: minmax}}
            weight: {{scope: per_channel, dtype: int8, symmetric: true, method: minmax}}
          include: ["*mlp*"]
  save:
    - type: ascendv1_saver
      part_file_size: {part_file_size}
  dataset: {dataset}
"""

MODEL_TYPES = {"qwen2": "Qwen2-demo", "qwen3": "Qwen3-8B", "llama": "Llama-3.1-8B-Instruct"}


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MSMODELSLIM_LOG_LEVEL": "info"}
    return subprocess.run(
        [sys.executable, "-m", "modelslim.cli.main", "quant", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env,
        timeout=900,  # a whole quantization in a fresh interpreter: minutes on a loaded 2-core CI host
    )


def write_config(tmp_path: Path, runner: str, dataset: Path, part_file_size: float = 0) -> Path:
    path = tmp_path / f"{runner}-{part_file_size}.yaml"
    path.write_text(RUNNER_CONFIG.format(runner=runner, dataset=dataset, part_file_size=part_file_size))
    return path


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_layer_wise_and_model_wise_write_identical_checkpoints(arch, tiny_models, small_calib, tmp_path, cli_env,
                                                              caplog):
    """In-process (the runners are under test, not the process contract, which the other tests here run): each
    subprocess would pay ~8 s of torch and transformers import for a run of well under a second."""
    model_dir = tiny_models(arch)
    before = tree_digest(model_dir)
    outputs = {}
    for runner in ("layer_wise", "model_wise"):
        out = tmp_path / runner
        caplog.clear()
        with caplog.at_level("INFO", logger="modelslim_core"):
            run_quant(QuantArgs(str(model_dir), str(out), MODEL_TYPES[arch],
                                config_path=str(write_config(tmp_path, runner, small_calib)), device="cpu"))
        assert f"Runner: {runner}" in caplog.text
        outputs[runner] = out
    assert tree_digest(model_dir) == before, "model_path must never be modified"
    digest = {name: tree_digest(out) for name, out in outputs.items()}
    weights = "quant_model_weights.safetensors"
    assert digest["layer_wise"][weights] == digest["model_wise"][weights]
    assert digest["layer_wise"]["quant_model_description.json"] == digest["model_wise"]["quant_model_description.json"]
    description = json.loads((outputs["layer_wise"] / "quant_model_description.json").read_text())
    assert description["model.layers.1.self_attn.o_proj.weight"] == "W8A8"
    assert description["model.layers.1.mlp.down_proj.weight"] == "W8A8_DYNAMIC"


def test_quant_type_uses_the_verified_practice_without_prompt(tiny_models, tmp_path):
    out = tmp_path / "out"
    result = run_cli("--model_path", str(tiny_models("qwen3")), "--save_path", str(out), "--model_type", "Qwen3-8B",
                     "--quant_type", "w8a16", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "Practice: qwen3-w8a16" in result.stderr
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model_quant_type"] == "W8A16"
    exported = (out / "Qwen3-8B_best_practice.yaml").read_text()
    assert exported.startswith("apiversion: modelslim_v1\nspec:")
    assert "&" not in exported and "*w8a8" not in exported


def test_sharded_output_matches_the_single_file(tiny_models, small_calib, tmp_path):
    model_dir = tiny_models("qwen2")
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    run_quant(QuantArgs(str(model_dir), str(single), "Qwen2-demo", config_path=str(write_config(tmp_path, "layer_wise", small_calib))))
    config = write_config(tmp_path, "layer_wise", small_calib, part_file_size=0.0002)  # ~210 KB shards
    run_quant(QuantArgs(str(model_dir), str(sharded), "Qwen2-demo", config_path=str(config)))
    index = json.loads((sharded / "quant_model_weights.safetensors.index.json").read_text())
    shards = sorted(p.name for p in sharded.glob("quant_model_weights-*.safetensors"))
    total = len(shards)
    assert total >= 3
    assert shards == [f"quant_model_weights-{i:05d}-of-{total:05d}.safetensors" for i in range(1, total + 1)]
    assert set(index["weight_map"].values()) == set(shards)
    merged = {}
    for shard in shards:
        merged.update(load_file(sharded / shard))
    expected = load_file(single / "quant_model_weights.safetensors")
    assert set(merged) == set(expected) == set(index["weight_map"])
    assert all((merged[k] == expected[k]).all() for k in expected)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in expected.values())


def test_rerun_replaces_stale_shards_and_refuses_foreign_weights(tiny_models, small_calib, tmp_path):
    model_dir = tiny_models("qwen2")
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo",
                        config_path=str(write_config(tmp_path, "layer_wise", small_calib, part_file_size=0.0002))))
    assert len(list(out.glob("quant_model_weights-*"))) >= 3
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(write_config(tmp_path, "layer_wise", small_calib))))
    assert sorted(p.name for p in out.glob("*.safetensors*")) == ["quant_model_weights.safetensors"]
    (out / "model.safetensors").write_bytes(b"not ours")
    result = run_cli("--model_path", str(model_dir), "--save_path", str(out), "--model_type", "Qwen2-demo",
                     "--config_path", str(write_config(tmp_path, "layer_wise", small_calib)), "--device", "cpu")
    assert result.returncode == 1
    assert "model.safetensors" in result.stderr and "Traceback" not in result.stderr
    assert (out / "model.safetensors").read_bytes() == b"not ours"


def test_readme_main_command_on_the_shipped_example(tmp_path):
    out = tmp_path / "w8a8"
    result = run_cli("--model_path", str(REPO / "examples" / "qwen2-demo"), "--save_path", str(out),
                     "--model_type", "Qwen2-demo", "--quant_type", "w8a8", "--device", "cpu", "--yes")
    assert result.returncode == 0, result.stderr
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model_quant_type"] == "W8A8"
    assert checkpoint_digest(out) == README_MAIN_JOB_DIGEST, (
        "the README main job no longer writes the same bytes: a speed-up must not change the checkpoint; a "
        "deliberate numerics change updates README_MAIN_JOB_DIGEST (and says so in its commit)")


#: sha256 of every file the README main job writes (quant_report.json holds timings and is left out), pinned so
#: that work on its speed (imports, garbage collection, forwards, the writer) provably keeps the checkpoint.
README_MAIN_JOB_DIGEST = {
    "Qwen2-demo_best_practice.yaml": "d035a9d7207191721b7cbf406849ab6e22c76bbc52c9e0948ecba0b4833873dd",
    "config.json": "2db4de96f1f8515975c51cc8ca38afa02887f895a2be2856bfb621ed7633c6a0",
    "generation_config.json": "22b9e322083360ba1d2427552958d9020cc59a0f5b1c1c56ccccbcbea20eca55",
    "quant_model_description.json": "87b6272a2a364b52a5fcc6fc0f8c1c8815022ba973650bd42441f1fbd00abc40",
    "quant_model_weights-00001-of-00001.safetensors": "645850214daa513505492de5c03765a83779dc28e056fa7344ef641eeb44422e",
    "quant_model_weights.safetensors.index.json": "91392f18d0242332ca1b4c627148eafa5c1677e931258f646f8ce173d56c457b",
    "tokenizer.json": "7439eae252078173f9e6d2a13d3795bc98ab4ceb6a284bf3e1a28d6e9c81f803",
    "tokenizer_config.json": "a35f813413ce8f8888947b8de9644a7bb38bac3dfe0b885191561d1fb6c9596b",
}


@pytest.mark.parametrize(
    "family, model_type",
    [("qwen2", "Qwen2-7B-Instruct"), ("qwen2_5", "Qwen2.5-7B-Instruct"), ("qwen3", "Qwen3-8B"), ("llama", "Llama-3.1-8B-Instruct")],
)
def test_w4a8_practice_of_every_dense_family(family, model_type):
    from modelslim_core.practice import PracticeLibrary, select_practice
    from modelslim_core.protocol.config import parse_quant_config

    selection = select_practice(PracticeLibrary.discover(), family, model_type, "w4a8", None)
    assert selection.tip is None  # an explicit, verified hit: no confirmation
    practice = selection.practice
    assert practice.metadata.config_id == f"{family.replace('_', '.')}-w4a8"
    assert (practice.metadata.label.w_bit, practice.metadata.label.a_bit) == (4, 8)
    # vLLM-Ascend loads int4 W4A8_DYNAMIC only on MoE experts: a dense model's linears are all W8A8_DYNAMIC.
    (every,) = parse_quant_config(practice.data, str(practice.path)).spec.process[0].configs
    assert (every.include, every.qconfig.export_type) == (["*"], "W8A8_DYNAMIC")


def test_default_w4a8c8_practice_loads_on_dense_and_moe_models():
    """A generic practice cannot name MoE experts a dense model lacks (a selection matching nothing is refused):
    every linear is W8A8_DYNAMIC, which vLLM-Ascend loads on any layer; int4 experts come from family practices."""
    from modelslim_core.practice import PracticeLibrary
    from modelslim_core.protocol.config import parse_quant_config

    practice = next(p for p in PracticeLibrary.discover().practices("default") if p.metadata.config_id == "default-w4a8c8")
    every, _cache = parse_quant_config(practice.data, str(practice.path)).spec.process[0].configs
    assert (every.include, every.qconfig.export_type) == (["*"], "W8A8_DYNAMIC")


def test_quant_type_w4a8_runs_and_reloads(tiny_models, tmp_path):
    from modelslim_core.reference_runtime import load_quantized_model

    def no_prompt(tip: str) -> None:
        raise AssertionError(f"unexpected confirmation: {tip}")

    out = tmp_path / "w4a8"
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", quant_type="w4a8", device="cpu"), confirm=no_prompt)
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model.layers.1.mlp.down_proj.weight"] == "W8A8_DYNAMIC"  # dense: what vLLM-Ascend loads
    assert description["model.layers.1.self_attn.q_proj.weight"] == "W8A8_DYNAMIC"
    assert description["model_quant_type"] == "W8A8_DYNAMIC"
    model = load_quantized_model(tiny_models("qwen2"), out)
    assert type(model.model.layers[0].mlp.up_proj).__name__ == "DynamicIntLinear"


GPTQ_CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: {runner}
  process:
    - type: linear_quant
      qconfig:
        weight: {{scope: per_group, dtype: int4, symmetric: true, method: gptq, ext: {{group_size: 32}}}}
      include: ["*"]
  save:
    - type: compressed_tensors_saver
  dataset: {dataset}
"""


def test_auto_runs_gptq_on_the_host_layer_wise_with_model_wise_bytes(tiny_models, small_calib, tmp_path, caplog):
    """GPTQ on the host goes layer by layer under `auto` (lower peak memory, no whole-model load); the checkpoint
    is the one model_wise writes. Without GPTQ (static minmax here) `auto` still goes model_wise."""
    model_dir = tiny_models("llama")
    digests = {}
    for runner in ("auto", "model_wise"):
        config = tmp_path / f"gptq-{runner}.yaml"
        config.write_text(GPTQ_CONFIG.format(runner=runner, dataset=small_calib))
        caplog.clear()
        with caplog.at_level("INFO", logger="modelslim_runners"):
            run_quant(QuantArgs(str(model_dir), str(tmp_path / runner), MODEL_TYPES["llama"],
                                config_path=str(config), device="cpu"))
        if runner == "auto":
            assert "Runner auto -> layer_wise (GPTQ on the host" in caplog.text
        digests[runner] = tree_digest(tmp_path / runner)
    weights = [name for name in digests["auto"] if name.endswith(".safetensors")]
    assert weights and all(digests["auto"][name] == digests["model_wise"][name] for name in weights)
    data_free = tmp_path / "data-free.yaml"
    data_free.write_text(RUNNER_CONFIG.format(runner="auto", dataset=small_calib, part_file_size=0))
    caplog.clear()
    with caplog.at_level("INFO", logger="modelslim_runners"):
        run_quant(QuantArgs(str(model_dir), str(tmp_path / "data-free"), MODEL_TYPES["llama"],
                            config_path=str(data_free), device="cpu"))
    assert "Runner auto -> model_wise" in caplog.text
