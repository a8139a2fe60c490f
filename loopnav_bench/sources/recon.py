"""RECON (Clearpath Jackal driving off-road, Shah et al. 2021) from its raw HDF5 files or the NoMaD-processed folders.

Two input layouts, found anywhere under `--input` (both may be mixed; names must be unique):
- raw `recon_release/jackal_*.hdf5`, one file per trajectory, T rows each:
    images/rgb_left             [T] JPEG bytes (h5py fixed-length `|S` or variable-length bytes)
    jackal/position             [T, 3] odometry x, y, z in metres
    jackal/yaw                  [T] or [T, 1] radians, counter-clockwise from the odometry frame's +x
    commands/linear_velocity    [T] or [T, 1] commanded forward speed, m/s
    commands/angular_velocity   [T] or [T, 1] commanded turn rate, rad/s, counter-clockwise positive
  (the layout inspected in public RECON readers; other groups such as images/rgb_right, gps, collision are ignored)
- NoMaD / visualnav-transformer processed: one folder per trajectory with `0.jpg, 1.jpg, ...` and `traj_data.pkl`
  = {"position": [T, 2], "yaw": [T]}. The pickle is read with a restricted unpickler that builds only numpy arrays,
  dtypes, numpy scalars and plain containers: anything else (a callable, a class) is refused and the trajectory skipped.

Conventions. The odometry frame is ROS's (REP 103: x forward at start, y left, z up, yaw counter-clockwise), which is
already the schema's right-handed z-up frame: poses = (x, y, z, wrap(yaw), 0); NoMaD folders have no z (0). Units are
metres and `units_per_block` is 1: a Minecraft block is one metre by the game's own scale.
JPEGs are stored bit-exact in `Trajectory.jpeg` (h5py strips trailing NUL bytes of fixed-length strings; a JPEG ends
with its EOI marker FF D9, so nothing of the bitstream is lost).

Frame rate: FPS = 4. NWM, on which WorldPack builds, runs RECON at 4 fps (`--input_fps 4`, waypoint spacing 0.25 m);
the rate is recorded in meta["fps"] so consumers never assume it.

Actions ("recon-v1": linear_velocity m/s, angular_velocity rad/s CCW). Row t of the HDF5 holds the command being
executed from frame t to frame t+1. As for LoopNav, actions[i] is the action that led to frame i, so
actions[i] = command[i-1] and actions[0] = 0 (nothing recorded before frame 0); raw_actions[i] keeps row i's command
verbatim. NoMaD folders carry no commands: their actions are the velocities implied by consecutive poses
(forward displacement along the previous heading and the wrapped yaw change, both times FPS); meta["actions_from"]
says which ("commands" or "poses").

Task and split point. RECON has no loops: task "RECON", range None, location None, and the split point is a fixed
context length: offset = context_frames (default 20, the first 20 frames condition the model, as in WorldPack's RECON
protocol); trajectories with no frame after it are skipped.

Splits: given by `split_file` (a JSON {"train": [names], "val": [...], "test": [...]}, or a NoMaD `data_splits/recon`
folder with `<split>/traj_names.txt`), else deterministic by name: u = first 8 hex digits of sha256(name) / 16^8,
train if u < 0.8, val if u < 0.9, else test (80/10/10).
"""

from __future__ import annotations

import hashlib
import pickle
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from pathlib import Path
from typing import Any

import numpy as np

from loopnav_bench.fileio import read_json
from loopnav_bench.schema import SPLITS, Trajectory, frames_from_jpeg, make_key, wrap_angle
from loopnav_bench.sources import SkipTrajectory, Source

FPS = 4
DEFAULT_CONTEXT_FRAMES = 20
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
NOMAD_PICKLE = "traj_data.pkl"
ALIGNMENT = "actions[i] is the action that led to frames[i]; actions[0] = 0"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays, dtypes, numpy scalars and plain Python containers."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5 arrays
        ("_codecs", "encode"),  # protocol 2 pickles store bytes as latin-1 text
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex"),
    }

    def find_class(self, module: str, name: str) -> Any:
        # protocol 0-2 pickles name Python 2 modules (__builtin__.set): judge them by their Python 3 names
        python3_name = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module), name))
        if python3_name not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: "
                                         "only numpy arrays and plain data are allowed")
        return super().find_class(module, name)


def load_restricted_pickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return RestrictedUnpickler(f).load()


def hash_split(name: str) -> str:
    u = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 16**8
    return "train" if u < SPLIT_FRACTIONS["train"] else "val" if u < 1 - SPLIT_FRACTIONS["test"] else "test"


def read_split_file(path: Path) -> dict[str, str]:
    """name -> split, from a JSON mapping or a NoMaD data_splits folder (<split>/traj_names.txt)."""
    if path.is_dir():
        lists = {s: (path / s / "traj_names.txt").read_text().split() for s in SPLITS
                 if (path / s / "traj_names.txt").is_file()}
        if not lists:
            raise FileNotFoundError(f"{path}: no <split>/traj_names.txt for any of {list(SPLITS)}")
    else:
        lists = read_json(path)
        if not isinstance(lists, dict) or set(lists) - set(SPLITS):
            raise ValueError(f"{path}: expected a JSON object with keys among {list(SPLITS)}")
    names: dict[str, str] = {}
    for split, members in lists.items():
        for name in members:
            if names.setdefault(name, split) != split:
                raise ValueError(f"{path}: {name!r} is listed in both {names[name]} and {split}")
    return names


def _column(data: Any) -> np.ndarray:
    """An HDF5 dataset of shape [T] or [T, 1] -> float64 [T]."""
    array = np.asarray(data, dtype=np.float64)
    return array.reshape(len(array), -1)[:, 0] if array.ndim > 1 else array


def pose_velocities(poses: np.ndarray) -> np.ndarray:
    """Velocities implied by consecutive poses, aligned like commands: row i = the motion from frame i-1 to i."""
    actions = np.zeros((len(poses), 2), np.float32)
    step = np.diff(poses[:, :2], axis=0)
    heading = poses[:-1, 3]
    actions[1:, 0] = (step[:, 0] * np.cos(heading) + step[:, 1] * np.sin(heading)) * FPS
    actions[1:, 1] = wrap_angle(np.diff(poses[:, 3])) * FPS
    return actions


class ReconSource(Source):
    name = "recon"
    shard_size = 32

    def __init__(self, input: str | Path, splits: list[str] | None = None, limit: int | None = None,
                 context_frames: int | None = None, split_file: str | Path | None = None):
        self.root = Path(input).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such RECON data directory")
        if bad := sorted(set(splits or ()) - set(SPLITS)):
            raise ValueError(f"unknown split(s) {bad}; choose from {list(SPLITS)}")
        self.splits = list(splits) if splits else list(SPLITS)
        self.limit = limit
        self.context_frames = DEFAULT_CONTEXT_FRAMES if context_frames is None else context_frames
        if self.context_frames < 1:
            raise ValueError(f"--context-frames must be at least 1, got {self.context_frames}")
        self.split_file = Path(split_file).resolve() if split_file is not None else None
        self._rejected: list[dict[str, str]] = []

    def settings(self) -> dict[str, Any]:
        return {"input": str(self.root), "splits": self.splits, "limit": self.limit,
                "context_frames": self.context_frames, "split_file": str(self.split_file) if self.split_file else None,
                "fps": FPS, "split_fractions": SPLIT_FRACTIONS}

    def rejected_inputs(self) -> list[dict[str, str]]:
        return list(self._rejected)

    def _discover(self) -> dict[str, dict[str, str]]:
        """name -> {"layout", "path" (relative to the root)}, sorted by name; duplicate names are rejected."""
        found = [(p.stem, "hdf5", p) for p in self.root.rglob("*.hdf5")]
        found += [(p.parent.name, "nomad", p.parent) for p in self.root.rglob(NOMAD_PICKLE)]
        inputs: dict[str, dict[str, str]] = {}
        for name, layout, path in sorted(found, key=lambda item: (item[0], str(item[2]))):
            relative = str(path.relative_to(self.root))
            if name in inputs:
                self._rejected.append({"input": relative,
                                       "reason": f"duplicate trajectory: {name} also at {inputs[name]['path']}"})
                continue
            inputs[name] = {"layout": layout, "path": relative}
        if not inputs:
            raise FileNotFoundError(f"{self.root}: no RECON trajectories (*.hdf5 files or folders with {NOMAD_PICKLE})")
        return inputs

    def plan(self) -> dict[str, list[dict[str, Any]]]:
        self._rejected = []
        inputs = self._discover()
        assigned = read_split_file(self.split_file) if self.split_file else None
        if assigned is not None:
            for name in sorted(set(assigned) - set(inputs)):
                self._rejected.append({"input": name, "reason": f"not found: listed in {self.split_file.name} "
                                                                "but not under the input"})
        plan: dict[str, list[dict[str, Any]]] = {split: [] for split in self.splits}
        for name, found in inputs.items():
            split = assigned.get(name) if assigned is not None else hash_split(name)
            if split is None:
                self._rejected.append({"input": found["path"], "reason": f"not in split file: {self.split_file.name}"})
            elif split in plan and (self.limit is None or len(plan[split]) < self.limit):
                plan[split].append({"name": name, "split": split, **found})
        return plan

    def load(self, spec: dict[str, Any]) -> Trajectory:
        path = self.root / spec["path"]
        if spec["layout"] == "hdf5":
            jpeg, poses, actions, raw_actions, repairs = self._load_hdf5(path)
            actions_from = "commands"
        else:
            jpeg, poses, repairs = self._load_nomad(path)
            actions, raw_actions, actions_from = pose_velocities(poses), None, "poses"
        if len(jpeg) <= self.context_frames:
            raise SkipTrajectory(f"too short: {len(jpeg)} frames, "
                                 f"the split point needs more than {self.context_frames}")
        try:
            frames = frames_from_jpeg(jpeg)
        except ValueError as err:
            raise SkipTrajectory(f"unreadable image: {path}: {err}") from None
        meta = {
            "id": make_key("recon", spec["name"]), "source": "recon", "task": "RECON", "range": None, "location": None,
            "split": spec["split"], "fps": FPS, "action_layout": "recon-v1",
            "original_ids": {"name": spec["name"], "path": spec["path"], "layout": spec["layout"]},
            "units": "metres", "units_per_block": 1.0, "context_frames": self.context_frames,
            "actions_from": actions_from, "action_alignment": ALIGNMENT, "repairs": repairs,
        }
        return Trajectory(frames=frames, poses=poses, actions=actions, offset=self.context_frames, meta=meta,
                          raw_actions=raw_actions, jpeg=jpeg)

    @staticmethod
    def _load_hdf5(path: Path) -> tuple[list[bytes], np.ndarray, np.ndarray, list[dict], list[str]]:
        import h5py

        fields = ("images/rgb_left", "jackal/position", "jackal/yaw",
                  "commands/linear_velocity", "commands/angular_velocity")
        try:
            with h5py.File(path, "r") as f:
                if missing := [name for name in fields if name not in f]:
                    raise SkipTrajectory(f"missing datasets: {path} lacks {missing}")
                images = f["images/rgb_left"]
                if images.ndim != 1:
                    raise SkipTrajectory(f"not JPEG bytes: {path}: images/rgb_left has shape {images.shape}, "
                                         "expected [T]")
                jpeg = [bytes(image) for image in images[()]]
                position = np.asarray(f["jackal/position"][()], dtype=np.float64)
                yaw, linear, angular = (_column(f[name][()]) for name in fields[2:])
        except OSError as err:
            raise SkipTrajectory(f"unreadable hdf5: {path}: {err}") from None
        if position.ndim != 2 or position.shape[1] != 3:
            raise SkipTrajectory(f"bad shape: {path}: jackal/position has shape {position.shape}, expected [T, 3]")
        lengths = {name: len(a) for name, a in zip(fields, (jpeg, position, yaw, linear, angular))}
        T = min(lengths.values())
        repairs = []
        if len(set(lengths.values())) > 1:
            repairs.append(f"frame count mismatch: {lengths}; kept the first {T} rows of each")
        poses = np.stack([position[:T, 0], position[:T, 1], position[:T, 2], wrap_angle(yaw[:T]), np.zeros(T)], axis=1)
        actions = np.zeros((T, 2), np.float32)
        actions[1:, 0], actions[1:, 1] = linear[:T - 1], angular[:T - 1]
        raw = [{"linear_velocity": float(v), "angular_velocity": float(w)} for v, w in zip(linear[:T], angular[:T])]
        return jpeg[:T], poses, actions, raw, repairs

    @staticmethod
    def _load_nomad(folder: Path) -> tuple[list[bytes], np.ndarray, list[str]]:
        pickle_path = folder / NOMAD_PICKLE
        try:
            data = load_restricted_pickle(pickle_path)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise SkipTrajectory(f"refused pickle: {pickle_path}: {err}") from None
        if not isinstance(data, dict) or "position" not in data or "yaw" not in data:
            raise SkipTrajectory(f"bad pickle content: {pickle_path}: expected a dict with 'position' and 'yaw'")
        position = np.asarray(data["position"], dtype=np.float64)
        yaw = _column(data["yaw"])
        if position.ndim != 2 or position.shape[1] < 2:
            raise SkipTrajectory(f"bad shape: {pickle_path}: position has shape {position.shape}, expected [T, 2]")
        images = []
        while (image := folder / f"{len(images)}.jpg").is_file():
            images.append(image.read_bytes())
        lengths = {"images": len(images), "position": len(position), "yaw": len(yaw)}
        T = min(lengths.values())
        repairs = []
        if len(set(lengths.values())) > 1:
            repairs.append(f"frame count mismatch: {lengths} (images counted from 0.jpg up to the first gap); "
                           f"kept the first {T} of each")
        z = position[:T, 2] if position.shape[1] > 2 else np.zeros(T)
        poses = np.stack([position[:T, 0], position[:T, 1], z, wrap_angle(yaw[:T]), np.zeros(T)], axis=1)
        return images[:T], poses, repairs
