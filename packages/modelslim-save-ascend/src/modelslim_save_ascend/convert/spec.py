"""The `spec` of a `modelslim_convert` config, validated before anything is read (docs/convert.md).

    spec:
      preprocess:                 # optional, applied in order to the checkpoint's tensor names
        - type: rename
          patterns: [{from: 'block_sparse_moe', to: 'mlp'}]          # regular expression -> replacement
        - type: convert
          source: 'model.layers.*.mlp.experts.gate_up_proj'           # `*` matches any text
          target: ['model.layers.*.mlp.experts.gate_proj', 'model.layers.*.mlp.experts.up_proj']
          ops: [{type: chunk, dim: 1}]                                 # or merge (several sources, one target)
      linears:                    # optional: which linears become what (unmatched quantized ones become FLOAT)
        - {match: ['*.mlp.*'], target: W8A8_MXFP8, route: auto}
      defaults: {src_format: auto, dst_format: ascendv1}
      save: [{type: ascendv1, part_file_size: 4}]                      # or hf

Every problem is reported with its YAML path and the fix; nothing is ignored silently (`parallel`, which has
no effect in a streamed conversion, is accepted with a warning).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from modelslim_core.errors import ConfigError
from modelslim_core.protocol.validation import StrictModel, suggestion, validate

from modelslim_save_ascend.convert.routes import KINDS, SOURCE_KINDS, TARGETS, route_problem

ASCENDV1 = "ascendv1"
HF = "hf"
#: Saver names a convert config may use -> the output layout.
SAVE_TYPES = {"ascendv1": ASCENDV1, "ascend_v1": ASCENDV1, "ascendv1_saver": ASCENDV1,
              "hf": HF, "huggingface": HF, "compressed_tensors": HF}
#: Default dimension of each preprocess op (chunk splits fused [experts, 2*inter, hidden] gate/up stacks).
OP_DEFAULT_DIM = {"chunk": 1, "merge": 0}
PREPROCESS_TYPES = ("rename", "convert")
DEFAULT_HINT = "fix the value at that path; docs/convert.md describes every field of a modelslim_convert spec."


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _save_type(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in SAVE_TYPES:
        raise ValueError(f"{value!r} is not an output type of modelslim_convert{suggestion(str(value), SAVE_TYPES)}; "
                         f"choose one of: {', '.join(SAVE_TYPES)}")
    return SAVE_TYPES[value.lower()]


def _upper_choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value.upper() not in choices:
        raise ValueError(f"{value!r} is not a {what}{suggestion(str(value).upper(), choices)}; "
                         f"choose one of: {', '.join(choices)}")
    return value.upper()


class LinearRule(StrictModel):
    """Linears whose names match `match` are converted to `target` along `route`."""

    match: list[str] = Field(min_length=1)
    target: str
    route: str | list[str] = "auto"

    @field_validator("match", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> str:
        return _upper_choice(value, TARGETS, "conversion target")

    @field_validator("route", mode="before")
    @classmethod
    def _route(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lower() != "auto":
                raise ValueError(f"{value!r} is not a route; write `auto` or a list of formats such as "
                                 "[FP8_BLOCK, FLOAT, W8A8_MXFP8]")
            return "auto"
        if not isinstance(value, list) or len(value) < 2:
            raise ValueError("a route is `auto` or a list of at least two formats, e.g. [FP8_BLOCK, FLOAT]")
        return [_upper_choice(step, KINDS, "format") for step in value]

    @model_validator(mode="after")
    def _route_reaches_target(self) -> "LinearRule":
        if isinstance(self.route, list):
            problem = route_problem(self.route, self.target)
            if problem:
                raise ValueError(f"route {self.route} {problem}")
        return self


class SaveItem(StrictModel):
    """Where the output goes: `type` ascendv1 (default) or hf; shards of `part_file_size` GiB (0: one file)."""

    type: str = ASCENDV1
    part_file_size: float = Field(default=4, ge=0)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> str:
        return _save_type(value)


class Defaults(StrictModel):
    """`src_format`: auto (each tensor's stored format) or the format every quantized tensor must have;
    `dst_format`: the output type when `save` is omitted."""

    src_format: str = "auto"
    dst_format: str = ASCENDV1

    @field_validator("src_format", mode="before")
    @classmethod
    def _src(cls, value: Any) -> str:
        if isinstance(value, str) and value.lower() == "auto":
            return "auto"
        return _upper_choice(value, SOURCE_KINDS, "source format (or auto)")

    @field_validator("dst_format", mode="before")
    @classmethod
    def _dst(cls, value: Any) -> str:
        return _save_type(value)


class RenamePattern(StrictModel):
    model_config = {**StrictModel.model_config, "populate_by_name": True}

    from_: str = Field(alias="from")
    to: str

    @field_validator("from_")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
        return value


class RenameStep(StrictModel):
    """Rename tensors: each pattern's `from` regular expression is replaced by `to` (`\\1` refers to groups)."""

    type: Literal["rename"]
    patterns: list[RenamePattern] = Field(min_length=1)


class ConvertOp(StrictModel):
    type: Literal["chunk", "merge"]
    dim: int | None = None


class ConvertStep(StrictModel):
    """Split one tensor into several (`chunk`) or join several into one (`merge`) along `dim`."""

    type: Literal["convert"]
    source: list[str] = Field(min_length=1)
    target: list[str] = Field(min_length=1)
    ops: list[ConvertOp] = Field(min_length=1, max_length=1)

    @field_validator("source", "target", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)

    @model_validator(mode="after")
    def _shape_of_op(self) -> "ConvertStep":
        op = self.ops[0]
        if op.type == "chunk" and (len(self.source) != 1 or len(self.target) < 2):
            raise ValueError("chunk splits one source tensor into two or more targets "
                             f"(got {len(self.source)} source(s), {len(self.target)} target(s))")
        if op.type == "merge" and (len(self.source) < 2 or len(self.target) != 1):
            raise ValueError("merge joins two or more source tensors into one target "
                             f"(got {len(self.source)} source(s), {len(self.target)} target(s))")
        stars = self.source[0].count("*")
        odd = [name for name in (*self.source, *self.target) if name.count("*") != stars]
        if odd:
            raise ValueError(f"{odd[0]!r} has {odd[0].count('*')} `*`, but {self.source[0]!r} has {stars}: every source "
                             "and target needs the same wildcards, filled in the same order")
        return self

    @property
    def dim(self) -> int:
        op = self.ops[0]
        return OP_DEFAULT_DIM[op.type] if op.dim is None else op.dim


class _SpecFields(StrictModel):
    ignored_keys = {"parallel": "a conversion here streams one tensor at a time in one process, so there are no "
                                "workers to configure"}

    linears: list[LinearRule] = Field(default_factory=list)
    preprocess: list[Any] = Field(default_factory=list)
    save: list[SaveItem] | None = None
    defaults: Defaults = Field(default_factory=Defaults)


@dataclass
class ConvertSpec:
    """A validated spec; `output` is its one save item (the default one when the YAML omits `save`)."""

    linears: list[LinearRule]
    preprocess: list[RenameStep | ConvertStep]
    output: SaveItem
    src_format: str = "auto"
    #: The YAML path of each linears entry, for messages raised once the checkpoint is read.
    paths: dict[int, str] = field(default_factory=dict)


def _parse_preprocess(items: list[Any], path: str) -> list[RenameStep | ConvertStep]:
    steps: list[RenameStep | ConvertStep] = []
    for index, item in enumerate(items):
        where = f"{path}.preprocess[{index}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in PREPROCESS_TYPES:
            raise ConfigError(f"invalid configuration: {where}.type: {kind!r} is not a preprocess step"
                              f"{suggestion(str(kind), PREPROCESS_TYPES)}; allowed: {', '.join(PREPROCESS_TYPES)}.",
                              "write `- type: rename` with `patterns`, or `- type: convert` with source, target and "
                              "ops (docs/convert.md).")
        steps.append(validate(RenameStep if kind == "rename" else ConvertStep, item, where, DEFAULT_HINT))
    return steps


def parse_convert_spec(data: Any, path: str) -> ConvertSpec:
    """Validate `spec`; a ConfigError names the YAML path of the first problem and how to fix it."""
    fields = validate(_SpecFields, data, path, DEFAULT_HINT)
    if fields.save is not None and len(fields.save) != 1:
        raise ConfigError(f"invalid configuration: {path}.save: a conversion writes one checkpoint, but "
                          f"{len(fields.save)} save items are given.",
                          "keep one item (`- type: ascendv1` or `- type: hf`) and run again for another layout.")
    save = fields.save[0] if fields.save else SaveItem(type=fields.defaults.dst_format)
    for index, rule in enumerate(fields.linears):
        if rule.target != "FLOAT" and save.type != ASCENDV1:
            raise ConfigError(
                f"invalid configuration: {path}.linears[{index}].target: {rule.target} needs an ascendv1 output, but "
                f"{path}.save writes a Hugging Face checkpoint, which has no layout for it.",
                "save with `type: ascendv1`, or use target FLOAT for a Hugging Face checkpoint.")
    return ConvertSpec(linears=fields.linears, preprocess=_parse_preprocess(fields.preprocess, path), output=save,
                       src_format=fields.defaults.src_format,
                       paths={index: f"{path}.linears[{index}]" for index in range(len(fields.linears))})
