"""What the model sees when it predicts one frame: context slots (recent + retrieved), their times and poses.

One slot rule (`select_context`, with its memory-pool rule) and one builder (`slot_conditioning`) serve training,
rollouts and probes alike, so the model is trained on exactly the context it is evaluated with. Frame `current` is the
target; `last_seen` is the most recent frame the model is given (current − 1 in an autoregressive rollout; up to
`max_time_shift` frames earlier in training, as NWM samples goal offsets).

Ablation variants (`VARIANTS`) are layouts of packing levels per slot (level ℓ = kernel patch·2^ℓ; on the `cpu`
preset's 8×8 latent with patch 2, levels 0, 1, 2 leave 16, 4 and 1 tokens per frame):
  full            1 recent at level 0, 2 at level 1, 8 at level 2, then 8 retrieved: the top 4 at level 1 and the
                  next 4 at level 2 (19 frames as in the paper; 3.25 frames of tokens). The paper's 8 memories at
                  16× keep 16 tokens each on its 28×28 latent; on ours level 2 would leave one token per memory,
                  nothing to copy, so the best 4 keep 4 tokens
  base            the 4 most recent frames at level 0 (NWM's context)
  pack-only       the 19 most recent frames: 1 at level 0, 2 at level 1, 16 at level 2 (the paper's packing), no
                  retrieval
  retrieval-only  1 recent plus 3 retrieved, all at level 0
  fine-memory     `full` with finer memories: the top retrieved frame at level 0 and the next two at level 1 (the
                  paper's ℓ_Mj = L_f/λ^dj with a selection-based d_j), 11 recent + 8 retrieved frames; 3.81 frames of
                  tokens, within the base's 4
A checkpoint stores the layout it was trained with (WorldPackConfig.layout), so editing VARIANTS changes only new
training: a `full` checkpoint written before this layout keeps its 8 retrieved slots at level 2.

Reliability: with `slot_conditioning`'s `split` (the trajectory's offset, the first frame a rollout generates), every
slot holding a frame at or after it gets a level (`context_level`): in a rollout the announced level of its generated
frames, in training the std of the corruption applied to exactly those slots (worldpack.train). Memories are real
frames (the pool rule ranks them first), so in practice only recent slots on a return leg carry a level; a generated
memory, taken only when too few real frames score, is announced (and in training corrupted) like any generated frame.
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
    "full": ContextLayout(recent=(0, 1, 1) + (2,) * 8, retrieved=(1,) * 4 + (2,) * 4),
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
                   params: RetrievalParams, units_per_block: float, split: int, memory: bool = True) -> np.ndarray:
    """Frame index for each slot of `layout` (-1 = empty): recent frames back from last_seen, then retrieved ones;
    with memory=False the retrieved slots are left empty (the `memory=off` diagnostic).

    The memory-pool rule, one for training, rollouts and probes: frames before the trajectory's split point `split`
    (its offset) rank above every frame after it (see `retrieve`). A rollout has real frames only before the offset;
    a return-leg target in training therefore draws its memories from the outbound leg too, never from the return
    leg it is on, and an outbound target (before the offset) from every frame before it, as nothing there is
    generated."""
    if not 0 <= last_seen < current:
        raise ValueError(f"last_seen {last_seen} must lie in [0, current={current})")
    recent = [last_seen - i if last_seen - i >= 0 else -1 for i in range(len(layout.recent))]
    found = retrieve(poses, current, len(layout.retrieved), params, units_per_block, exclude=set(recent),
                     prefer_before=split) if memory else []
    retrieved = found + [-1] * (len(layout.retrieved) - len(found))
    return np.array(recent + retrieved, dtype=np.int64)


def cumulative_actions(actions: np.ndarray) -> np.ndarray:
    """Running sums [T, A] in float64, so that the actions of any frame range are one subtraction (exact for
    float32 actions: their float64 sums lose no bits at these lengths)."""
    return np.cumsum(np.asarray(actions, np.float32), axis=0, dtype=np.float64)


def slot_conditioning(poses: np.ndarray, cum_actions: np.ndarray, units: np.ndarray, current: np.ndarray,
                      last_seen: np.ndarray, slots: np.ndarray, split: np.ndarray,
                      level: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The conditioning of targets `current` [B] given frames up to `last_seen` [B] and the context frame index of
    each slot (`slots` [B, S], -1 = empty), as arrays; and the frame to gather for each slot (an empty one points at
    last_seen). The one builder behind a rollout's `build_example` and training's `MemoryBatches`.

    The action is the sum of actions(last_seen, current], the controls that led from the last seen frame to the
    target (schema: actions[i] produced frames[i]); the pose delta is the target's pose in last_seen's local frame.
    Each slot's reliability level (`context_level`) is `level` [B] where its frame is one a rollout generates (at or
    after its trajectory's `split` [B], the offset), else 0.
    """
    valid = slots >= 0
    safe = np.where(valid, slots, last_seen[:, None])
    generated = valid & (slots >= split[:, None])
    return safe, {
        "context_valid": valid,
        "context_time": np.where(valid, slots - current[:, None], 0).astype(np.float32),
        "context_pose": relative_pose(poses[current][:, None], poses[safe], units[:, None]),
        "action": (cum_actions[current] - cum_actions[last_seen]).astype(np.float32),
        "pose_delta": relative_pose(poses[last_seen], poses[current], units),
        "time_shift": (current - last_seen).astype(np.float32),
        "context_noise": np.zeros(len(current), np.float32),  # the std of noise on the context: none outside training
        "context_level": np.where(generated, np.asarray(level, np.float32)[:, None], 0).astype(np.float32),
    }


def build_example(latents: torch.Tensor, poses: np.ndarray, cum_actions: np.ndarray, current: int, last_seen: int,
                  layout: ContextLayout, params: RetrievalParams, units_per_block: float, split: int,
                  memory: bool = True, level: float = 0.0) -> dict[str, torch.Tensor]:
    """The conditioning for predicting frame `current` from frames [0, current) (latents [≥current, C, h, w];
    `cum_actions` from `cumulative_actions`; `split` the trajectory's offset, see `select_context`; `level` the
    reliability level announced for slots holding generated frames, see `slot_conditioning`).

    The target latent itself is added by the training batch builder; a rollout samples it instead.
    """
    slots = select_context(poses, current, last_seen, layout, params, units_per_block, split, memory)
    return example_from_slots(latents, poses, cum_actions, current, last_seen, slots, units_per_block, split, level)


def example_from_slots(latents: torch.Tensor, poses: np.ndarray, cum_actions: np.ndarray, current: int,
                       last_seen: int, slots: np.ndarray, units_per_block: float, split: int,
                       level: float = 0.0) -> dict[str, torch.Tensor]:
    """One example's conditioning tensors for given context frame indices (one per slot, -1 = empty)."""
    safe, arrays = slot_conditioning(poses, cum_actions, np.array([units_per_block], np.float64), np.array([current]),
                                     np.array([last_seen]), slots[None], np.array([split]), np.array([level]))
    example = {k: torch.from_numpy(np.asarray(v[0])) for k, v in arrays.items()}
    # latents[idx] goes through the thread pool: ms on a busy CPU
    example["context"] = latents.index_select(0, torch.from_numpy(safe[0]))
    return example
