"""Shared fixtures: small synthetic trajectories and a prepared shard set, made on the fly (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest

import loopnav_bench  # noqa: F401  (applies the torchvision shim before any test imports torchvision)
from loopnav_bench.schema import Trajectory, make_key, wrap_angle
from loopnav_bench.sources import Source


def make_trajectory(index: int = 0, length: int = 24, size: int = 16, task: str = "ABA", rng_range: int = 5,
                    split: str = "test", offset: int | None = None, seed: int = 0) -> Trajectory:
    """A loop A -> B -> A on a circle: frames are a deterministic function of the pose, so memory helps."""
    rng = np.random.default_rng(seed * 1000 + index)
    half = length // 2
    t = np.concatenate([np.linspace(0, 1, half), np.linspace(1, 0, length - half)])
    x, y = rng_range * t, np.zeros(length)
    yaw = wrap_angle(np.where(np.arange(length) < half, 0.0, np.pi))
    poses = np.stack([x, y, np.zeros(length), yaw, np.zeros(length)], axis=1)
    frames = np.zeros((length, size, size, 3), np.uint8)
    for i, (px, pyaw) in enumerate(zip(x, yaw)):
        frames[i, ..., 0] = int(40 * px) % 256
        frames[i, ..., 1] = 200 if pyaw > 1 else 50
        frames[i, : size // 2, :, 2] = np.arange(size, dtype=np.uint8) * 8
    actions = rng.integers(-1, 2, size=(length, 4)).astype(np.float32)
    meta = {"id": make_key("synthetic", task, rng_range, split, index), "source": "synthetic", "task": task,
            "range": rng_range, "location": f"loc{index % 2}", "split": split, "fps": 20,
            "action_layout": "vizdoom-v1", "original_ids": {"index": index}}
    return Trajectory(frames=frames, poses=poses, actions=actions, offset=offset or half, meta=meta,
                      raw_actions=[{"a": a.tolist()} for a in actions]).validate()


class SyntheticSource(Source):
    """A Source over make_trajectory: lets tests drive `prepare` without a simulator or raw files."""

    name = "synthetic"
    shard_size = 3

    def __init__(self, per_split: int = 4, fail_on: tuple[int, ...] = ()):
        self.per_split, self.fail_on = per_split, fail_on

    def settings(self):
        return {"per_split": self.per_split}

    def plan(self):
        return {split: [{"split": split, "index": i} for i in range(self.per_split)] for split in ("train", "test")}

    def load(self, spec):
        if spec["index"] in self.fail_on:
            raise RuntimeError(f"simulated crash on {spec}")
        task = "ABA" if spec["index"] % 2 == 0 else "ABCA"
        return make_trajectory(spec["index"], task=task, split=spec["split"])


@pytest.fixture
def tiny_shards(tmp_path):
    """A prepared set of synthetic trajectories (4 train, 4 test, 3 per shard)."""
    from loopnav_bench.shards import prepare

    out = tmp_path / "shards"
    prepare(SyntheticSource(), out)
    return out
