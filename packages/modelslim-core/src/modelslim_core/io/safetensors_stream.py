"""Memory-bounded streaming writer of (optionally sharded) safetensors checkpoints.

Quantizing a 100 GB model layer by layer must never hold every output tensor in RAM, so each tensor's bytes
go to a temporary data file the moment they arrive and only small per-tensor metadata is kept. A safetensors
header precedes the data, so a shard's final file is assembled once the shard is full: header, then the
payload copied back from the temporary file.

File naming follows the "ascendv1" layout: `<prefix>.safetensors`, or shards
`<prefix>-00001-of-00003.safetensors` plus `<prefix>.safetensors.index.json`. No final name exists before
its file is complete: work in progress lives under hidden `.<name>.partial` names and is moved into place
with `os.replace`; shards are renamed only at `close()`, because the `-of-N` total is not known earlier.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import torch

from modelslim_core.errors import SaveError
from modelslim_core.io.permissions import secure

logger = logging.getLogger(__name__)

#: Storable dtypes with their safetensors names, in the order the reference writer (safetensors'
#: `save_file`) lays tensors out: its Rust `Dtype` enum, descending, ties broken by name. That order puts
#: every tensor at an offset that is a multiple of its element size, which loaders that mmap the file and
#: `view(dtype)` the bytes depend on; following it also makes our files byte-identical to the reference's.
_DTYPES: tuple[tuple[torch.dtype, str], ...] = (
    (torch.uint64, "U64"),
    (torch.int64, "I64"),
    (torch.float64, "F64"),
    (torch.float32, "F32"),
    (torch.uint32, "U32"),
    (torch.int32, "I32"),
    (torch.bfloat16, "BF16"),
    (torch.float16, "F16"),
    (torch.uint16, "U16"),
    (torch.int16, "I16"),
    (torch.float8_e5m2fnuz, "F8_E5M2FNUZ"),
    (torch.float8_e4m3fnuz, "F8_E4M3FNUZ"),
    (torch.float8_e8m0fnu, "F8_E8M0"),
    (torch.float8_e4m3fn, "F8_E4M3"),
    (torch.float8_e5m2, "F8_E5M2"),
    (torch.int8, "I8"),
    (torch.uint8, "U8"),
    (torch.bool, "BOOL"),
)
_DTYPE_NAME = dict(_DTYPES)
_DTYPE_OF_NAME = {name: dtype for dtype, name in _DTYPES}
_DTYPE_RANK = {dtype: rank for rank, (dtype, _) in enumerate(_DTYPES)}

#: Bounds the memory used while copying a shard's payload from its temporary file.
_COPY_CHUNK = 64 * 2**20
#: Whether the OS copies file ranges itself (Linux), and the errors that mean "not between these files".
_KERNEL_COPY = hasattr(os, "copy_file_range")
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


@dataclass(frozen=True)
class _Entry:
    """Where one tensor's bytes sit in its shard's temporary data file."""

    name: str
    dtype: torch.dtype
    shape: list[int]
    offset: int
    nbytes: int


def _partial(path: Path) -> Path:
    """The in-progress name of `path`: hidden and suffixed, so no tool mistakes it for real output."""
    return path.with_name(f".{path.name}.partial")


def index_path(directory: Path, prefix: str) -> Path:
    """Where the index of a sharded checkpoint lives."""
    return directory / f"{prefix}.safetensors.index.json"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write via a partial name so `path` either does not exist or is complete."""
    partial = _partial(path)
    try:
        partial.write_bytes(data)
        secure(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_index(directory: Path, prefix: str, weight_map: dict[str, str], total_size: int) -> Path:
    """Write the index that tells loaders which shard holds each tensor (the Hugging Face layout)."""
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    path = index_path(directory, prefix)
    _write_atomically(path, (json.dumps(index, indent=2) + "\n").encode())
    return path


def _header(entries: list[_Entry]) -> bytes:
    """The JSON header for `entries` (already in file order), space-padded to 8 bytes as the reference does."""
    header: dict[str, dict[str, object]] = {}
    offset = 0
    for entry in entries:
        end = offset + entry.nbytes
        header[entry.name] = {"dtype": _DTYPE_NAME[entry.dtype], "shape": entry.shape, "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return text + b" " * (-len(text) % 8)


def _copy_range(src: BinaryIO, dst: BinaryIO, offset: int, count: int) -> None:
    """Copy `count` bytes from `offset` in chunks, so a multi-GB tensor never sits in memory whole: inside the
    kernel where it can (copy_file_range: no round trip of every byte through Python buffers), else by reads."""
    if _KERNEL_COPY:
        dst.flush()
        try:
            while count:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), min(count, _COPY_CHUNK), offset)
                if not copied:
                    raise OSError(f"temporary file {src.name} ended {count} bytes early")
                offset += copied
                count -= copied
            return
        except OSError as error:
            if error.errno not in _NO_KERNEL_COPY:
                raise
            dst.seek(0, os.SEEK_END)  # go on by reads from where the kernel stopped (offset, count follow it)
    src.seek(offset)
    while count:
        chunk = src.read(min(count, _COPY_CHUNK))
        if not chunk:
            raise OSError(f"temporary file {src.name} ended {count} bytes early")
        dst.write(chunk)
        count -= len(chunk)


class _Shard:
    """One output file being filled: payload on disk, header as metadata until the shard is assembled."""

    def __init__(self, data_path: Path, entries: list[_Entry] | None = None) -> None:
        self.data_path = data_path
        self._entries: list[_Entry] = list(entries or [])
        self.nbytes = sum(entry.nbytes for entry in self._entries)
        # The payload is read back through this same handle when the shard is assembled: reopening it by
        # name gave a window in which anything that removed the hidden file (a second run clearing the same
        # save_path) turned a finished run into "No such file or directory" at save time.
        if entries is None:
            self._data: BinaryIO = data_path.open("w+b")
        else:  # resuming: drop whatever a killed run appended after its last snapshot
            self._data = data_path.open("r+b")
            self._data.truncate(self.nbytes)
            self._data.seek(self.nbytes)

    def snapshot(self) -> dict:
        """Flush to disk and describe the shard so a later process can continue it."""
        self._data.flush()
        os.fsync(self._data.fileno())
        entries = [[e.name, _DTYPE_NAME[e.dtype], e.shape, e.offset, e.nbytes] for e in self._entries]
        return {"data_path": self.data_path.name, "entries": entries}

    def append(self, name: str, tensor: torch.Tensor) -> None:
        self.append_blocks(name, tensor.dtype, list(tensor.shape), [tensor])

    def append_blocks(self, name: str, dtype: torch.dtype, shape: list[int], blocks: Iterable[torch.Tensor]) -> None:
        """One tensor whose bytes arrive as consecutive blocks (row blocks of a tensor too large to hold whole)."""
        written = 0
        for block in blocks:
            # A uint8 view sidesteps numpy's lack of bf16/fp8; flattening first makes it legal for 0-dim tensors.
            payload = block.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
            self._data.write(payload)
            written += payload.nbytes
        self._entries.append(_Entry(name, dtype, shape, self.nbytes, written))
        self.entry_start = self.nbytes  # where the last tensor began (its size is checked by the writer)
        self.nbytes += written

    def assemble(self, target: Path) -> None:
        """Write the finished file to `target`, laid out in the reference order, and drop the payload file."""
        entries = sorted(self._entries, key=lambda entry: (_DTYPE_RANK[entry.dtype], entry.name))
        header = _header(entries)
        self._data.flush()
        with self._data as src, target.open("wb") as dst:
            dst.write(struct.pack("<Q", len(header)))
            dst.write(header)
            for entry in entries:
                _copy_range(src, dst, entry.offset, entry.nbytes)
        self.data_path.unlink(missing_ok=True)

    def discard(self) -> None:
        self._data.close()


class ShardedSafetensorsWriter:
    """Streams tensors into `<prefix>.safetensors` or into size-limited shards with an index.

    `part_file_size_gb == 0` writes one file; otherwise a shard holds at most `part_file_size_gb` GiB of raw
    tensor payload (headers not counted), except that a larger tensor gets a shard of its own. `limit_bytes`
    overrides that limit in bytes (tests use it to shard tiny tensors). Used as a context manager, the writer
    closes on success and aborts on an exception, so a failed run leaves no half-written checkpoint.
    """

    def __init__(self, directory: Path, prefix: str, part_file_size_gb: int, *, limit_bytes: int | None = None):
        directory = Path(directory)
        if not directory.is_dir():
            raise SaveError(f"output directory {directory} does not exist.", "create it before saving.")
        if part_file_size_gb < 0 or (limit_bytes is not None and limit_bytes <= 0):
            raise ValueError(f"shard limit must be positive, got {part_file_size_gb} GiB / {limit_bytes} bytes")
        self._directory = directory
        self._prefix = prefix
        if limit_bytes is None and part_file_size_gb > 0:
            limit_bytes = part_file_size_gb * 2**30
        self._limit = limit_bytes  # None: one unsharded file
        self._seen: set[str] = set()
        self._shard_of: dict[str, int] = {}  # tensor name -> 0-based shard number, in write order
        self._total_size = 0
        self._shard: _Shard | None = None
        self._assembled: list[Path] = []  # complete shards still under their partial names
        self._created: list[Path] = []  # everything abort() must remove
        self._finished = False

    @property
    def _sharded(self) -> bool:
        return self._limit is not None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append `tensor`; its bytes go straight to disk, so the caller may free it right after."""
        self._check_open()
        if name in self._seen:
            raise ValueError(f"tensor {name!r} was already written")
        if tensor.dtype not in _DTYPE_NAME:
            raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, which this writer cannot store")
        self._seen.add(name)
        if tensor.device.type == "meta":
            logger.warning("skipping tensor %r: it is on the meta device and has no data to save", name)
            return
        tensor = tensor.detach().to("cpu").contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        with self._saving():
            self._shard_for(name, nbytes).append(name, tensor)
        self._shard_of[name] = len(self._assembled)
        self._total_size += nbytes

    def write_blocks(self, name: str, dtype: torch.dtype, shape: list[int], blocks: Iterable[torch.Tensor]) -> None:
        """Append a tensor of `dtype` and `shape` from consecutive row blocks, so it never sits in memory whole."""
        self._check_open()
        if name in self._seen:
            raise ValueError(f"tensor {name!r} was already written")
        if dtype not in _DTYPE_NAME:
            raise ValueError(f"tensor {name!r} has dtype {dtype}, which this writer cannot store")
        self._seen.add(name)
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        with self._saving():
            shard = self._shard_for(name, nbytes)
            shard.append_blocks(name, dtype, list(shape), blocks)
            if shard.nbytes - shard.entry_start != nbytes:
                raise SaveError(f"tensor {name} received {shard.nbytes - shard.entry_start} of its {nbytes} bytes.",
                                "this is a bug; please report it with MSMODELSLIM_LOG_LEVEL=debug output.")
        self._shard_of[name] = len(self._assembled)
        self._total_size += nbytes

    def snapshot(self) -> dict:
        """Everything needed to continue this writer in another process after a crash (see `resume`)."""
        self._check_open()
        return {
            "seen": sorted(self._seen),
            "shard_of": self._shard_of,
            "total_size": self._total_size,
            "assembled": [path.name for path in self._assembled],
            "created": [path.name for path in self._created],
            "shard": None if self._shard is None else self._shard.snapshot(),
        }

    @classmethod
    def resume(cls, directory: Path, prefix: str, part_file_size_gb: int, snapshot: dict, *,
               limit_bytes: int | None = None) -> "ShardedSafetensorsWriter":
        """A writer continuing from `snapshot`: finished shards kept, the open shard truncated to its last tensor."""
        writer = cls(directory, prefix, part_file_size_gb, limit_bytes=limit_bytes)
        directory = writer._directory
        writer._seen = set(snapshot["seen"])
        writer._shard_of = dict(snapshot["shard_of"])
        writer._total_size = snapshot["total_size"]
        writer._assembled = [directory / name for name in snapshot["assembled"]]
        writer._created = [directory / name for name in snapshot["created"]]
        missing = [path.name for path in writer._assembled if not path.is_file()]
        shard = snapshot["shard"]
        if shard is not None and not (directory / shard["data_path"]).is_file():
            missing.append(shard["data_path"])
        if missing:
            raise SaveError(f"cannot resume: {missing[0]} is gone from {directory}.", "rerun from scratch.")
        if shard is not None:
            entries = [_Entry(name, _DTYPE_OF_NAME[dtype], shape, offset, nbytes)
                       for name, dtype, shape, offset, nbytes in shard["entries"]]
            writer._shard = _Shard(directory / shard["data_path"], entries)
        return writer

    def close(self) -> dict[str, str]:
        """Finish the last shard, give every shard its final name, write the index; returns the weight map."""
        self._check_open()
        with self._saving():
            if self._shard is not None or not self._sharded:
                self._finish_shard()  # a single-file checkpoint exists even when it holds no tensor
            names = self._final_names()
            for partial, final in zip(self._assembled, names, strict=True):
                self._created.append(final)
                secure(partial)
                os.replace(partial, final)
            weight_map = {name: names[number].name for name, number in self._shard_of.items()}
            if self._sharded:
                self._created.append(index_path(self._directory, self._prefix))
                write_index(self._directory, self._prefix, weight_map, self._total_size)
        self._finished = True
        return weight_map

    def abort(self) -> None:
        """Remove every file this writer created, even after `close()`, so callers can undo a failed save."""
        if self._shard is not None:
            self._shard.discard()
            self._shard = None
        for path in self._created:
            path.unlink(missing_ok=True)
        self._finished = True

    def __enter__(self) -> ShardedSafetensorsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._finished:
            self.close()

    def _check_open(self) -> None:
        if self._finished:
            raise ValueError("the safetensors writer is already closed or aborted")

    def _shard_for(self, name: str, nbytes: int) -> _Shard:
        """The shard `nbytes` more go into, starting a new one when the current one would reach the limit."""
        if self._limit is not None:
            if self._shard is not None and self._shard.nbytes + nbytes >= self._limit:
                self._finish_shard()
            if nbytes > self._limit:
                logger.warning(
                    "tensor %r (%d bytes) exceeds the shard limit of %d bytes; it gets a shard of its own",
                    name, nbytes, self._limit,
                )
        if self._shard is None:
            self._shard = self._open_shard()
        return self._shard

    def _open_shard(self) -> _Shard:
        data_path = _partial(self._directory / f"{self._prefix}-{len(self._assembled) + 1:05d}.data")
        self._created.append(data_path)
        return _Shard(data_path)

    def _finish_shard(self) -> None:
        shard = self._shard or self._open_shard()
        self._shard = None
        target = _partial(self._directory / f"{self._prefix}-{len(self._assembled) + 1:05d}.safetensors")
        self._created.append(target)
        shard.assemble(target)
        self._assembled.append(target)

    def _final_names(self) -> list[Path]:
        if not self._sharded:
            return [self._directory / f"{self._prefix}.safetensors"]
        count = len(self._assembled)
        return [self._directory / f"{self._prefix}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]

    @contextmanager
    def _saving(self) -> Iterator[None]:
        """Turn an OS failure into a `SaveError` after cleaning up: a half-written checkpoint is worse than none."""
        try:
            yield
        except OSError as error:
            self.abort()
            raise SaveError(
                f"cannot write the safetensors checkpoint in {self._directory}: {error}.",
                "check free disk space and write permission of the output directory.",
            ) from error
