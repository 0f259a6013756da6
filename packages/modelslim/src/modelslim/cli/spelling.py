"""Forgiving spellings on the command line: `--model-path` = `--model_path`, and "did you mean" for typos.

Flags are registered once, in the spelling the reference uses (`--model_path`, `--dry-run`); every other
mix of `-` and `_` is rewritten to it before argparse sees the arguments, so `-h` stays short.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Sequence


def _key(option: str) -> str:
    return option.replace("-", "_").lower() if option.startswith("--") else option


def long_options(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings if option.startswith("--")]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def normalize(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """Rewrite each `--flag` (or `--flag=value`) to its registered spelling; stop at a bare `--`."""
    commands = subcommands(parser)
    command = next((token for token in argv if token in commands), None)
    options = long_options(parser) + (long_options(commands[command]) if command else [])
    canonical = {_key(option): option for option in options}
    rewritten: list[str] = []
    for index, token in enumerate(argv):
        if token == "--":
            return rewritten + list(argv[index:])
        if token.startswith("--"):
            name, sep, value = token.partition("=")
            token = canonical.get(_key(name), name) + sep + value
        rewritten.append(token)
    return rewritten


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate (comparing with `-`/`_` and case ignored), if any is close enough."""
    by_key = {_key(c).lstrip("-_").lower(): c for c in candidates}
    match = difflib.get_close_matches(_key(word).lstrip("-_").lower(), list(by_key), n=1, cutoff=0.6)
    if match:
        return by_key[match[0]]
    prefixed = [c for key, c in by_key.items() if _key(word).lstrip("-_").lower().startswith(key)]
    return max(prefixed, key=len) if prefixed else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """" Did you mean X?" or ""."""
    match = suggest(word, candidates)
    return f" Did you mean {match}?" if match else ""
