"""Feeding a reference-style config in as a migrating user would: load, translate v0, validate, resolve the
calibration set. Each file in configs/ states what must happen in its header comments:

    # expect: ok | warn <fragment> [| <fragment> ...] | refused <fragment> [| <fragment> ...]
    # log: <fragment> [| ...]          (INFO lines that must be logged)
    # export: <TAG> [| <TAG> ...]      (layer tags the processors produce)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).parent / "configs"


@dataclass
class Expectation:
    status: str
    fragments: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    export: set[str] = field(default_factory=set)


@dataclass
class Outcome:
    status: str  # ok | warn | refused
    message: str = ""
    log: str = ""
    export: set[str] = field(default_factory=set)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(" | ") if part.strip()]


def expectation_of(path: Path) -> Expectation:
    expected = Expectation("ok")
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect:"):
            status, _, rest = line[len("# expect:"):].strip().partition(" ")
            expected.status, expected.fragments = status, _split(rest)
        elif line.startswith("# log:"):
            expected.log = _split(line[len("# log:"):])
        elif line.startswith("# export:"):
            expected.export = set(_split(line[len("# export:"):]))
    return expected


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _resolve_dataset(config: Any) -> None:
    """The calibration set a text or VLM config names must exist (as shipped or as a path)."""
    dataset = getattr(config.spec, "dataset", None)
    if not isinstance(dataset, str):
        return
    if config.apiversion == "multimodal_vlm_modelslim_v1":
        from modelslim_vlm.dataset import load_vlm_dataset

        load_vlm_dataset(dataset, "Describe this image.")
    else:
        from modelslim_core.calib.text import resolve_dataset

        resolve_dataset(dataset)


def check(path: Path) -> Outcome:
    """What happens to the config at `path` before any model is loaded."""
    from modelslim_core.errors import ModelSlimError
    from modelslim_core.protocol.config import parse_quant_config
    from modelslim_core.protocol.v0_translate import V0, translate_v0
    from modelslim_core.protocol.yaml_io import load_yaml_file

    collector = _Collector()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(collector)
    root.setLevel(logging.INFO)
    try:
        raw = load_yaml_file(path)
        if isinstance(raw, dict) and raw.get("apiversion") == V0:
            raw = translate_v0(raw, str(path)).config
        config = parse_quant_config(raw, str(path))
        _resolve_dataset(config)
        export = set().union(*(item.export_types() for item in getattr(config.spec, "process", [])),
                             {rule.target for rule in getattr(config.spec, "linears", [])})  # modelslim_convert
    except ModelSlimError as exc:
        return Outcome("refused", str(exc))
    finally:
        root.removeHandler(collector)
        root.setLevel(previous)
    warnings = [r.getMessage() for r in collector.records if r.levelno >= logging.WARNING]
    log = "\n".join(r.getMessage() for r in collector.records)
    return Outcome("warn" if warnings else "ok", "\n".join(warnings), log, export)


def config_paths() -> list[Path]:
    return sorted(CONFIGS.glob("*.yaml"))
