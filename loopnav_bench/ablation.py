"""Context ablations for `loopnav evaluate --context-ablation`: change what a model saw earlier, nothing else.

swap  every context frame older than the last K (indices [0, offset - K)) is replaced by the frame at the same
      index of a *donor* trajectory: one from another location of the same split, chosen from the run's seed and
      the recipient's id (`donor_for`: sha256, the same on every rank and rerun, and whatever --tasks, --ranges or
      --limit select), its frames cycled when it is shorter and resized to the recipient's size. Poses, actions, the
      last K context frames and the targets are untouched: the model gets the same geometry and the same recent
      view, but the places it saw earlier are someone else's. A model whose context is at most K frames therefore
      predicts exactly the same frames; a model that recalls older frames loses what it recalled.

The entry of an ablated run is `<entry>+swap`, so it never replaces the plain run, and the leaderboard pairs the two
(memory reliance: entry − entry+swap, trajectory by trajectory).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from loopnav_bench.models import RolloutRequest

if TYPE_CHECKING:
    from loopnav_bench.evaluate import Item

ABLATIONS = ("none", "swap")
DEFAULT_KEEP_RECENT = 4  # the context of NWM and DIAMOND


@dataclass(frozen=True)
class ContextAblation:
    kind: str = "none"
    keep_recent: int = DEFAULT_KEEP_RECENT

    def __post_init__(self) -> None:
        if self.kind not in ABLATIONS:
            raise ValueError(f"--context-ablation {self.kind!r}: choose one of {', '.join(ABLATIONS)}")
        if self.keep_recent < 0:
            raise ValueError(f"--keep-recent {self.keep_recent} must be 0 or more")
        if not self.active and self.keep_recent != DEFAULT_KEEP_RECENT:
            raise ValueError(f"--keep-recent {self.keep_recent} applies only with --context-ablation swap")

    @property
    def active(self) -> bool:
        return self.kind != "none"

    @property
    def suffix(self) -> str:
        """What the entry's name gets, so an ablated run never replaces the plain one."""
        return f"+{self.kind}" if self.active else ""

    def settings(self) -> dict[str, Any]:
        """What changes the predictions: keys the run folder (only when active, so plain runs keep their keys)."""
        return {"kind": self.kind, "keep_recent": self.keep_recent}

    def record(self) -> dict[str, Any]:
        """What the results file says about the ablation."""
        if not self.active:
            return {"kind": "none", "keep_recent": None}
        return {**self.settings(), "swapped": f"context frames [0, offset - {self.keep_recent})",
                "donor": "donor_for(seed, id): another location of the same split; frames cycled and resized"}


def donor_for(recipient: "Item", pool: list["Item"], seed: int) -> "Item":
    """The donor of `recipient`: among the pool's trajectories of the same split at another location (in id order),
    the one at index sha256(f'{seed}:swap:{id}') modulo their count."""
    split, location = recipient.meta["split"], recipient.meta["location"]
    candidates = sorted((item for item in pool if item.meta["split"] == split and item.meta["location"] != location),
                        key=lambda item: item.id)
    if not candidates:
        raise ValueError(f"--context-ablation swap: trajectory {recipient.id!r} has no donor, split {split!r} has no "
                         f"trajectory at a location other than {location!r}")
    digest = hashlib.sha256(f"{seed}:swap:{recipient.id}".encode()).digest()
    return candidates[int.from_bytes(digest[:8], "little") % len(candidates)]


def swap_context(request: RolloutRequest, donor_frames: np.ndarray, keep_recent: int) -> RolloutRequest:
    """`request` with context frames [0, offset - keep_recent) replaced by the donor's frames at the same indices
    (cycled when the donor is shorter, resized to the request's frame size)."""
    from loopnav_bench.metrics import resize_frames  # the harness's resize (torch-free callers stay light)

    swapped = max(len(request.context_frames) - keep_recent, 0)
    if swapped == 0:
        return request
    donor = resize_frames(donor_frames, request.context_frames.shape[1:3])
    frames = request.context_frames.copy()
    frames[:swapped] = donor[np.arange(swapped) % len(donor)]
    return replace(request, context_frames=frames)
