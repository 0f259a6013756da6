"""Safe YAML loading with duplicate-key rejection, numbers as people write them, and readable dumping.

PyYAML's safe loader silently keeps the last of two equal keys; in a quantization config that hides a
typo (two `exclude:` lines, say), so we reject duplicates and name the line. Anchors and aliases keep
working because they are resolved by the composer before construction.

PyYAML follows YAML 1.1, where a float needs a dot: `1e-5`, `1E-5` and `1e5` come back as strings and a
`scale_min: 1e-5` would be refused as "not a number". Configs are written by people who read `1e-5` as a
number (YAML 1.2 and every other tool do), so the loader resolves the exponent forms as floats too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from modelslim_core.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)  # resolves `<<` merge keys first
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            line = key_node.start_mark.line + 1
            raise ConfigError(
                f"duplicate key {key!r} at line {line} of {key_node.start_mark.name}.",
                "each key may appear once per mapping; remove or rename one of them.",
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)

#: Scientific notation without a dot (`1e-5`, `1E5`, `+2e+3`), which YAML 1.1 leaves a string; the dotted forms
#: and `.5` already resolve as floats.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$")
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse YAML text safely; syntax errors become ConfigError naming the source and line."""
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = source
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark, context = exc.problem_mark, exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        started = f" ({exc.context} at line {context.line + 1}, column {context.column + 1})" if context else ""
        raise ConfigError(
            f"{source} is not valid YAML{where}: {exc.problem}{started}.",
            "check the indentation and quoting around that line.",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}.", "fix the YAML syntax.") from None


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file; unreadable files become ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist or is not a file.", "pass an existing YAML file.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}.", "check the file's permissions and encoding.") from None
    return load_yaml_text(text, source=str(path))


class _NoAliasDumper(yaml.SafeDumper):
    """Dumper that expands aliases: exported configs must be self-contained."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any) -> str:
    """Block-style YAML with key order preserved and no anchors."""
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
