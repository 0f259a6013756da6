"""`compute_once`: with two gloo ranks every item is computed by exactly one rank and all ranks end equal."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = '''
import json, os, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from modelslim_core.runtime.distributed import compute_once

def worker(rank, out_dir, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    computed = []
    def compute(index):
        computed.append(index)
        return {"index": index, "by": rank, "tensor": torch.full((2,), float(index * 10 + rank))}
    results = compute_once(5, compute, first_owner=3)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"computed": computed,
                   "results": [[r["index"], r["by"], r["tensor"].tolist()] for r in results]}, handle)
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2, join=True)
'''


def test_every_item_is_computed_by_one_rank_and_shared(tmp_path: Path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    from modelslim_runners.dp_layer_wise import _free_port

    result = subprocess.run([sys.executable, str(script), str(tmp_path), str(_free_port())],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # round robin from rank (3 + i) % 2: items 0, 2, 4 on rank 1; items 1, 3 on rank 0
    assert ranks[0]["computed"] == [1, 3] and ranks[1]["computed"] == [0, 2, 4]
    expected = [[i, (3 + i) % 2, [float(i * 10 + (3 + i) % 2)] * 2] for i in range(5)]
    assert ranks[0]["results"] == ranks[1]["results"] == expected


def test_a_single_process_computes_everything_in_order():
    from modelslim_core.runtime.distributed import compute_once

    calls = []
    assert compute_once(3, lambda i: calls.append(i) or i * i, first_owner=7) == [0, 1, 4]
    assert calls == [0, 1, 2]
