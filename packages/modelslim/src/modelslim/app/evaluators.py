"""Judges for `msmodelslim tune`: is a quantized checkpoint accurate enough?

- `perplexity` (built in): `msmodelslim eval`'s reference runtime (Ascend integer semantics) on held-out
  text; passes when quantized / float perplexity ≤ `max_ratio`. A round costs one quantized forward over the
  eval tokens (the float perplexity is computed in the first round only, no per-layer errors); the passing
  checkpoint gets the full `msmodelslim eval` report (per-layer errors) once, at the end (`finalize`).
- `service_oriented`: start an OpenAI-compatible server on the checkpoint (or use one already running),
  wait for `GET <health_path>`, run a benchmark command that prints `{"<dataset>": accuracy, ...}` as its
  last stdout line (or writes it to `result_file`), and check `demand.expectations[]`: every dataset is
  present and target − accuracy ≤ tolerance (compared as decimals).
- Any other `type` names an entry point in the `modelslim.evaluators` group: a class built from the
  evaluation mapping (`from_config(mapping, where)`) with `evaluate(model_path, quant_path, work_dir)` and,
  optionally, `finalize(model_path, quant_path)` run once on the passing checkpoint.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from pydantic import Field

from modelslim_core.errors import ConfigError, ModelSlimError, PluginError
from modelslim_core.protocol.validation import StrictModel, validate

from modelslim.app.tune_config import Demand

logger = logging.getLogger("modelslim")

ENTRY_POINT_GROUP = "modelslim.evaluators"


class EvaluationFailed(ModelSlimError):
    """The judge itself could not run (server did not come up, benchmark failed, result unreadable)."""

    kind = "evaluation error"


@dataclass
class Verdict:
    passed: bool
    metric: float  # the figure the table shows (perplexity ratio, worst shortfall, ...)
    details: dict[str, Any] = field(default_factory=dict)


class Evaluator(Protocol):
    def evaluate(self, model_path: Path, quant_path: Path, work_dir: Path) -> Verdict: ...


class PerplexityFields(StrictModel):
    type: str
    dataset: str = "heldout_eval.jsonl"
    max_ratio: float = Field(gt=1.0, description="largest allowed quantized/float perplexity, e.g. 1.02")
    max_samples: int | None = Field(default=None, ge=1)
    device: str | None = None


class PerplexityEvaluator:
    """Quantized / float perplexity from `msmodelslim eval` (the saved tensors, integer semantics)."""

    def __init__(self, fields: PerplexityFields):
        self.fields = fields
        self._float = None  # evaluate.FloatFigure of the first round, reused by the later ones

    @classmethod
    def from_config(cls, raw: dict[str, Any], where: str) -> "PerplexityEvaluator":
        return cls(validate(PerplexityFields, raw, where))

    def evaluate(self, model_path: Path, quant_path: Path, work_dir: Path) -> Verdict:
        from modelslim.app.evaluate import end_to_end

        report, self._float = end_to_end(self._args(model_path, quant_path), self._float)
        ratio = float(report["ratio"])
        return Verdict(ratio <= self.fields.max_ratio, ratio,
                       {"float": report["float"], "quantized": report["quantized"], "max_ratio": self.fields.max_ratio})

    def finalize(self, model_path: Path, quant_path: Path) -> None:
        """The passing checkpoint's full `msmodelslim eval` report (per-layer errors) in eval_report.json."""
        from modelslim.app.evaluate import run_eval

        run_eval(self._args(model_path, quant_path))

    def _args(self, model_path: Path, quant_path: Path):
        from modelslim.app.evaluate import EvalArgs

        return EvalArgs(str(model_path), str(quant_path), self.fields.dataset, self.fields.device, self.fields.max_samples)


class EngineFields(StrictModel):
    command: list[str] | str | None = None  # None: a server is already running at host:port
    host: str = "127.0.0.1"
    port: int = Field(default=1234, ge=1, le=65535)
    health_path: str = "/v1/models"
    served_model_name: str = "quantized"
    startup_timeout: float = Field(default=600.0, gt=0)


class BenchmarkFields(StrictModel):
    command: list[str] | str
    result_file: str | None = None
    timeout: float = Field(default=3600.0, gt=0)


class ServiceFields(StrictModel):
    type: str
    demand: Demand
    inference_engine: EngineFields = Field(default_factory=EngineFields)
    evaluator: BenchmarkFields


def _command(command: list[str] | str, values: dict[str, str]) -> list[str]:
    """The command with {model_path}, {host}, {port}, {served_model_name}, {work_dir} filled in."""
    parts = shlex.split(command) if isinstance(command, str) else list(command)
    return [part.format(**values) for part in parts]


def check_expectations(demand: Demand, accuracy: dict[str, Any]) -> Verdict:
    """Every demanded dataset present and target − accuracy ≤ tolerance; metric = the worst margin."""
    seen: set[str] = set()
    shortfalls, details = [], {}
    for expectation in demand.expectations:
        if expectation.dataset in seen:
            raise ConfigError(f"evaluation.demand.expectations lists dataset {expectation.dataset!r} twice.",
                              "give each dataset one expectation.")
        seen.add(expectation.dataset)
        if expectation.dataset not in accuracy:
            details[expectation.dataset] = "missing from the benchmark's result"
            shortfalls.append(Decimal("Infinity"))
            continue
        try:
            value = Decimal(str(accuracy[expectation.dataset]))
        except InvalidOperation:
            raise EvaluationFailed(f"the benchmark reported {accuracy[expectation.dataset]!r} for "
                                   f"{expectation.dataset!r}, not a number.", "fix the benchmark's output.") from None
        shortfall = expectation.target - value - expectation.tolerance
        details[expectation.dataset] = {"accuracy": float(value), "target": float(expectation.target),
                                        "tolerance": float(expectation.tolerance)}
        shortfalls.append(shortfall)
    worst = max(shortfalls)
    return Verdict(worst <= 0, float(worst), details)


class ServiceOrientedEvaluator:
    """An OpenAI-compatible server on the checkpoint plus a benchmark command (e.g. AISBench)."""

    def __init__(self, fields: ServiceFields):
        self.fields = fields

    @classmethod
    def from_config(cls, raw: dict[str, Any], where: str) -> "ServiceOrientedEvaluator":
        fields = validate(ServiceFields, raw, where)
        check_expectations(fields.demand, {})  # duplicate datasets are a config error before any run
        return cls(fields)

    def _healthy(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError):
            return False

    def _wait(self, url: str, server: subprocess.Popen | None, log: Path) -> None:
        deadline = time.monotonic() + self.fields.inference_engine.startup_timeout
        while time.monotonic() < deadline:
            if self._healthy(url):
                return
            if server is not None and server.poll() is not None:
                raise EvaluationFailed(f"the inference server exited with code {server.returncode} before {url} "
                                       f"answered.", f"see {log}.")
            time.sleep(0.5)
        raise EvaluationFailed(f"{url} did not answer within {self.fields.inference_engine.startup_timeout:.0f} s.",
                               f"check the server command and its log {log}, or raise inference_engine.startup_timeout.")

    def evaluate(self, model_path: Path, quant_path: Path, work_dir: Path) -> Verdict:
        engine, bench = self.fields.inference_engine, self.fields.evaluator
        values = {"model_path": str(quant_path), "host": engine.host, "port": str(engine.port),
                  "served_model_name": engine.served_model_name, "work_dir": str(work_dir)}
        log = work_dir / "server.log"
        server = None
        with log.open("w") as log_file:
            if engine.command is not None:
                server = subprocess.Popen(_command(engine.command, values), stdout=log_file, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
            try:
                self._wait(f"http://{engine.host}:{engine.port}{engine.health_path}", server, log)
                result = subprocess.run(_command(bench.command, values), capture_output=True, text=True,
                                        stdin=subprocess.DEVNULL, timeout=bench.timeout)
            finally:
                if server is not None:
                    server.terminate()
                    try:
                        server.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        server.kill()
        (work_dir / "benchmark.log").write_text(result.stdout + result.stderr, encoding="utf-8")
        if result.returncode != 0:
            raise EvaluationFailed(f"the benchmark command exited with code {result.returncode}.",
                                   f"see {work_dir / 'benchmark.log'}.")
        return check_expectations(self.fields.demand, self._accuracy(result.stdout, values))

    def _accuracy(self, stdout: str, values: dict[str, str]) -> dict[str, Any]:
        if self.fields.evaluator.result_file:
            text = Path(self.fields.evaluator.result_file.format(**values)).read_text(encoding="utf-8")
        else:
            lines = [line for line in stdout.splitlines() if line.strip()]
            text = lines[-1] if lines else ""
        try:
            accuracy = json.loads(text)
        except json.JSONDecodeError:
            accuracy = None
        if not isinstance(accuracy, dict):
            raise EvaluationFailed("the benchmark's result is not a JSON object of dataset -> accuracy.",
                                   "print it as the last line of stdout, or set evaluator.result_file.")
        return accuracy


BUILTIN = {"perplexity": PerplexityEvaluator, "service_oriented": ServiceOrientedEvaluator}


def build_evaluator(raw: dict[str, Any], where: str) -> Evaluator:
    """The evaluator named by `raw['type']`: built in, or from the `modelslim.evaluators` entry points."""
    kind = raw["type"]
    if kind in BUILTIN:
        return BUILTIN[kind].from_config(raw, where)
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if kind not in found:
        known = ", ".join([*BUILTIN, *sorted(found)])
        raise ConfigError(f"{where}.type {kind!r} is not a known evaluator.",
                          f"use one of: {known}; plugins register under the {ENTRY_POINT_GROUP!r} entry point group.")
    try:
        plugin = found[kind].load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported by name
        raise PluginError(f"evaluator plugin {kind!r} ({found[kind].value}) failed to load: {exc}.",
                          "fix or reinstall the plugin package.") from None
    return plugin.from_config(raw, where)
