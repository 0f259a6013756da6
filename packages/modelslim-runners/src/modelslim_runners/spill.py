"""Calibration activations kept on disk when they would crowd host memory.

Between units the pipeline holds every calibration sample's unit inputs (and, for one unit at a time, its
outputs). For long sequences, many samples or wide models these dominate host memory, whatever the
layer-wise loading saves on weights. `ActivationSpill.keep` collects one such list: while its running size
stays under the threshold the items stay in memory; once it passes, everything collected so far and every
later item goes to one file per item under `save_path/.modelslim_spill/`, and the list is read back one
item at a time as the next forward consumes it. Files are written with torch.save and read with torch.load,
so the values (hence the checkpoint) are bit-identical to an in-memory run.

The threshold is `MSMODELSLIM_SPILL_BYTES` (bytes; 0 spills every list) or, by default, a quarter of the
host memory available when the run starts. Each spilled list deletes its files when it is dropped, and the
run removes the whole directory when it ends, however it ends.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from modelslim_runners.memory import host_available_bytes, nested_tensor_bytes

logger = logging.getLogger(__name__)

SPILL_ENV = "MSMODELSLIM_SPILL_BYTES"
SPILL_DIR = ".modelslim_spill"
#: Share of the available host memory one list of activations may take before it goes to disk.
DEFAULT_MEMORY_SHARE = 0.25


def spill_threshold() -> int:
    """Bytes above which a list of activations is spilled (see the module docstring)."""
    configured = os.environ.get(SPILL_ENV, "").strip()
    if configured:
        try:
            return max(int(float(configured)), 0)
        except ValueError:
            logger.warning("%s=%r is not a number of bytes; using the default threshold.", SPILL_ENV, configured)
    return int(host_available_bytes() * DEFAULT_MEMORY_SHARE)


class SpilledList(Sequence):
    """A list whose items live in one file each; reading an item loads just that item."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True)
        self.directory = directory
        self.nbytes = 0
        self._count = 0
        self._remove = weakref.finalize(self, shutil.rmtree, directory, True)

    def append(self, item: Any) -> None:
        torch.save(item, self.directory / f"{self._count:06d}.pt")
        self.nbytes += nested_tensor_bytes(item)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]  # integer indices only
        if not -self._count <= index < self._count:
            raise IndexError(index)
        # Written by this process a moment ago: the items may be UnitInputs, hence not weights_only.
        return torch.load(self.directory / f"{index % self._count:06d}.pt", weights_only=False)

    def __iter__(self) -> Iterator[Any]:
        return (self[index] for index in range(self._count))

    def close(self) -> None:
        """Delete the files now (they are deleted anyway when the list is garbage collected)."""
        self._remove()


class ActivationSpill:
    """Keeps lists of activations in memory or, above the threshold, in files under `root`."""

    def __init__(self, root: Path, threshold: int):
        self.root = root
        self.threshold = threshold
        self._names = itertools.count()
        self._announced = False

    @classmethod
    def for_run(cls, save_path: Path, rank: int) -> "ActivationSpill":
        """This rank's spill, with any files a killed earlier run into the same save_path left behind removed."""
        root = Path(save_path) / SPILL_DIR / f"rank{rank}"
        shutil.rmtree(root, ignore_errors=True)
        return cls(root, spill_threshold())

    def keep(self, items: Iterable[Any]) -> list[Any] | SpilledList:
        """The items, in memory while their total stays at or under the threshold, else on disk."""
        kept: list[Any] = []
        size = 0
        spilled: SpilledList | None = None
        for item in items:
            if spilled is not None:
                spilled.append(item)
                continue
            kept.append(item)
            size += nested_tensor_bytes(item)
            if size > self.threshold:
                spilled = SpilledList(self.root / f"{next(self._names):06d}")
                self._announce(size)
                for earlier in kept:
                    spilled.append(earlier)
                kept = []
        return kept if spilled is None else spilled

    def _announce(self, size: int) -> None:
        if not self._announced:
            logger.info("Calibration activations exceed %.1f MiB (%s or a quarter of the available host memory); "
                        "keeping them on disk in %s.", self.threshold / 2**20, SPILL_ENV, self.root)
            self._announced = True
        logger.debug("Spilling a list of activations (more than %d bytes) to disk.", size)

    def cleanup(self) -> None:
        """Remove every spilled file of this run (and the spill directory if no other run uses it)."""
        shutil.rmtree(self.root, ignore_errors=True)
        # The shared parent goes with the last rank to finish: rmdir fails while another rank's folder is in it.
        with contextlib.suppress(OSError):
            self.root.parent.rmdir()
