"""One writer per output directory.

Two runs writing into one save_path delete each other's work in progress (each clears the earlier output
before it starts), and the loser fails at save time with a missing hidden file. An advisory lock on the
directory itself (no lock file is left behind; the kernel drops it when the process ends, however it ends)
turns that into one clear message before anything is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelslim_core.errors import SaveError

try:
    import fcntl
except ImportError:  # not POSIX: no locking, the runs are on their own
    fcntl = None  # type: ignore[assignment]


def _torchrun_rank() -> int:
    """This process's rank when a launcher (torchrun) started several; 0 otherwise."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    return int(rank) if rank.isdigit() and world.isdigit() and int(world) > 1 else 0


@contextmanager
def exclusive_directory(path: Path, flag: str = "save_path") -> Iterator[None]:
    """Hold an exclusive lock on `path` (an existing directory) for the duration of the block. Under `torchrun`
    the ranks of one run share the directory (only rank 0 writes the checkpoint): rank 0 alone takes the lock."""
    if fcntl is None or _torchrun_rank() > 0:
        yield
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SaveError(
                f"{flag} {str(path)!r} is being written by another msmodelslim run right now.",
                f"wait for that run to finish, or choose another {flag}.",
            ) from None
        yield
    finally:
        os.close(fd)
