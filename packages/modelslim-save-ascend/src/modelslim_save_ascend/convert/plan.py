"""What a conversion will write, worked out from tensor names and shapes alone (no tensor is read).

The checkpoint's tensors are seen under the model's names (a quantized linear as `<linear>.weight`, its
scale/packing tensors hidden). The preprocess steps rename them and split or join them into new tensors;
each resulting tensor then gets its target: the first `linears` rule whose pattern matches the linear's name
(for a 2-D `<linear>.weight`), else FLOAT when it was stored quantized (dequantized) or FLOAT as it is.
Everything a config gets wrong is found here, before the output directory is touched: a rename that makes
two tensors one, a step or rule that matches nothing, a split that does not divide, a route that does not
start at the tensor's stored format, a shape the target format cannot hold.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import SimpleNamespace

import torch

from modelslim_core.errors import ConfigError
from modelslim_core.models.weights import SourceWeights
from modelslim_core.quant.quantized_linear import LinearQuantizer

from modelslim_save_ascend.convert.routes import FLOAT, KIND_OF_STORED, QUANT_TARGETS
from modelslim_save_ascend.convert.spec import ConvertSpec, ConvertStep, LinearRule, RenameStep

#: Examples of checkpoint names shown when a pattern matches nothing.
_EXAMPLES = 4


# --- where an output tensor's values come from ---------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    """A tensor of the checkpoint (dequantized on reading when it is stored quantized)."""

    name: str
    kind: str
    shape: tuple[int, ...]

    def read(self, source: SourceWeights) -> torch.Tensor:
        return source.read(self.name)

    @property
    def inputs(self) -> list[str]:
        return [self.name]


@dataclass(frozen=True)
class Chunk:
    """Part `index` of `parts` equal slices of another tensor along `dim`."""

    base: "Producer"
    dim: int
    index: int
    parts: int

    @property
    def kind(self) -> str:
        return self.base.kind

    @property
    def shape(self) -> tuple[int, ...]:
        shape = list(self.base.shape)
        shape[self.dim] //= self.parts
        return tuple(shape)

    @property
    def inputs(self) -> list[str]:
        return self.base.inputs

    def read(self, source: SourceWeights) -> torch.Tensor:
        return self.base.read(source).chunk(self.parts, self.dim)[self.index].clone()  # clone: drop the other parts


@dataclass(frozen=True)
class Merge:
    """Several tensors concatenated along `dim`."""

    parts: tuple["Producer", ...]
    dim: int

    @property
    def kind(self) -> str:
        kinds = {part.kind for part in self.parts}
        return kinds.pop() if len(kinds) == 1 else FLOAT

    @property
    def shape(self) -> tuple[int, ...]:
        shape = list(self.parts[0].shape)
        shape[self.dim] = sum(part.shape[self.dim] for part in self.parts)
        return tuple(shape)

    @property
    def inputs(self) -> list[str]:
        return [name for part in self.parts for name in part.inputs]

    def read(self, source: SourceWeights) -> torch.Tensor:
        return torch.cat([part.read(source) for part in self.parts], dim=self.dim)


Producer = Stored | Chunk | Merge


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the output (a quantized target expands into its format's tensors when written)."""

    name: str
    producer: Producer
    target: str  # FLOAT or a tag of QUANT_TARGETS
    rule: int | None  # index of the linears rule that chose the target

    @property
    def linear(self) -> str:
        """The linear's name (`name` without `.weight`)."""
        return self.name.removesuffix(".weight")


@dataclass
class ConvertPlan:
    tensors: list[PlannedTensor]

    def count(self, target: str) -> int:
        return sum(1 for tensor in self.tensors if tensor.target == target)

    @property
    def dequantized(self) -> int:
        return sum(1 for tensor in self.tensors if tensor.producer.kind != FLOAT)


# --- building the plan -----------------------------------------------------------------------------------------
def _error(message: str, hint: str) -> ConfigError:
    return ConfigError(f"invalid configuration: {message}", hint)


def _examples(names) -> str:
    names = list(names)
    shown = ", ".join(names[:_EXAMPLES])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > _EXAMPLES else shown


def _apply_rename(state: dict[str, Producer], step: RenameStep, path: str) -> dict[str, Producer]:
    renamed: dict[str, Producer] = {}
    changed = 0
    for name, producer in state.items():
        new = name
        for pattern in step.patterns:
            new = re.sub(pattern.from_, pattern.to, new)
        changed += new != name
        if new in renamed:
            raise _error(f"{path}.patterns: two tensors would both be named {new!r} after renaming.",
                         "make the patterns more specific (anchor them with ^...$ or include more of the name).")
        renamed[new] = producer
    if not changed:
        raise _error(f"{path}.patterns: no tensor name matches any `from` pattern, so nothing is renamed "
                     f"(names look like: {_examples(state)}).", "write the patterns against those names, or drop the step.")
    return renamed


def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("(.*?)".join(re.escape(part) for part in pattern.split("*")))


def _fill(pattern: str, captures: tuple[str, ...]) -> str:
    parts = pattern.split("*")
    return "".join(part + (captures[i] if i < len(captures) else "") for i, part in enumerate(parts))


def _check_dim(producer: Producer, dim: int, name: str, path: str) -> int:
    rank = len(producer.shape)
    if not -rank <= dim < rank:
        raise _error(f"{path}.ops[0].dim: {dim} is not a dimension of {name} (shape {list(producer.shape)}).",
                     f"use a dim between {-rank} and {rank - 1}.")
    return dim % rank


def _apply_convert(state: dict[str, Producer], step: ConvertStep, path: str) -> dict[str, Producer]:
    regex = _glob_regex(step.source[0])
    matches = [(name, match.groups()) for name in state if (match := regex.fullmatch(name))]
    if not matches:
        raise _error(f"{path}.source: {step.source[0]!r} matches no tensor (names look like: {_examples(state)}).",
                     "write the pattern against those names (`*` matches any text), or drop the step.")
    result = dict(state)
    for _, captures in matches:
        sources = [_fill(pattern, captures) for pattern in step.source]
        targets = [_fill(pattern, captures) for pattern in step.target]
        missing = [name for name in sources if name not in result]
        if missing:
            raise _error(f"{path}.source: {missing[0]} is not in the checkpoint (needed with {sources[0]}).",
                         "every source of a merge must exist for each match of the first one.")
        producers = [result.pop(name) for name in sources]
        dim = _check_dim(producers[0], step.dim, sources[0], path)
        if step.ops[0].type == "chunk":
            size = producers[0].shape[dim]
            if size % len(targets):
                raise _error(f"{path}.ops[0]: {sources[0]} has size {size} in dim {dim}, which does not split into "
                             f"{len(targets)} equal parts.", "choose the dim that holds the fused parts.")
            made = [Chunk(producers[0], dim, index, len(targets)) for index in range(len(targets))]
        else:
            shapes = {tuple(s for i, s in enumerate(p.shape) if i != dim) for p in producers}
            if len(shapes) != 1 or len({len(p.shape) for p in producers}) != 1:
                raise _error(f"{path}: the sources of {targets[0]} have shapes {[list(p.shape) for p in producers]}, "
                             f"which do not join along dim {dim}.", "merge tensors that differ only in that dim.")
            made = [Merge(tuple(producers), dim)]
        for name, producer in zip(targets, made, strict=True):
            if name in result:
                raise _error(f"{path}.target: {name} already exists in the checkpoint.",
                             "choose target names that are not taken, or rename the existing tensor first.")
            result[name] = producer
    return result


#: Module names of MoE routers: engines build them unquantized (their correction bias has nowhere to go otherwise).
ROUTER_NAMES = ("gate", "router")


def _is_linear_weight(name: str, producer: Producer) -> bool:
    """A 2-D `<linear>.weight` that is neither an embedding table (looked up, not multiplied) nor a MoE router."""
    if not name.endswith(".weight") or len(producer.shape) != 2:
        return False
    module = name.removesuffix(".weight").rsplit(".", 1)[-1]
    return "embed" not in module and module not in ("wte", "wpe", *ROUTER_NAMES)


def _rule_matches(rule: LinearRule, linear: str) -> bool:
    return any(fnmatchcase(linear, pattern) or fnmatchcase(f"{linear}.weight", pattern) for pattern in rule.match)


@functools.cache
def _quantizer(target: str, path: str) -> LinearQuantizer:
    return LinearQuantizer(QUANT_TARGETS[target], path)


def _check_target(tensor: PlannedTensor, rule: LinearRule, spec: ConvertSpec) -> None:
    path = spec.paths[tensor.rule]
    kind = tensor.producer.kind
    if isinstance(rule.route, list) and rule.route[0] != kind:
        raise _error(f"{path}.route: it starts at {rule.route[0]}, but {tensor.name} is stored as {kind}.",
                     "use `route: auto`, or a route starting at the stored format.")
    if tensor.target == FLOAT:
        return
    out, inp = tensor.producer.shape
    _quantizer(tensor.target, path).check(tensor.linear, SimpleNamespace(out_features=out, in_features=inp))


def _target_of(name: str, producer: Producer, spec: ConvertSpec, used: set[int]) -> tuple[str, int | None]:
    if _is_linear_weight(name, producer):
        linear = name.removesuffix(".weight")
        for index, rule in enumerate(spec.linears):
            if _rule_matches(rule, linear):
                used.add(index)
                return rule.target, index
    return FLOAT, None


def build_plan(spec: ConvertSpec, source: SourceWeights, path: str = "spec") -> ConvertPlan:
    """Every output tensor with its origin and target; ConfigError (with the YAML path) for whatever cannot work."""
    state: dict[str, Producer] = {
        name: Stored(name, KIND_OF_STORED[source.stored_format(name)], tuple(source.shape(name)))
        for name in source.names()
    }
    if spec.src_format != "auto":
        other = sorted({p.kind for p in state.values()} - {FLOAT, spec.src_format})
        if other:
            raise _error(f"{path}.defaults.src_format: it says {spec.src_format}, but the checkpoint also stores "
                         f"{', '.join(other)} tensors.", "use `src_format: auto` to read each tensor as it is stored.")
    for index, step in enumerate(spec.preprocess):
        where = f"{path}.preprocess[{index}]"
        state = _apply_rename(state, step, where) if isinstance(step, RenameStep) else _apply_convert(state, step, where)
    used: set[int] = set()
    tensors = []
    for name, producer in state.items():
        target, rule = _target_of(name, producer, spec, used)
        tensors.append(PlannedTensor(name, producer, target, rule))
    unused = [index for index in range(len(spec.linears)) if index not in used]
    if unused:
        linears = [n.removesuffix(".weight") for n, p in state.items() if _is_linear_weight(n, p)]
        raise _error(f"{spec.paths[unused[0]]}.match: {spec.linears[unused[0]].match} matches no linear of the "
                     f"checkpoint (linears: {_examples(linears)}); an earlier rule may already take them.",
                     "write the patterns against those names (`*` matches any text), or remove the rule.")
    for tensor in tensors:
        if tensor.rule is not None:
            _check_target(tensor, spec.linears[tensor.rule], spec)
    return ConvertPlan(tensors)

