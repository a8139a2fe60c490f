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


# The collector's clock (Kevin-lkw/mineflayer lib/plugins/physics.js `tickPhysics`, Kevin-lkw/mineflayer-pathfinder
# index.js, Kevin-lkw/LoopNav receiver.py), replayed tick by tick so the fixture has the recorder's ordering:
#   1. simulatePlayer moves the bot with the control keys as they stand (set during the previous tick);
#   2. 'physicsTick' handlers run: the pathfinder sets the keys for the next tick and turns the body (lookAt);
#   3. updatePosition eases the sent yaw/pitch toward the body's by at most 0.05 s * 3 rad/s, and emits one packet
#      (one frame) only when the position or the look changed, or as a 1 s heartbeat; the packet carries the keys as
#      step 2 left them and the look delta of this tick.
# The receiver numbers packets (frame_count) and drops the first 20.
MAX_TURN = 0.05 * 3.0  # PHYSICS_TIMESTEP * prismarine-physics yawSpeed (= pitchSpeed)
STEP = 0.5  # blocks per tick: faster than vanilla walking (~0.22) to keep the fixtures short
HEARTBEAT_TICKS, DROPPED_PACKETS, END_IDLE_TICKS = 20, 20, 60


def _mineflayer_yaw(dx: float, dz: float) -> float:
    return math.atan2(-dx, -dz)  # bot.lookAt: 0 faces north (-z), counter-clockwise seen from above


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def loop_entries(legs: int = 1, rng: int = 5, start=(10.5, 64.0, -20.5), yaw_turns: int = 0,
                 with_goals: bool = True) -> tuple[list[dict], int]:
    """Per-frame JSON entries of a loop recorded as the collector does: a 360 degree pan at A (yaw 0, pi/2, pi,
    3pi/2, 0, pitch dipping on the way), `legs` legs east then (ABCA) north `rng` blocks each, the walk back to A,
    then 3 s idle at A (heartbeat frames). `yaw_turns` full turns are added to the sent yaw, which Mineflayer never
    wraps. Returns (entries, index of the last entry recorded under an outbound goal: the expected split offset)."""
    x0, y0, z0 = start
    a = {"x": math.floor(x0), "y": int(y0), "z": math.floor(z0)}  # the goal that brought the bot to A
    targets = [(x0 + rng, z0)] if legs == 1 else [(x0 + rng, z0), (x0 + rng, z0 - rng)]
    looks = [(0.0, 0.0), (math.pi / 2, -0.3), (math.pi, -0.3), (3 * math.pi / 2, 0.0), (0.0, 0.0)]
    x, z, body_yaw, body_pitch = x0, z0, 0.0, 0.0
    sent_yaw, sent_pitch = 2 * math.pi * yaw_turns, 0.0
    keys = dict.fromkeys(("forward", "back", "left", "right", "jump", "sprint", "sneak"), False)
    goal, outbound, phase = a, False, "pan"
    last_x, last_z, last_position_tick, packets, idle = x0, z0, 0, 0, 0
    entries, offset = [], None
    for tick in range(1, 2000):
        if keys["forward"]:  # 1. the step, with last tick's keys, along the body's facing
            x, z = x - STEP * math.sin(body_yaw), z - STEP * math.cos(body_yaw)
        # 2. physicsTick: the collector and the pathfinder decide the next tick
        settled = abs(_wrap(body_yaw - sent_yaw)) < 0.01 and abs(body_pitch - sent_pitch) < 0.01
        if phase == "pan" and settled:
            if looks:
                body_yaw, body_pitch = _wrap(looks[0][0]), looks.pop(0)[1]
            else:
                phase, goal, outbound = "walk", (dict(zip("xyz", (math.floor(targets[0][0]), int(y0),
                                                                  math.floor(targets[0][1]))))
                                                 if with_goals else None), True
        if phase == "walk":
            tx, tz = targets[0] if outbound else (x0, z0)
            if math.hypot(tx - x, tz - z) < STEP / 2:  # goal_reached: fullStop, then the next goal
                keys["forward"] = False
                x, z = tx, tz
                if outbound:
                    targets.pop(0)
                    outbound = bool(targets)
                    goal = ({"x": math.floor(x0), "z": math.floor(z0), "rangeSq": 1} if not outbound else
                            {"x": math.floor(targets[0][0]), "y": int(y0), "z": math.floor(targets[0][1])})
                    goal = goal if with_goals else None
                else:
                    phase = "end"
            else:
                body_yaw = _mineflayer_yaw(tx - x, tz - z)
                keys["forward"] = True
                keys["jump"] = tick % 9 == 0  # a key that moves nothing here, to check its alignment too
        if phase == "end":
            keys["jump"] = False
            idle += 1
            if idle > END_IDLE_TICKS:
                break
        # 3. updatePosition
        camera = [max(-MAX_TURN, min(MAX_TURN, delta)) if abs(delta) > 1e-9 else 0.0  # packets compare float32 angles
                  for delta in (_wrap(body_yaw - sent_yaw), body_pitch - sent_pitch)]
        sent_yaw, sent_pitch = sent_yaw + camera[0], sent_pitch + camera[1]
        position_updated = (x, z) != (last_x, last_z) or tick - last_position_tick >= HEARTBEAT_TICKS
        if position_updated or camera != [0.0, 0.0]:
            if position_updated:
                last_x, last_z, last_position_tick = x, z, tick
            if packets >= DROPPED_PACKETS:
                if outbound and goal is not None:
                    offset = len(entries)
                entries.append({
                    "x": round(x, 3), "y": y0, "z": round(z, 3), "yaw": round(sent_yaw, 3),
                    "pitch": round(sent_pitch, 3), "action": {**keys, "camera": camera}, "goal": goal,
                    "frame_count": packets,
                    "extra_info": {"seed": 42, "location": "plains_village_1", "nvtype": "ABA", "nvrange": rng},
                })
            packets += 1
    return entries, offset


def add_trajectory(root: Path, task: str, location: str, rng: int, stamp: str, lost_frames: int = 0,
                   empty: bool = False, seed: int = 0, **loop) -> dict:
    """Write one recorded loop as an .avi + .json pair under the Hub layout, the video `lost_frames` short (images
    that failed to decode), or both empty; returns its CSV row fields, the entries and the expected offset."""
    base = Path(task) / location / str(rng)
    entries, offset = loop_entries(legs=2 if task == "ABCA" else 1, rng=rng, **loop)
    entries = [] if empty else entries
    write_avi(root / base / f"{stamp}.avi", max(len(entries) - lost_frames, 5 * empty), seed)
    (root / base / f"{stamp}.json").write_text(json.dumps(entries))
    return {"task": task, "rng": rng, "location": location, "video": f"{base}/{stamp}.avi",
            "json": f"{base}/{stamp}.json", "offset": offset, "entries": entries}


def write_csv(root: Path, split: str, rows: list[dict]) -> None:
    lines = [f"{r['task']},{r['rng']},{r['location']},{r['video']},{r['json']}\n" for r in rows]
    (root / f"{split}.csv").write_text(CSV_HEADER + "".join(lines))


def make_loopnav_root(root: Path) -> dict[str, dict]:
    """A LoopNav data root with every quirk: returns name -> row info (see add_trajectory).

    train: clean ABA-5 and an ABCA-15 with an unwrapped yaw; val: a video two frames shorter than its JSON;
    test: a clean ABA-5, an empty one, one without an outbound goal, a missing file, and a row escaping the root.
    """
    rows = {
        "aba": add_trajectory(root, "ABA", "plains_village_1", 5, "05-10_16-21-01"),
        "abca": add_trajectory(root, "ABCA", "plains_village_1", 15, "05-10_16-30-00", yaw_turns=1, seed=1),
        "mismatch": add_trajectory(root, "ABA", "plains_village_19", 5, "05-11_10-00-00", lost_frames=2, seed=2),
        "test": add_trajectory(root, "ABA", "plains_village_20", 5, "05-12_09-00-00", seed=3),
        "empty": add_trajectory(root, "ABA", "plains_village_20", 15, "05-12_09-10-00", empty=True),
        "nogoal": add_trajectory(root, "ABCA", "plains_village_20", 5, "05-12_09-20-00", with_goals=False),
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


def write_nomad_folder(folder: Path, n_images: int, n_poses: int | None = None, seed: int = 0,
                       protocol: int = 4) -> dict:
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
        "jackal_2019-08-02-16-23-30_0_r00":
            write_recon_hdf5(root / "recon_release" / "jackal_2019-08-02-16-23-30_0_r00.hdf5", 28),
        "jackal_2019-08-02-17-00-00_0_r01":
            write_recon_hdf5(root / "recon_release" / "jackal_2019-08-02-17-00-00_0_r01.hdf5", 10, seed=1),
        "jackal_2019-09-01-10-00-00_1_r00_0":
            write_nomad_folder(root / "nomad" / "jackal_2019-09-01-10-00-00_1_r00_0", 26, seed=2),
        "jackal_2019-09-01-11-00-00_1_r00_1":
            write_nomad_folder(root / "nomad" / "jackal_2019-09-01-11-00-00_1_r00_1", 24, 25, seed=3),
        "evil": write_malicious_folder(root / "nomad" / "evil", marker),
    }
