"""Turning pydantic validation errors into one-paragraph messages that name the YAML path.

A user who typed `scope: per_tokn` wants to read `spec.process[1].qconfig.act.scope: 'per_tokn' is not
allowed; allowed: ...`, not a pydantic dump. Every config model in ModelSlim is validated through here.

Unknown keys are errors with a "did you mean" suggestion. Keys that configs written for the reference tool
carry but that have no effect here (documented per model in `ignored_keys`, or found by a validator) are
accepted, dropped, and warned about once each, naming the YAML path and why: never ignored silently.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import typing
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from modelslim_core.errors import ConfigError

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every YAML-facing model: unknown keys are errors, values are not silently coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=False, validate_default=True)

    #: Keys accepted for compatibility that do nothing here: key -> why (shown in the warning).
    ignored_keys: ClassVar[dict[str, str]] = {}
    _ignored: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _drop_ignored_keys(cls, data: Any, handler: Any) -> Any:
        dropped: dict[str, str] = {}
        if cls.ignored_keys and isinstance(data, dict):
            dropped = {key: cls.ignored_keys[key] for key in data if key in cls.ignored_keys}
            data = {key: value for key, value in data.items() if key not in dropped}
        model = handler(data)
        for key, reason in dropped.items():
            model.note_ignored(key, reason)
        return model

    def note_ignored(self, key: str, reason: str) -> None:
        """Record that `key` (relative to this mapping, e.g. `ext.scale_dtype`) was accepted without effect."""
        self._ignored[key] = reason


def suggestion(word: str, candidates: Any) -> str:
    """` (did you mean 'x'?)` for the closest candidate, or '' when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (through Optional, unions, lists and dict values)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the mapping at `loc` (inside `model`) accepts, for suggestions; [] when it cannot be told."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return []
        if isinstance(part, int) or part not in current.model_fields:
            continue  # list indexes, union branch markers
        found = _models_in(current.model_fields[part].annotation)
        current = found[0] if found else None
    if current is None:
        return []
    ignored = current.ignored_keys if issubclass(current, StrictModel) else {}
    return [*current.model_fields, *ignored]


def join_path(prefix: str, loc: tuple[Any, ...]) -> str:
    """`spec.process` + (1, 'qconfig', 'act') -> `spec.process[1].qconfig.act`."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-wrap"):
            continue
        elif isinstance(part, str) and ("[" in part or "function" in part or part.startswith("literal")):
            continue  # union/tagged-union branch markers are noise for users
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(error: dict[str, Any], path: str, model: type[BaseModel] | None = None) -> str:
    kind = error.get("type", "")
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return f"{path}: this field is required"
    if kind == "extra_forbidden":
        loc = tuple(error["loc"])
        hint = suggestion(loc[-1], _keys_at(model, loc[:-1])) if model is not None and loc else ""
        return f"{path}: unknown field{hint or ' (remove it or check its spelling)'}"
    if "expected" in ctx:
        return f"{path}: {value!r} is not allowed; allowed: {ctx['expected']}"
    message = error.get("msg", "invalid value")
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return f"{path}: {message} (got {value!r})"


def format_validation_error(exc: ValidationError, prefix: str, model: type[BaseModel] | None = None) -> str:
    """All problems of one validation, each with its YAML path, joined into one paragraph."""
    problems = [_describe(err, join_path(prefix, tuple(err["loc"])), model) for err in exc.errors()]
    return "; ".join(dict.fromkeys(problems))


def ignored_paths(value: Any, prefix: str) -> list[tuple[str, str]]:
    """(YAML path, reason) of every key a validated model tree accepted without effect."""
    found: list[tuple[str, str]] = []
    if isinstance(value, StrictModel):
        found += [(f"{prefix}.{key}" if prefix else key, reason) for key, reason in value._ignored.items()]
        for name in type(value).model_fields:
            found += ignored_paths(getattr(value, name), f"{prefix}.{name}" if prefix else name)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += ignored_paths(item, f"{prefix}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += ignored_paths(item, f"{prefix}.{key}")
    return found


def warn_ignored(value: Any, prefix: str) -> None:
    """One warning per accepted-but-ignored key, naming its YAML path and why it has no effect."""
    for path, reason in ignored_paths(value, prefix):
        logger.warning("%s is accepted for compatibility but has no effect: %s.", path, reason)


def validate(model: type[M], data: Any, prefix: str, hint: str | None = None) -> M:
    """Validate `data` against `model`; failures raise ConfigError naming the YAML path of each problem.

    Keys accepted without effect are warned about here, once per validation."""
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid configuration: {format_validation_error(exc, prefix, model)}.",
            hint or "fix the value at that path; see README.md 'YAML protocol' for the allowed fields.",
        ) from None
    warn_ignored(result, prefix)
    return result


def describe_fields(model: type[BaseModel]) -> str:
    """`name (description), ...` of a model's fields: the valid keys and their ranges, for error hints."""
    return "; ".join(
        f"{name} ({info.description})" if info.description else name for name, info in model.model_fields.items()
    )


class PluginConfig(StrictModel):
    """Base of every `type`-keyed YAML item (processors, savers): the type names the plugin."""

    type: str
    _yaml_path: str = PrivateAttr(default="")

    @property
    def yaml_path(self) -> str:
        """Where this item stands in the YAML (`spec.process[0].configs[1]`), for messages raised at run time."""
        return self._yaml_path or self.type

    @classmethod
    def from_yaml(cls, data: Any, path: str) -> "PluginConfig":
        """Validate one YAML item; containers override this to parse their children with their own paths."""
        config = validate(cls, data, path)
        config._yaml_path = path
        return config
