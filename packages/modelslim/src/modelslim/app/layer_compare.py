"""Per-layer error of each saved kernel against its float original, compared like with like.

A saved kernel does not see the float model's input. Smoothing divides a linear's input by per-channel
scales (folded into the norm or the previous linear) and multiplies its weight by them; QuaRot rotates the
residual stream (and with it the inputs of q/k/v/gate/up and the outputs of o/down); smoothing an
o_proj/down_proj also rescales the outputs of v_proj/up_proj. Feeding a kernel the float input, or reading
its output as if it were in the float basis, reports the change of basis as quantization error (errors of
0.4-13 on a smoothed checkpoint whose perplexity is unchanged).

So each linear is compared in the quantized model's own basis:

1. Calibrate the frame: on a few samples, run both models and fit, per linear and per channel, the map from
   the float input to the input the kernel actually receives (`x_q ≈ (x_f R)·t + b`) and from the float
   output to the kernel's output (`y_q ≈ (y_f R')·o`). R, R' are the identity or the checkpoint's saved
   global rotation (either side), whichever fits best; t, b, o are per-channel least squares. These are the
   exact forms smoothing and rotation produce, with one scale per channel, so the fit cannot soak up the
   quantization error (it has no freedom beyond a per-channel gain). Where that leaves most of the signal
   unexplained (QuaRot's per-head rotation of v_proj outputs / o_proj inputs is not saved), the best
   orthogonal map is fitted instead (Procrustes).
2. Measure: run the float model again; each kernel is fed `(x_f R)·t + b` (its online rotations apply as in
   serving) and compared with `(y_f R')·o`, on about LAYER_TOKENS tokens of each sample (every k-th).

Without smoothing or rotation the fit is the identity and this is the plain comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from modelslim_core.rotation.export import GLOBAL_ROTATION_KEY, OPTIONAL_FILE

#: Samples and tokens per sample used to fit the frames (per-channel fits need few thousand tokens at most).
FIT_SAMPLES = 8
FIT_TOKENS = 256
#: Fewest fit tokens the frames are fitted on when the eval has the samples (per-channel scales settle on a few
#: hundred; an orthogonal map on a small model's o_proj needs more tokens than its features).
FIT_MIN_TOKENS = 4 * FIT_TOKENS
#: Tokens per sample each kernel is measured on (every k-th, spread over the sample): a per-linear error
#: settles within a few thousand tokens, and measuring every token would run every kernel a second time over
#: the whole eval set (eval would cost ~2.8 float forwards instead of ~2).
LAYER_TOKENS = 256
#: Tokens each kernel is measured on over the whole eval: the per-sample share shrinks as samples grow, so a
#: 48-sample eval measures ~2k tokens per linear instead of ~10k (the measuring hooks were ~0.9 float forwards
#: of the demo's 48-sample eval; the figures settle well within this many tokens).
MEASURE_TOKENS = 2048


def measured_rows_per_sample(measured_samples: int) -> int:
    """Tokens measured per sample when `measured_samples` samples share MEASURE_TOKENS (at most LAYER_TOKENS
    each, at least 16 so a sample's every-k-th spread still covers early and late positions)."""
    share = -(-MEASURE_TOKENS // max(measured_samples, 1))
    return max(16, min(LAYER_TOKENS, share))


@dataclass
class LayerError:
    name: str
    tag: str
    rel_l2: float
    cosine: float


def saved_global_rotation(quant_path: Path) -> torch.Tensor | None:
    """The QuaRot global rotation a checkpoint ships in `optional/`, if any."""
    path = Path(quant_path) / OPTIONAL_FILE
    if not path.is_file():
        return None
    from safetensors.torch import load_file  # noqa: PLC0415

    return load_file(str(path)).get(GLOBAL_ROTATION_KEY)


class _ErrorStats:
    """Running sums for one linear: squared error, squared reference, per-token cosines."""

    def __init__(self, tag: str):
        self.tag = tag
        self.err = 0.0
        self.ref = 0.0
        self.cos = 0.0
        self.tokens = 0

    def update(self, quantized: torch.Tensor, reference: torch.Tensor) -> None:
        # per-token sums in float32 (a few hundred to thousands of terms: relative error ~1e-7, far below the
        # table's 5-6 printed digits), accumulated across tokens in float64
        q, r = quantized.float().flatten(0, -2), reference.float().flatten(0, -2)
        diff = q - r
        q_sq, r_sq = _rowdot(q, q), _rowdot(r, r)
        self.err += _rowdot(diff, diff).double().sum().item()
        self.ref += r_sq.double().sum().item()
        # cosine per token as F.cosine_similarity (eps 1e-8 on each norm), without its broadcasting copies
        eps = 1e-8
        norms = q_sq.sqrt().clamp_min(eps) * r_sq.sqrt().clamp_min(eps)
        self.cos += (_rowdot(q, r) / norms).double().sum().item()
        self.tokens += r.shape[0]

    def result(self, name: str) -> LayerError:
        return LayerError(name, self.tag, math.sqrt(self.err / max(self.ref, 1e-30)), self.cos / max(self.tokens, 1))


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_j a_ij·b_ij per row, without materialising the product."""
    return torch.linalg.vecdot(a, b, dim=-1)


class _ChannelFit:
    """Least-squares sums for `target ≈ slope·source (+ intercept)`, one slope per channel."""

    def __init__(self) -> None:
        self.n = 0
        self.sums: dict[str, torch.Tensor] = {}

    def update(self, source: torch.Tensor, target: torch.Tensor) -> None:
        self.add(*_fit_terms(source, target))

    def add(self, terms: dict[str, torch.Tensor], rows: int) -> None:
        """Add one update's sums (from _fit_terms; siblings fed the same tensors add the same terms)."""
        for key, value in terms.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.n += rows

    def affine(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Slope, intercept and residual sum of squares of `y ≈ slope·x + intercept`."""
        s, n = self.sums, max(self.n, 1)
        sxx = s["xx"] - s["x"] ** 2 / n
        sxy = s["xy"] - s["x"] * s["y"] / n
        syy = s["yy"] - s["y"] ** 2 / n
        flat = sxx <= 1e-12 * s["xx"].clamp_min(1e-30)
        slope = torch.where(flat, torch.ones_like(sxx), sxy / sxx.clamp_min(1e-30))
        intercept = (s["y"] - slope * s["x"]) / n
        residual = torch.where(flat, syy, syy - sxy**2 / sxx.clamp_min(1e-30))
        return slope, intercept, residual.clamp_min(0).sum().item()

    def scale(self) -> tuple[torch.Tensor, float]:
        """Slope and residual sum of squares of `y ≈ slope·x` (no intercept: a bias error stays an error)."""
        s = self.sums
        flat = s["xx"] <= 1e-30
        slope = torch.where(flat, torch.ones_like(s["xx"]), s["xy"] / s["xx"].clamp_min(1e-30))
        residual = torch.where(flat, s["yy"], s["yy"] - s["xy"] ** 2 / s["xx"].clamp_min(1e-30))
        return slope, residual.clamp_min(0).sum().item()


def _fit_terms(source: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, torch.Tensor], int]:
    """The per-channel sums one (source, target) batch adds to a _ChannelFit, and its row count."""
    x, y = source.double(), target.double()
    return {"x": x.sum(0), "y": y.sum(0), "xx": (x * x).sum(0), "xy": (x * y).sum(0), "yy": (y * y).sum(0)}, x.shape[0]


@dataclass
class _Frame:
    """How one linear's float input and output map into the quantized model's basis."""

    in_rotation: torch.Tensor | None
    in_scale: torch.Tensor
    in_shift: torch.Tensor
    out_rotation: torch.Tensor | None
    out_scale: torch.Tensor

    def kernel_input(self, x: torch.Tensor) -> torch.Tensor:
        rotated = x.double() if self.in_rotation is None else x.double() @ self.in_rotation
        return (rotated * self.in_scale + self.in_shift).to(x.dtype)

    def reference_output(self, y: torch.Tensor) -> torch.Tensor:
        rotated = y.double() if self.out_rotation is None else y.double() @ self.out_rotation
        return rotated * self.out_scale

    def on(self, device: torch.device) -> "_Frame":
        """This frame's tensors on `device`."""
        return _Frame(*(None if t is None else t.to(device) for t in vars(self).values()))


@contextmanager
def _captured(modules: dict[str, nn.Module], store: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]) -> Iterator[None]:
    """Record (input, output) of every call of each module; the input before any pre-hook (online rotation)."""
    pending: dict[str, torch.Tensor] = {}

    def before(name: str):
        def hook(_module, args):
            pending[name] = args[0].detach()
        return hook

    def after(name: str):
        def hook(_module, _args, output):
            store.setdefault(name, []).append((pending.pop(name), output.detach()))
        return hook

    handles = [m.register_forward_pre_hook(before(n), prepend=True) for n, m in modules.items()]
    handles += [m.register_forward_hook(after(n)) for n, m in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _rows(calls: list[tuple[torch.Tensor, torch.Tensor]], index: int, limit: int) -> torch.Tensor:
    """The first `limit` rows of the calls' inputs (index 0) or outputs (1), cut before they are joined (a
    call holds the whole sample; copying it all to keep FIT_TOKENS rows was most of the fit's cost)."""
    parts, count = [], 0
    for call in calls:
        if count >= limit:
            break
        part = call[index].flatten(0, -2)[: limit - count]
        parts.append(part)
        count += part.shape[0]
    return torch.cat(parts) if len(parts) != 1 else parts[0]


def _candidates(rotation: torch.Tensor | None, features: int) -> list[torch.Tensor | None]:
    if rotation is None or rotation.shape[0] != features:
        return [None]
    rotation = rotation.double()
    return [None, rotation, rotation.T]


def _rotate(x: torch.Tensor, rotation: torch.Tensor | None) -> torch.Tensor:
    return x if rotation is None else x.double() @ rotation.to(x.device)


class FrameFitter:
    """Step 1 of the module docstring, fed one sample at a time: the captured (input, output) calls of the
    float linears and of the kernels on the same sample update per-channel least-squares sums."""

    def __init__(self, rotation: torch.Tensor | None):
        self.rotation = rotation
        self.in_fits: dict[str, list[_ChannelFit]] = {}
        self.out_fits: dict[str, list[_ChannelFit]] = {}
        self.in_options: dict[str, list[torch.Tensor | None]] = {}
        self.out_options: dict[str, list[torch.Tensor | None]] = {}

    def add(self, floats: dict[str, list], quants: dict[str, list]) -> None:
        # siblings (q/k/v, gate/up) are called on the very same input tensors in both models: their input-side
        # sums are computed once per sample and added to each sibling's fits (the same values, bit for bit)
        input_terms: dict[tuple, list[tuple[dict[str, torch.Tensor], int]]] = {}
        for name in quants:
            if name not in floats or len(floats[name]) != len(quants[name]):
                continue  # not reached on this sample (an unrouted expert), or routed differently
            x_f, y_f = _rows(floats[name], 0, FIT_TOKENS), _rows(floats[name], 1, FIT_TOKENS)
            x_q, y_q = _rows(quants[name], 0, FIT_TOKENS), _rows(quants[name], 1, FIT_TOKENS)
            if x_f.shape != x_q.shape or y_f.shape != y_q.shape:
                continue
            ins = self.in_options.setdefault(name, _candidates(self.rotation, x_f.shape[-1]))
            outs = self.out_options.setdefault(name, _candidates(self.rotation, y_f.shape[-1]))
            # the captured tensors stay alive in floats/quants for this call, so their ids name them
            key = (tuple(id(call[0]) for call in floats[name]), tuple(id(call[0]) for call in quants[name]))
            if key not in input_terms:
                input_terms[key] = [_fit_terms(_rotate(x_f, option), x_q) for option in ins]
            for fit, terms in zip(self.in_fits.setdefault(name, [_ChannelFit() for _ in ins]), input_terms[key],
                                  strict=True):
                fit.add(*terms)
            for fit, option in zip(self.out_fits.setdefault(name, [_ChannelFit() for _ in outs]), outs, strict=True):
                fit.update(_rotate(y_f, option), y_q)

    def frames(self, float_model: nn.Module, quant_model: nn.Module, kernels: dict[str, nn.Module],
               fit_samples: list) -> dict[str, _Frame]:
        """The best structured frame per linear; an orthogonal one (fitted on `fit_samples`) where none fits."""
        frames = {}
        unexplained: dict[str, tuple[bool, bool]] = {}
        for name in self.in_fits:
            in_results = [fit.affine() for fit in self.in_fits[name]]
            out_results = [fit.scale() for fit in self.out_fits[name]]
            i = min(range(len(in_results)), key=lambda k: in_results[k][2])
            o = min(range(len(out_results)), key=lambda k: out_results[k][1])
            frames[name] = _Frame(self.in_options[name][i], in_results[i][0], in_results[i][1], self.out_options[name][o],
                                  out_results[o][0])
            unexplained[name] = (in_results[i][2] > UNEXPLAINED * _energy(self.in_fits[name][i]),
                                 out_results[o][1] > UNEXPLAINED * _energy(self.out_fits[name][o]))
        _fit_orthogonal(float_model, quant_model, kernels, fit_samples, frames,
                        {name: sides for name, sides in unexplained.items() if any(sides)})
        return frames


@torch.no_grad()
def fit_frames(float_model: nn.Module, quant_model: nn.Module, kernels: dict[str, nn.Module], samples: list,
               rotation: torch.Tensor | None) -> dict[str, _Frame]:
    """Step 1 of the module docstring: per linear, the best map from the float basis into the kernel's."""
    float_modules = dict(float_model.named_modules())
    fitter = FrameFitter(rotation)
    for sample in samples[:FIT_SAMPLES]:
        floats: dict[str, list] = {}
        quants: dict[str, list] = {}
        with _captured({name: float_modules[name] for name in kernels}, floats):
            float_model(**sample)
        with _captured(kernels, quants):
            quant_model(**sample)
        fitter.add(floats, quants)
    return fitter.frames(float_model, quant_model, kernels, samples[:FIT_SAMPLES])


#: A structured fit leaving more than this fraction of the kernel-side signal unexplained means the basis
#: changed by a rotation the checkpoint does not ship (QuaRot's per-head rotation of v_proj/o_proj).
UNEXPLAINED = 0.25


def _energy(fit: _ChannelFit) -> float:
    return fit.sums["yy"].sum().item()


def _procrustes(cross: torch.Tensor) -> torch.Tensor:
    """The orthogonal R minimising ||A·R − B|| given cross = AᵀB."""
    u, _, vh = torch.linalg.svd(cross)
    return u @ vh


@torch.no_grad()
def _fit_orthogonal(float_model: nn.Module, quant_model: nn.Module, kernels: dict[str, nn.Module], samples: list,
                    frames: dict[str, _Frame], sides: dict[str, tuple[bool, bool]]) -> None:
    """For the linears no structured candidate explains: the best orthogonal map (then per-channel scales).

    An orthogonal map has more freedom than a per-channel gain, so it is used only where the basis visibly
    changed; it can absorb at most the rotation-like part of the error (about (n-1)/(2·in) of it)."""
    if not sides:
        return
    float_modules = dict(float_model.named_modules())
    cross: dict[str, list[torch.Tensor | None]] = {name: [None, None] for name in sides}
    pairs: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]] = {name: [] for name in sides}
    for sample in samples[:FIT_SAMPLES]:
        floats: dict[str, list] = {}
        quants: dict[str, list] = {}
        with _captured({name: float_modules[name] for name in sides}, floats):
            forward_below_head(float_model, sample, set(sides))
        with _captured({name: kernels[name] for name in sides}, quants):
            forward_below_head(quant_model, sample, set(sides))
        for name in sides:
            if name not in floats or name not in quants or len(floats[name]) != len(quants[name]):
                continue
            got = [_rows(calls, k, FIT_TOKENS).double() for calls in (floats[name], quants[name]) for k in (0, 1)]
            x_f, y_f, x_q, y_q = got
            if x_f.shape != x_q.shape or y_f.shape != y_q.shape:
                continue
            pairs[name].append((x_f, y_f, x_q, y_q))
            for side, (a, b) in enumerate(((x_f, x_q), (y_f, y_q))):
                if sides[name][side]:
                    term = a.T @ b
                    cross[name][side] = term if cross[name][side] is None else cross[name][side] + term
    for name, (in_cross, out_cross) in cross.items():
        frame = frames[name]
        if in_cross is not None:
            frame.in_rotation = _procrustes(in_cross)
            fit = _ChannelFit()
            for x_f, _, x_q, _ in pairs[name]:
                fit.update(x_f @ frame.in_rotation, x_q)
            frame.in_scale, frame.in_shift, _ = fit.affine()
        if out_cross is not None:
            frame.out_rotation = _procrustes(out_cross)
            fit = _ChannelFit()
            for _, y_f, _, y_q in pairs[name]:
                fit.update(y_f @ frame.out_rotation, y_q)
            frame.out_scale, _ = fit.scale()


def spread_rows(t: torch.Tensor, rows: int | None) -> torch.Tensor:
    """About `rows` tokens of a linear's input or output ([..., tokens, features]), evenly spread over the
    sequence (every k-th: positions early and late count as they do in the whole); all when rows is None."""
    if rows is None or t.dim() < 2 or t.shape[-2] <= rows:
        return t
    return t[..., :: -(-t.shape[-2] // rows), :]


def _same_bits(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """a and b hold the same bits (-0.0 is not 0.0), or are both None."""
    if a is None or b is None:
        return a is b
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    as_int = {8: torch.int64, 4: torch.int32, 2: torch.int16}[a.element_size()]  # bits, so -0.0 != 0.0
    return torch.equal(a.view(as_int), b.view(as_int))


class _SharedKernelInput:
    """A kernel's measured input (its float input's every-k-th rows through its frame's input side), computed
    once for siblings: q/k/v (gate/up) hooks see the same float input and, fitted on the same tensors, input
    sides with the same bits. The same tensor object then reaches each sibling's kernel, which quantizes it
    once (shared_input.py). Only the last input is kept (the hooks of one input run back to back)."""

    def __init__(self, rows: int | None):
        self.rows = rows
        self.source: torch.Tensor | None = None
        self.version = -1
        self.side: tuple | None = None
        self.fed: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, frame: _Frame | None) -> torch.Tensor:
        side = None if frame is None else (frame.in_rotation, frame.in_scale, frame.in_shift)
        if x.is_inference():  # no version counter to tell an in-place write: not kept
            rows = spread_rows(x, self.rows)
            return rows if frame is None else frame.kernel_input(rows)
        if (self.source is x and self.version == x._version and (side is None) == (self.side is None)
                and (side is None or all(_same_bits(a, b) for a, b in zip(side, self.side, strict=True)))):
            return self.fed
        rows = spread_rows(x, self.rows)
        self.fed = rows if frame is None else frame.kernel_input(rows)
        self.source, self.version, self.side = x, x._version, side
        return self.fed


@contextmanager
def measuring(float_model: nn.Module, kernels: dict[str, nn.Module], frames: dict[str, _Frame],
              stats: dict[str, "_ErrorStats"], rows: int | None = None) -> Iterator[None]:
    """Step 2 while the float model runs: each kernel fed its frame's input, compared with the mapped output
    (on the first `rows` tokens of each call; every token when None)."""
    float_modules = dict(float_model.named_modules())
    placed: dict[tuple[str, torch.device], _Frame] = {}  # each frame moved once, not once per call
    fed = _SharedKernelInput(rows)

    def compare(name: str):
        def hook(_module, args, output):
            frame = frames.get(name)
            if frame is not None:
                key = (name, args[0].device)
                if key not in placed:
                    placed[key] = frame.on(args[0].device)
                frame = placed[key]
            y = spread_rows(output, rows)
            quantized = kernels[name](fed(args[0], frame))
            stats[name].update(quantized, y if frame is None else frame.reference_output(y))
        return hook

    handles = [float_modules[name].register_forward_hook(compare(name)) for name in kernels]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _HeadReached(Exception):
    """Raised on entering the output head: a pass run only for the hooks above it stops there."""


def forward_below_head(model: nn.Module, sample: dict, quantized: set[str]) -> None:
    """model(**sample) for its hooks only: stops before the output head (lm_head: a vocabulary-wide GEMM, up
    to half a small model's forward) unless the head itself is one of the `quantized` linears."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {id(module): name for name, module in model.named_modules()} if head is not None else {}
    if head is None or names.get(id(head)) in quantized:
        model(**sample)
        return

    def stop(_module, _args):
        raise _HeadReached

    handle = head.register_forward_pre_hook(stop)
    try:
        model(**sample)
    except _HeadReached:
        pass
    finally:
        handle.remove()


def new_stats(kernels: dict[str, nn.Module], tags: dict[str, str]) -> dict[str, _ErrorStats]:
    return {name: _ErrorStats(tags.get(f"{name}.weight", "?")) for name in kernels}


def results(stats: dict[str, _ErrorStats]) -> list[LayerError]:
    return [s.result(name) for name, s in stats.items() if s.tokens]


@torch.no_grad()
def layer_errors(float_model: nn.Module, quant_model: nn.Module, kernels: dict[str, nn.Module],
                 tags: dict[str, str], samples: list, rotation: torch.Tensor | None = None) -> list[LayerError]:
    """Each kernel fed the input it sees in the quantized model, against the float output in the same basis."""
    frames = fit_frames(float_model, quant_model, kernels, samples, rotation)
    stats = new_stats(kernels, tags)
    with measuring(float_model, kernels, frames, stats):
        for sample in samples:
            forward_below_head(float_model, sample, set(kernels))
    return results(stats)
