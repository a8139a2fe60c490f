"""A contact strip of one trajectory: evenly spaced frames of the context (outbound) leg on top, the return leg
below, each captioned with its frame index and its distance to the start A in blocks. `loopnav inspect --frames`
writes it; docs/aba_strip.png is one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from loopnav_bench.fileio import write_bytes_atomic
from loopnav_bench.schema import Trajectory

LABEL_HEIGHT = 14


def leg_row(traj: Trajectory, start: int, stop: int, columns: int, scale: int) -> np.ndarray:
    """Evenly spaced frames of [start, stop), each upscaled and captioned 'frame d=distance to A in blocks'."""
    a = traj.poses[0, :2]
    per_block = traj.meta.get("units_per_block", 1.0)
    tiles = []
    for index in np.linspace(start, stop - 1, columns).round().astype(int):
        frame = cv2.resize(traj.frames[index], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        label = np.full((LABEL_HEIGHT, frame.shape[1], 3), 255, np.uint8)
        blocks = np.linalg.norm(traj.poses[index, :2] - a) / per_block
        cv2.putText(label, f"{index} d={blocks:.1f}", (2, LABEL_HEIGHT - 4), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1)
        tiles.append(np.vstack([frame, label]))
    return np.hstack(tiles)


def trajectory_strip(traj: Trajectory, columns: int = 8, scale: int = 2) -> np.ndarray:
    """uint8 RGB [H, W, 3]: a title bar, then the context leg's row and the return leg's row, each captioned."""
    path = "A->B->C->A" if traj.meta.get("task") == "ABCA" else "A->B->A"
    end = len(traj)
    rows = [(f"context [0, {traj.offset}): outbound", leg_row(traj, 0, traj.offset, columns, scale)),
            (f"target [{traj.offset}, {end}): return to A", leg_row(traj, traj.offset, end, columns, scale))]
    title = f"{traj.id}  ({traj.meta.get('task')} {path}, range {traj.meta.get('range')})"
    parts = [_caption(title, rows[0][1].shape[1])]
    for name, row in rows:
        parts += [_caption(name, row.shape[1]), row]
    return np.vstack(parts)


def _caption(text: str, width: int) -> np.ndarray:
    bar = np.full((LABEL_HEIGHT + 4, width, 3), 255, np.uint8)
    cv2.putText(bar, text, (4, LABEL_HEIGHT), cv2.FONT_HERSHEY_PLAIN, 1.0, (0, 0, 0), 1)
    return bar


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, atomically (a reader never sees half a file)."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, png.tobytes())
