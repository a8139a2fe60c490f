"""Training batches from a prepared shard set: images for the autoencoder, context/target latents for WorldPack.

Both builders are called as `builder(rng, batch_size) -> batch dict` with a numpy Generator the training loop seeds
from (seed, rank, step), which is what makes a resumed run draw the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from loopnav_bench.console import ProgressFn
from loopnav_bench.schema import Trajectory, units_per_block
from loopnav_bench.shards import load_manifest, manifest_hash, read_trajectories
from worldpack.autoencoder import frames_to_tensor
from worldpack.context import ContextLayout, build_example, collate
from worldpack.retrieval import RetrievalParams

BatchBuilder = Callable[[np.random.Generator, int], dict[str, torch.Tensor]]


def load_split(data: str | Path, split: str = "train", progress: ProgressFn | None = None) -> list[Trajectory]:
    total = sum(n for by_range in load_manifest(data)["splits"].get(split, {}).get("counts", {}).values()
                for n in by_range.values())
    trajectories = []
    for traj in read_trajectories(data, split=split):
        trajectories.append(traj)
        if progress:
            progress("read trajectories", len(trajectories), max(total, len(trajectories)))
    if not trajectories:
        raise ValueError(f"{data}: split {split!r} has no trajectories to train on")
    layouts = {t.meta["action_layout"] for t in trajectories}
    if len(layouts) > 1:
        raise ValueError(f"{data}: one model needs one action layout, found {sorted(layouts)}")
    return trajectories


def data_identity(data: str | Path, split: str = "train") -> dict[str, str]:
    """What a checkpoint records about its training data."""
    manifest = load_manifest(data)
    return {"path": str(data), "split": split, "source": manifest["source"], "manifest_hash": manifest_hash(data)}


class ImageBatches:
    """Random frames, resized once to the autoencoder's size and kept as uint8."""

    def __init__(self, trajectories: list[Trajectory], image_size: int):
        self.frames = torch.cat([frames_to_tensor(t.frames, image_size).add(1).mul(127.5).round().byte()
                                 for t in trajectories])

    def __call__(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        index = torch.from_numpy(rng.integers(0, len(self.frames), batch_size))
        return {"images": self.frames[index].float() / 127.5 - 1}


@dataclass
class EncodedTrajectory:
    latents: torch.Tensor   # [T, C, h, w]
    poses: np.ndarray
    actions: np.ndarray
    units_per_block: float


def encode_trajectories(trajectories: list[Trajectory], encode: Callable[[np.ndarray], torch.Tensor],
                        progress: ProgressFn | None = None, chunk: int = 256) -> list[EncodedTrajectory]:
    out = []
    for i, traj in enumerate(trajectories):
        latents = torch.cat([encode(traj.frames[s:s + chunk]).cpu() for s in range(0, len(traj), chunk)])
        out.append(EncodedTrajectory(latents, traj.poses, traj.actions, units_per_block(traj.meta)))
        if progress:
            progress("encode frames", i + 1, len(trajectories))
    return out


class ContextBatches:
    """Random (trajectory, target frame, time shift) triples turned into WorldPack examples by `build_example`."""

    def __init__(self, encoded: list[EncodedTrajectory], layout: ContextLayout, params: RetrievalParams,
                 max_time_shift: int):
        self.encoded, self.layout, self.params, self.max_time_shift = encoded, layout, params, max_time_shift
        lengths = np.array([len(e.latents) - 1 for e in encoded], dtype=np.float64)  # targets per trajectory
        if lengths.sum() <= 0:
            raise ValueError("no trajectory has two frames or more")
        self.weights = lengths / lengths.sum()

    def __call__(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        examples = []
        for t in rng.choice(len(self.encoded), size=batch_size, p=self.weights):
            e = self.encoded[t]
            current = int(rng.integers(1, len(e.latents)))
            last_seen = current - int(rng.integers(1, min(self.max_time_shift, current) + 1))
            example = build_example(e.latents, e.poses, e.actions, current, last_seen, self.layout, self.params,
                                    e.units_per_block)
            example["target"] = e.latents[current]
            examples.append(example)
        return collate(examples)
