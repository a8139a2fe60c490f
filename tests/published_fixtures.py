"""Shared by the published-model tests: where the upstream golden fixtures are, and LoopNav-layout shards to run
the adapters on."""

from __future__ import annotations

from pathlib import Path

import pytest
from raw_fixtures import add_trajectory, write_csv

from loopnav_bench.models import RolloutRequest
from loopnav_bench.shards import prepare, read_trajectories
from loopnav_bench.sources.loopnav import LoopNavSource

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the repository (a worktree of it sits one folder deeper)
UPSTREAM = next((p / "shared/fixtures/upstream" for p in (ROOT.parent, ROOT.parent.parent)
                 if (p / "shared/fixtures/upstream").is_dir()), None)


def upstream_fixtures(model: str) -> Path:
    """The model's golden fixture folder, or skip the test saying why."""
    if UPSTREAM is None or not (UPSTREAM / model).is_dir():
        pytest.skip(f"the upstream golden fixtures (../shared/fixtures/upstream/{model}) are not on this machine")
    return UPSTREAM / model


def linked_copy(source: Path, dest: Path) -> Path:
    """A fixture folder of symlinks, so a test can replace one file."""
    dest.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        (dest / file.name).symlink_to(file)
    return dest


def loopnav_shards(root: Path, out: Path) -> Path:
    """Two synthetic LoopNav ABA-5 loops (train split), prepared as shards."""
    rows = [add_trajectory(root, "ABA", "plains_village_1", 5, "05-10_16-21-01"),
            add_trajectory(root, "ABA", "plains_village_2", 5, "05-10_16-22-01", seed=1)]
    write_csv(root, "train", rows)
    prepare(LoopNavSource(input=root, splits=["train"]), out)
    return out


def requests_of(shards: Path, horizon: int) -> list[RolloutRequest]:
    """Rollout requests of the shards' trajectories, their return legs cut to `horizon` frames to keep tests short."""
    requests = [RolloutRequest.from_trajectory(t, seed=3) for t in read_trajectories(shards, split="train")]
    for r in requests:
        r.target_poses, r.target_actions = r.target_poses[:horizon], r.target_actions[:horizon]
    return requests
