"""Output permissions: files 0o640, directories 0o750, whatever the umask.

Checkpoints hold a model's weights, so other users of a shared host must not read them; MindIE-SD also
refuses to load files that are group- or world-writable or world-readable (it wants 0o640 or tighter).
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o640
DIR_MODE = 0o750


def secure(path: Path) -> None:
    """Give one file or directory our output mode."""
    os.chmod(path, DIR_MODE if Path(path).is_dir() else FILE_MODE)


def make_dir(path: Path) -> Path:
    """mkdir -p with our directory mode on every directory it creates (and on `path` itself)."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    for directory in (*missing, path):
        os.chmod(directory, DIR_MODE)
    return path


def secure_tree(root: Path) -> None:
    """Our modes on `root` and everything below it (symlinks are left alone: they may point outside)."""
    root = Path(root)
    if not root.is_dir():
        return
    os.chmod(root, DIR_MODE)
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = Path(directory, name)
            if not path.is_symlink():
                os.chmod(path, DIR_MODE)
        for name in filenames:
            path = Path(directory, name)
            if not path.is_symlink():
                os.chmod(path, FILE_MODE)
