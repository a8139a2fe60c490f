"""The process group and device of every command (`evaluate`, `train`), alone or under `torchrun --nproc-per-node N`.

`DistContext.start()` joins the group torchrun describes (gloo for evaluation, whose collectives are CPU-only; NCCL
for training on GPUs) and `device("auto")` resolves to CUDA when there is one, else the CPU; under torchrun a bare
"cuda" is this rank's local GPU.

Evaluation fails fast when one rank fails: each rank takes every `world_size`-th trajectory of the deterministic list
(no resampling, ranks with nothing to do are fine), writes its rows to disk, then leaves a `rank-<r>.done` or
`rank-<r>.failed` marker. Ranks look for a failed peer between batches and stop early; at the end one all_reduce (gloo,
bounded by a timeout) tells every rank how many failed, so all of them exit non-zero together instead of waiting on a
dead peer. Rank 0 then merges from the rows. A rank that dies without a word (killed, out of memory) is caught by
torchrun, which stops the others.
"""

from __future__ import annotations

import os
import traceback
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from loopnav_bench.fileio import read_json, write_json_atomic

TIMEOUT_ENV = "LOOPNAV_DIST_TIMEOUT"  # seconds a rank waits for its slowest peer at the final all_reduce
DEFAULT_TIMEOUT_S = 1800
DEFAULT_DEVICE = "auto"  # evaluate and train alike: CUDA when there is one


def resolve_device(device: str) -> str:
    """"auto" is CUDA when available, else the CPU; anything else is kept."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class PeerFailed(RuntimeError):
    """Another rank left a failed marker: this one stops early (it has not failed itself)."""


@dataclass
class DistContext:
    """This process's place in the run; use as a context manager so the process group is always destroyed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str = DEFAULT_DEVICE) -> str:
        """`resolve_device`, and a bare "cuda" under torchrun is this rank's local GPU."""
        device = resolve_device(device)
        return f"cuda:{self.local_rank}" if device == "cuda" and self.world_size > 1 else device

    def __enter__(self) -> "DistContext":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def start(cls, backend: str = "gloo") -> "DistContext":
        """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), if any,
        or the one this process already joined."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        import torch
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if not dist.is_initialized():
            if backend == "nccl":  # NCCL binds each rank to its GPU
                torch.cuda.set_device(local_rank)
            timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
            dist.init_process_group(backend, timeout=timeout)
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)

    @classmethod
    def for_device(cls, device: str) -> "DistContext":
        """Join with the backend that suits `device`'s collectives: NCCL on GPUs (training), gloo on the CPU."""
        return cls.start("nccl" if resolve_device(device).startswith("cuda") else "gloo")

    def mean(self, value: Any) -> float:
        """A scalar tensor averaged over the ranks, as a float (one sync)."""
        if self.world_size > 1:
            import torch.distributed as dist

            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world_size
        return float(value.detach())

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def shared_token(self) -> str:
        """A fresh id that every rank agrees on (rank 0 draws it): names this attempt's marker folder."""
        token = [uuid.uuid4().hex]
        if self.world_size > 1:
            import torch.distributed as dist

            dist.broadcast_object_list(token, src=0)
        return token[0]

    def count_failed(self, failed: bool) -> int:
        if self.world_size == 1:
            return int(failed)
        import torch
        import torch.distributed as dist

        flag = torch.tensor([int(failed)])
        dist.all_reduce(flag)
        return int(flag.item())

    def close(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


class RankMarkers:
    """done/failed files of one attempt, one per rank, so that ranks learn of each other's failures from disk."""

    def __init__(self, folder: Path, rank: int):
        self.folder, self.rank = folder, rank
        folder.mkdir(parents=True, exist_ok=True)

    def done(self) -> None:
        write_json_atomic(self.folder / f"rank-{self.rank}.done", {"rank": self.rank})

    def failed(self, err: BaseException) -> None:
        write_json_atomic(self.folder / f"rank-{self.rank}.failed", {
            "rank": self.rank, "error": f"{type(err).__name__}: {err}",
            "traceback": "".join(traceback.format_exception(err)),
        })

    def check_peers(self) -> None:
        if any(self.folder.glob("rank-*.failed")):
            raise PeerFailed("another rank failed")

    def failures(self) -> list[str]:
        return [f"rank {r['rank']}: {r['error']}" for r in map(read_json, sorted(self.folder.glob("rank-*.failed")))]
