"""`msmodelslim quant ... --dry-run`: what a run would do, from the config and the model skeleton alone.

Nothing is loaded but config.json, the tokenizer and the calibration texts (to count tokens), and nothing
is written: the plan goes to stdout. It shows the chosen config (and its digest, the one quant_report.json
of the real run will carry), the runner and why, every unit, every linear with the scheme it will get or
why it stays float, include/exclude patterns that match nothing, the checkpoint tags and expected size per
saver, and the memory plan. The same validation errors a real run would raise (a layer whose shape a
scheme cannot take, processors that cannot run data-parallel) fail the dry run too.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modelslim_core import registry
from modelslim_core.calib.text import load_texts
from modelslim_core.errors import UnsupportedError
from modelslim_core.formats.registry import TagRegistry
from modelslim_core.formats.tags import TAGS
from modelslim_core.protocol.config import QuantConfig
from modelslim_core.protocol.yaml_io import dump_yaml
from modelslim_core.quant.quantized_linear import LinearQuantizer
from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.matching import Aliases, pattern_matches
from modelslim_core.attention.processor import check_attention_selections
from modelslim_core.runtime.selection_check import check_layer_selections
from modelslim_core.runtime.processor import ProcessorConfig
from modelslim_core.runtime.runner import Stage
from modelslim_core.service.base import QuantRequest
from modelslim.app.export import normalized_config

GIB = 2**30
LAYER_WISE_RUNNERS = ("layer_wise", "dp_layer_wise")


@dataclass
class LinearPlan:
    name: str
    shape: tuple[int, int]
    scheme: str  # export tag, or FLOAT
    source: str  # which processor (YAML path), or why it stays float


@dataclass
class Plan:
    config_source: str
    config_digest: str
    apiversion: str
    runner: str
    runner_reason: str
    processors: list[str]
    units: list[tuple[str, list[LinearPlan]]]
    outside_linears: list[LinearPlan]
    unmatched_patterns: list[str]
    outputs: list[dict[str, Any]]
    memory: str
    calibration: str
    notes: list[str] = field(default_factory=list)

    def tags(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, linears in self.units:
            for linear in linears:
                counts[linear.scheme] = counts.get(linear.scheme, 0) + 1
        return counts


def config_digest(raw: dict[str, Any]) -> str:
    """What the real run records: sha256 of the exported `{model_type}_best_practice.yaml`."""
    return hashlib.sha256(dump_yaml(normalized_config(raw)).encode("utf-8")).hexdigest()


def flatten(configs: list[ProcessorConfig], path: str) -> list[tuple[str, ProcessorConfig]]:
    """Processor configs in run order with their YAML paths; groups are opened."""
    flat = []
    for index, config in enumerate(configs):
        here = f"{path}[{index}]"
        children = getattr(config, "configs", None)
        if config.type == "group" and children:
            flat.extend(flatten(children, f"{here}.configs"))
        else:
            flat.append((here, config))
    return flat


class LinearAssigner:
    """Replays linear_quant's rule: the first linear_quant whose include/exclude selects a layer quantizes it."""

    def __init__(self, processors: list[tuple[str, ProcessorConfig]], aliases: Aliases | None = None):
        self.aliases = aliases
        self.rules = [(path, config, config.name_filter(aliases), LinearQuantizer(config.qconfig, f"{path}.qconfig"))
                      for path, config in processors if config.type == "linear_quant"]

    def assign(self, name: str, linear: nn.Linear) -> LinearPlan:
        shape = (linear.out_features, linear.in_features)
        chosen = None
        for path, _config, name_filter, quantizer in self.rules:
            if name_filter(name) and chosen is None:  # every filter sees every name: unmatched patterns stay exact
                quantizer.check(name, linear)
                chosen = LinearPlan(name, shape, quantizer.export_type, path)
        return chosen or LinearPlan(name, shape, "FLOAT", self.float_reason(name))

    def float_reason(self, name: str) -> str:
        if not self.rules:
            return "no linear_quant in the config"
        names = [name, *(self.aliases(name) if self.aliases else [])]
        for path, config, _, _ in self.rules:
            if any(pattern_matches(p, n) for p in config.include for n in names):
                pattern = next(p for p in config.exclude if any(pattern_matches(p, n) for n in names))
                return f"excluded by {pattern!r} ({path}.exclude)"
        return "matched by no linear_quant include"

    def unmatched(self) -> list[str]:
        return [f"{path}: {pattern!r}" for path, _, name_filter, _ in self.rules
                for pattern in name_filter.unmatched_patterns()]


def linear_bytes(tag: str, out: int, inp: int, source_bytes: int, registry: TagRegistry = TAGS) -> int:
    """Approximate bytes a linear takes in the checkpoint (weight at the tag's registered bit width plus
    per-channel parameters)."""
    if tag == "FLOAT":
        return out * inp * source_bytes
    return out * inp * registry.weight_bits(tag) // 8 + out * 16


def choose_runner(name: str, context: RunContext, stages: Sequence[Stage] = ()) -> tuple[str, str]:
    if name != "auto":
        return name, "set in spec.runner"
    from modelslim_runners.auto import AutoRunner  # noqa: PLC0415 - the runner package decides, not this module

    return AutoRunner(context).choose(stages)


def _calibration_tokens(adapter, dataset: str) -> int:
    samples = adapter.tokenize(load_texts(dataset))
    return sum(int(sample["input_ids"].numel()) for sample in samples)


def _shard_suffix(shards: int) -> str:
    return f"-{'00001' if shards == 1 else '0000i'}-of-{shards:05d}"


def _outputs(spec, tags: dict[str, int], total_bytes: int) -> list[dict[str, Any]]:
    outputs = []
    for saver_config in spec.save:
        saver_cls = registry.load(registry.SAVERS, saver_config.type)
        part = getattr(saver_config, "part_file_size", 0) or 0
        shards = max(1, math.ceil(total_bytes / (part * GIB))) if part else 1
        outputs.append({
            "saver": saver_config.type,
            "tags": sorted(tags),
            "weights": f"{getattr(saver_cls, 'weights_prefix', '?')}{_shard_suffix(shards) if part else ''}.safetensors",
            "marker": getattr(saver_cls, "description_pattern", None),
            "expected_bytes": total_bytes,
        })
    return outputs


def build_plan(config: QuantConfig, source: str, request: QuantRequest) -> Plan:
    from modelslim_core.service.modelslim_v1 import compute_dtype_for  # noqa: PLC0415
    from modelslim_runners.dp_layer_wise import check_distributed_support  # noqa: PLC0415
    from modelslim_runners.pipeline import stage_needs_data  # noqa: PLC0415
    from modelslim_runners.report import memory_plan  # noqa: PLC0415

    if config.apiversion != "modelslim_v1":
        raise UnsupportedError(f"{source}: --dry-run plans modelslim_v1 configs; this one is {config.apiversion}.",
                               "run without --dry-run, or plan the equivalent modelslim_v1 config.")
    spec, adapter = config.spec, request.adapter
    compute_dtype = compute_dtype_for(request.device.type, adapter.source_dtype)
    context = RunContext(adapter, request.model_path, request.save_path, request.device, compute_dtype)
    stages = config.service.stages(spec)
    runner, reason = choose_runner(spec.runner, context, stages)
    if runner == "dp_layer_wise":
        check_distributed_support(stages)
    model = adapter.build_skeleton(compute_dtype)
    units = adapter.units(model)
    for stage in stages:
        check_layer_selections(adapter, units, stage.processors)
        check_attention_selections(adapter, units, stage.processors)
    main = stages[-1]
    processors = flatten(main.processors, "spec.process")
    assigner = LinearAssigner(processors, getattr(adapter, "name_aliases", None))
    unit_plans = [(unit.name, [assigner.assign(site.name, site.module) for site in adapter.linear_sites(unit)])
                  for unit in units]
    inside = {linear.name for _, linears in unit_plans for linear in linears}
    outside = [LinearPlan(name, (m.out_features, m.in_features), "FLOAT", "outside the decoder units: never quantized")
               for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in inside]
    source_bytes = torch.empty((), dtype=adapter.source_dtype or torch.float32).element_size()
    planned = {linear.name: linear for _, linears in unit_plans for linear in linears}
    total = sum(linear_bytes(p.scheme, *p.shape, source_bytes) for p in planned.values())
    total += sum(p.numel() for name, p in model.named_parameters()
                 if name.rsplit(".", 1)[0] not in planned) * source_bytes
    hidden = getattr(model.config, "hidden_size", 0) or 0
    if any(stage_needs_data(stage) for stage in stages):
        tokens = _calibration_tokens(adapter, main.dataset or "")
        calibration = f"{main.dataset}: {tokens} tokens"
    else:
        tokens, calibration = 0, "none needed (every processor is data-free)"
    element = torch.empty((), dtype=compute_dtype).element_size()
    memory = memory_plan(model, units, compute_dtype, tokens * hidden * element, runner in LAYER_WISE_RUNNERS)
    plan = Plan(
        config_source=source, config_digest=config_digest(config.raw), apiversion=config.apiversion,
        runner=runner, runner_reason=reason,
        processors=[f"{path}: {cfg.type}" for stage in stages for path, cfg in
                    flatten(stage.processors, "spec.process" if stage is main else f"spec.{stage.name}.process")],
        units=unit_plans, outside_linears=outside, unmatched_patterns=assigner.unmatched(),
        outputs=[], memory=memory.describe(), calibration=calibration,
    )
    plan.outputs = _outputs(spec, {**plan.tags(), "FLOAT": 1}, total)
    others = [f"{path} ({cfg.type})" for path, cfg in processors if cfg.type != "linear_quant"]
    if others:
        plan.notes.append(f"{', '.join(others)} run on every unit before or between the linear_quant steps and select "
                          "their own subgraphs; the schemes above are what linear_quant gives each layer afterwards")
    return plan


def format_plan(plan: Plan) -> str:
    lines = [
        "Dry run: nothing is loaded beyond config.json and the tokenizer, nothing is written.",
        f"Config: {plan.config_source} ({plan.apiversion}), digest sha256:{plan.config_digest}",
        f"Runner: {plan.runner} ({plan.runner_reason})",
        "Processors: " + ", ".join(plan.processors),
        f"Calibration: {plan.calibration}",
        "",
        f"Units ({len(plan.units)}):",
    ]
    for unit, linears in plan.units:
        lines.append(f"  {unit}")
        for linear in linears:
            lines.append(f"    {linear.name} [{linear.shape[0]}, {linear.shape[1]}]: {linear.scheme} ({linear.source})")
    for linear in plan.outside_linears:
        lines.append(f"  {linear.name} [{linear.shape[0]}, {linear.shape[1]}]: FLOAT ({linear.source})")
    lines.append("")
    lines.append("Unmatched include/exclude patterns: " + ("; ".join(plan.unmatched_patterns) or "none"))
    lines.append("Layer types: " + ", ".join(f"{tag} x{count}" for tag, count in sorted(plan.tags().items())))
    for output in plan.outputs:
        lines.append(f"Output ({output['saver']}): {output['weights']}, tags {', '.join(output['tags'])}, "
                     f"~{output['expected_bytes'] / GIB:.3f} GiB ({output['expected_bytes']} bytes), completeness "
                     f"marker {output['marker']}, plus quant_report.json")
    lines.append(f"Memory plan: {plan.memory}")
    lines.extend(f"Note: {note}" for note in plan.notes)
    return "\n".join(lines)
