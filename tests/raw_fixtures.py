"""Small raw inputs in the real LoopNav and RECON formats, written on the fly for the source and CLI tests.

LoopNav: MJPG .avi files written by OpenCV plus per-frame JSON in the collector's schema, and split CSVs; RECON: an HDF5
file in the recon_release layout and NoMaD-processed folders. Each builder returns what the tests need to check against.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import cv2
import h5py
import numpy as np

W, H = 64, 36
CSV_HEADER = "path_type,radius,biome,video_path,json_path\n"


def frame_image(i: int, seed: int = 0) -> np.ndarray:
    """A smooth BGR image that differs per frame (a moving block on a gradient): compresses well, decodes stably."""
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = np.linspace(0, 200, W, dtype=np.uint8)[None, :]
    image[..., 1] = np.linspace(30, 180, H, dtype=np.uint8)[:, None]
    image[..., 2] = (40 * seed) % 256
    x = (3 * i) % (W - 12)
    image[8:20, x:x + 12] = (255, 255 - 5 * i % 256, 0)
    return image


def write_avi(path: Path, n_frames: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (W, H))
    for i in range(n_frames):
        writer.write(frame_image(i, seed))
    writer.release()


def loop_entries(n: int, legs: int = 1, rng: int = 5, turn: int | None = None, start=(10.5, 64.0, -20.5),
                 yaw_turns: int = 0, with_goals: bool = True) -> tuple[list[dict], int]:
    """Per-frame JSON entries of a loop that heads out for `legs` legs, turns at frame `turn`, then walks back to A.

    The first three frames look around in place with no goal (as the collector's pan at A). Returns (entries, the
    expected split offset = the turn frame). The walk moves east, then (ABCA) north; Mineflayer's yaw is set from the
    motion as `atan2(-dx, -dz)` (mod 2pi) plus `yaw_turns` full turns, like an accumulating, unwrapped yaw.
    """
    turn = turn if turn is not None else 2 * n // 3
    x0, y0, z0 = start
    waypoints = [(x0 + rng, z0)] if legs == 1 else [(x0 + rng, z0), (x0 + rng, z0 - rng)]
    leg_ends = [3 + (turn - 3) * (k + 1) // legs for k in range(legs)]
    positions = [(x0, z0)] * 3
    goals: list[dict | None] = [None] * 3
    prev = (x0, z0)
    for k, (end, target) in enumerate(zip(leg_ends, waypoints)):
        begin = len(positions)
        for i in range(begin, end + 1):
            a = (i - begin + 1) / (end - begin + 1)
            positions.append((prev[0] + a * (target[0] - prev[0]), prev[1] + a * (target[1] - prev[1])))
            goals.append({"x": math.floor(target[0]), "y": int(y0), "z": math.floor(target[1])})
        prev = target
    for i in range(len(positions), n):
        a = (i - turn) / (n - 1 - turn)
        positions.append((prev[0] + a * (x0 - prev[0]), prev[1] + a * (z0 - prev[1])))
        goals.append({"x": math.floor(x0), "z": math.floor(z0), "rangeSq": 1})
    entries, yaw = [], 2 * math.pi * yaw_turns
    for i, (px, pz) in enumerate(positions):
        if i > 0 and (px, pz) != positions[i - 1]:
            dx, dz = px - positions[i - 1][0], pz - positions[i - 1][1]
            yaw = math.atan2(-dx, -dz) % (2 * math.pi) + 2 * math.pi * yaw_turns
        previous_yaw = entries[-1]["yaw"] if entries else yaw
        moving = i > 0 and (px, pz) != positions[i - 1]
        entries.append({
            "x": round(px, 3), "y": y0, "z": round(pz, 3), "yaw": round(yaw, 3), "pitch": round(0.01 * (i % 5), 3),
            "action": {"forward": moving, "back": False, "left": False, "right": False, "jump": i % 7 == 0,
                       "sprint": False, "sneak": False, "camera": [round(round(yaw, 3) - previous_yaw, 5), 0.0]},
            "goal": goals[i] if with_goals else None, "frame_count": 20 + i,
            "extra_info": {"seed": 42, "location": "plains_village_1", "nvtype": "ABA", "nvrange": rng},
        })
    return entries, turn


def add_trajectory(root: Path, task: str, location: str, rng: int, stamp: str, n_frames: int, n_entries: int | None = None,
                   seed: int = 0, **loop) -> dict:
    """Write one .avi + .json pair under the Hub layout; returns its CSV row fields and the expected offset."""
    base = Path(task) / location / str(rng)
    entries, turn = loop_entries(n_entries or n_frames, legs=2 if task == "ABCA" else 1, rng=rng, **loop)
    write_avi(root / base / f"{stamp}.avi", n_frames, seed)
    (root / base / f"{stamp}.json").write_text(json.dumps(entries if n_entries != 0 else []))
    return {"task": task, "rng": rng, "location": location, "video": f"{base}/{stamp}.avi",
            "json": f"{base}/{stamp}.json", "offset": turn, "entries": entries}


def write_csv(root: Path, split: str, rows: list[dict]) -> None:
    lines = [f"{r['task']},{r['rng']},{r['location']},{r['video']},{r['json']}\n" for r in rows]
    (root / f"{split}.csv").write_text(CSV_HEADER + "".join(lines))


def make_loopnav_root(root: Path) -> dict[str, dict]:
    """A LoopNav data root with every quirk: returns name -> row info (see add_trajectory).

    train: clean ABA-5 and an ABCA-15 with an unwrapped yaw; val: JSON two entries longer than the video;
    test: a clean ABA-5, an empty one, one without an outbound goal, a missing file, and a row escaping the root.
    """
    rows = {
        "aba": add_trajectory(root, "ABA", "plains_village_1", 5, "05-10_16-21-01", 30),
        "abca": add_trajectory(root, "ABCA", "plains_village_1", 15, "05-10_16-30-00", 33, yaw_turns=1, seed=1),
        "mismatch": add_trajectory(root, "ABA", "plains_village_19", 5, "05-11_10-00-00", 28, n_entries=30, seed=2),
        "test": add_trajectory(root, "ABA", "plains_village_20", 5, "05-12_09-00-00", 30, seed=3),
        "empty": add_trajectory(root, "ABA", "plains_village_20", 15, "05-12_09-10-00", 5, n_entries=0),
        "nogoal": add_trajectory(root, "ABCA", "plains_village_20", 5, "05-12_09-20-00", 24, with_goals=False),
    }
    missing = dict(rows["test"], video="ABA/plains_village_20/5/05-12_09-99-99.avi",
                   json="ABA/plains_village_20/5/05-12_09-99-99.json")
    escaping = dict(rows["test"], video="../outside/05-12_09-00-00.avi", json="../outside/05-12_09-00-00.json")
    write_csv(root, "train", [rows["aba"], rows["abca"]])
    write_csv(root, "val", [rows["mismatch"]])
    write_csv(root, "test", [rows["test"], rows["empty"], rows["nogoal"], missing, escaping])
    return rows


# ---------------------------------------------------------------------------------------------------- RECON


def jpeg_bytes(i: int, seed: int = 0) -> bytes:
    ok, data = cv2.imencode(".jpg", frame_image(i, seed), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def recon_poses(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A gentle left-turning drive: position [n, 3] (metres) and yaw [n] (radians, CCW), odometry-consistent."""
    yaw = 0.1 * np.arange(n) + 0.3 * seed
    speed = 0.5 / 4  # 0.5 m/s at 4 fps
    xy = np.cumsum(np.stack([np.cos(yaw), np.sin(yaw)], axis=1) * speed, axis=0)
    return np.concatenate([xy, np.full((n, 1), 0.2)], axis=1), yaw


def write_recon_hdf5(path: Path, n: int, seed: int = 0) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    jpeg = [jpeg_bytes(i, seed) for i in range(n)]
    position, yaw = recon_poses(n, seed)
    linear = np.full((n, 1), 0.5)
    angular = np.linspace(-0.2, 0.4, n)[:, None]
    with h5py.File(path, "w") as f:
        f["images/rgb_left"] = np.array(jpeg, dtype=f"S{max(map(len, jpeg))}")  # fixed-length, as in recon_release
        f["jackal/position"] = position
        f["jackal/yaw"] = yaw[:, None]
        f["commands/linear_velocity"] = linear
        f["commands/angular_velocity"] = angular
        f["gps/latlong"] = np.zeros((n, 2))
    return {"jpeg": jpeg, "position": position, "yaw": yaw, "linear": linear[:, 0], "angular": angular[:, 0]}


def write_nomad_folder(folder: Path, n_images: int, n_poses: int | None = None, seed: int = 0, protocol: int = 4) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = [jpeg_bytes(i, seed) for i in range(n_images)]
    for i, data in enumerate(jpeg):
        (folder / f"{i}.jpg").write_bytes(data)
    position, yaw = recon_poses(n_poses or n_images, seed)
    with open(folder / "traj_data.pkl", "wb") as f:
        pickle.dump({"position": position[:, :2], "yaw": yaw}, f, protocol=protocol)
    return {"jpeg": jpeg, "position": position[:, :2], "yaw": yaw}


class Payload:
    """Unpickling this runs `open(marker, 'w')`: what a malicious traj_data.pkl could do, harmlessly observable."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_malicious_folder(folder: Path, marker: Path, n_images: int = 24) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(i))
    with open(folder / "traj_data.pkl", "wb") as f:
        pickle.dump({"position": Payload(marker), "yaw": np.zeros(n_images)}, f)


def make_recon_root(root: Path, marker: Path) -> dict[str, dict]:
    """RECON inputs: two raw HDF5 trajectories (one too short), two NoMaD folders (one with an extra pose row) and
    one NoMaD folder whose pickle would create `marker` if it were loaded unrestricted."""
    return {
        "jackal_2019-08-02-16-23-30_0_r00": write_recon_hdf5(root / "recon_release" / "jackal_2019-08-02-16-23-30_0_r00.hdf5", 28),
        "jackal_2019-08-02-17-00-00_0_r01": write_recon_hdf5(root / "recon_release" / "jackal_2019-08-02-17-00-00_0_r01.hdf5", 10, seed=1),
        "jackal_2019-09-01-10-00-00_1_r00_0": write_nomad_folder(root / "nomad" / "jackal_2019-09-01-10-00-00_1_r00_0", 26, seed=2),
        "jackal_2019-09-01-11-00-00_1_r00_1": write_nomad_folder(root / "nomad" / "jackal_2019-09-01-11-00-00_1_r00_1", 24, 25, seed=3),
        "evil": write_malicious_folder(root / "nomad" / "evil", marker),
    }
