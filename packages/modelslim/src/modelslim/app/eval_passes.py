"""`msmodelslim eval`'s model runs: two forwards per sample (float, then quantized), everything read off them.

The first samples (half of them, more while they hold fewer than layer_compare.FIT_MIN_TOKENS fit tokens, at most
FIT_SAMPLES) fit the per-linear frames from both forwards' captured linear calls; once the frames are known,
every later sample's float forward feeds the kernels for the per-layer errors, on every k-th of its tokens
(layer_compare.measured_rows_per_sample: about MEASURE_TOKENS over the eval, at most LAYER_TOKENS per sample).
Both forwards of every sample also give the end-to-end figure (perplexity of each model for causal LMs, else the
cosine of the final hidden states), so the float model runs once per sample, not once for the fit, once for the
per-layer errors and once for the perplexity: eval costs one float and one quantized forward over its tokens.
Only an eval whose samples the fit needs whole (one sample, or a few short ones) runs the float model once more
to measure, and then only up to its output head (unless the head is quantized): the logits are not needed again."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modelslim.app.layer_compare import (FIT_MIN_TOKENS, FIT_SAMPLES, FIT_TOKENS, FrameFitter, LayerError, _captured,
                                        forward_below_head, measured_rows_per_sample, measuring, new_stats, results)


class EndToEnd:
    """Perplexity of both models (causal LMs) or the mean per-token cosine of their final hidden states."""

    def __init__(self, causal: bool):
        self.causal = causal
        self.float_nll = self.quant_nll = self.cosine = 0.0
        self.tokens = 0

    @staticmethod
    def _nll(logits: torch.Tensor, ids: torch.Tensor) -> float:
        losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
        return losses.double().sum().item()

    def add(self, sample: dict[str, torch.Tensor], float_out, quant_out) -> None:
        if not self.causal:
            a = float_out.last_hidden_state.double().flatten(0, -2)
            b = quant_out.last_hidden_state.double().flatten(0, -2)
            self.cosine += F.cosine_similarity(a, b, dim=-1).sum().item()
            self.tokens += a.shape[0]
            return
        ids = sample["input_ids"]
        if ids.shape[1] < 2:
            return
        if float_out is not None:  # None: the float figure is known already (evaluate.end_to_end)
            self.float_nll += self._nll(float_out.logits, ids)
        self.quant_nll += self._nll(quant_out.logits, ids)
        self.tokens += ids.shape[1] - 1

    def result(self) -> tuple[float, float, int]:
        """(float figure, quantized figure, tokens)."""
        count = max(self.tokens, 1)
        if not self.causal:
            return 1.0, self.cosine / count, self.tokens
        return math.exp(self.float_nll / count), math.exp(self.quant_nll / count), self.tokens


def sample_lengths(samples: list) -> list[int]:
    """Tokens of each eval sample (a sample without input_ids counts as a full fit share)."""
    return [int(sample["input_ids"].shape[-1]) if "input_ids" in sample else FIT_TOKENS for sample in samples]


def fit_sample_count(lengths: list[int]) -> int:
    """How many leading samples fit the frames: half (rounded up), at most FIT_SAMPLES, so the others are measured
    inline by the forwards eval runs anyway (a separate measuring pass over small evals was ~1.2 float forwards);
    more while they hold fewer than FIT_MIN_TOKENS fit tokens (a frame fitted on a few dozen tokens is wrong:
    an orthogonal map needs more tokens than features). When every sample fits, eval measures in one more pass."""
    samples = len(lengths)
    count = min(FIT_SAMPLES, (samples + 1) // 2) if samples > 1 else samples
    while count < min(FIT_SAMPLES, samples) and sum(min(n, FIT_TOKENS) for n in lengths[:count]) < FIT_MIN_TOKENS:
        count += 1
    return count


def measured_rows(lengths: list[int]) -> int:
    """Tokens per sample each kernel is measured on in an eval of samples of these lengths (the fit samples are
    not measured again, unless every sample is a fit sample)."""
    return measured_rows_per_sample(len(lengths) - fit_sample_count(lengths) or len(lengths))


@torch.no_grad()
def compare_models(float_model: nn.Module, quant_model: nn.Module, kernels: dict[str, nn.Module], tags: dict[str, str],
                   samples: list, rotation: torch.Tensor | None, causal: bool) -> tuple[list[LayerError], float, float, int]:
    """Per-layer errors, then the float and quantized end-to-end figures and the token count."""
    float_linears = {name: module for name, module in float_model.named_modules() if name in kernels}
    lengths = sample_lengths(samples)
    fit_count = fit_sample_count(lengths)
    rows = measured_rows(lengths)
    fitter = FrameFitter(rotation)
    stats = new_stats(kernels, tags)
    figure = EndToEnd(causal)
    frames = None
    for index, sample in enumerate(samples):
        if index < fit_count:
            floats: dict[str, list] = {}
            quants: dict[str, list] = {}
            with _captured(float_linears, floats):
                float_out = float_model(**sample)
            with _captured(kernels, quants):
                quant_out = quant_model(**sample)
            fitter.add(floats, quants)
        else:
            if frames is None:
                frames = fitter.frames(float_model, quant_model, kernels, samples[:fit_count])
            with measuring(float_model, kernels, frames, stats, rows):
                float_out = float_model(**sample)
            quant_out = quant_model(**sample)
        figure.add(sample, float_out, quant_out)
        del float_out, quant_out
    if frames is None:  # every sample went to the fit: measure on them with one more float forward
        frames = fitter.frames(float_model, quant_model, kernels, samples)
        with measuring(float_model, kernels, frames, stats, rows):
            for sample in samples:
                forward_below_head(float_model, sample, set(kernels))
    return (results(stats), *figure.result())
