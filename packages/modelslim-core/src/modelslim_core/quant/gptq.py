"""GPTQ: integer weights that minimise the layer's output error on its calibration inputs.

With H = (2/n)·Σ xᵀx over the layer's calibration tokens, GPTQ quantizes one input column at a time and
spreads each column's rounding error over the columns not yet quantized, using the upper Cholesky factor
U of H⁻¹ (error e = (w − q)/U_jj, update W[:, j:] −= e ⊗ U[j, j:]). Columns are processed in blocks of
`ext.block_size` (128): inside a block the update is a rank-1 step per column; the block's accumulated
error reaches the later columns in one matrix product.

Details that matter:
- Dead inputs (H_jj = 0: the column never saw a non-zero input) get H_jj = 1 and a zero weight column.
- Damping adds `ext.percdamp` (0.01) · mean(diag H) to the diagonal before the Cholesky factorisations;
  if H is still not positive definite the damping is multiplied by 10 (up to 4 times, with a warning).
- per_channel: each row's scale/offset come once from the (dead-column-zeroed) weight's range.
  per_group: a group's scale/offset are computed when the loop reaches the group's first column, from the
  group's weights as updated by every column quantized so far (the current block's pending update is
  applied to the group's columns first). The reference uses only the updates of earlier blocks there,
  which makes its result depend on block_size; here block_size only reorders the arithmetic.
- `ext.act_order` (our key, default true; the reference has no act-order): columns are quantized in order
  of decreasing H_jj, so the inputs that matter most are rounded first, while the most columns are left to
  absorb their error. Groups then stay the layout's contiguous input ranges ("static groups"): every
  group's parameters are computed up front from the original weights, and each column uses the
  parameters of the group it belongs to in the saved layout, so the export is unchanged. It is the
  default because real models have a few input channels with most of the energy: on SmolLM2-135M at
  int4 group 64 it is what separates us from llm-compressor's default (static act-order); see
  tools/bench_real_model.py. `act_order: false` gives the reference's column order.
- `ext.clip_search` (default true at int4): group (or channel) parameters come from a clipping search
  weighted by H_jj (`clip_search.py`) instead of each row's range. At int4 one large weight stretches a
  group's step for all the others; on SmolLM2-135M at group 64 the search cuts the layer-output error by
  ~12% and is what puts our W4A16 below llm-compressor's (whose default observer takes the plain range);
  see tools/bench_real_model.py and README, "Real pretrained models against llm-compressor". At int8 the
  step is already fine and the default stays the plain range.
- `ext.full_range` (default true at int4): symmetric grids span all 2^b codes, scale = max|w|/7.5 rather
  than /7 (`int_affine.compute_qparams`), as llm-compressor's observers do. The 7% finer step cuts every
  column's rounding error; the one positive extreme per group that rounds to 7.5 is clipped to 7 and its
  error is spread like any other. On SmolLM2-135M at int4 group 64 it is the difference that remained
  after act-order (tools/bench_real_model.py; README, "Real pretrained models against llm-compressor").
- Everything is float32; the Hessian is accumulated as a running float32 sum of xᵀx. Memory: the widest
  Hessian is the one to count (3.3 GiB at a 29568-wide input). The accumulated sum is scaled in place and
  handed to GPTQ (`take_hessian`), permuted in place for act-order, and factorised with one more buffer of
  its size (`inverse_hessian_factor`): twice its size at the peak, then once during the column loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from modelslim_core.errors import QuantizationError
from modelslim_core.quant.base import WeightQuantizer
from modelslim_core.quant.clip_search import clip_search_qparams
from modelslim_core.quant.int_affine import compute_qparams, qrange
from modelslim_core.quant.row_blocks import row_blocks
from modelslim_core.quant.schemes import BITS
from modelslim_core.quant.weight_formats import IntWeight

logger = logging.getLogger(__name__)

DEFAULT_PERCDAMP = 0.01
DEFAULT_BLOCK_SIZE = 128
DEFAULT_ACT_ORDER = True
#: Bit widths whose GPTQ grids come from the clipping search by default (`clip_search`).
CLIP_SEARCH_BITS = frozenset({4})
#: Bit widths whose symmetric GPTQ grids span every code by default (`full_range`): measured at int4 (README,
#: "Real pretrained models against llm-compressor"); at int8 the step changes by 0.4% and the ascendv1 int8
#: convention (max|x|/127) stays.
FULL_RANGE_BITS = frozenset({4})
_DAMPING_RETRIES = 4


#: Column blocks of a Gram product; widths from this size up are split so only the upper blocks are computed.
#: 512: a 576-wide input (SmolLM2's hidden size) takes 0.67x the CPU time of the full product (measured, one
#: thread, 14,563 rows); below it the blocks get too thin to pay off.
GRAM_BLOCKS = 4
GRAM_SPLIT_FROM = 512


def gram(rows: torch.Tensor) -> torch.Tensor:
    """rowsᵀ·rows ([n, d] -> [d, d]). The product is symmetric, so for wide inputs only the blocks on and above
    the diagonal are multiplied (5/8 of the work with 4 blocks) and the rest is mirrored. Each entry is still
    one dot product over all n rows, so the sum is bit-identical to the full product's on MKL (tested)."""
    width = rows.shape[1]
    if width < GRAM_SPLIT_FROM:
        return rows.T @ rows
    edges = [width * i // GRAM_BLOCKS for i in range(GRAM_BLOCKS + 1)]
    out = torch.empty(width, width, dtype=rows.dtype, device=rows.device)
    for first, last in zip(edges, edges[1:]):
        upper = rows[:, first:last].T @ rows[:, first:]
        out[first:last, first:] = upper
        out[last:, first:last] = upper[:, last - first :].T
    return out


#: Calibration rows an input stream buffers before one Gram product: one product over thousands of rows runs
#: 1.4-2.2x faster on a CPU than one per 256-token sample. Capped in bytes, so wide inputs flush sooner.
GRAM_BUFFER_BYTES = 32 * 2**20


class _RowStream:
    """One input stream of a unit (what q/k/v, or gate/up, or o_proj read): Σ xᵀx so far, and the rows seen
    since the last product. It keeps a reference to the latest raw input, so that tensor's identity cannot be
    reused while the stream lives; an in-place change of it (its version) is seen as a new input."""

    def __init__(self, width: int, device: torch.device):
        self.total: torch.Tensor | None = torch.zeros(width, width, dtype=torch.float32, device=device)
        self.pending: list[torch.Tensor] = []
        self.pending_bytes = 0
        self.key: torch.Tensor | None = None
        self.version = -1
        #: ids of the accumulators reading this stream (see `HessianAccumulator.take_hessian`).
        self.readers: set[int] = set()

    def holds(self, key: torch.Tensor) -> bool:
        return key is self.key and key._version == self.version

    def add(self, key: torch.Tensor | None, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).float()
        self.pending.append(rows)
        self.pending_bytes += rows.numel() * rows.element_size()
        self.key, self.version = key, (-1 if key is None else key._version)
        if self.pending_bytes >= GRAM_BUFFER_BYTES:
            self.flush()

    def flush(self) -> torch.Tensor:
        if self.total is None:
            raise RuntimeError("this input stream's Hessian was already handed to GPTQ (take_hessian)")
        if self.pending:
            rows = self.pending[0] if len(self.pending) == 1 else torch.cat(self.pending)
            self.total += gram(rows)
            self.pending, self.pending_bytes = [], 0
        return self.total


class GramCache:
    """The input streams of one unit's linears, so linears reading the very same tensor share one product.

    q/k/v (and gate/up) receive one and the same input object; with one activation quantizer config their
    quantized inputs are equal too, so the first of them adds the rows to its stream and the others find the
    stream already holding that input and join it.
    """

    def __init__(self) -> None:
        self._streams: list[_RowStream] = []

    def stream_for(self, key: torch.Tensor, x: torch.Tensor, current: _RowStream | None) -> _RowStream:
        for stream in self._streams:
            if stream.holds(key):
                return stream
        if current is None:
            current = _RowStream(x.shape[-1], x.device)
            self._streams.append(current)
        current.add(key, x)
        return current

    def clear(self) -> None:
        self._streams = []


class HessianAccumulator:
    """Σ xᵀx of a linear's inputs over every calibration token, in float32 on the inputs' device."""

    def __init__(self, in_features: int, device: torch.device, cache: GramCache | None = None):
        self.tokens = 0
        self.cache = cache
        self._stream: _RowStream | None = None
        self._width, self._device = in_features, device

    def shares_inputs_with(self, other: HessianAccumulator) -> bool:
        """Whether both accumulated the very same input stream (then their Hessians are one and the same)."""
        return self._stream is not None and self._stream is other._stream and self.tokens == other.tokens

    def update(self, x: torch.Tensor, key: torch.Tensor | None = None) -> None:
        """Add the rows of x; `key` is the raw input x was derived from, to share the product through the
        cache (an accumulator is always called with a key, or always without)."""
        self.tokens += x.numel() // x.shape[-1]
        previous = self._stream
        if self.cache is not None and key is not None:
            self._stream = self.cache.stream_for(key, x, self._stream)
        else:
            if self._stream is None:
                self._stream = _RowStream(self._width, self._device)
            self._stream.add(None, x)
        if self._stream is not previous:
            if previous is not None:
                previous.readers.discard(id(self))
            self._stream.readers.add(id(self))

    @property
    def sum(self) -> torch.Tensor:
        """Σ xᵀx over every row added so far (shared with the linears reading the same input)."""
        if self._stream is None:
            return torch.zeros(self._width, self._width, dtype=torch.float32, device=self._device)
        return self._stream.flush()

    def hessian(self) -> torch.Tensor:
        """H = (2/n) Σ xᵀx (the scale does not change GPTQ's result; it is the textbook definition)."""
        return self.sum * (2.0 / max(self.tokens, 1))

    def take_hessian(self, *sharing: HessianAccumulator) -> torch.Tensor:
        """H for the one GPTQ solve that consumes it and may overwrite it (`sharing`: the other
        accumulators of the same stream solved in it). When no other reader of the stream is left, the running
        sum is scaled in place and handed over, so the widest Hessian (3.3 GiB at 72B's 29568-wide down_proj)
        is never copied; the stream is spent afterwards. Otherwise H is a fresh copy, as `hessian()`."""
        stream = self._stream
        if stream is None:
            return self.hessian()
        total = stream.flush()
        for accumulator in (self, *sharing):
            stream.readers.discard(id(accumulator))
        if stream.readers:
            return total * (2.0 / max(self.tokens, 1))
        stream.total = None
        return total.mul_(2.0 / max(self.tokens, 1))


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float, name: str) -> torch.Tensor:
    """Upper Cholesky factor of (H + damping·I)⁻¹, with growing damping if H is not positive definite.

    One H-sized buffer besides H: the Cholesky factor, its inverse and the inverse's upper factor are each
    computed in place in a column-major buffer (LAPACK's layout, so torch makes no copy of its own). H is only
    touched on its diagonal (damped for the factorisation, then restored), so a retry starts from it. The
    numbers are those of the out-of-place calls: the same LAPACK routines run on the same inputs."""
    diagonal = hessian.diagonal().clone()
    damp = percdamp * diagonal.mean()
    width = hessian.shape[0]
    work = torch.empty(width, width, dtype=hessian.dtype, device=hessian.device).T  # column-major
    info = torch.zeros((), dtype=torch.int32, device=hessian.device)
    for attempt in range(_DAMPING_RETRIES + 1):
        hessian.diagonal().add_(damp)
        torch.linalg.cholesky_ex(hessian, out=(work, info))  # reads H's lower triangle
        hessian.diagonal().copy_(diagonal)
        if info == 0:
            torch.cholesky_inverse(work, out=work)
            torch.linalg.cholesky_ex(work, upper=True, out=(work, info))
            if info == 0:
                return work
        if attempt < _DAMPING_RETRIES:
            logger.warning("%s: the calibration Hessian is not positive definite; retrying GPTQ with 10x damping.", name)
            damp = damp * 10
    raise QuantizationError(
        f"{name}: GPTQ cannot factorise the Hessian of its calibration inputs even with {10**_DAMPING_RETRIES}x "
        "the configured damping (the inputs are degenerate or contain NaN/Inf).",
        "raise ext.percdamp, use more calibration data, or quantize this layer with minmax/ssz.",
    )


def permute_columns_(matrix: torch.Tensor, order: torch.Tensor) -> None:
    """matrix ← matrix[:, order], a block of rows at a time (one row block of extra memory, not a copy)."""
    for start, stop in row_blocks(*matrix.shape):
        matrix[start:stop] = matrix[start:stop][:, order]


def permute_rows_(matrix: torch.Tensor, order: torch.Tensor) -> None:
    """matrix ← matrix[order] by following the permutation's cycles (one row of extra memory, not a copy)."""
    sources = order.tolist()
    placed = [False] * len(sources)
    for first in range(len(sources)):
        if placed[first] or sources[first] == first:
            continue
        saved = matrix[first].clone()
        row = first
        while True:
            placed[row] = True
            source = sources[row]
            if source == first:
                matrix[row] = saved
                break
            matrix[row] = matrix[source]
            row = source


class _Grid:
    """Per-row integer grids: per channel (fixed) or per group (set when a group starts, or all up front).

    `group_of[j]` is the group of the j-th column in processing order: its saved column's group, which
    differs from j // group_size when act-order permutes the columns.
    """

    def __init__(self, out: int, in_features: int, bits: int, symmetric: bool, group_size: int, device: torch.device,
                 importance: torch.Tensor | None = None, full_range: bool = False):
        self.bits, self.symmetric, self.full_range = bits, symmetric, full_range
        self.group_size = group_size or in_features
        #: Per input column (saved order), the Hessian diagonal: with it, group parameters come from the clipping
        #: search (`clip_search.py`); without it, from each row's range.
        self.importance = importance
        groups = in_features // self.group_size
        self.scale = torch.zeros(out, groups, device=device)
        self.offset = torch.zeros(out, groups, device=device)
        self.group_of = [column // self.group_size for column in range(in_features)]
        self.static = False

    def set_static(self, weight: torch.Tensor, order: torch.Tensor) -> None:
        """Every group's parameters from `weight` (original column order) now, all groups in one set of tensor
        operations; columns processed in `order`."""
        groups = self.scale.shape[1]
        grouped = weight.reshape(weight.shape[0], groups, self.group_size)
        if self.importance is None:
            scale, offset = compute_qparams(grouped.amin(dim=-1), grouped.amax(dim=-1), self.bits, self.symmetric,
                                            self.full_range)
        else:
            scale, offset = clip_search_qparams(grouped, self.bits, self.symmetric,
                                                self.importance.reshape(groups, self.group_size), self.full_range)
        self.scale.copy_(scale)
        self.offset.copy_(offset)
        self.group_of = (order // self.group_size).tolist()
        self.static = True

    def start_group(self, weight_columns: torch.Tensor, group: int) -> None:
        if self.importance is None:
            scale, offset = compute_qparams(weight_columns.amin(dim=1), weight_columns.amax(dim=1), self.bits,
                                            self.symmetric, self.full_range)
        else:
            first = group * self.group_size
            importance = self.importance[first : first + weight_columns.shape[1]]
            scale, offset = clip_search_qparams(weight_columns, self.bits, self.symmetric, importance, self.full_range)
        self.scale[:, group], self.offset[:, group] = scale, offset

    def quantize(self, column: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, dequantized values) of one weight column."""
        lo, hi = qrange(self.bits)
        scale, offset = self.scale[:, group], self.offset[:, group]
        codes = torch.clamp(torch.round(column / scale + offset), lo, hi)
        return codes, (codes - offset) * scale


def _group_columns(
    block: torch.Tensor, w: torch.Tensor, errors: torch.Tensor, u: torch.Tensor, start: int, i: int, size: int
) -> torch.Tensor:
    """The `size` columns starting at block column i, as updated by every column quantized so far: the block's
    own columns carry their intra-block updates; later blocks get this block's pending update applied here."""
    end = start + block.shape[1]
    inside = block[:, i : i + size]
    missing = size - inside.shape[1]
    if missing <= 0:
        return inside
    later = w[:, end : end + missing] - errors[:, :i] @ u[start : start + i, end : end + missing]
    return torch.cat((inside, later), dim=1)


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    symmetric: bool,
    group_size: int = 0,
    percdamp: float = DEFAULT_PERCDAMP,
    block_size: int = DEFAULT_BLOCK_SIZE,
    name: str = "weight",
    act_order: bool = DEFAULT_ACT_ORDER,
    clip_search: bool | None = None,
    full_range: bool | None = None,
    overwrite_weight: bool = False,
    overwrite_hessian: bool = False,
) -> IntWeight:
    """GPTQ-quantized IntWeight of a [out, in] weight given the Hessian [in, in] of its inputs
    (`clip_search` / `full_range` None: true for the bit widths in CLIP_SEARCH_BITS / FULL_RANGE_BITS).
    `overwrite_weight` / `overwrite_hessian`: a float32 argument is the caller's to give away and is worked on
    in place instead of copied (the Hessian of a 29568-wide input is 3.3 GiB)."""
    if clip_search is None:
        clip_search = bits in CLIP_SEARCH_BITS
    if full_range is None:
        full_range = bits in FULL_RANGE_BITS
    # One working copy of each whatever the input dtype, unless the caller hands its own over (`overwrite_*`).
    w = weight.detach().to(torch.float32, copy=not (overwrite_weight and weight.dtype == torch.float32))
    h = hessian.detach().to(torch.float32, copy=not (overwrite_hessian and hessian.dtype == torch.float32))
    out, in_features = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    grid = _Grid(out, in_features, bits, symmetric, group_size, w.device, torch.diag(h) if clip_search else None,
                 full_range)
    order = None
    if act_order:
        order = torch.argsort(torch.diag(h), descending=True, stable=True)
        grid.set_static(w, order)
        permute_columns_(w, order)
        permute_columns_(h, order)
        permute_rows_(h, order)
    u = inverse_hessian_factor(h, percdamp, name)
    h.T.copy_(u)  # the factor takes H's place (same column-major layout), so the column loop holds one of them
    u = h.T
    codes = torch.zeros(w.shape, dtype=torch.int8, device=w.device)  # a quarter of a float32 buffer
    for start in range(0, in_features, block_size):
        end = min(start + block_size, in_features)
        block = w[:, start:end].clone()
        errors = torch.zeros_like(block)
        with _one_intra_op_thread():
            _quantize_block(block, errors, w, u, codes, grid, start)
        w[:, end:] -= errors @ u[start:end, end:]
    if order is not None:
        codes = codes[:, torch.argsort(order)]  # back to the saved column order
    return IntWeight(codes, grid.scale, grid.offset, bits, group_size)


@contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """The column loop is hundreds of small, memory-bound ops: intra-op threads add only fork/join cost
    (measured 3-7x slower with 2 threads on a busy 2-core machine), so it runs on one; the block-level
    matrix products outside it keep every thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: Columns per inner step of a block: a column's error is spread by rank-1 updates only over its own small
#: step (a cache-sized [out, 16] slice); each finished step reaches the rest of the block in one matrix product.
#: The two levels only reorder the arithmetic of plain column-by-column GPTQ, and cut its time severalfold.
SUB_BLOCK = 16


def _quantize_block(
    block: torch.Tensor, errors: torch.Tensor, w: torch.Tensor, u: torch.Tensor, codes: torch.Tensor, grid: _Grid, start: int
) -> None:
    """Quantize the columns of one block in order, spreading each column's error over the rest of the block.

    Invariant at column i: every block column >= i carries the updates of every column < i (columns up to
    `step_end` through rank-1 updates, later ones through `_spread` when a step ends or a group starts)."""
    width = block.shape[1]
    end = start + width
    spread_from, step_end = 0, min(SUB_BLOCK, width)
    for i in range(width):
        if i == step_end:
            _spread(block, errors, u, start, spread_from, i, step_end)
            spread_from, step_end = i, min(i + SUB_BLOCK, width)
        column = start + i
        group = grid.group_of[column]
        if not grid.static and column % grid.group_size == 0:
            _spread(block, errors, u, start, spread_from, i, step_end)  # the group's columns, fully updated
            spread_from = i
            grid.start_group(_group_columns(block, w, errors, u, start, i, grid.group_size), group)
        codes[:, column], quantized = grid.quantize(block[:, i], group)
        error = (block[:, i] - quantized) / u[column, column]
        block[:, i + 1 : step_end].addr_(error, u[column, column + 1 : start + step_end], alpha=-1)
        errors[:, i] = error


def _spread(block: torch.Tensor, errors: torch.Tensor, u: torch.Tensor, start: int, first: int, last: int,
            beyond: int) -> None:
    """Apply the errors of block columns [first, last) to the block columns from `beyond` on (the ones their
    rank-1 updates did not reach), in one matrix product."""
    if first >= last or beyond >= block.shape[1]:
        return
    rows = slice(start + first, start + last)
    block[:, beyond:].addmm_(errors[:, first:last], u[rows, start + beyond : start + block.shape[1]], alpha=-1)


class GPTQWeight(WeightQuantizer):
    """gptq for int8/int4, per channel or per group, symmetric or asymmetric."""

    needs_data = True

    def quantize_together(self, weights: list[torch.Tensor], hessian: torch.Tensor, names: list[str],
                          overwrite_hessian: bool = False) -> list[IntWeight]:
        """GPTQ treats every output row on its own with the same factor, so stacking the linears' rows gives
        each exactly its own result, with one factorisation and one column loop instead of one per linear.
        The rows are upcast straight into the one float32 buffer GPTQ works in."""
        stacked = torch.empty(sum(w.shape[0] for w in weights), weights[0].shape[1], dtype=torch.float32,
                              device=weights[0].device)
        first = 0
        for weight in weights:
            stacked[first : first + weight.shape[0]].copy_(weight.detach())
            first += weight.shape[0]
        stacked = self.quantize(stacked, hessian, " + ".join(names), overwrite_weight=True,
                                overwrite_hessian=overwrite_hessian)
        rows = [w.shape[0] for w in weights]
        return [IntWeight(codes, scale, offset, stacked.bits, stacked.group_size) for codes, scale, offset in
                zip(stacked.codes.split(rows), stacked.scale.split(rows), stacked.offset.split(rows), strict=True)]

    def quantize(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, name: str = "",
                 overwrite_weight: bool = False, overwrite_hessian: bool = False) -> nn.Module:
        """`overwrite_weight` / `overwrite_hessian`: see gptq_quantize."""
        if hessian is None:
            raise ValueError("GPTQ needs the Hessian of the layer's calibration inputs")
        return gptq_quantize(
            weight,
            hessian,
            BITS[self.qconfig.dtype],
            self.qconfig.symmetric,
            group_size=self.group_size,
            percdamp=self.qconfig.ext.get("percdamp", DEFAULT_PERCDAMP),
            block_size=self.qconfig.ext.get("block_size", DEFAULT_BLOCK_SIZE),
            name=name or "weight",
            act_order=self.qconfig.ext.get("act_order", DEFAULT_ACT_ORDER),
            clip_search=self.qconfig.ext.get("clip_search"),
            full_range=self.qconfig.ext.get("full_range"),
            overwrite_weight=overwrite_weight,
            overwrite_hessian=overwrite_hessian,
        )
