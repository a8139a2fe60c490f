"""Draw one ABA loop of a prepared set as a PNG strip: the outbound leg A→B on top, the return B→A below.

    python scripts/make_strip.py DATA_DIR --out docs/aba_strip.png [--id TRAJECTORY_ID] [--columns 8] [--scale 2]

Without --id the first ABA trajectory of the test split is drawn. Each row shows evenly spaced frames of its leg,
labelled with the frame index and the distance to A in blocks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from loopnav_bench.fileio import write_bytes_atomic
from loopnav_bench.schema import Trajectory
from loopnav_bench.shards import read_trajectories

LABEL_HEIGHT = 14


def find_trajectory(data: Path, trajectory_id: str | None) -> Trajectory:
    for traj in read_trajectories(data, split=None if trajectory_id else "test"):
        if traj.id == trajectory_id or (trajectory_id is None and traj.meta["task"] == "ABA"):
            return traj
    raise SystemExit(f"{data}: no trajectory {trajectory_id!r}" if trajectory_id
                     else f"{data}: no ABA trajectory in the test split")


def leg_row(traj: Trajectory, start: int, stop: int, columns: int, scale: int) -> np.ndarray:
    """Evenly spaced frames of [start, stop), each upscaled and captioned 'frame / distance to A in blocks'."""
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


def make_strip(traj: Trajectory, columns: int = 8, scale: int = 2) -> np.ndarray:
    rows = [("outbound A->B", leg_row(traj, 0, traj.offset, columns, scale)),
            ("return B->A", leg_row(traj, traj.offset, len(traj), columns, scale))]
    title = f"{traj.id}  ({traj.meta['task']}, range {traj.meta['range']} blocks)"
    parts = [_caption(title, rows[0][1].shape[1])]
    for name, row in rows:
        parts += [_caption(name, row.shape[1]), row]
    return np.vstack(parts)


def _caption(text: str, width: int) -> np.ndarray:
    bar = np.full((LABEL_HEIGHT + 4, width, 3), 255, np.uint8)
    cv2.putText(bar, text, (4, LABEL_HEIGHT), cv2.FONT_HERSHEY_PLAIN, 1.0, (0, 0, 0), 1)
    return bar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a directory written by `loopnav prepare`")
    parser.add_argument("--out", type=Path, default=Path("docs/aba_strip.png"))
    parser.add_argument("--id", dest="trajectory_id", help="the trajectory to draw (default: the first test ABA loop)")
    parser.add_argument("--columns", type=int, default=8)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    strip = make_strip(find_trajectory(args.data, args.trajectory_id), args.columns, args.scale)
    ok, png = cv2.imencode(".png", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    if not ok:
        raise SystemExit("PNG encoding failed")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(args.out, png.tobytes())
    print(f"wrote {args.out} ({strip.shape[1]}x{strip.shape[0]})")


if __name__ == "__main__":
    main()
