"""Check a saved checkpoint against the serving engine it is for (or the one named)."""

from __future__ import annotations

from pathlib import Path

from modelslim.engines import mindie_sd, vllm_ascend
from modelslim.engines.checkpoint import EngineCheckpoint
from modelslim.engines.problems import Problem

#: `--engine` choices -> (engine module, platform).
ENGINES = {"vllm-ascend": (vllm_ascend, "default"), "vllm-ascend-310p": (vllm_ascend, "310p"),
           "mindie-sd": (mindie_sd, None)}


def default_engine(checkpoint: EngineCheckpoint) -> str:
    """MindIE-SD for mindie_format_saver output, vLLM-Ascend for ascendv1 output."""
    return "mindie-sd" if checkpoint.layout == "mindie" else "vllm-ascend"


def check_saved(path: str | Path, engine: str | None = None) -> list[Problem]:
    """Every reason `engine` (default: the one the layout is for) would not serve the checkpoint at `path`."""
    checkpoint = EngineCheckpoint.open(path)
    module, platform = ENGINES[engine or default_engine(checkpoint)]
    return module.check(checkpoint, platform) if platform else module.check(checkpoint)
