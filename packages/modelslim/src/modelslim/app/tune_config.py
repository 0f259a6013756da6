"""The `msmodelslim tune` strategy file: `strategy` (how to search) and `evaluation` (who judges).

Every problem is a ConfigError naming the field's path in the file and the fix; the template is checked as
a normal quantization config, and `rollback_path` must lead to a list (or a missing last key) inside it.
"""

from __future__ import annotations

import copy

import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from modelslim_core.errors import ConfigError
from modelslim_core.protocol.validation import StrictModel, validate
from modelslim_core.protocol.yaml_io import load_yaml_file

from modelslim.app.analysis_choices import SCOPES

STRATEGIES = ("binary_fallback", "standing_high")
_DURATION = re.compile(r"^(?:(\d+)D)?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$", re.IGNORECASE)


class StrategyFields(StrictModel):
    type: Literal["binary_fallback", "standing_high"]
    template: dict[str, Any] = Field(description="a complete modelslim_v1 quantization config")
    rollback_path: str = Field(description="dotted path of the exclude list inside template, e.g. spec.process.0.exclude")
    rollback_candidates: list[str] = Field(default_factory=list, description="exclude patterns, most sensitive first")
    analysis_dataset: str | None = None
    analysis_scope: str = "layer"
    analysis_samples: int = Field(default=4, ge=1)
    anti_outlier_strategies: list[list[dict[str, Any]]] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("analysis_scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if value not in SCOPES:
            raise ValueError(f"must be one of {', '.join(SCOPES)}")
        return value


class Expectation(StrictModel):
    dataset: str
    target: Decimal
    tolerance: Decimal = Decimal(0)

    @field_validator("target", "tolerance", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Any:
        """YAML numbers become decimals through their text (80.1 stays 80.1, not 80.0999...)."""
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return value
        try:
            return Decimal(str(value))
        except ArithmeticError:
            raise ValueError(f"expected a number, got {value!r}") from None


class Demand(StrictModel):
    expectations: list[Expectation] = Field(min_length=1)


class TuneFile(StrictModel):
    strategy: dict[str, Any]
    evaluation: dict[str, Any]


def parse_duration(text: str) -> float:
    """`2H`, `1D`, `3D4H`, `90M`, `30S` (or a bare number of seconds) -> seconds."""
    stripped = text.strip()
    if stripped.replace(".", "", 1).isdigit():
        return float(stripped)
    match = _DURATION.match(stripped)
    if not stripped or match is None:
        raise ValueError(f"expected a duration like 2H, 1D, 3D4H or 90M, got {text!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _rollback_error(where: str, rollback_path: str, what: str, fix: str) -> ConfigError:
    return ConfigError(f"{where}: rollback_path {rollback_path!r}: {what}", fix)


_FIX = "point rollback_path at the exclude list of a process item, e.g. spec.process.0.exclude."


def rollback_lists(template: dict[str, Any], rollback_path: str, where: str) -> list[tuple[dict | None, list[str]]]:
    """The list(s) at `rollback_path` inside the template (created empty when only the last key is missing),
    each with the processor item it belongs to when that item is a group's child.

    One list, except for `<group item>.exclude`: a `group` has no exclude of its own, so the path means the
    exclude list of each of its children that selects layers (the VLM and MoE practices group static attention
    and dynamic MLP quantization; rolling a layer back must take it out of both)."""
    node: Any = template
    parts = rollback_path.split(".")
    for depth, part in enumerate(parts):
        at = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise _rollback_error(where, rollback_path, f"{at!r} is not an index of a list of {len(node)} items.", _FIX)
            node = node[int(part)]
        elif isinstance(node, dict):
            if last and node.get("type") == "group" and isinstance(node.get("configs"), list):
                return [(child, _checked_list(child.setdefault(part, []), where, rollback_path))
                        for child in node["configs"] if isinstance(child, dict) and _selects_layers(child)]
            if part not in node:
                if not last:
                    raise _rollback_error(where, rollback_path, f"template has no {at!r}.", _FIX)
                node[part] = []
            node = node[part]
        else:
            raise _rollback_error(where, rollback_path, f"{at!r} lies inside a {type(node).__name__}.",
                                  "point rollback_path at a list inside the template.")
    return [(None, _checked_list(node, where, rollback_path))]


def _selects_layers(item: dict[str, Any]) -> bool:
    return item.get("type") == "linear_quant" or "include" in item or "exclude" in item


def _checked_list(node: Any, where: str, rollback_path: str) -> list[str]:
    if not isinstance(node, list) or not all(isinstance(item, str) for item in node):
        raise _rollback_error(where, rollback_path, f"leads to {node!r}, not a list of patterns.",
                              "point rollback_path at an exclude list, e.g. spec.process.0.exclude.")
    return node


def with_rollback(template: dict[str, Any], rollback_path: str, patterns: list[str],
                  linears: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """A copy of the template whose rollback list(s) also hold `patterns` (names without `*` become `*<name>*`).

    `linears` (pattern -> the layers it covers, known when the candidates come from the analysis) sends a
    pattern only to the group children that include one of its layers, so no child is told to exclude
    layers it never selects (which the run would report as a pattern that matched nothing)."""
    config = copy.deepcopy(template)
    targets = rollback_lists(config, rollback_path, "strategy.template")
    for pattern in patterns:
        expanded = pattern if "*" in pattern or "?" in pattern or "[" in pattern else f"*{pattern}*"
        chosen = [target for item, target in targets if _selects_any(item, (linears or {}).get(pattern))]
        for target in chosen or [target for _, target in targets]:
            if expanded not in target:
                target.append(expanded)
    return config


def _selects_any(item: dict | None, names: list[str] | None) -> bool:
    """Whether a group child's include picks one of `names` (True when either is unknown)."""
    if item is None or not names:
        return True
    from modelslim_core.runtime.matching import pattern_matches

    return any(pattern_matches(p, name) for p in item.get("include", ["*"]) for name in names)


_ITEM_PATH = re.compile(r"(\w+)\[(\d+)\]")


def without_item(config: dict[str, Any], yaml_path: str) -> dict[str, Any]:
    """A copy of `config` without the processor at `yaml_path` (`spec.process[0].configs[1]`, as a refusal
    names it), and without a group that this leaves empty: the round where that item's every layer is rolled
    back to float runs without it."""
    config = copy.deepcopy(config)
    steps = [(key, int(index)) for key, index in _ITEM_PATH.findall(yaml_path.rpartition(": ")[2])]
    node: Any = config["spec"]
    parents = []
    for key, index in steps:
        parents.append((node[key], index))
        node = node[key][index]
    while parents:
        items, index = parents.pop()
        del items[index]
        if items:
            break
    return config


def first_quantizing_item(process: list[Any]) -> int | None:
    """Index of the first linear_quant item (or group holding one): where anti-outlier processors go."""
    def quantizes(item: Any) -> bool:
        return isinstance(item, dict) and (item.get("type") == "linear_quant" or (
            item.get("type") == "group" and any(quantizes(child) for child in item.get("configs") or [])))

    return next((i for i, item in enumerate(process) if quantizes(item)), None)


def load_tune_file(path: str) -> tuple[StrategyFields, dict[str, Any]]:
    """The validated strategy and the raw evaluation block (its type picks the evaluator that validates it)."""
    where = str(Path(path))
    raw = load_yaml_file(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a tune config is a mapping with the keys strategy and evaluation.",
                          "see README.md 'Accuracy tuning' for an example.")
    top = validate(TuneFile, raw, where)
    strategy = validate(StrategyFields, top.strategy, f"{where}: strategy",
                        f"strategy.type is one of {', '.join(STRATEGIES)}; see README.md 'Accuracy tuning'.")
    if strategy.template.get("apiversion") not in ("modelslim_v1", "multimodal_vlm_modelslim_v1"):
        raise ConfigError(f"{where}: strategy.template.apiversion is {strategy.template.get('apiversion')!r}.",
                          "the template must be a modelslim_v1 (or multimodal_vlm_modelslim_v1) quantization config.")
    rollback_lists(strategy.template, strategy.rollback_path, f"{where}: strategy")
    if strategy.type == "standing_high":
        process = (strategy.template.get("spec") or {}).get("process") or []
        if first_quantizing_item(process) is None:
            raise ConfigError(f"{where}: strategy.template.spec.process has no linear_quant item.",
                              "standing_high tunes a linear_quant scheme; add one to the template.")
        if not strategy.anti_outlier_strategies:
            raise ConfigError(f"{where}: strategy.anti_outlier_strategies is empty.",
                              "standing_high needs one or more processor lists to try, e.g. [[{type: smooth_quant}]].")
    if not isinstance(top.evaluation.get("type"), str):
        raise ConfigError(f"{where}: evaluation.type is missing.",
                          "use perplexity, service_oriented or the name of an installed evaluator plugin.")
    return strategy, top.evaluation
