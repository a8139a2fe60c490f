"""Training data from a prepared shard set: the train split, random frames for the autoencoder, and trajectories
encoded into a latent space for the latent models' own batch sources.

Batch sources are called as `source(rng, batch_size) -> batch dict` with a numpy Generator the training loop seeds
from (seed, rank, step), which is what makes a resumed run draw the same batches as an uninterrupted one. `fit` moves a
source to the training device once (`source.to(device)`); each batch is then gathered there from index arrays, so a
step copies only those from the host, never the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, TypeVar

import numpy as np
import torch

from loopnav_bench.console import ProgressFn
from loopnav_bench.schema import Trajectory, units_per_block
from loopnav_bench.shards import load_manifest, read_trajectories
from modelkit.autoencoder import frames_to_tensor


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


class BatchSource(Protocol):
    """What `fit` draws batches from."""

    def to(self, device: torch.device | str) -> BatchSource: ...

    def __call__(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]: ...


class DeviceBatches:
    """What every batch source shares: its tensors move to the training device once, and batches are gathered there
    with index arrays drawn on the host (numpy, so that the draws stay a function of the seeded Generator)."""

    device = torch.device("cpu")

    def to(self: Source, device: torch.device | str) -> Source:
        """Move every tensor attribute to `device`; later batches come out there."""
        self.device = torch.device(device)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(self.device))
        return self

    def put(self, array: np.ndarray) -> torch.Tensor:
        """A host array (indices, or a batch's small per-example values) as a tensor on the source's device."""
        return torch.from_numpy(array).to(self.device)

    def gather(self, table: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        """Rows `index` (an array of any shape) of a device table: [*index.shape, *table.shape[1:]]."""
        return table[self.put(index)]


Source = TypeVar("Source", bound=DeviceBatches)


def trajectory_starts(lengths: np.ndarray) -> np.ndarray:
    """Where each trajectory begins once all are concatenated into one table."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def pixels_uint8(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] frames as uint8 [N, 3, size, size]: resized once, a quarter of float32's memory."""
    return frames_to_tensor(frames, size).add(1).mul(127.5).round().byte()


def pixels_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float in [-1, 1], on their device."""
    return pixels.float() / 127.5 - 1


class ImageBatches(DeviceBatches):
    """Random frames, resized once to the autoencoder's size and kept as uint8."""

    def __init__(self, trajectories: list[Trajectory], image_size: int):
        self.frames = torch.cat([pixels_uint8(t.frames, image_size) for t in trajectories])

    def __call__(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        return {"images": pixels_float(self.gather(self.frames, rng.integers(0, len(self.frames), batch_size)))}


@dataclass
class EncodedTrajectory:
    latents: torch.Tensor   # [T, C, h, w]
    poses: np.ndarray
    actions: np.ndarray
    units_per_block: float
    offset: int = 0         # the protocol's split point: the return leg is [offset, T)


def encode_trajectories(trajectories: list[Trajectory], encode: Callable[[np.ndarray], torch.Tensor],
                        progress: ProgressFn | None = None, chunk: int = 256) -> list[torch.Tensor]:
    """Each trajectory's frames as latents [T, C, h, w], on the CPU."""
    out = []
    for i, traj in enumerate(trajectories):
        # contiguous: a conv encoder can hand back channels-last latents, and randn_like (the diffusion noise) follows
        # the layout, so cached and freshly encoded latents would otherwise draw different noise
        out.append(torch.cat([encode(traj.frames[s:s + chunk]).cpu() for s in range(0, len(traj), chunk)]).contiguous())
        if progress:
            progress("encode frames", i + 1, len(trajectories))
    return out


def with_latents(trajectories: list[Trajectory], latents: list[torch.Tensor]) -> list[EncodedTrajectory]:
    return [EncodedTrajectory(z, t.poses, t.actions, units_per_block(t.meta), t.offset)
            for t, z in zip(trajectories, latents)]
