"""The memory budget of a layer-wise run: a plan per piece, checked before each piece is loaded, and the
measured peak per piece next to it.

The plan counts bytes above the process baseline, which is measured (RSS when the first unit starts:
Python, torch, transformers, the weightless skeleton, tokenized calibration data), never guessed. A piece
streamed in a data-free stage holds its weight in the checkpoint's dtype, its quantized codes (one byte per
element at most, half a byte more while a 4-bit layout packs them) and a few float32 row blocks (a linear
no processor selects: its weight only); a calibrated unit or piece holds its weights in the checkpoint dtype, their codes and the running linear in float32 (three float32 copies where the checkpoint is float32),
GPTQ's Hessians, plus twice the activations (`calibrated_weights_need`).
A piece that cannot fit stops the run before it is loaded, with the piece and the bytes it needed, instead
of letting the kernel's OOM killer end the process without a word.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelslim_core.errors import MemoryBudgetError
from modelslim_core.quant import row_blocks
from modelslim_core.runtime.unit import Unit
from modelslim_runners.memory import host_available_bytes, peak_since_reset, reset_peak_rss, rss_bytes
from modelslim_runners.pieces import linear_weight_shapes, piece_bytes

logger = logging.getLogger(__name__)
GIB = 2**30
#: Float32 row blocks a streamed linear has alive at once, at most: the quantizer's float32 copy of a block and its
#: working buffer (which becomes the weight error, quant/int_affine.quantize_measured), and what the allocator keeps
#: of freed ones. Measured with 8 MiB blocks on DeepSeek-V3 dimensions (W4A8 per channel, tools/bench_scale.py):
#: 2.4 on a 576x7168 linear (3 blocks), 3 to 5 on 18432x7168 and 7168x16384 ones, up to 6.5 on the 2048x7168
#: routed experts (7 blocks; 8 before the statistics were taken in the quantizing pass). Planned: one per block
#: plus STREAM_SPARE_BLOCKS, at most this many.
STREAM_BLOCKS = 9
#: Freed row blocks the allocator may still hold beside a linear's live ones. Two fell short by ~2 MiB on a
#: 3072x2048 routed expert (3 blocks; tests/runners/test_streamed_plan.py, one run in several): three keep the
#: plan above measured.
STREAM_SPARE_BLOCKS = 3
#: What any piece may add besides its tensors (Python objects, the allocator's page rounding): up to 0.2 MiB
#: measured on norms and activation modules.
PIECE_SLACK = 2**20
#: Bytes per element of a streamed linear's quantized output: its codes (<= 1 byte) and, for 4-bit layouts, the
#: packed copy the saver writes (half a byte) while the codes are still held.
STREAM_CODE_BYTES = 1.5
#: Hessian-sized float32 matrices GPTQ holds next to the accumulated one while it quantizes a linear: the
#: accumulated sum is scaled, permuted and factorised in place, with one work buffer (quant/gptq.py). Measured on
#: a 4096-wide Hessian and a 512-row weight: 1.19 Hessians above the held sum, the float32 weight copy included
#: (the copying implementation before it: 5.14).
GPTQ_WORKING_HESSIANS = 1
UNLIMITED = 2**60
#: Weight dtypes a saver packs two codes to a byte (held next to the one-byte codes while it writes them).
PACKED_DTYPES = frozenset({"int4", "mxfp4"})
#: Weight dtypes held as one byte per element and written as they are.
ONE_BYTE_DTYPES = frozenset({"int8", "fp8_e4m3", "mxfp8"})

ASSUMPTIONS_STREAMED = ("a streamed linear holds its weight in the checkpoint dtype, its codes and packed codes "
                        f"(<= {STREAM_CODE_BYTES} bytes/element; excluded linears their weight only) and one float32 row "
                        f"block per block of the weight plus {STREAM_SPARE_BLOCKS} (at most {STREAM_BLOCKS}) of "
                        f"{row_blocks.BLOCK_BYTES // 2**20} MiB")
ASSUMPTIONS_UNIT = ("a whole unit holds its float32 weights 3x (float, quantized, dequantized simulation), the GPTQ "
                    f"Hessians (the widest {1 + GPTQ_WORKING_HESSIANS}x while it is factorised) + 2x activations")
ASSUMPTIONS_STORED = ("a unit holds its weights in the checkpoint dtype (twice where a processor rewrites them in "
                      "float32, e.g. smoothing), their codes (<= 1 byte/element), the running linear in float32 2x, "
                      f"the GPTQ Hessians (in x in float32 per linear, the widest {1 + GPTQ_WORKING_HESSIANS}x while "
                      "it is factorised) + 2x activations")
#: Processor types known to leave the stored weights alone (they add codes and statistics, never rewrite a weight).
NON_REWRITING = frozenset({"linear_quant", "dynamic_cache", "group"})


def gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def cgroup_limit_bytes() -> int | None:
    """The memory limit of this process's cgroup (v1 or v2), or None when there is none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        candidates = []
        if "memory" in controllers.split(","):
            candidates.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes")
        if controllers == "":
            candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max")
        for candidate in candidates:
            try:
                text = candidate.read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < UNLIMITED:
                return int(text)
    return None


def host_budget_bytes() -> int:
    """What this process can still use, plus what it holds: free RAM, capped by its cgroup's limit."""
    free = host_available_bytes() + rss_bytes()
    limit = cgroup_limit_bytes()
    return min(free, limit) if limit is not None else free


def streamed_piece_need(piece: Unit, storage_element: int, code_bytes: float | None = STREAM_CODE_BYTES) -> int:
    """Bytes above the baseline a streamed piece needs (see the module docstring): a linear's weight in the
    checkpoint dtype, its quantized output at `code_bytes` per element, and float32 row blocks (one per block of
    the weight plus STREAM_SPARE_BLOCKS, at most STREAM_BLOCKS; a weight smaller than a block counts its own float32 size). A
    linear no processor selects (`code_bytes` None: excluded, or kept float by the adapter) is loaded and saved
    as it is: its weight only."""
    weights = piece_bytes(piece, storage_element)
    if not piece.subtrees or code_bytes is None:
        return weights + PIECE_SLACK
    elements = weights // storage_element
    block = min(row_blocks.BLOCK_BYTES, 4 * elements)
    count = sum(len(list(row_blocks.row_blocks(rows, columns))) for rows, columns in linear_weight_shapes(piece))
    return weights + int(code_bytes * elements) + min(STREAM_BLOCKS, count + STREAM_SPARE_BLOCKS) * block + PIECE_SLACK


def streamed_code_bytes(qconfig) -> float:
    """Bytes per element of a streamed linear's quantized output: its one-byte codes (int8, FP8, MX elements),
    and for 4-bit formats the packed half byte the saver writes while the codes are still held."""
    dtype = getattr(getattr(qconfig, "weight", None), "dtype", None)
    if dtype in PACKED_DTYPES:
        return STREAM_CODE_BYTES
    return 1.0 if dtype in ONE_BYTE_DTYPES else STREAM_CODE_BYTES


def leaf_configs(configs) -> list:
    """The processor configs of a stage with groups flattened (a group's children in order)."""
    leaves = []
    for config in configs:
        children = getattr(config, "configs", None)
        leaves += leaf_configs(children) if children else [config]
    return leaves


def linear_code_bytes(configs, aliases) -> Callable[[str], float | None]:
    """By a linear's name: the bytes per element of its streamed quantized output, from the first processor of a
    stage that selects it (the one that quantizes it), or None when none does."""
    filters = [(selection.name_filter(aliases), streamed_code_bytes(getattr(selection, "qconfig", None)))
               for config in leaf_configs(configs) for _, selection in config.linear_selections()]

    def code_bytes(name: str) -> float | None:
        return next((size for selects, size in filters if selects(name)), None)

    return code_bytes


def rewrites_weights(configs) -> bool:
    """Whether some processor of a stage (also inside groups) may rewrite stored weights in float32 (smoothing
    folds, rotations, AWQ): every processor type but the known quantizing ones counts, to stay on the safe side."""
    for config in configs:
        if getattr(config, "type", None) not in NON_REWRITING:
            return True
        if rewrites_weights(getattr(config, "configs", None) or []):
            return True
    return False


def calibrated_weights_need(compute_bytes: int, compute_element: int, storage_element: int,
                            shapes: list[tuple[int, int]], hessians: bool, rewrites: bool) -> int:
    """Bytes the weights of a unit or piece take while it is calibrated (activations apart).

    Held in the compute dtype: 3x (float or calibrating, quantized, dequantized simulation). Held in a narrower
    storage dtype (runtime/storage.py): the stored weights (twice when a processor rewrites them: the rewritten
    ones are promoted to the compute dtype), their codes (<= 1 byte/element), the running linear in float32 twice
    (its upcast weight, the dequantized or GPTQ working copy). Measured on DeepSeek-V3 dimensions (bf16, w8a8
    static): a dense layer 2.10 GiB for 2.62 planned, 8 routed experts 0.86 GiB for 1.09. With GPTQ, every
    linear's Hessian (in x in float32) is held from the calibration forward until it is quantized, and the widest
    one GPTQ_WORKING_HESSIANS times more while it is factorised."""
    elements = compute_bytes // compute_element
    running = 2 * max((out * inp for out, inp in shapes), default=0) * compute_element
    gptq = 0
    if hessians and shapes:
        gptq = 4 * (sum(inp * inp for _, inp in shapes) + GPTQ_WORKING_HESSIANS * max(inp * inp for _, inp in shapes))
    if storage_element >= compute_element:
        return 3 * compute_bytes + gptq
    stored = elements * storage_element * (2 if rewrites else 1)
    return stored + elements + running + gptq


def kind_of(label: str) -> str:
    """A piece label with expert/layer numbers folded, so 768 expert linears report as one row."""
    return re.sub(r"(^|\.)\d+(?=\.|$)", r"\1*", label)


@dataclass
class PieceFigures:
    count: int = 0
    plan: int = 0
    measured: int = 0


@dataclass
class _OpenPiece:
    """A piece between enter and leave: what the process held when it started and its peak so far."""

    held: int
    peak: int


@dataclass
class MemoryBudget:
    """Plan and check of one stage: `limit` is the budget in bytes (None: report only, never refuse)."""

    limit: int | None
    baseline: int
    assumptions: str
    #: What the user can do when a piece does not fit.
    hint: str = "raise --max_memory (or free memory on the host)."
    figures: dict[str, PieceFigures] = field(default_factory=dict)
    _measuring: bool = False
    #: Pieces entered and not yet left, innermost last (a MoE trunk stays while its expert groups run).
    _open: list[_OpenPiece] = field(default_factory=list)

    @classmethod
    def start(cls, limit: int | None, assumptions: str, hint: str | None = None) -> MemoryBudget:
        budget = cls(limit, rss_bytes(), assumptions)
        budget.hint = hint or budget.hint
        return budget

    def check_plan(self, label: str, need: int) -> None:
        """Refuse up front when the largest piece cannot fit next to the baseline."""
        if self.limit is not None and self.baseline + need > self.limit:
            raise MemoryBudgetError(
                f"{label} needs ~{gib(need)} on top of the process baseline of {gib(self.baseline)} "
                f"(= {gib(self.baseline + need)}), more than the memory budget of {gib(self.limit)}; assumed: "
                f"{self.assumptions}.",
                self.hint,
            )

    def enter(self, label: str, need: int) -> None:
        """Before a piece is loaded: refuse if what the process holds now plus the piece's need exceed the budget."""
        held = rss_bytes()
        if self.limit is not None and held + need > self.limit:
            raise MemoryBudgetError(
                f"{label} needs ~{gib(need)} while the process already holds {gib(held)}; together they exceed "
                f"the memory budget of {gib(self.limit)} (assumed: {self.assumptions}).",
                "raise --max_memory; if the process holds much more than its baseline of "
                f"{gib(self.baseline)}, please report it with MSMODELSLIM_LOG_LEVEL=debug output.",
            )
        self._fold_peak()
        self._open.append(_OpenPiece(held, held))
        self._measuring = reset_peak_rss()

    def _fold_peak(self) -> None:
        """Credit the peak since the last reset to the innermost open piece: an outer piece (a MoE trunk) is
        measured while it runs on its own, not while the inner pieces it holds run on their own plans."""
        if self._open:
            piece = self._open[-1]
            piece.peak = max(piece.peak, peak_since_reset() if self._measuring else rss_bytes())

    def leave(self, label: str, need: int) -> None:
        """Record the piece's plan and its measured peak above what the process held when it started (the
        quantity `enter` checks the plan against)."""
        self._fold_peak()
        piece = self._open.pop() if self._open else _OpenPiece(self.baseline, rss_bytes())
        if self._open:  # the outer piece goes on from here
            self._measuring = reset_peak_rss()
        measured = max(0, piece.peak - piece.held)
        figures = self.figures.setdefault(kind_of(label), PieceFigures())
        figures.count += 1
        figures.plan = max(figures.plan, need)
        figures.measured = max(figures.measured, measured)

    def log_plan(self, description: str, largest: str, need: int) -> None:
        limit = gib(self.limit) if self.limit is not None else "none (--max_memory not given)"
        logger.info("Memory plan (%s): process baseline %s (measured: Python, torch, transformers, skeleton, "
                    "calibration data); largest piece %s needs ~%s, expected peak ~%s; budget %s. Assumed: %s.",
                    description, gib(self.baseline), largest, gib(need), gib(self.baseline + need), limit,
                    self.assumptions)

    def report_lines(self, limit: int | None = None) -> list[str]:
        """Plan vs measured (bytes above what the process held at the piece's start) per kind of piece, largest plan first (`limit` rows)."""
        rows = sorted(self.figures.items(), key=lambda item: (-item[1].plan, -item[1].measured))[:limit]
        return [f"{kind} (x{f.count}): plan {gib(f.plan)}, measured {gib(f.measured)} above what the process "
                f"held when it started" for kind, f in rows]

    def as_json(self) -> dict:
        return {"baseline_bytes": self.baseline, "limit_bytes": self.limit, "assumptions": self.assumptions,
                "pieces": {kind: {"count": f.count, "plan_bytes": f.plan, "measured_bytes": f.measured}
                           for kind, f in self.figures.items()}}
