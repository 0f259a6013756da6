"""`msmodelslim tune`: roll layers back to float, most sensitive first, until the judge is satisfied.

Strategies:
- `binary_fallback`: order the candidates (given, or from `analyze`'s float_gain ranking of the template),
  evaluate with no rollback, then binary-search the smallest k whose top-k rollback passes.
- `standing_high`: the same search for each `anti_outlier_strategies` entry (processors put before the
  template's first linear_quant), each one only trying to beat the smallest k found so far.

Every round is recorded in `<save_path>/history/` (history.yaml, accuracy.yaml, <config_id>.yaml): a run
stopped by --timeout or Ctrl-C resumes from it, reusing every verdict already reached. The analysis's
quantized checkpoint is the zero-rollback round's checkpoint (not quantized twice). Rounds share
`history/unit_cache/`: a round reuses the units before the first unit its rollback changes (their
calibration statistics and quantized weights; modelslim_runners/unit_cache.py). At the end
`<save_path>/quant_model/` holds the passing checkpoint, `tuned_config.yaml` its config and
`tune_report.json` the table of rounds (layers rolled back, metric, seconds).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelslim_core.errors import ModelSlimError
from modelslim_core.runtime.selection_check import EmptySelectionError

from modelslim.app.analyze import measure_scheme, write_private
from modelslim.app.evaluators import Evaluator, Verdict, build_evaluator
from modelslim.app.paths import check_model_path, check_save_path
from modelslim.app.quick_quant import QuantArgs, check_config_for_model
from modelslim.app.tune_config import (StrategyFields, first_quantizing_item, load_tune_file, with_rollback,
                                       without_item)

logger = logging.getLogger("modelslim")

HISTORY = "history"
UNIT_CACHE = "unit_cache"
QUANT_MODEL = "quant_model"
REPORT_NAME = "tune_report.json"
CONFIG_NAME = "tuned_config.yaml"


class TuneTimeout(ModelSlimError):
    kind = "timeout"


class TuneFailed(ModelSlimError):
    kind = "tune failed"


@dataclass
class TuneArgs:
    model_path: str
    save_path: str
    config: str
    device: str | None = None
    model_type: str = "default"
    timeout: float | None = None  # seconds
    trust_remote_code: bool = False


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class History:
    """history/history.yaml (candidates and rounds), accuracy.yaml (verdict details), <config_id>.yaml."""

    def __init__(self, root: Path, tune_digest: str):
        self.root = root
        self.file = root / "history.yaml"
        self.state: dict[str, Any] = {"tune_config": tune_digest, "candidates": {}, "rounds": [], "quant_model": None}
        if self.file.is_file():
            saved = yaml.safe_load(self.file.read_text(encoding="utf-8")) or {}
            if saved.get("tune_config") == tune_digest:
                self.state = saved
                logger.info("Resuming: %d rounds already in %s.", len(self.state["rounds"]), root)
            else:
                logger.warning("%s comes from another tune config; starting over.", self.file)
        root.mkdir(parents=True, exist_ok=True, mode=0o750)

    def save(self) -> None:
        write_private(self.file, yaml.safe_dump(self.state, sort_keys=False))

    def cached(self, key: str) -> dict | None:
        return next((r for r in self.state["rounds"] if r["key"] == key), None)

    def record(self, entry: dict, config: dict, details: dict) -> None:
        self.state["rounds"].append(entry)
        write_private(self.root / f"{entry['config_id']}.yaml", yaml.safe_dump(config, sort_keys=False))
        accuracy_file = self.root / "accuracy.yaml"
        accuracy = yaml.safe_load(accuracy_file.read_text(encoding="utf-8")) if accuracy_file.is_file() else {}
        accuracy[entry["config_id"]] = json.loads(json.dumps(details, default=str))
        write_private(accuracy_file, yaml.safe_dump(accuracy, sort_keys=False))
        self.save()


@contextlib.contextmanager
def unit_cache_at(directory: Path) -> Iterator[None]:
    """Quantization runs inside reuse the units an earlier round left in `directory` (runners' unit_cache.py:
    the units before the first one a rollback changes keep their statistics and weights)."""
    from modelslim_runners.unit_cache import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(directory)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = before


class Tuner:
    def __init__(self, args: TuneArgs, strategy: StrategyFields, evaluator: Evaluator, history: History):
        self.args, self.strategy, self.evaluator, self.history = args, strategy, evaluator, history
        self.save_path = Path(args.save_path)
        self.deadline = None if args.timeout is None else time.monotonic() + args.timeout
        self.config_prefix = str(strategy.metadata.get("config_id", "tuned"))
        self.rollback_path = strategy.rollback_path
        self.quant = QuantArgs(args.model_path, "", args.model_type, device=args.device,
                               trust_remote_code=args.trust_remote_code, yes=True)

    # -- rounds -------------------------------------------------------------------------------------
    def _check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TuneTimeout(f"the time budget ran out after {len(self.history.state['rounds'])} rounds; "
                              f"{self.save_path / HISTORY} keeps them.",
                              "run the same command again (with a larger --timeout) to resume.")

    def _quantize(self, config: dict, key: str) -> Path:
        from modelslim.app.analyze import quantize_config

        work = self.save_path / HISTORY / "work"
        while True:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True, mode=0o750)
            try:
                with unit_cache_at(self.save_path / HISTORY / UNIT_CACHE):
                    checkpoint = quantize_config(config, self.quant, work, "round")
                return self._install(checkpoint, key)
            except EmptySelectionError as empty:
                # every layer of that item is rolled back to float: the round runs without the item
                trimmed = without_item(config, empty.path)
                if trimmed == config:  # not a path of this config's processors: the refusal is the user's to see
                    raise
                logger.info("%s selects no layer once rolled back; this round runs without it.", empty.path)
                config = trimmed

    def _install(self, checkpoint: Path, key: str) -> Path:
        target = self.save_path / QUANT_MODEL
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(checkpoint), target)
        self.history.state["quant_model"] = key
        self.history.save()
        return target

    def evaluate(self, template: dict, patterns: list[str]) -> bool:
        """One round (or its recorded verdict): quantize with these patterns rolled back, then judge."""
        config = with_rollback(template, self.rollback_path, patterns, self.history.state.get("candidate_layers"))
        key = _digest(config)
        done = self.history.cached(key)
        if done is not None:
            logger.info("Round %s (recorded): %d rolled back, metric %.6g, %s.", done["config_id"], len(patterns),
                        done["metric"], "pass" if done["passed"] else "fail")
            return done["passed"]
        self._check_time()
        started = time.perf_counter()
        quant_path = self.save_path / QUANT_MODEL
        if self.history.state.get("quant_model") != key:
            quant_path = self._quantize(config, key)
        quantized = time.perf_counter()
        work = self.save_path / HISTORY / "eval"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, mode=0o750)
        verdict: Verdict = self.evaluator.evaluate(Path(self.args.model_path), quant_path, work)
        entry = {"round": len(self.history.state["rounds"]), "config_id": f"{self.config_prefix}_{len(self.history.state['rounds'])}",
                 "key": key, "rolled_back": list(patterns), "passed": bool(verdict.passed), "metric": verdict.metric,
                 "seconds": round(time.perf_counter() - started, 2),
                 "quantize_seconds": round(quantized - started, 2), "eval_seconds": round(time.perf_counter() - quantized, 2)}
        self.history.record(entry, config, verdict.details)
        logger.info("Round %s: %d rolled back, metric %.6g, %s (%.1f s).", entry["config_id"], len(patterns),
                    verdict.metric, "pass" if verdict.passed else "fail", entry["seconds"])
        return verdict.passed

    # -- candidates ---------------------------------------------------------------------------------
    def candidates(self, template: dict) -> list[str]:
        """Rollback patterns, most sensitive first: the strategy's list, or analyze's float_gain ranking (whose
        quantized checkpoint becomes the zero-rollback round's)."""
        if self.strategy.rollback_candidates:
            return list(self.strategy.rollback_candidates)
        key = _digest(template)
        known = self.history.state["candidates"].get(key)
        if known is not None:
            return known
        self._check_time()
        work = self.save_path / HISTORY / "analysis"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, mode=0o750)
        dataset = self.strategy.analysis_dataset or (template.get("spec") or {}).get("dataset") or "mix_calib.jsonl"
        measured = measure_scheme(template, "strategy.template", self.quant, work, self.strategy.analysis_scope,
                                  "float_gain", dataset, self.strategy.analysis_samples,
                                  lambda: unit_cache_at(self.save_path / HISTORY / UNIT_CACHE))  # round 0's units
        ranked = [row["pattern"] for row in measured.rows]
        self.history.state["candidates"][key] = ranked
        self.history.state.setdefault("candidate_layers", {}).update(measured.layers)
        self._install(measured.quant_dir, _digest(with_rollback(template, self.rollback_path, [])))
        shutil.rmtree(work, ignore_errors=True)
        return ranked

    # -- strategies ---------------------------------------------------------------------------------
    def smallest_passing(self, template: dict, candidates: list[str], upper: int) -> int | None:
        """Smallest k in [1, upper] whose top-k rollback passes (None if top-upper fails)."""
        if upper < 1 or not self.evaluate(template, candidates[:upper]):
            return None
        lo, hi = 1, upper
        while lo < hi:
            mid = (lo + hi) // 2
            if self.evaluate(template, candidates[:mid]):
                hi = mid
            else:
                lo = mid + 1
        return hi

    def search(self, template: dict, upper: int | None) -> tuple[int, list[str]] | None:
        """(k, candidates) for this template: 0 if it passes as is, else the binary search below `upper`."""
        candidates = self.candidates(template)
        if self.evaluate(template, []):
            return 0, candidates
        if not candidates:
            return None
        k = self.smallest_passing(template, candidates, len(candidates) if upper is None else upper - 1)
        return None if k is None else (k, candidates)

    def run(self) -> tuple[dict, list[str]]:
        """The passing config and the patterns it rolls back."""
        if self.strategy.type == "binary_fallback":
            variants = [(self.strategy.template, self.strategy.rollback_path)]
        else:
            variants = [with_anti_outlier(self.strategy.template, self.strategy.rollback_path, processors)
                        for processors in self.strategy.anti_outlier_strategies]
        best: tuple[int, dict, list[str], str] | None = None
        for template, rollback_path in variants:
            self.rollback_path = rollback_path
            found = self.search(template, None if best is None else best[0])
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], template, found[1][: found[0]], rollback_path)
            if best is not None and best[0] == 0:
                break
        if best is None:
            raise TuneFailed("no configuration met the evaluation's demand, even with every candidate rolled back.",
                             f"loosen the target, add rollback_candidates, or change the scheme; the rounds are in "
                             f"{self.save_path / HISTORY}.")
        k, template, patterns, rollback_path = best
        config = with_rollback(template, rollback_path, patterns, self.history.state.get("candidate_layers"))
        key = _digest(config)
        if self.history.state.get("quant_model") != key:
            self._quantize(config, key)  # the passing checkpoint is the one left in quant_model/
        return config, patterns


def with_anti_outlier(template: dict, rollback_path: str, processors: list[dict]) -> tuple[dict, str]:
    """The template with `processors` before its first linear_quant, and the rollback path shifted to match."""
    config = copy.deepcopy(template)
    process = config["spec"]["process"]
    at = first_quantizing_item(process)
    process[at:at] = copy.deepcopy(processors)
    parts = rollback_path.split(".")
    if parts[:2] == ["spec", "process"] and len(parts) > 2 and parts[2].isdigit() and int(parts[2]) >= at:
        parts[2] = str(int(parts[2]) + len(processors))
    return config, ".".join(parts)


def format_rounds(report: dict) -> str:
    lines = ["| round | config_id | rolled back | patterns | metric | result | seconds |", "|---|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        shown = ", ".join(r["rolled_back"][:4]) + (" ..." if len(r["rolled_back"]) > 4 else "")
        lines.append(f"| {r['round']} | {r['config_id']} | {len(r['rolled_back'])} | {shown or '-'} | {r['metric']:.6g} | "
                     f"{'pass' if r['passed'] else 'fail'} | {r['seconds']} |")
    lines.append(f"\nrolled back {len(report['rolled_back'])} unit(s): {', '.join(report['rolled_back']) or 'none'}; "
                 f"checkpoint {report['quant_model']}")
    return "\n".join(lines)


def check_template_for_model(template: dict, source: str, model_path: Path, args: TuneArgs) -> None:
    """`quant`'s YAML-load refusals on the template (formats/fused_release.py, the engines' layouts), before the
    analysis or any round: every round is the template with more layers float, so a template the release cannot
    store would otherwise be refused only once a round reaches the saver's check, after the analysis ran."""
    from modelslim_core.models.resolve import create_adapter
    from modelslim_core.protocol.config import parse_quant_config

    config = parse_quant_config(copy.deepcopy(template), source)
    adapter = create_adapter(args.model_type, model_path, args.trust_remote_code)
    check_config_for_model(config, adapter, model_path, None, source)


def run_tune(args: TuneArgs) -> dict:
    started = time.perf_counter()
    model_path = check_model_path(args.model_path)
    save_path = check_save_path(args.save_path, model_path)
    strategy, evaluation = load_tune_file(args.config)
    check_template_for_model(strategy.template, f"{args.config}: strategy.template", model_path, args)
    evaluator = build_evaluator(evaluation, f"{args.config}: evaluation")
    save_path.mkdir(parents=True, exist_ok=True, mode=0o750)
    history = History(save_path / HISTORY, _digest({"strategy": strategy.model_dump(), "evaluation": evaluation,
                                                      "model": str(model_path), "model_type": args.model_type}))
    args = TuneArgs(str(model_path), str(save_path), args.config, args.device, args.model_type, args.timeout,
                    args.trust_remote_code)
    config, patterns = Tuner(args, strategy, evaluator, history).run()
    finalize = getattr(evaluator, "finalize", None)
    if finalize is not None:
        finalize(model_path, save_path / QUANT_MODEL)
    write_private(save_path / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))
    report = {"strategy": strategy.type, "evaluation": json.loads(json.dumps(evaluation, default=str)),
              "rolled_back": patterns, "rounds": history.state["rounds"], "config": str(save_path / CONFIG_NAME),
              "quant_model": str(save_path / QUANT_MODEL), "elapsed_seconds": round(time.perf_counter() - started, 2)}
    write_private(save_path / REPORT_NAME, json.dumps(report, indent=2))
    return report
