"""What the model sees when it predicts one frame: context slots (recent + retrieved), their times and poses.

One function, `build_example`, serves training and rollout alike, so the model is trained on exactly the context
layout it is evaluated with. Frame `current` is the target; `last_seen` is the most recent frame the model is given
(current − 1 in an autoregressive rollout; up to `max_time_shift` frames earlier in training, as NWM samples goal
offsets). The action conditioning is the sum of actions(last_seen, current], the controls that led from the last seen
frame to the target (schema: actions[i] produced frames[i]), and the pose delta is the target's pose in last_seen's
local frame.

Ablation variants (`VARIANTS`) are layouts of packing levels per slot (level ℓ = kernel patch·2^ℓ):
  full            1 recent at level 0, 2 at level 1, 8 at level 2, then 8 retrieved at level 2 (19 frames, paper)
  base            the 4 most recent frames at level 0 (NWM's context)
  pack-only       the 19 most recent frames packed like `full`, no retrieval
  retrieval-only  1 recent plus 3 retrieved, all at level 0
  fine-memory     `full` with its best memories copyable: the top retrieved frame at level 0 and the next two at
                  level 1 (the paper's ℓ_Mj = L_f/λ^dj with a selection-based d_j), 11 recent + 8 retrieved frames
                  as in `full`; 3.81 frames of tokens, within the base's 4
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from loopnav_bench.schema import wrap_angle
from worldpack.retrieval import RetrievalParams, retrieve


@dataclass(frozen=True)
class ContextLayout:
    recent: tuple[int, ...]      # packing level of each recent slot, most recent first
    retrieved: tuple[int, ...]   # packing level of each retrieved slot, best score first

    @property
    def levels(self) -> tuple[int, ...]:
        return self.recent + self.retrieved

    @property
    def frames(self) -> int:
        return len(self.levels)


VARIANTS: dict[str, ContextLayout] = {
    "full": ContextLayout(recent=(0, 1, 1) + (2,) * 8, retrieved=(2,) * 8),
    "base": ContextLayout(recent=(0,) * 4, retrieved=()),
    "pack-only": ContextLayout(recent=(0, 1, 1) + (2,) * 16, retrieved=()),
    "retrieval-only": ContextLayout(recent=(0,), retrieved=(0,) * 3),
    "fine-memory": ContextLayout(recent=(0, 1, 1) + (2,) * 8, retrieved=(0, 1, 1) + (2,) * 5),
}


def relative_pose(origin: np.ndarray, other: np.ndarray, units_per_block: float | np.ndarray = 1.0) -> np.ndarray:
    """`other` poses [..., 5] seen from `origin` poses (broadcast against them): (forward, left, up) offsets in blocks,
    squashed by a signed log so that far memories stay in range, then Δyaw (wrapped) and Δpitch in radians."""
    origin, other = np.asarray(origin, np.float64), np.asarray(other, np.float64)
    d = (other[..., :3] - origin[..., :3]) / np.asarray(units_per_block, np.float64)[..., None]
    c, s = np.cos(origin[..., 3]), np.sin(origin[..., 3])
    local = np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], d[..., 2]], axis=-1)
    squashed = np.sign(local) * np.log1p(np.abs(local))
    angles = np.stack([wrap_angle(other[..., 3] - origin[..., 3]), other[..., 4] - origin[..., 4]], axis=-1)
    return np.concatenate([squashed, angles], axis=-1).astype(np.float32)


def select_context(poses: np.ndarray, current: int, last_seen: int, layout: ContextLayout,
                   params: RetrievalParams, units_per_block: float = 1.0,
                   prefer_before: int | None = None, memory: bool = True) -> np.ndarray:
    """Frame index for each slot of `layout` (-1 = empty): recent frames back from last_seen, then retrieved ones
    (frames before `prefer_before` first: see `retrieve`). With memory=False the retrieved slots are left empty (the
    "does the model use its memory?" diagnostic)."""
    if not 0 <= last_seen < current:
        raise ValueError(f"last_seen {last_seen} must lie in [0, current={current})")
    recent = [last_seen - i if last_seen - i >= 0 else -1 for i in range(len(layout.recent))]
    found = retrieve(poses, current, len(layout.retrieved), params, units_per_block, exclude=set(recent),
                     prefer_before=prefer_before) if memory else []
    retrieved = found + [-1] * (len(layout.retrieved) - len(found))
    return np.array(recent + retrieved, dtype=np.int64)


def build_example(latents: torch.Tensor, poses: np.ndarray, actions: np.ndarray, current: int, last_seen: int,
                  layout: ContextLayout, params: RetrievalParams, units_per_block: float = 1.0,
                  prefer_before: int | None = None, memory: bool = True) -> dict[str, torch.Tensor]:
    """The conditioning for predicting frame `current` from frames [0, current) (latents [≥current, C, h, w]).

    The target latent itself is added by the training batch builder; a rollout samples it instead.
    """
    slots = select_context(poses, current, last_seen, layout, params, units_per_block, prefer_before, memory)
    return example_from_slots(latents, poses, actions, current, last_seen, slots, units_per_block)


def example_from_slots(latents: torch.Tensor, poses: np.ndarray, actions: np.ndarray, current: int, last_seen: int,
                       slots: np.ndarray, units_per_block: float = 1.0) -> dict[str, torch.Tensor]:
    """The conditioning tensors for given context frame indices (one per slot, -1 = empty)."""
    valid = slots >= 0
    safe = np.where(valid, slots, last_seen)
    return {
        # latents[idx] goes through the thread pool: ms on a busy CPU
        "context": latents.index_select(0, torch.from_numpy(safe)),
        "context_valid": torch.from_numpy(valid),
        "context_time": torch.from_numpy(np.where(valid, slots - current, 0).astype(np.float32)),
        "context_pose": torch.from_numpy(relative_pose(poses[current], poses[safe], units_per_block)),
        "action": torch.from_numpy(np.asarray(actions[last_seen + 1:current + 1], np.float32).sum(axis=0)),
        "pose_delta": torch.from_numpy(relative_pose(poses[last_seen], poses[current], units_per_block)),
        "time_shift": torch.tensor(float(current - last_seen)),
        "context_noise": torch.tensor(0.0),  # the std of noise on the context latents: none outside training
    }
