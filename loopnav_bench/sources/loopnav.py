"""LoopNav (Minecraft loops A→B→A and A→B→C→A) from its raw .avi + .json pairs, local or from the Hub.

Input layout (the Hub dataset `kevinLian/LoopNav`, or a local copy of part of it):
    {train,val,test}.csv        header `path_type,radius,biome,video_path,json_path`; one row per trajectory
    {ABA|ABCA}/{location}/{range}/{MM-DD_HH-MM-SS}.avi    MJPG video, nominally 20 fps, one frame per JSON entry
    {ABA|ABCA}/{location}/{range}/{MM-DD_HH-MM-SS}.json   a list with one dict per frame:
        x, y, z, yaw, pitch (Mineflayer),
        action {forward, back, left, right, jump, sprint, sneak, camera: [dyaw, dpitch]},
        goal (the pathfinder goal: {x, y, z} or {x, z, rangeSq}, or null), frame_count, extra_info

The split comes from the CSV the row is in, task from `path_type`, range from `radius`, location from `biome`.
With `hub_repo`, only the CSVs and then the two files of each selected row are downloaded (huggingface_hub, cached).

Frames are kept bit-exact: the MJPG chunks of the .avi become `Trajectory.jpeg` unchanged (see sources/avi.py).

Poses. Minecraft is y-up with x east and z south; Mineflayer's yaw is 0 facing north (−z) and grows counter-clockwise
seen from above, toward west (−x): its view direction is (−sin yaw, −cos yaw) in (x, z), i.e. `yaw = atan2(−dx, −dz)`
as in `bot.lookAt`. Its pitch is positive looking up. In the schema's right-handed z-up frame we therefore take
    our x = mc x (east),  our y = −mc z (north),  our z = mc y (up)
so the view direction becomes (−sin yaw, cos yaw) = (cos(yaw + π/2), sin(yaw + π/2)):
    our yaw = wrap(yaw_mf + π/2),  our pitch = pitch_mf.
Both angles keep their sense of rotation, so the camera action components keep their sign.

Actions ("loopnav-v1"): forward, back, left, right, jump, sprint, sneak as 0/1, then camera_dyaw, camera_dpitch in
radians per tick (Mineflayer's `camera`, counter-clockwise / up positive). The full JSON entry of every frame is kept
verbatim in `raw_actions`.

Alignment (ALIGNMENT; read from the collector's forks, not from the comment at physics.js l.117, which says the
packet is (a_t, s_t+1)). Kevin-lkw/mineflayer lib/plugins/physics.js `tickPhysics` runs, each 50 ms tick:
simulatePlayer(controlState) -> emit 'physicsTick' -> updatePosition. Kevin-lkw/mineflayer-pathfinder sets the control
keys in its 'physicsTick' handler, i.e. after the tick's step, and updatePosition then records those new keys beside
the position the step produced. So the keys of entry i move the bot in the next tick (entry i+1), while the camera
delta of entry i is the look change updatePosition applies in that same tick, already in entry i's yaw. We therefore
build actions[i] = (keys of entry i-1, camera of entry i): the control that produced frames[i]. actions[0]'s keys were
not recorded and are 0. The rule holds while consecutive entries are consecutive ticks; a key set on a tick that
emitted no packet first shows up together with the motion it causes (see Frame clock).

Frame clock (FRAME_CLOCK). The headless viewer renders one frame per position/look packet, and updatePosition sends
one only when the position or the look changed, or as a heartbeat 1 s after the last position packet. "20 fps" is the
nominal tick rate: while the bot stands still and does not turn, ticks leave no frame, and a heartbeat frame stands
for about 20 ticks. The JSON carries no tick or time stamp (frame_count is the receiver's packet counter, consecutive
from 20), so all it allows is to find heartbeats: entries whose pose repeats the previous one at the JSON's 3-decimal
precision. Their indices are kept in meta["frame_clock"]; time everywhere in loopnav is the frame index.

Split point (as all four LoopNav baseline adapters compute it): `offset` is the last index whose goal is non-null and
differs from frame 0's position by more than 2 blocks in x or in z (the arrival at B for ABA, at C for ABCA).
Context = frames [0, offset), evaluated target = frames [offset, T).

Quirks, each recorded (skips in the manifest's `skipped`, repairs in meta["repairs"] and the manifest's `repaired`):
- the receiver appends a JSON entry but writes no frame when an image fails to decode, so JSON and video can disagree
  in length. Which entries lost their frame is not recorded anywhere, so we keep the first min(n_json, n_frames) of
  both ("frame count mismatch: ...");
- empty trajectories (no JSON entry or no frame) are skipped ("empty trajectory"), as are ones whose goal never leaves
  the start ("no outbound goal") or that end at the turn point ("no return frames");
- Mineflayer yaw outside its usual [0, 2π) ("yaw unwrapped": wrapped like every yaw, and recorded);
- entries without an action record get all-zero actions ("missing action").
"""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

from loopnav_bench.fileio import resolve_within
from loopnav_bench.schema import ACTION_LAYOUTS, SPLITS, Trajectory, frames_from_jpeg, make_key, wrap_angle
from loopnav_bench.sources import SkipTrajectory, Source
from loopnav_bench.sources.avi import AviError, read_mjpeg_frames

FPS = 20
CSV_COLUMNS = ("path_type", "radius", "biome", "video_path", "json_path")
TASKS = ("ABA", "ABCA")
GOAL_DEPARTURE = 2.0  # blocks; the adapters' threshold for "the goal is not the start"
KEYS = ACTION_LAYOUTS["loopnav-v1"][:7]  # the seven 0/1 controls, in layout order
ALIGNMENT = ("actions[i] = movement keys of JSON entry i-1 (set on physicsTick after that tick's step, they drive the "
             "next tick) + camera of entry i (already in entry i's yaw): the control that produced frames[i]; "
             "actions[0] keys = 0 (not recorded); raw_actions holds the entries verbatim")
FRAME_CLOCK = ("one frame per position/look packet (changed pose, or a 1 s heartbeat); 20 fps is the nominal tick rate "
               "and idle stretches are compressed to heartbeat frames; time is the frame index")

Download = Callable[[str], str]


def hub_download(repo: str, revision: str | None) -> Download:
    """filename -> local path of that file of dataset `repo` (huggingface_hub's cache); fails at once offline."""
    from huggingface_hub import constants, hf_hub_download

    if constants.is_offline_mode():
        raise ConnectionError(f"cannot fetch from the Hub dataset {repo}: huggingface_hub is in offline mode "
                              "(HF_HUB_OFFLINE is set); download the files yourself and pass --input DIR")
    return functools.partial(hf_hub_download, repo_id=repo, repo_type="dataset", revision=revision)


def mineflayer_to_schema(entries: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Mineflayer JSON entries -> (poses [T,5] in the schema's frame, actions [T,9] "loopnav-v1",
    aligned by ALIGNMENT)."""
    mc = np.array([[e["x"], e["y"], e["z"], e["yaw"], e["pitch"]] for e in entries], dtype=np.float64)
    poses = np.stack([mc[:, 0], -mc[:, 2], mc[:, 1], wrap_angle(mc[:, 3] + math.pi / 2), mc[:, 4]], axis=1)
    recorded = [entry.get("action") or {} for entry in entries]
    keys = np.array([[float(bool(action.get(key, False))) for key in KEYS] for action in recorded], np.float32)
    actions = np.zeros((len(entries), len(ACTION_LAYOUTS["loopnav-v1"])), np.float32)
    actions[1:, :7] = keys[:-1]  # keys recorded with entry i-1 drive the step that entry i shows
    actions[:, 7:] = [(action.get("camera") or (0.0, 0.0))[:2] for action in recorded]
    return poses, actions


def frame_clock(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What the JSON tells about time (see FRAME_CLOCK): the heartbeat frames, and any gap in the receiver's counter."""
    pose = [tuple(e[k] for k in ("x", "y", "z", "yaw", "pitch")) for e in entries]
    counts = [e.get("frame_count") for e in entries]
    gaps = sum(1 for a, b in zip(counts, counts[1:]) if isinstance(a, int) and isinstance(b, int) and b != a + 1)
    return {"nominal_fps": FPS, "heartbeat_frames": [i for i in range(1, len(pose)) if pose[i] == pose[i - 1]],
            "frame_count_gaps": gaps}


def split_offset(entries: list[dict[str, Any]]) -> int | None:
    """The last index whose goal lies more than GOAL_DEPARTURE from frame 0 in x or z (Minecraft coordinates)."""
    x0, z0 = entries[0]["x"], entries[0]["z"]
    offset = None
    for i, entry in enumerate(entries):
        goal = entry.get("goal")
        if isinstance(goal, dict) and "x" in goal and "z" in goal:
            if abs(goal["x"] - x0) > GOAL_DEPARTURE or abs(goal["z"] - z0) > GOAL_DEPARTURE:
                offset = i
    return offset


class LoopNavSource(Source):
    name = "loopnav"
    shard_size = 4  # prepare holds a shard's decoded frames in memory: 200-1000 frames of 640x360 (0.1-0.7 GB) each

    def __init__(self, input: str | Path | None = None, hub_repo: str | None = None, splits: list[str] | None = None,
                 tasks: list[str] | None = None, ranges: list[int] | None = None, limit: int | None = None,
                 revision: str | None = None, download: Download | None = None):
        if (input is None) == (hub_repo is None):
            raise ValueError("--source loopnav needs exactly one of --input DIR or --hub-repo REPO")
        if bad := sorted(set(splits or ()) - set(SPLITS)):
            raise ValueError(f"unknown split(s) {bad}; choose from {list(SPLITS)}")
        if bad := sorted(set(tasks or ()) - set(TASKS)):
            raise ValueError(f"unknown LoopNav task(s) {bad}; choose from {list(TASKS)}")
        if limit is not None and limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        self.root = Path(input).resolve() if input is not None else None
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such LoopNav data directory")
        self.hub_repo, self.revision = hub_repo, revision
        self.splits = list(splits) if splits else list(SPLITS)
        self.tasks, self.ranges, self.limit = tasks, ranges, limit
        self.download = download or (hub_download(hub_repo, revision) if hub_repo else None)
        self._rejected: list[dict[str, str]] = []

    def settings(self) -> dict[str, Any]:
        return {"input": str(self.root) if self.root else None, "hub_repo": self.hub_repo, "revision": self.revision,
                "splits": self.splits, "tasks": self.tasks, "ranges": self.ranges, "limit": self.limit}

    def rejected_inputs(self) -> list[dict[str, str]]:
        return list(self._rejected)

    def summary(self, metas: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, Any]:
        clocks = [meta["frame_clock"] for meta in metas]
        return {"action_alignment": ALIGNMENT, "frame_clock": FRAME_CLOCK,
                "heartbeat_frames": sum(len(c["heartbeat_frames"]) for c in clocks),
                "trajectories_with_heartbeats": sum(1 for c in clocks if c["heartbeat_frames"]),
                "frame_count_gaps": sum(c["frame_count_gaps"] for c in clocks)}

    # ------------------------------------------------------------------------------------------------ files

    def _fetch(self, relative: str) -> Path:
        """The local file for a data-root-relative path: inside --input, or downloaded from the Hub repo."""
        if self.root is not None:
            return resolve_within(self.root, relative, "LoopNav path")
        from huggingface_hub.errors import RemoteEntryNotFoundError

        try:
            return Path(self.download(relative))
        except RemoteEntryNotFoundError:
            raise FileNotFoundError(f"{self.hub_repo}/{relative}: no such file in the Hub repo") from None
        except Exception as err:  # noqa: BLE001  (httpx, hub and OS errors all mean "could not fetch")
            raise ConnectionError(f"{self.hub_repo}/{relative}: could not download "
                                  f"({type(err).__name__}: {err})") from None

    def _check_path(self, relative: str) -> None:
        """Refuse row paths that would leave the data root (absolute, '..', symlinks out of --input)."""
        if self.root is not None:
            resolve_within(self.root, relative, "path")
        elif PurePosixPath(relative).is_absolute() or ".." in PurePosixPath(relative).parts:
            raise ValueError(f"path {relative!r} escapes the data root {self.hub_repo}")

    # ------------------------------------------------------------------------------------------------ plan

    def plan(self) -> dict[str, list[dict[str, Any]]]:
        self._rejected = []
        seen: set[str] = set()
        plan = {}
        for split in self.splits:
            csv_path = self._fetch(f"{split}.csv")
            if not csv_path.is_file():
                raise FileNotFoundError(f"{csv_path}: no split file {split}.csv in the LoopNav data root")
            specs = []
            for line, row in self._rows(csv_path):
                spec = self._select(csv_path, line, row, split, seen)
                if spec is not None and (self.limit is None or len(specs) < self.limit):
                    specs.append(spec)
            plan[split] = specs
        return plan

    @staticmethod
    def _rows(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(CSV_COLUMNS) <= set(reader.fieldnames):
                raise ValueError(f"{csv_path}: header {reader.fieldnames} lacks the LoopNav columns "
                                 f"{list(CSV_COLUMNS)}")
            return [(line, row) for line, row in enumerate(reader, start=2)]

    def _select(self, csv_path: Path, line: int, row: dict[str, str], split: str, seen: set[str]) -> dict | None:
        """A row -> spec, None when filtered out; rows that cannot be used are recorded in rejected_inputs()."""
        where = f"{csv_path.name}:{line}"
        try:
            task, location = row["path_type"].strip(), row["biome"].strip()
            rng = int(row["radius"])
            video, meta_json = row["video_path"].strip(), row["json_path"].strip()
            if task not in TASKS:
                raise ValueError(f"unknown path_type {task!r}")
        except (ValueError, TypeError, AttributeError) as err:  # a short row gives None fields
            self._rejected.append({"input": where, "reason": f"malformed CSV row: {err}"})
            return None
        try:
            for relative in (video, meta_json):
                self._check_path(relative)
        except ValueError as err:
            self._rejected.append({"input": where, "reason": f"path escapes the data root: {err}"})
            return None
        if (self.tasks and task not in self.tasks) or (self.ranges and rng not in self.ranges):
            return None
        stamp = PurePosixPath(video).stem
        key = make_key("loopnav", task, location, rng, stamp)
        if key in seen:
            self._rejected.append({"input": where, "reason": f"duplicate trajectory: {video} is listed twice"})
            return None
        seen.add(key)
        return {"id": key, "split": split, "task": task, "range": rng, "location": location, "video": video,
                "json": meta_json, "row": where}

    # ------------------------------------------------------------------------------------------------ load

    def load(self, spec: dict[str, Any]) -> Trajectory:
        try:
            json_path, video_path = self._fetch(spec["json"]), self._fetch(spec["video"])
        except FileNotFoundError as err:
            raise SkipTrajectory(f"missing file: {err}") from None
        for path in (json_path, video_path):
            if not path.is_file():
                raise SkipTrajectory(f"missing file: {path}")
        try:
            entries = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SkipTrajectory(f"unreadable json: {json_path}: {err}") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise SkipTrajectory(f"unreadable json: {json_path}: expected a list of per-frame objects")
        try:
            jpeg = read_mjpeg_frames(video_path)
        except AviError as err:
            raise SkipTrajectory(f"unreadable video: {err}") from None
        if not entries or not jpeg:
            raise SkipTrajectory(f"empty trajectory: {len(entries)} json entries, {len(jpeg)} frames in {video_path}")

        repairs = []
        if len(entries) != len(jpeg):
            kept = min(len(entries), len(jpeg))
            repairs.append(f"frame count mismatch: {len(entries)} json entries, {len(jpeg)} video frames; "
                           f"kept the first {kept} of each")
            entries, jpeg = entries[:kept], jpeg[:kept]
        try:
            poses, actions = mineflayer_to_schema(entries)
        except (KeyError, TypeError, ValueError) as err:
            raise SkipTrajectory(f"unreadable json: {json_path}: entry lacks a pose field or has a bad action "
                                 f"({err})") from None
        raw_yaw = np.array([e["yaw"] for e in entries], dtype=np.float64)
        if raw_yaw.min() < 0 or raw_yaw.max() >= 2 * math.pi:
            repairs.append(f"yaw unwrapped: Mineflayer yaw spans [{raw_yaw.min():.3f}, {raw_yaw.max():.3f}] rad, "
                           "outside [0, 2pi); wrapped")
        if missing := sum(1 for e in entries if not e.get("action")):
            repairs.append(f"missing action: {missing} of {len(entries)} entries have no action record; zeros used")

        offset = split_offset(entries)
        if offset is None or offset == 0:
            raise SkipTrajectory(f"no outbound goal: no frame after the first has a goal more than "
                                 f"{GOAL_DEPARTURE:g} blocks from the start in {json_path}")
        if offset >= len(entries) - 1:
            raise SkipTrajectory(f"no return frames: the split point {offset} is the last frame in {json_path}")

        meta = {
            "id": spec["id"], "source": "loopnav", "task": spec["task"], "range": spec["range"],
            "location": spec["location"], "split": spec["split"], "fps": FPS, "action_layout": "loopnav-v1",
            "original_ids": {"video": spec["video"], "json": spec["json"], "csv_row": spec["row"],
                             "stamp": PurePosixPath(spec["video"]).stem, "hub_repo": self.hub_repo},
            "units": "blocks", "units_per_block": 1, "action_alignment": ALIGNMENT, "frame_clock": frame_clock(entries),
            "repairs": repairs,
        }
        return Trajectory(frames=frames_from_jpeg(jpeg), poses=poses, actions=actions, offset=offset, meta=meta,
                          raw_actions=entries, jpeg=jpeg)

