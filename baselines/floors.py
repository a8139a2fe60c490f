"""Floor and reference baselines: models that need no training and bound what a real world model should beat.

copy-last     repeats the last context frame: a model with no dynamics and no memory.
nearest-pose  a memory-only reference: for each target step it returns the context frame taken from the pose nearest
              to the target pose. It cannot imagine anything new, but it recalls perfectly, which is exactly what the
              return leg of a loop rewards.
oracle-copy   the ceiling of memory by copying: for each target frame, the context frame closest to it (lowest
              squared error at the evaluation size). The one entry that sees the target frames (`oracle = True`):
              never ranked, a reference for what recall of the context alone could reach.
dummy         seeded uniform noise, for testing the harness.

Pose distance used by nearest-pose, between a context pose c and a target pose t (poses are x, y, z, yaw, pitch):

    d(c, t) = |xyz_c - xyz_t| / units_per_block  +  yaw_weight * |wrap(yaw_c - yaw_t)|
              +  pitch_weight * |pitch_c - pitch_t|

Position is measured in Minecraft blocks (meta['units_per_block'] source units make one block; 1 when absent), angles
in radians. The defaults, yaw_weight = 4 and pitch_weight = 2 blocks per radian, make facing the wrong way cost more
than standing a few blocks off: a 45 degree yaw error (0.79 rad) weighs as much as being about 3 blocks away, because
what is in view depends more on where one looks than on a small step. Ties go to the latest context frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loopnav_bench.models import RolloutRequest, WorldModel
from loopnav_bench.schema import units_per_block, wrap_angle


class Floor(WorldModel):
    """A model without weights or model args: a --checkpoint or --model-args given to it is an error."""

    takes_checkpoint = False

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0):
        super().__init__(checkpoint, device, seed)


class CopyLastModel(Floor):
    name = "copy-last"
    description = "floor: repeats the last context frame"

    def rollout(self, request: RolloutRequest) -> np.ndarray:
        return np.repeat(request.context_frames[-1:], request.horizon, axis=0)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "context_frames_used": 1, "resolution": "input"}


def pose_distance(context_poses: np.ndarray, target_poses: np.ndarray, units_per_block: float = 1.0,
                  yaw_weight: float = 4.0, pitch_weight: float = 2.0) -> np.ndarray:
    """The module docstring's d(c, t) for every pair: float64 [len(target_poses), len(context_poses)]."""
    context, target = np.asarray(context_poses, np.float64), np.asarray(target_poses, np.float64)
    delta = target[:, None, :] - context[None, :, :]
    position = np.linalg.norm(delta[..., :3], axis=-1) / units_per_block
    yaw = np.abs(wrap_angle(delta[..., 3]))
    pitch = np.abs(delta[..., 4])
    return position + yaw_weight * yaw + pitch_weight * pitch


class NearestPoseModel(WorldModel):
    name = "nearest-pose"
    description = "floor: the context frame whose pose is nearest, no learning"
    takes_checkpoint = False

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 yaw_weight: float = 4.0, pitch_weight: float = 2.0, **model_args: Any):
        super().__init__(checkpoint, device, seed, yaw_weight=yaw_weight, pitch_weight=pitch_weight, **model_args)
        if model_args:
            raise ValueError(f"nearest-pose takes yaw_weight and pitch_weight, not {sorted(model_args)}")
        self.yaw_weight, self.pitch_weight = float(yaw_weight), float(pitch_weight)

    def nearest_context_index(self, request: RolloutRequest) -> np.ndarray:
        """For each target step, the index of the context frame with the nearest pose (latest one on ties)."""
        distance = pose_distance(request.context_poses, request.target_poses,
                                 units_per_block(request.meta), self.yaw_weight, self.pitch_weight)
        latest_first = distance[:, ::-1]
        return distance.shape[1] - 1 - np.argmin(latest_first, axis=1)

    def rollout(self, request: RolloutRequest) -> np.ndarray:
        return request.context_frames[self.nearest_context_index(request)]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "context_frames_used": "all", "resolution": "input",
                "pose_distance": "|dxyz|/units_per_block + yaw_weight*|dyaw| + pitch_weight*|dpitch| (radians)"}


def closest_frame_index(candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target frame, the index of the candidate frame with the lowest squared error (latest on ties).

    Both uint8 [N, h, w, 3] of one size. The squared errors are exact: float64 sums of integer products stay far
    below 2**53, so the choice agrees exactly with PSNR's integer error (metrics.pixel.psnr)."""
    c = candidates.reshape(len(candidates), -1).astype(np.float64)
    t = targets.reshape(len(targets), -1).astype(np.float64)
    squared_error = (t * t).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * t @ c.T
    latest_first = squared_error[:, ::-1]
    return len(candidates) - 1 - np.argmin(latest_first, axis=1)


class OracleCopyModel(Floor):
    name = "oracle-copy"
    oracle = True  # sees RolloutRequest.target_frames; results say so and the leaderboard never ranks it

    def rollout(self, request: RolloutRequest) -> np.ndarray:
        from loopnav_bench.metrics import resize_frames  # the harness's own resize, so the choice is at eval size

        if request.target_frames is None:
            raise ValueError(f"oracle-copy on trajectory {request.id!r}: the request has no target frames "
                             "(only `loopnav evaluate` gives them, to oracle entries)")
        context = resize_frames(request.context_frames, request.target_frames.shape[1:3])
        return request.context_frames[closest_frame_index(context, request.target_frames)]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "context_frames_used": "all", "resolution": "input", "oracle": True,
                "choice": "per target frame, the context frame of lowest squared error at the evaluation size"}


class DummyModel(Floor):
    """Uniform noise in the context frames' shape, drawn from the request's seed: reproducible under any batching."""

    name = "dummy"
    description = "seeded noise, for tests"

    def rollout(self, request: RolloutRequest) -> np.ndarray:
        shape = (request.horizon, *request.context_frames.shape[1:])
        return np.random.default_rng(request.seed).integers(0, 256, size=shape, dtype=np.uint8)
