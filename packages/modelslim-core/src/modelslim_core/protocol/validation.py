"""Turning pydantic validation errors into one-paragraph messages that name the YAML path.

A user who typed `scope: per_tokn` wants to read `spec.process[1].qconfig.act.scope: 'per_tokn' is not
allowed; allowed: ...`, not a pydantic dump. Every config model in ModelSlim is validated through here.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from modelslim_core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every YAML-facing model: unknown keys are errors, values are not silently coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=False, validate_default=True)


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


def _describe(error: dict[str, Any], path: str) -> str:
    kind = error.get("type", "")
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return f"{path}: this field is required"
    if kind == "extra_forbidden":
        return f"{path}: unknown field (remove it or check its spelling)"
    if "expected" in ctx:
        return f"{path}: {value!r} is not allowed; allowed: {ctx['expected']}"
    message = error.get("msg", "invalid value")
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return f"{path}: {message} (got {value!r})"


def format_validation_error(exc: ValidationError, prefix: str) -> str:
    """All problems of one validation, each with its YAML path, joined into one paragraph."""
    problems = [_describe(err, join_path(prefix, tuple(err["loc"]))) for err in exc.errors()]
    return "; ".join(dict.fromkeys(problems))


def validate(model: type[M], data: Any, prefix: str, hint: str | None = None) -> M:
    """Validate `data` against `model`; failures raise ConfigError naming the YAML path of each problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid configuration: {format_validation_error(exc, prefix)}.",
            hint or "fix the value at that path; see README.md 'YAML protocol' for the allowed fields.",
        ) from None


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
