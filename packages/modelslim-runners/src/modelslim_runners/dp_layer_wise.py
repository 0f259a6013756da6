"""`dp_layer_wise`: layer-wise quantization with the calibration samples split over several devices.

Given `--device cpu:0,1` / `cuda:0,1` / `npu:0,1,2,3`, one process per device is started (gloo on CPU, nccl
on CUDA, hccl on NPU); under `torchrun` (several nodes) the ranks already exist and join the existing
process group instead. Every rank processes every unit on its share of the samples; statistics are reduced
across ranks, each weight is quantized by one rank and broadcast, and rank 0 alone writes the checkpoint. A unit
processed in pieces (a MoE trunk and groups of routed experts, a dense layer's attention block and MLP) is walked
piece by piece by every rank in the same order: each piece's statistics are reduced and its weights quantized
across the ranks as a whole unit's are.
A data-free stage streamed linear by linear splits the pieces themselves: each linear is loaded and quantized by
one rank only and saved by rank 0 (split_pieces.py), so memory, reads and work divide by the number of ranks.
Memory: the budget (--max_memory, or on the host the free RAM plus what the launcher holds) is the host's, shared
by the ranks on that host: each rank plans and checks its pieces against its equal share, so together they never
overcommit the host, and a piece that cannot fit in a rank's share stops the run naming the piece and its bytes.
If a rank dies the others are stopped and the run fails with that rank's error.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modelslim_core import errors
from modelslim_core.errors import MemoryBudgetError, ModelSlimError, UnsupportedError
from modelslim_core.protocol.spec import processor_class
from modelslim_core.runtime.context import DeviceSpec, RunContext
from modelslim_core.runtime.runner import Runner, Stage
from modelslim_core.runtime.selection_check import EmptySelectionError
from modelslim_runners.budget import gib, host_budget_bytes
from modelslim_runners.memory import rss_bytes
from modelslim_runners.pipeline import UnitPipeline
from modelslim_runners.placement import LayerWisePlacement

logger = logging.getLogger(__name__)

BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}
#: A collective that waits longer than this (a dead or stuck peer) fails instead of hanging.
COLLECTIVE_TIMEOUT = timedelta(seconds=int(os.environ.get("MSMODELSLIM_DIST_TIMEOUT", "600")))


def check_distributed_support(stages: list[Stage]) -> None:
    """Refuse, before any work, processors whose statistics cannot be combined across ranks."""
    unsupported = sorted({c.type for s in stages for c in s.processors if not processor_class(c).supports_distributed(c)})
    if unsupported:
        raise UnsupportedError(
            f"processors {', '.join(unsupported)} cannot run data-parallel over several devices.",
            "use a single device (e.g. --device cpu or npu:0) or runner layer_wise.",
        )


def launched_by_torchrun() -> bool:
    return all(key in os.environ for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_device(device: DeviceSpec, rank: int) -> DeviceSpec:
    index = device.indices[rank % len(device.indices)] if device.indices else rank
    return DeviceSpec(device.type, (index,))


def ranks_on_this_host(world: int) -> int:
    """How many ranks share this host's memory: torchrun says (LOCAL_WORLD_SIZE); spawned ranks are all local."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))


def share_budget(context: RunContext, local_ranks: int) -> int | None:
    """Give this rank its equal share of the host's budget (context.max_memory is the host's on entry); returns
    the host's budget (None: no budget, nothing shared)."""
    host = context.max_memory
    if host is not None and local_ranks > 1:
        context.max_memory = host // local_ranks
        logger.info("Memory budget per rank: %s (%s for the ranks on this host, shared by %d).",
                    gib(context.max_memory), gib(host), local_ranks)
    return host


def _run_rank(context: RunContext, stages: list[Stage], local_ranks: int) -> None:
    if context.device.type == "npu":
        torch.npu.set_device(context.device.torch_device)  # type: ignore[attr-defined]  # provided by torch_npu
    elif context.device.type == "cuda":
        torch.cuda.set_device(context.device.torch_device)
    host = share_budget(context, local_ranks)
    try:
        UnitPipeline(context, LayerWisePlacement(context)).run(stages)
    except MemoryBudgetError as exc:
        if host is None or local_ranks == 1:
            raise
        raise MemoryBudgetError(
            f"{exc.message} (this rank's share: {gib(host)} for the ranks on this host, split between {local_ranks})",
            f"{exc.hint.rstrip('.')}; or run fewer ranks on this host (--device with fewer indices, torchrun "
            "--nproc_per_node), each then gets a larger share.") from None
    dist.barrier()


def _worker(rank: int, world: int, port: int, context: RunContext, stages: list[Stage], error_dir: str, level: int) -> None:
    """Entry point of a spawned rank: join the group, run, report a user-facing error to the parent."""
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s - rank {rank} - %(name)s - %(levelname)s - %(message)s")
    for name in ("modelslim", "modelslim_core", "modelslim_runners", "modelslim_save_ascend"):
        logging.getLogger(name).setLevel(level if rank == 0 else max(level, logging.WARNING))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    context.device = _rank_device(context.device, rank)
    try:
        dist.init_process_group(BACKENDS[context.device.type], rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
        _run_rank(context, stages, world)
    except ModelSlimError as exc:
        report = {"kind": type(exc).__name__, "message": f"rank {rank}: {exc.message}", "hint": exc.hint,
                  # a selection refusal keeps its type and YAML path across the process boundary (tune drops that item)
                  "path": exc.path if isinstance(exc, EmptySelectionError) else None}
        Path(error_dir, f"rank{rank}.json").write_text(json.dumps(report))
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    _exit_skipping_finalization()


def _exit_skipping_finalization() -> None:
    """End a rank whose work is done and committed without interpreter finalization: gloo's threads can still
    hold tensors then, and releasing them while the interpreter is torn down aborts the process now and then
    (SIGABRT, "terminate called without an active exception"), which would turn a complete run into a failure."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _raise_rank_error(error_dir: Path, failure: BaseException) -> None:
    reports = sorted(error_dir.glob("rank*.json"))
    if reports:
        report = json.loads(reports[0].read_text())
        if report.get("path") is not None:
            raise EmptySelectionError(report["path"], report["message"], report["hint"]) from None
        raise getattr(errors, report["kind"], ModelSlimError)(report["message"], report["hint"]) from None
    raise UnsupportedError(
        f"a data-parallel worker process failed: {str(failure).strip().splitlines()[-1] if str(failure).strip() else failure!r}.",
        "the other ranks were stopped; see the log above (MSMODELSLIM_LOG_LEVEL=debug for details), then rerun.",
    ) from None


class DpLayerWiseRunner(Runner):
    name = "dp_layer_wise"

    def run(self, stages: list[Stage]) -> None:
        check_distributed_support(stages)
        if self.context.max_memory is None and self.context.device.type == "cpu":
            # the ranks share the host's RAM: without a budget each would plan as if it had the host alone
            self.context.max_memory = host_budget_bytes()
        if dist.is_initialized() or launched_by_torchrun():
            self._join(stages)
            return
        indices = self.context.device.indices or ()
        if len(indices) < 2:
            logger.info("dp_layer_wise with one device: running layer_wise.")
            UnitPipeline(self.context, LayerWisePlacement(self.context)).run(stages)
            return
        self._spawn(stages, len(indices))

    def _join(self, stages: list[Stage]) -> None:
        """Under torchrun: this process is one rank of an existing group (possibly across nodes)."""
        if not dist.is_initialized():
            backend = BACKENDS[self.context.device.type]
            dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        self.context.device = _rank_device(self.context.device, local_rank)
        logger.info("Joined process group: rank %d of %d on %s.", dist.get_rank(), dist.get_world_size(), self.context.device)
        _run_rank(self.context, stages, ranks_on_this_host(dist.get_world_size()))

    def _spawn(self, stages: list[Stage], world: int) -> None:
        port = _free_port()
        if self.context.max_memory is not None:  # this launcher stays alive, holding what it holds, while they run
            self.context.max_memory = max(0, self.context.max_memory - rss_bytes())
        level = logging.getLogger("modelslim").getEffectiveLevel()
        logger.info("Starting %d data-parallel workers on %s.", world, self.context.device)
        with tempfile.TemporaryDirectory(prefix="modelslim-dp-") as error_dir:
            try:
                mp.spawn(_worker, args=(world, port, self.context, stages, error_dir, level), nprocs=world, join=True)
            except (mp.ProcessRaisedException, mp.ProcessExitedException) as failure:
                _raise_rank_error(Path(error_dir), failure)
