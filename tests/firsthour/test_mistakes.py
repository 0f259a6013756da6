"""A newcomer's mistakes, each driven through the real CLI: one paragraph naming the path or flag and the fix,
the right exit code, no traceback, and nothing half-made left behind."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelslim.cli.main import main
from tests.cli._helpers import LOG_ENV, assert_clean_failure, run_inprocess

pytestmark = pytest.mark.usefixtures("cli_env")

REPO = Path(__file__).resolve().parents[2]
CALIBRATING = """\
apiversion: modelslim_v1
spec:
  process:
    - type: linear_quant
      qconfig:
        act: {scope: per_tensor, dtype: int8, symmetric: false, method: minmax}
        weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
  save:
    - type: ascendv1_saver
  dataset: DATASET
"""


def quant(model: Path | str, save: Path | str, *extra: str) -> list[str]:
    return ["--model_path", str(model), "--save_path", str(save), "--model_type", "Qwen2-demo", *extra]


def run_cli(args: list[str], env_extra: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != LOG_ENV} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "modelslim.cli.main", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=900, **kwargs)


def test_wrong_model_path_is_reported_before_torch_is_imported(tmp_path: Path) -> None:
    probe = textwrap.dedent(f"""
        import sys, time
        started = time.perf_counter()
        from modelslim.cli.main import main
        code = main(["quant", "--model_path", {str(tmp_path / "no-such-model")!r}, "--save_path",
                     {str(tmp_path / "out")!r}, "--model_type", "Qwen2-demo", "--quant_type", "w8a8"])
        print(code, "torch" in sys.modules, "transformers" in sys.modules, time.perf_counter() - started)
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    code, torch_loaded, transformers_loaded, seconds = done.stdout.split()
    assert (code, torch_loaded, transformers_loaded) == ("1", "False", "False"), done.stderr
    assert float(seconds) < 2.0  # ~0.1 s on an idle machine; the bound leaves room for a loaded CI host
    assert "model_path" in done.stderr and "does not exist" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("save_path", "needles"),
    [
        ("/etc/hostname/out", ("/etc/hostname", "is a file, not a directory")),
        ("/proc/x", ("/proc/x", "pseudo file system")),
    ],
)
def test_impossible_save_path(save_path: str, needles: tuple[str, ...], tiny_models, capsys) -> None:
    result = run_inprocess(quant(tiny_models("qwen2"), save_path, "--quant_type", "w8a8", "--device", "cpu", "-y"), capsys)
    assert_clean_failure(result, 1, "save_path", *needles)


def test_unwritable_save_path(tmp_path: Path, tiny_models, capsys) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere; /proc and /etc/hostname cover root")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_inprocess(quant(tiny_models("qwen2"), locked / "out", "--quant_type", "w8a8"), capsys)
    assert_clean_failure(result, 1, "save_path", "not writable")


def test_model_without_tokenizer_is_refused_before_loading(tmp_path: Path, tiny_models, capsys) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_models("qwen2"), model)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    save = tmp_path / "out"
    started = time.perf_counter()
    result = run_inprocess(quant(model, save, "--quant_type", "w8a8", "--device", "cpu", "-y"), capsys)
    assert_clean_failure(result, 1, "model error", str(model), "no tokenizer files", "tokenizer.json")
    assert "Model ready" not in result.stderr  # refused before the model was loaded
    assert not save.exists()  # and before save_path was made
    assert time.perf_counter() - started < 30


def test_failed_run_removes_the_save_path_it_created(tmp_path: Path, tiny_models, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CALIBRATING.replace("DATASET", str(tmp_path / "missing.jsonl")), encoding="utf-8")
    save = tmp_path / "new" / "out"
    result = run_inprocess(quant(tiny_models("qwen2"), save, "--config_path", str(config), "--device", "cpu"), capsys)
    assert result.code == 1 and "Traceback" not in result.stderr
    assert not save.exists(), "a failed first run must not leave a save_path holding only the YAML"


def test_a_second_run_into_a_busy_save_path_is_refused(tmp_path: Path, tiny_models, capsys) -> None:
    from modelslim_core.io.dir_lock import exclusive_directory

    save = tmp_path / "out"
    save.mkdir()
    with exclusive_directory(save):  # another run holds it
        result = run_inprocess(quant(tiny_models("qwen2"), save, "--quant_type", "w8a16", "--device", "cpu", "-y"), capsys)
    assert_clean_failure(result, 1, "save error", str(save), "being written by another msmodelslim run")


def test_log_file_gets_the_log_and_the_failure(tmp_path: Path, capsys) -> None:
    log = tmp_path / "logs" / "run.log"
    result = run_inprocess(quant(tmp_path / "absent", tmp_path / "out", "--log-file", str(log)), capsys)
    assert result.code == 1
    assert "model_path" in log.read_text(encoding="utf-8") and "does not exist" in log.read_text(encoding="utf-8")
    assert stat.S_IMODE(log.stat().st_mode) & 0o007 == 0  # not world-readable


def test_interrupt_during_model_loading(tmp_path: Path) -> None:
    """SIGINT while the model loads stops the run (exit 130), even when the parent ignored SIGINT for the child."""
    import signal

    save = tmp_path / "out"
    args = ["quant", *quant(REPO / "examples" / "qwen2-demo", save, "--quant_type", "w8a16", "--device", "cpu", "-y")]
    env = {k: v for k, v in os.environ.items() if k != LOG_ENV}
    process = subprocess.Popen([sys.executable, "-m", "modelslim.cli.main", *args], cwd=REPO, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines = []
    for line in process.stderr:  # the adapter is chosen right before the model is loaded
        lines.append(line)
        if "Config written" in line:
            process.send_signal(signal.SIGINT)
            break
    _, rest = process.communicate(timeout=900)
    stderr = "".join(lines) + rest
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr.splitlines()[-1] and "Traceback" not in stderr
    assert not (save / "quant_model_description.json").exists()
    assert not save.exists()  # this run created it and left nothing to resume


BROKEN_NPU = {
    "torch_npu/__init__.py": 'raise ImportError("libascendcl.so: cannot open shared object file")\n',
    "torch_npu-2.14.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: torch-npu\nVersion: 2.14.0\n",
    "torch_npu-2.14.0.dist-info/entry_points.txt": "[torch.backends]\ntorch_npu = torch_npu:_autoload\n",
}


@pytest.fixture
def broken_torch_npu(tmp_path: Path) -> dict[str, str]:
    """A torch_npu installed without CANN: importing it fails, and it registers torch's backend autoload."""
    site = tmp_path / "site"
    for name, text in BROKEN_NPU.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text, encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_npu_extra_without_cann_does_not_break_cpu_runs(tmp_path: Path, broken_torch_npu: dict[str, str]) -> None:
    # (in-process CLI runs earlier in the session may have switched autoload off in os.environ: a bare import has it on)
    plain = subprocess.run([sys.executable, "-c", "import torch"],
                           env=os.environ | broken_torch_npu | {"TORCH_DEVICE_BACKEND_AUTOLOAD": "1"},
                           capture_output=True, text=True, timeout=900)
    assert plain.returncode != 0 and "torch_npu" in plain.stderr  # the simulation breaks a bare `import torch`

    demo = REPO / "examples" / "qwen2-demo"
    default = run_cli(["quant", *quant(demo, tmp_path / "a", "--quant_type", "w8a16", "--dry-run")], broken_torch_npu)
    assert default.returncode == 0, default.stderr
    assert "torch_npu is installed but cannot be loaded" in default.stderr  # a warning; the CPU is used

    cpu = run_cli(["quant", *quant(demo, tmp_path / "c", "--quant_type", "w8a16", "--device", "cpu", "--dry-run")],
                  broken_torch_npu)
    assert cpu.returncode == 0, cpu.stderr  # transformers' own torch_npu probe must not trip over it either

    asked = run_cli(["quant", *quant(demo, tmp_path / "b", "--quant_type", "w8a16", "--device", "npu", "--dry-run")],
                    broken_torch_npu)
    assert asked.returncode == 1, asked.stderr
    last = asked.stderr.strip().splitlines()[-1]
    assert last.startswith("msmodelslim: device error: --device npu: torch_npu is installed but cannot be loaded")
    assert "libascendcl.so" in last and "--device cpu" in last and "Traceback" not in asked.stderr
