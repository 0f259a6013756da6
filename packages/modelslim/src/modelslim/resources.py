"""Where the shipped practice library and calibration sets are.

In a wheel they are package data (`modelslim/_data/...`); in the source workspace they are the
repository's top-level `practices/` and `calib/` directories. Registered as entry points so plugins
providing their own directories are found the same way.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DATA = Path(__file__).resolve().parent / "_data"


def _find(name: str) -> list[Path]:
    packaged = _PACKAGE_DATA / name
    if packaged.is_dir():
        return [packaged]
    for parent in Path(__file__).resolve().parents:
        if (parent / name).is_dir() and (parent / "packages").is_dir():
            return [parent / name]
    return []


def builtin_practice_dirs() -> list[Path]:
    return _find("practices")


def builtin_calib_dirs() -> list[Path]:
    return _find("calib")
