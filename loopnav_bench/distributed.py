"""Running one evaluation over several processes (`torchrun --nproc-per-node N`), failing fast when one of them fails.

Each rank takes every `world_size`-th trajectory of the deterministic list (no resampling, ranks with nothing to do are
fine), writes its rows to disk, then leaves a `rank-<r>.done` or `rank-<r>.failed` marker. Ranks look for a failed peer
between batches and stop early; at the end one all_reduce (gloo, bounded by a timeout) tells every rank how many
failed, so all of them exit non-zero together instead of waiting on a dead peer. Rank 0 then merges from the rows.
A rank that dies without a word (killed, out of memory) is caught by torchrun, which stops the others.
"""

from __future__ import annotations

import os
import traceback
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from loopnav_bench.fileio import read_json, write_json_atomic

TIMEOUT_ENV = "LOOPNAV_DIST_TIMEOUT"  # seconds a rank waits for its slowest peer at the final all_reduce
DEFAULT_TIMEOUT_S = 1800


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

    def device(self, device: str) -> str:
        """A bare "cuda" means one GPU per rank under torchrun: this rank's local GPU."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.world_size > 1 else device

    def __enter__(self) -> "DistContext":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def start(cls) -> "DistContext":
        """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), if any."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
            dist.init_process_group("gloo", timeout=timeout)  # CPU collectives only: the models never communicate
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))

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
