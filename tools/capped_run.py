"""Run a command under a hard memory cap (a cgroup v1 child) and measure its peak RSS and wall time.

The child cgroup lives under /sys/fs/cgroup/memory, gets `memory.limit_in_bytes`, receives the process's
PID before the command starts (a small launcher waits for its PID to be moved), and is removed afterwards.
Without cgroup v1 write access the command runs uncapped (address-space limits such as `prlimit --as` are
too blunt for torch, which reserves far more virtual memory than it uses). Peak RSS and CPU time come from
the kernel's own accounting of the child (`wait4`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
GIB = 2**30


@dataclass
class CappedResult:
    returncode: int
    peak_rss: int
    seconds: float
    cpu_seconds: float
    oom_killed: bool
    read_bytes: int
    written_bytes: int
    stderr: str


def _cgroup(cap: int) -> Path | None:
    if not (CGROUP_ROOT / "cgroup.procs").exists() or not os.access(CGROUP_ROOT, os.W_OK):
        return None
    group = CGROUP_ROOT / f"modelslim-bench-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(cap))
        if (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(cap))
    except OSError:
        _remove(group)
        return None
    return group


def _remove(group: Path) -> None:
    for _ in range(50):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


def _io(pid: int) -> tuple[int, int]:
    try:
        fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        return int(fields["read_bytes"]), int(fields["write_bytes"])
    except (OSError, KeyError, ValueError):
        return 0, 0


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def run_capped(command: list[str], cap: int, env: dict[str, str] | None = None, log: Path | None = None) -> CappedResult:
    """Run `command` with at most `cap` bytes of memory (cgroup), returning its peak RSS, time and I/O; `log`
    receives the command's stderr as it comes (a long run can be followed)."""
    group = _cgroup(cap)
    # The launcher blocks on stdin until its PID is in the cgroup, then execs the command (same PID).
    launcher = [sys.executable, "-c", "import os,sys; sys.stdin.readline(); os.execvp(sys.argv[1], sys.argv[1:])", *command]
    started = time.perf_counter()
    process = subprocess.Popen(launcher, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=env)
    if group is not None:
        (group / "cgroup.procs").write_text(str(process.pid))
    process.stdin.write("go\n")
    process.stdin.close()
    io = [0, 0]
    stderr_lines: list[str] = []

    def read_stderr() -> None:
        sink = log.open("w", encoding="utf-8") if log is not None else None
        try:
            for line in process.stderr:
                stderr_lines.append(line)
                if sink is not None:
                    sink.write(line)
                    sink.flush()
        finally:
            if sink is not None:
                sink.close()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()

    sampled_peak = [0]

    def sample_io() -> None:
        while process.poll() is None:
            read, written = _io(process.pid)
            io[0], io[1] = max(io[0], read), max(io[1], written)
            sampled_peak[0] = max(sampled_peak[0], _rss(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample_io, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=5)
    oom = False
    if group is not None:
        try:
            oom = "oom_kill 1" in (group / "memory.oom_control").read_text() or process.returncode == -9
        except OSError:
            oom = process.returncode == -9
        _remove(group)
    # ru_maxrss alone is not enough: a process that resets its peak counter (/proc/self/clear_refs, as the
    # per-piece memory report does) lowers it; the sampled RSS and the process's own report cover that.
    return CappedResult(process.returncode, max(usage.ru_maxrss * 1024, sampled_peak[0]), seconds, usage.ru_utime + usage.ru_stime, oom,
                        io[0], io[1], "".join(stderr_lines))
