"""The trajectory schema: one record per loop, the same for every source.

A `Trajectory` holds
  frames   uint8   [T, H, W, 3]  RGB
  poses    float64 [T, 5]        (x, y, z, yaw, pitch), see POSE_CONVENTION
  actions  float32 [T, A]        one fixed-width vector per frame, layout named by meta["action_layout"];
                                 actions[i] is the control that produced frames[i] (LoopNav's (a_t, s_t+1) packets)
  offset   int                   context = frames [0, offset), evaluated target = frames [offset, T)
  meta     dict                  REQUIRED_META keys and anything else a source wants to keep
  raw_actions                    the source's own per-frame action records (JSON-able), kept verbatim
  jpeg                           optional: the source's JPEG bitstream per frame, stored instead of pixels so that
                                 compressed sources (LoopNav's MJPG, RECON's JPEG) round-trip bit-exactly

Bump SCHEMA_VERSION whenever a field's meaning or storage changes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = "1.0"

POSE_FIELDS = ("x", "y", "z", "yaw", "pitch")
POSE_CONVENTION = (
    "right-handed, z up: x and y span the ground plane, z points up; yaw in radians counter-clockwise from +x, "
    "wrapped to (-pi, pi]; pitch in radians, positive when looking up. Units of x, y, z are the source's own "
    "(Minecraft blocks for LoopNav, metres for RECON, Doom map units for ViZDoom); meta['units_per_block'] says how "
    "many of them make one Minecraft block."
)

# Per-source layout of the action vector. Each source documents the meaning of every component in its module.
ACTION_LAYOUTS: dict[str, tuple[str, ...]] = {
    # LoopNav (Mineflayer controls): 0/1 keys, then the camera change in radians per tick, converted to our yaw/pitch.
    "loopnav-v1": ("forward", "back", "left", "right", "jump", "sprint", "sneak", "camera_dyaw", "camera_dpitch"),
    # RECON (Clearpath Jackal): commanded linear velocity (m/s) and angular velocity (rad/s, counter-clockwise).
    "recon-v1": ("linear_velocity", "angular_velocity"),
    # ViZDoom: the delta buttons actually sent, in the schema's convention (turn and look in radians per frame,
    # moves in Doom units of button delta, positive = forward / left).
    "vizdoom-v1": ("move_forward", "move_left", "turn_ccw", "look_up"),
}

TASKS = ("ABA", "ABCA", "RECON")
SPLITS = ("train", "val", "test")
REQUIRED_META = ("id", "source", "task", "range", "location", "split", "fps", "action_layout", "original_ids")

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-/]+$")


class TrajectoryError(ValueError):
    """A trajectory that breaks the schema. The message names the trajectory (and file, when known) and the problem."""


def decode_jpeg(data: bytes) -> np.ndarray:
    """One JPEG bitstream -> uint8 RGB [H, W, 3]."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise TrajectoryError("a JPEG frame does not decode")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def frames_from_jpeg(jpeg: list[bytes]) -> np.ndarray:
    """Per-frame JPEG bitstreams -> the `frames` array [T, H, W, 3] a Trajectory carries beside them."""
    return np.stack([decode_jpeg(j) for j in jpeg]) if jpeg else np.zeros((0, 1, 1, 3), np.uint8)


def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Wrap radians to (-pi, pi]."""
    wrapped = np.pi - np.mod(np.pi - np.asarray(angle, dtype=np.float64), 2 * np.pi)
    return float(wrapped) if np.ndim(angle) == 0 else wrapped


def units_per_block(meta: dict[str, Any]) -> float:
    """How many of a trajectory's position units make one Minecraft block (1 when the source does not say)."""
    return float(meta.get("units_per_block", 1.0))


def make_key(*parts: Any) -> str:
    """A webdataset-safe sample key: no dots (webdataset splits the key at the first dot), no spaces."""
    key = "_".join(str(p) for p in parts if p not in (None, ""))
    key = re.sub(r"[^A-Za-z0-9_\-]+", "-", key).strip("-")
    if not key:
        raise TrajectoryError(f"cannot build a sample key from {parts!r}")
    return key


@dataclass
class Trajectory:
    frames: np.ndarray
    poses: np.ndarray
    actions: np.ndarray
    offset: int
    meta: dict[str, Any]
    raw_actions: list[Any] | None = None
    jpeg: list[bytes] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.meta["id"]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def context(self) -> slice:
        return slice(0, self.offset)

    @property
    def target(self) -> slice:
        return slice(self.offset, len(self.frames))

    def validate(self, where: str | None = None) -> "Trajectory":
        """Raise TrajectoryError naming `where` (a file) and the trajectory if anything breaks the schema."""
        name = f"{where}: " if where else ""
        name += f"trajectory {self.meta.get('id', '?')!r}"

        def fail(problem: str) -> None:
            raise TrajectoryError(f"{name}: {problem}")

        missing = [k for k in REQUIRED_META if k not in self.meta]
        if missing:
            fail(f"meta lacks {missing}")
        if not isinstance(self.meta["id"], str) or not _KEY_RE.match(self.meta["id"]):
            fail(f"id {self.meta['id']!r} must be a dot-free key of letters, digits, '_', '-' or '/'")
        if self.meta["task"] not in TASKS:
            fail(f"task {self.meta['task']!r} is not one of {TASKS}")
        if self.meta["split"] not in SPLITS:
            fail(f"split {self.meta['split']!r} is not one of {SPLITS}")
        layout = ACTION_LAYOUTS.get(self.meta["action_layout"])
        if layout is None:
            fail(f"unknown action layout {self.meta['action_layout']!r}; known: {sorted(ACTION_LAYOUTS)}")

        frames, poses, actions = self.frames, self.poses, self.actions
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
            fail(f"frames must be a uint8 numpy array, got {getattr(frames, 'dtype', type(frames))}")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            fail(f"frames must have shape [T,H,W,3], got {list(frames.shape)}")
        if not isinstance(poses, np.ndarray) or poses.dtype not in (np.float32, np.float64):
            fail(f"poses must be a float32/float64 array, got {getattr(poses, 'dtype', type(poses))}")
        if poses.ndim != 2 or poses.shape[1] != len(POSE_FIELDS):
            fail(f"poses must have shape [T,5] (x,y,z,yaw,pitch), got {list(poses.shape)}")
        if not isinstance(actions, np.ndarray) or actions.dtype != np.float32:
            fail(f"actions must be a float32 array, got {getattr(actions, 'dtype', type(actions))}")
        if actions.ndim != 2 or actions.shape[1] != len(layout):
            fail(f"actions must have shape [T,{len(layout)}] for layout {self.meta['action_layout']!r}, "
                 f"got {list(actions.shape)}")
        T = len(frames)
        if len(poses) != T or len(actions) != T:
            fail(f"length mismatch: {T} frames, {len(poses)} poses, {len(actions)} actions")
        if self.raw_actions is not None and len(self.raw_actions) != T:
            fail(f"length mismatch: {T} frames, {len(self.raw_actions)} raw action records")
        if self.jpeg is not None and len(self.jpeg) != T:
            fail(f"length mismatch: {T} frames, {len(self.jpeg)} JPEG frames")
        if not np.isfinite(poses).all():
            bad = int(np.flatnonzero(~np.isfinite(poses).all(axis=1))[0])
            fail(f"pose at frame {bad} is not finite: {poses[bad].tolist()}")
        if not np.isfinite(actions).all():
            fail("actions contain NaN or inf")
        if isinstance(self.offset, bool) or not isinstance(self.offset, (int, np.integer)) or not 0 < self.offset < T:
            fail(f"offset {self.offset!r} must be an integer in (0, {T})")
        if np.abs(poses[:, 3]).max(initial=0) > math.pi + 1e-6:
            fail("yaw must be wrapped to (-pi, pi] (see POSE_CONVENTION)")
        return self
