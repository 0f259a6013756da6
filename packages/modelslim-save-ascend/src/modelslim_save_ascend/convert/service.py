"""The `modelslim_convert` service: plan from the checkpoint's headers, then convert one tensor at a time.

Memory stays at about one tensor (plus the parts of one merge): each planned tensor is read (dequantized if
stored quantized), converted, handed to the streaming writer, whose bytes go straight to disk, and dropped.
"""

from __future__ import annotations

import itertools
import logging
import time
from types import SimpleNamespace
from typing import Any

import torch

from modelslim_core.errors import ConfigError, ModelError
from modelslim_core.models.base import source_dtype_of
from modelslim_core.models.weights import SourceWeights
from modelslim_core.quant.quantized_linear import LinearQuantizer
from modelslim_core.quant.row_blocks import BLOCK_BYTES
from modelslim_core.service.base import QuantRequest, QuantService

from modelslim_save_ascend.convert.output import ConvertOutput
from modelslim_save_ascend.convert.plan import ConvertPlan, PlannedTensor, Stored, build_plan
from modelslim_save_ascend.convert.routes import FLOAT, QUANT_TARGETS
from modelslim_save_ascend.convert.spec import ConvertSpec, parse_convert_spec
from modelslim_save_ascend.linear_export import EXPORTERS, ExportDtypes

logger = logging.getLogger(__name__)

APIVERSION = "modelslim_convert"
#: How many progress lines a conversion logs (a 600 GB checkpoint takes a while).
PROGRESS_STEPS = 10


def open_source(request: QuantRequest) -> SourceWeights:
    source = SourceWeights(request.model_path)
    if not source.available:
        raise ModelError(f"model_path {str(request.model_path)!r} holds no *.safetensors weights to convert.",
                         "point --model_path at the checkpoint directory (config.json and *.safetensors).")
    return source


def float_dtype(request: QuantRequest) -> torch.dtype:
    """The dtype dequantized tensors are written in: the checkpoint's own float dtype, bfloat16 by default."""
    return source_dtype_of(getattr(request.adapter, "config_json", {}) or {}) or torch.bfloat16


class ConvertService(QuantService):
    """Offline conversion: FP8-block / INT4-packed sources to float, float to data-free quantized formats."""

    apiversion = APIVERSION

    @classmethod
    def parse_spec(cls, spec: Any, path: str) -> ConvertSpec:
        return parse_convert_spec(spec, path)

    @classmethod
    def check_request(cls, spec: ConvertSpec, request: QuantRequest) -> None:
        """Any model directory with safetensors weights will do; the whole plan is checked from the headers."""
        build_plan(spec, open_source(request))

    def run(self, spec: ConvertSpec, request: QuantRequest) -> None:
        started = time.perf_counter()
        source = open_source(request)
        plan = build_plan(spec, source)
        dtype = float_dtype(request)
        logger.info("Converting %d tensors of %s: %d stored quantized (read as float), %s; output %s.",
                    len(plan.tensors), request.model_path, plan.dequantized, _targets_summary(plan), spec.output.type)
        with ConvertOutput(request.save_path, request.model_path, spec.output.type, spec.output.part_file_size) as out:
            converter = TensorConverter(source, dtype, out)
            step = max(1, len(plan.tensors) // PROGRESS_STEPS)
            for done, tensor in enumerate(plan.tensors, 1):
                converter.convert(tensor)
                if done % step == 0 and done < len(plan.tensors):
                    logger.info("Converted %d of %d tensors (%.0f s).", done, len(plan.tensors),
                                time.perf_counter() - started)
            files = out.commit("float16" if dtype == torch.float16 else "bfloat16")
        logger.info("Converted in %.1f s: %d files in %s (largest tensor held at once: %.1f MB).",
                    time.perf_counter() - started, len(files), request.save_path, converter.peak_bytes / 2**20)


def _targets_summary(plan: ConvertPlan) -> str:
    counts = {target: plan.count(target) for target in QUANT_TARGETS if plan.count(target)}
    return ", ".join(f"{n} linears to {t}" for t, n in counts.items()) or "no re-quantization"


class TensorConverter:
    """Reads, converts and writes one planned tensor at a time; `peak_bytes` is the most it held at once.

    A large float tensor that is copied as it is (embeddings, lm_head) never sits in memory whole: it goes
    from the source file to the output a block of rows (`stream_bytes`) at a time.
    """

    stream_bytes: int = BLOCK_BYTES

    def __init__(self, source: SourceWeights, dtype: torch.dtype, out: ConvertOutput):
        self.source = source
        self.dtype = dtype
        self.out = out
        self.export_dtypes = ExportDtypes(source=dtype, deq_scale_float32=dtype != torch.float16)
        self.quantizers = {tag: LinearQuantizer(qconfig, tag) for tag, qconfig in QUANT_TARGETS.items()}
        self.peak_bytes = 0

    def convert(self, tensor: PlannedTensor) -> None:
        if self._streamed(tensor):
            return
        value = tensor.producer.read(self.source)
        self.peak_bytes = max(self.peak_bytes, value.numel() * value.element_size())
        if tensor.producer.kind != FLOAT and value.is_floating_point():
            value = value.to(self.dtype)  # dequantized tensors in the checkpoint's float dtype
        if tensor.target == FLOAT:
            self.out.write(tensor.name, value, FLOAT)
            if tensor.name.endswith(".weight") and value.dim() == 2:
                self.out.description.propose(FLOAT)
            return
        self._write_quantized(tensor, value)

    def _streamed(self, tensor: PlannedTensor) -> bool:
        """Copy a large stored float tensor in row blocks; False when it is small, derived or converted."""
        producer = tensor.producer
        if not (isinstance(producer, Stored) and producer.kind == FLOAT and tensor.target == FLOAT and producer.shape):
            return False
        nbytes = self.source.nbytes([producer.name])
        if nbytes <= self.stream_bytes:
            return False
        rows = producer.shape[0]
        step = max(1, self.stream_bytes * rows // nbytes)
        blocks = (self.source.read_rows(producer.name, start, min(rows, start + step)) for start in range(0, rows, step))
        first = next(blocks)
        self.peak_bytes = max(self.peak_bytes, first.numel() * first.element_size())
        self.out.write_blocks(tensor.name, first.dtype, list(producer.shape), itertools.chain([first], blocks), FLOAT)
        return True

    def _write_quantized(self, tensor: PlannedTensor, weight: torch.Tensor) -> None:
        quantizer = self.quantizers[tensor.target]
        try:
            layer = quantizer.quantize(tensor.linear, SimpleNamespace(weight=weight, bias=None))
        except ConfigError as exc:  # a layer whose shape the scheme refuses: name the tensor
            raise ConfigError(f"{tensor.name}: {exc.message}", exc.hint) from None
        del weight
        for suffix, value, tag in EXPORTERS[tensor.target](tensor.linear, layer, self.export_dtypes):
            self.out.write(f"{tensor.linear}.{suffix}", value, tag)
        if layer.group_size:
            self.out.description.group_size = layer.group_size
        self.out.description.propose(tensor.target)
