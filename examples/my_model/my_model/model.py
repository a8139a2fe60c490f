"""A world model that predicts, at every step of the return leg, the mean of the last `k` context frames.

Replace `rollout` with your model. loopnav calls it once per trajectory (override `rollout_batch` to batch them)
with a `RolloutRequest`: the context's frames, poses and actions, and the target's poses and actions, never the
target's frames. It must return `request.horizon` uint8 RGB frames, at any resolution.
"""

from __future__ import annotations

import numpy as np

from loopnav_bench.models import RolloutRequest, WorldModel


class BlurryMemory(WorldModel):
    name = "blurry-memory"
    description = "template: the mean of the last k context frames"
    takes_checkpoint = False  # True when your model loads weights from `checkpoint` (a path or a shipped name)

    # Each model arg is a named, annotated parameter, with no **kwargs: loopnav then refuses an unknown
    # `--model-args` key and a value of the wrong type before the model is built.
    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0, k: int = 8):
        if k < 1:
            raise ValueError(f"blurry-memory: model arg k={k} must be at least 1")
        super().__init__(checkpoint, device, seed, k=k)  # recorded in the results; it keys the run
        self.k = k

    def rollout(self, request: RolloutRequest) -> np.ndarray:
        mean = request.context_frames[-self.k:].mean(axis=0).round().astype(np.uint8)
        return np.repeat(mean[None], request.horizon, axis=0)  # uint8 [horizon, H, W, 3]; seed: request.seed
