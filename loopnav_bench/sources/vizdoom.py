"""The embedded default data: LoopNav-style ABA / ABCA loops walked in ViZDoom on the Freedoom levels.

LoopNav's recipe (loopnav-format.md §2.5) in Doom units, with 1 Minecraft block = 32 Doom units:
  1. Teleport to A, a random cell of the map's largest walkable region, and pan 360° there (turn actions).
  2. Walk to B, a random region cell at straight-line distance [0.8R, R) blocks from A; for ABCA walk on to C,
     sampled around B the same way. Legs follow A* paths on the map's walkable grid (doom_planner).
  3. Return to A along a fresh A* path (not a replay of the outbound frames) and stop within 1 block of A.
  The pitch drifts to a new random target now and then so that the look-up/down action is exercised.

Conventions (schema.py): poses are (x, y, z, yaw, pitch) in Doom map units and radians; Doom's ANGLE (degrees CCW
from +x) becomes wrapped radians and Doom's PITCH (positive = looking down) is negated. z is the player's feet; the
camera is 41 units above. Actions use layout "vizdoom-v1" (move_forward, move_left, turn_ccw, look_up): the delta
buttons sent, with moves in Doom button units per tic and turn / look in radians per frame; raw_actions keep the
button vector as sent, [MOVE_FORWARD_BACKWARD, MOVE_LEFT_RIGHT, TURN_LEFT_RIGHT, LOOK_UP_DOWN] deltas per tic
(positive = forward, rightward, right turn, look up). Closed doors count as walls, so no USE.
actions[t] is the control that produced frame t (LoopNav's (a_t, s_t+1) pairing); actions[0] is all zero.
One frame every FRAME_SKIP tics: 35 / 2 = 17.5 frames per second. `offset` is the arrival at B (ABA) or C (ABCA).

Splits are by map, so test places never appear in training. Each spec carries its own map and seed and every
trajectory starts from a fresh episode with that seed, so the output does not depend on worker count or order.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing.util
import os
import sys
import tempfile
import zlib
from typing import Any, Iterator

import numpy as np

from loopnav_bench.processes import Reaper, children
from loopnav_bench.schema import SPLITS, Trajectory, make_key, wrap_angle
from loopnav_bench.sources import SkipTrajectory, Source
from loopnav_bench.sources.doom_planner import WalkGrid, build_grid

UNITS_PER_BLOCK = 32.0
FRAME_SKIP = 2
FPS = 35.0 / FRAME_SKIP
RANGES = (5, 15, 30, 50)
TASKS = ("ABA", "ABCA")

# Freedoom levels split by map (56 of the 68). Left out are the maps where loops often fail in
# `benchmarks/bench_vizdoom.py --survey`: the walker gets stuck (lifts, narrow ledges: MAP09, MAP30, E2M6, E3M3,
# E3M7, E1M9) or the walkable region is too small once closed doors count as walls (MAP13, MAP24, MAP31, E1M3).
MAPS: dict[str, tuple[str, ...]] = {
    "train": ("MAP01", "MAP02", "MAP03", "MAP05", "MAP06", "MAP07", "MAP08", "MAP10", "MAP11", "MAP15", "MAP16",
              "MAP17", "MAP18", "MAP19", "MAP21", "MAP23", "MAP25", "MAP26", "MAP27", "MAP28", "MAP29", "MAP32",
              "E1M1", "E1M5", "E1M6", "E1M7", "E1M8", "E2M1", "E2M3", "E2M5", "E2M7", "E2M8", "E2M9", "E3M1", "E3M4",
              "E3M5", "E3M6", "E3M8", "E3M9", "E4M1", "E4M2", "E4M3", "E4M4", "E4M5", "E4M6", "E4M7"),
    "val": ("MAP12", "MAP20", "E1M2", "E2M2"),
    "test": ("MAP04", "MAP14", "MAP22", "E1M4", "E2M4", "E3M2", "E4M8", "E4M9"),
}

PRESETS: dict[str, dict[str, Any]] = {
    # the README's main command: 16 test loops (2 per task and range), 8 train and 8 val: ~12.5k frames, 150 MB,
    # 30 s with 2 workers on 2 (busy) cores
    "demo": {"per_cell": {"train": 1, "val": 1, "test": 2}, "ranges": RANGES, "size": 64},
    # a training set: 256 train, 32 val, 64 test loops: ~125k frames, 1.5 GB at 64², about 2 minutes with 2 workers
    "full": {"per_cell": {"train": 32, "val": 4, "test": 8}, "ranges": RANGES, "size": 64},
}

BUTTONS = ("MOVE_FORWARD_BACKWARD_DELTA", "MOVE_LEFT_RIGHT_DELTA", "TURN_LEFT_RIGHT_DELTA", "LOOK_UP_DOWN_DELTA")
# Controls, per tic (make_action repeats them FRAME_SKIP times). Forward 12 walks about 8 units per frame
# (4.5 blocks/s, Minecraft's walking speed is 4.3); turn and look steps are given per frame in degrees.
FORWARD = 12
TURN_STEPS = (10.0, 5.0, 2.0)
LOOK_STEP = 4.0
LOOK_AROUND_STEP = 10.0       # the 360° pan at A: 36 frames
PITCH_TARGETS = (-20.0, -10.0, 0.0, 0.0, 10.0, 20.0)  # degrees, up positive
PITCH_CHANGE_PROB = 0.03      # per frame
LOOKAHEAD = 48.0              # pure-pursuit distance along the path, map units
ARRIVE_TOLERANCE = 24.0       # at B and C
RETURN_TOLERANCE = UNITS_PER_BLOCK  # at A: LoopNav's GoalNearXZ(A, 1)
COAST_FACTOR = 0.82 / (1 - 0.82)  # Doom friction keeps 0.82 of the speed per frame: distance coasted = factor x speed
STUCK_FRAMES, STUCK_DISTANCE = 30, 24.0
MAX_DETOUR = 3.0              # a leg's path may be at most this many times its straight-line length
MAX_ATTEMPTS = 3
WALL_VIEW_DISTANCE = 48.0     # a frame whose view ray hits a wall closer than this is counted as wall-dominated
LOW_CONTRAST_STD = 8.0        # grey-level std (0-255) under which a stored frame counts as low-contrast


# Solid decorations (ZDoom class name -> radius in map units): the walker cannot pass them, so the grid marks them.
SOLID_THINGS: dict[str, float] = {
    **dict.fromkeys(("TechPillar", "Column", "TechLamp", "TechLamp2", "TorchTree", "Stalagtite", "Stalagmite",
                     "Candelabra", "EvilEye", "FloatingSkull", "HeartColumn", "TallGreenColumn", "ShortGreenColumn",
                     "TallRedColumn", "ShortRedColumn", "SkullColumn", "GreenTorch", "RedTorch", "BlueTorch",
                     "ShortGreenTorch", "ShortRedTorch", "ShortBlueTorch", "HeadOnAStick", "HeadsOnAStick", "DeadStick",
                     "LiveStick", "HeadCandles", "BurningBarrel", "HangNoGuts", "HangBNoBrain", "HangTLookingDown",
                     "HangTSkull", "HangTLookingUp", "HangTNoBrain", "BloodyTwitch", "Meat2", "Meat3", "Meat4",
                     "Meat5"),
                    16.0),
    "ExplosiveBarrel": 10.0, "BigTree": 32.0,
}


class LoopFailure(Exception):
    """One attempt failed (stuck, off the path, no target); the next attempt draws new points."""


class VizDoomSource(Source):
    name = "vizdoom"
    shard_size = 16

    def __init__(self, preset: str = "demo", tasks: list[str] | None = None, ranges: list[int] | None = None,
                 per_cell: int | None = None, size: int | None = None, seed: int | None = None,
                 splits: list[str] | None = None, limit: int | None = None):
        if preset not in PRESETS:
            raise ValueError(f"unknown vizdoom preset {preset!r}; choose one of {sorted(PRESETS)}")
        base = PRESETS[preset]
        self.preset = preset
        self.tasks = tuple(tasks or TASKS)
        self.ranges = tuple(int(r) for r in (ranges or base["ranges"]))
        self.per_cell = {s: int(per_cell) for s in SPLITS} if per_cell is not None else dict(base["per_cell"])
        self.size = int(size or base["size"])
        self.seed = 0 if seed is None else int(seed)
        self.splits = tuple(splits or SPLITS)
        self.limit = limit
        if bad := [t for t in self.tasks if t not in TASKS]:
            raise ValueError(f"vizdoom makes tasks {TASKS}, not {bad}")
        if bad := [s for s in self.splits if s not in SPLITS]:
            raise ValueError(f"unknown split(s) {bad}; choose from {SPLITS}")
        if any(r <= 0 for r in self.ranges):
            raise ValueError(f"ranges must be positive numbers of blocks, got {list(self.ranges)}")
        if self.size not in (64, 128):
            raise ValueError(f"vizdoom frames are 64 or 128 pixels square, not {self.size}")
        if any(n < 0 for n in self.per_cell.values()) or (limit is not None and limit <= 0):
            raise ValueError("per_cell must be >= 0 and limit > 0")
        self._session: DoomSession | None = None

    def __getstate__(self) -> dict[str, Any]:  # workers start their own simulator
        return {**self.__dict__, "_session": None}

    def settings(self) -> dict[str, Any]:
        return {"preset": self.preset, "tasks": list(self.tasks), "ranges": list(self.ranges),
                "per_cell": {s: self.per_cell[s] for s in self.splits}, "size": self.size, "seed": self.seed,
                "splits": list(self.splits), "limit": self.limit, "maps": {s: list(MAPS[s]) for s in self.splits},
                "frame_skip": FRAME_SKIP, "units_per_block": UNITS_PER_BLOCK, "simulator": _simulator_version()}

    def plan(self) -> dict[str, list[dict[str, Any]]]:
        plan = {}
        for split in self.splits:
            maps, specs = MAPS[split], []
            # index-major order: a --limit keeps every (task, range) cell equally filled
            for index in range(self.per_cell[split]):
                for task in self.tasks:
                    for rng in self.ranges:
                        n = len(specs)
                        seed = zlib.crc32(f"{self.seed}/{split}/{task}/{rng}/{index}".encode())
                        specs.append({"split": split, "task": task, "range": rng, "index": index,
                                      "map": maps[n % len(maps)], "seed": seed})
            specs = specs[: self.limit] if self.limit else specs
            # grouped by map (stable): loading another level costs about as much as 100 frames of walking
            plan[split] = sorted(specs, key=lambda spec: maps.index(spec["map"]))
        return plan

    def load(self, spec: dict[str, Any]) -> Trajectory:
        if self._session is None:
            self._session = DoomSession()
        errors = []
        for attempt in range(MAX_ATTEMPTS):
            try:
                record = walk_loop(self._session, spec, attempt)
                break
            except LoopFailure as err:
                errors.append(f"attempt {attempt}: {err}")
        else:
            raise SkipTrajectory(f"{_reason(errors[-1])}: {spec['map']} {spec['task']}-{spec['range']} failed "
                                 f"{MAX_ATTEMPTS} attempts ({'; '.join(errors)})")
        return self._trajectory(spec, record, errors)

    def summary(self, metas: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, Any]:
        """Generation quality for the manifest: success rate, return error to A, wall-dominated frames."""
        errors = np.array([m["return_error"] for m in metas], dtype=np.float64)
        frames = np.array([m["n_frames"] for m in metas], dtype=np.float64)
        walls = np.array([m["wall_fraction"] for m in metas], dtype=np.float64)
        low_contrast = np.array([m["low_contrast_fraction"] for m in metas], dtype=np.float64)
        attempts = sum(m["attempts"] for m in metas) + MAX_ATTEMPTS * len(skipped)
        planned = len(metas) + len(skipped)
        return {
            "trajectories": len(metas), "frames": int(frames.sum()),
            "success_rate": len(metas) / planned if planned else None,
            "attempt_success_rate": len(metas) / attempts if attempts else None,
            "median_return_error_units": float(np.median(errors)) if len(errors) else None,
            "median_return_error_blocks": float(np.median(errors) / UNITS_PER_BLOCK) if len(errors) else None,
            "wall_frame_fraction": float((walls * frames).sum() / frames.sum()) if len(frames) else None,
            "low_contrast_frame_fraction": float((low_contrast * frames).sum() / frames.sum()) if len(frames) else None,
        }

    def _trajectory(self, spec: dict[str, Any], record: dict[str, Any], errors: list[str]) -> Trajectory:
        import cv2

        frames = np.stack([cv2.resize(f, (self.size, self.size), interpolation=cv2.INTER_AREA)
                           for f in record["screens"]])
        contrast = [cv2.meanStdDev(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY))[1].item() for f in frames]
        buttons = np.array(record["buttons"], dtype=np.float64)
        # "+ 0.0" turns the -0.0 of a negated zero into 0.0
        actions = np.stack([buttons[:, 0], -buttons[:, 1] + 0.0, np.radians(-buttons[:, 2] * FRAME_SKIP) + 0.0,
                            np.radians(buttons[:, 3] * FRAME_SKIP)], axis=1).astype(np.float32)
        doom = np.array(record["variables"], dtype=np.float64)  # x, y, z, ANGLE, PITCH
        poses = np.stack([doom[:, 0], doom[:, 1], doom[:, 2], wrap_angle(np.radians(doom[:, 3])),
                          np.radians(-doom[:, 4]) + 0.0], axis=1)
        meta = {
            "id": make_key("vizdoom", spec["split"], spec["task"], spec["range"], spec["map"], spec["index"]),
            "source": self.name, "task": spec["task"], "range": spec["range"], "location": spec["map"],
            "split": spec["split"], "fps": FPS, "action_layout": "vizdoom-v1",
            "original_ids": {"map": spec["map"], "wad": _wad(spec["map"]), "seed": spec["seed"],
                             "index": spec["index"]},
            "units_per_block": UNITS_PER_BLOCK, "frame_skip": FRAME_SKIP,
            "waypoints": {k: [round(float(v), 2) for v in p] for k, p in record["waypoints"].items()},
            "return_error": round(record["return_error"], 3), "wall_fraction": round(record["wall_fraction"], 4),
            "low_contrast_fraction": round(float(np.mean(np.array(contrast) < LOW_CONTRAST_STD)), 4),
            "n_frames": len(frames), "attempts": len(errors) + 1,
            "repairs": [f"retried: {e}" for e in errors],
        }
        return Trajectory(frames=frames, poses=poses, actions=actions, offset=record["offset"], meta=meta,
                          raw_actions=[[float(v) for v in b] for b in record["buttons"]])


def _reason(error: str) -> str:
    """The failure kind of 'attempt N: kind: detail' (the manifest groups skips by it)."""
    return error.split(": ", 2)[1]


def _simulator_version() -> str:
    import vizdoom

    return f"vizdoom {vizdoom.__version__}"


def _wad(map_name: str) -> str:
    return "freedoom2.wad" if map_name.startswith("MAP") else "freedoom1.wad"


class DoomSession:
    """One process's simulators (one per WAD, started lazily) and the walk grid of every map it has visited."""

    def __init__(self):
        self._scratch = tempfile.mkdtemp(prefix="loopnav-vizdoom-")
        self._games: dict[tuple[str, bool], Any] = {}  # (wad, reports geometry) -> DoomGame
        self._grids: dict[str, WalkGrid] = {}
        self._current: dict[Any, str] = {}  # game -> its loaded map
        # engines are forked by ViZDoom's C++ library: the reaper kills them and removes the scratch folder when this
        # process ends in any way, SIGKILL included
        self._reaper, self._watched = Reaper(self._scratch, _engine()), set()
        # close the engines when a pool worker exits: workers leave through os._exit, which skips __del__ and atexit
        multiprocessing.util.Finalize(self, _close_games, args=(self._games, self._reaper), exitpriority=10)

    def start(self, map_name: str, seed: int):
        """A fresh episode of `map_name` with `seed`; returns (game, grid)."""
        if map_name not in self._grids:
            self._grids[map_name] = self._read_grid(map_name)
        game = self._game(_wad(map_name), geometry=False)
        if self._current.get(game) != map_name:
            game.set_doom_map(map_name)
            self._current[game] = map_name
        game.set_seed(seed)
        game.new_episode()
        game.send_game_command("god")  # Freedoom has damaging floors; the walker must not die on them
        return game, self._grids[map_name]

    def _read_grid(self, map_name: str) -> WalkGrid:
        # a separate simulator reports the geometry: with sector and object info on, every step is ~10x slower
        game = self._game(_wad(map_name), geometry=True)
        game.set_doom_map(map_name)
        game.new_episode()
        state = game.get_state()
        obstacles = [(o.position_x, o.position_y, SOLID_THINGS[o.name]) for o in state.objects
                     if o.name in SOLID_THINGS]
        return build_grid(state.sectors, obstacles)

    def _game(self, wad: str, geometry: bool):
        if (wad, geometry) not in self._games:
            self._games[wad, geometry] = self._launch(wad, geometry)
        return self._games[wad, geometry]

    def _launch(self, wad: str, geometry: bool):
        import vizdoom as vzd

        game = vzd.DoomGame()
        game.set_doom_game_path(os.path.join(os.path.dirname(vzd.__file__), wad))
        game.set_doom_config_path(os.path.join(self._scratch, f"{wad}-{geometry}.ini"))
        game.set_screen_resolution(vzd.ScreenResolution.RES_160X120)
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        for part in ("hud", "crosshair", "weapon", "messages", "decals", "particles", "corpses"):
            getattr(game, f"set_render_{part}")(False)
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_mode(vzd.Mode.PLAYER)
        game.set_episode_start_time(20)  # turns are ignored during the first tics of an episode
        game.set_episode_timeout(0)
        game.add_game_args("-nomonsters +freelook 1 +sv_cheats 1")
        for button in BUTTONS:
            game.add_available_button(getattr(vzd.Button, button))
        for variable in ("POSITION_X", "POSITION_Y", "POSITION_Z", "ANGLE", "PITCH"):
            game.add_available_game_variable(getattr(vzd.GameVariable, variable))
        game.set_sectors_info_enabled(geometry)
        game.set_objects_info_enabled(geometry)
        cwd = os.getcwd()
        os.chdir(self._scratch)  # the engine writes a _vizdoom/ folder into its working directory
        try:
            with _engine_output_to(os.path.join(self._scratch, "engine.log")):
                game.init()
        finally:
            os.chdir(cwd)
        for pid in set(children(_engine())) - self._watched:
            self._reaper.watch(pid)
            self._watched.add(pid)
        return game


@contextlib.contextmanager
def _engine_output_to(log: str) -> Iterator[None]:
    """Point this process's stdout and stderr at `log` while the engine is forked, so that the engine writes there.

    Why: the engine's own exit path (an atexit handler in ViZDoom's binary, after `close()` has made it exit(0))
    sometimes segfaults, and ZDoom's crash catcher then prints a `*** Fatal Error *** ... signal 11 ...
    vizdoom-crash.log` report into the user's terminal at the end of a run whose data is fine (measured: 5 runs in 15 of
    `prepare --preset demo --workers 2`; gdb's backtrace in the log ends in __run_exit_handlers). Crashes during a run
    still surface, as the ViZDoomErrorException every engine call then raises."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


def _engine() -> str:
    import vizdoom as vzd

    return os.path.join(os.path.dirname(vzd.__file__), "vizdoom")


def _close_games(games: dict[Any, Any], reaper: Reaper) -> None:
    try:
        for game in games.values():
            game.close()
        games.clear()
    finally:
        reaper.close()  # any engine that did not close, and the scratch folder


class _Walker:
    """Records frames, poses and the buttons sent while it drives the player with discrete controls."""

    def __init__(self, game, grid: WalkGrid, rng: np.random.Generator):
        self.game, self.grid, self.rng = game, grid, rng
        self.screens: list[np.ndarray] = []
        self.variables: list[list[float]] = []
        self.buttons: list[list[float]] = []
        self.pitch_target = 0.0
        self._observe([0.0] * len(BUTTONS))

    @property
    def position(self) -> tuple[float, float]:
        return self.variables[-1][0], self.variables[-1][1]

    @property
    def speed(self) -> float:
        """Map units moved in the last frame (plain floats: the control loop runs once per frame)."""
        return math.dist(self.variables[-2][:2], self.variables[-1][:2]) if len(self.variables) > 1 else 0.0

    def step(self, forward: float, turn_ccw_deg: float) -> None:
        """One frame: the given walk and turn, plus a look step towards the current pitch target."""
        if self.rng.random() < PITCH_CHANGE_PROB:
            self.pitch_target = PITCH_TARGETS[int(self.rng.integers(len(PITCH_TARGETS)))]
        gap = self.pitch_target + self.variables[-1][4]  # target minus pitch-up, and Doom's PITCH is pitch-down
        look = math.copysign(LOOK_STEP, gap) if abs(gap) >= LOOK_STEP / 2 else 0.0
        # per-tic button deltas: a positive TURN turns right, a positive LOOK looks up
        buttons = [float(forward), 0.0, -turn_ccw_deg / FRAME_SKIP, look / FRAME_SKIP]
        self.game.make_action(buttons, FRAME_SKIP)
        if self.game.is_episode_finished():
            raise LoopFailure("episode_ended: the player died or the level ended")
        self._observe(buttons)

    def _observe(self, buttons: list[float]) -> None:
        state = self.game.get_state()
        screen = state.screen_buffer
        height, width = screen.shape[:2]
        left = (width - height) // 2
        self.screens.append(screen[:, left:left + height])
        self.variables.append([float(v) for v in state.game_variables])
        self.buttons.append(buttons)

    def look_around(self) -> None:
        for _ in range(int(round(360 / LOOK_AROUND_STEP))):
            self.step(0, LOOK_AROUND_STEP)

    def walk(self, goal: np.ndarray, tolerance: float, stop: bool, leg: str, path: list | None = None) -> None:
        """Follow `path` (default: a fresh A* path from here) to `goal` until within `tolerance` (and, when `stop`,
        standing still)."""
        goal = (float(goal[0]), float(goal[1]))
        path = list(path) if path is not None else self.grid.plan(self.position, goal)
        if path is None:
            raise LoopFailure(f"no_path: {leg}")
        path.append(goal)
        length = sum(math.dist(p, q) for p, q in zip([self.position] + path[:-1], path))
        budget = int(2 * length / (FORWARD * 0.6) + 90)  # frames: twice the walking time plus turning
        progress, history = 0, []
        for _ in range(budget):
            position = self.position
            distance = math.dist(goal, position)
            if distance < tolerance and (not stop or self.speed < 0.5):
                return
            # pure pursuit: the closest path point a little ahead of the progress so far, then LOOKAHEAD further on
            progress = min(range(progress, min(progress + 12, len(path))), key=lambda i: math.dist(path[i], position))
            target = next((p for p in itertools.islice(path, progress, None) if math.dist(p, position) >= LOOKAHEAD),
                          path[-1])
            heading = math.degrees(math.atan2(target[1] - position[1], target[0] - position[0]))
            error = (heading - self.variables[-1][3] + 180) % 360 - 180
            turn = math.copysign(next((s for s in TURN_STEPS if abs(error) >= s), 0.0), error)
            braking = stop and distance < COAST_FACTOR * self.speed + 4
            self.step(FORWARD if abs(error) < 60 and not braking else 0, turn)
            history.append(self.position)
            if len(history) > STUCK_FRAMES and math.dist(history[-1], history[-1 - STUCK_FRAMES]) < STUCK_DISTANCE \
                    and distance >= tolerance:
                raise LoopFailure(f"stuck: {leg} at ({position[0]:.0f}, {position[1]:.0f})")
        raise LoopFailure(f"timeout: {leg} not reached in {budget} frames")


def _sample_target(grid: WalkGrid, points: np.ndarray, origin: np.ndarray, rng_blocks: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """A random region point at straight-line distance [0.8R, R) from `origin` whose A* path is not a long detour,
    and that path."""
    distance = np.linalg.norm(points - origin, axis=1)
    radius = rng_blocks * UNITS_PER_BLOCK
    candidates = np.nonzero((distance >= 0.8 * radius) & (distance < radius))[0]
    for index in rng.permutation(candidates)[:8]:
        path = grid.plan(origin, points[index])
        if path is not None:
            length = np.linalg.norm(np.diff(np.vstack([origin, path]), axis=0), axis=1).sum()
            if length <= MAX_DETOUR * distance[index]:
                return points[index], path
    raise LoopFailure(f"no_target: no reachable point {0.8 * rng_blocks:g}-{rng_blocks:g} blocks from "
                   f"({origin[0]:.0f}, {origin[1]:.0f})")


def walk_loop(session: DoomSession, spec: dict[str, Any], attempt: int) -> dict[str, Any]:
    """One attempt at spec's loop; raises LoopFailure. Deterministic in (spec, attempt)."""
    rng = np.random.default_rng([spec["seed"], attempt])
    game, grid = session.start(spec["map"], spec["seed"])
    points = grid.region_points()
    for _ in range(8):  # an A with room for the first leg
        a = points[rng.integers(len(points))]
        try:
            waypoints, paths = {"A": a}, {}
            waypoints["B"], paths["B"] = _sample_target(grid, points, a, spec["range"], rng)
            break
        except LoopFailure:
            continue
    else:
        raise LoopFailure(f"no_target: no A on {spec['map']} has a point {spec['range']} blocks away")
    if spec["task"] == "ABCA":
        waypoints["C"], paths["C"] = _sample_target(grid, points, waypoints["B"], spec["range"], rng)

    game.send_game_command(f"warp {a[0]:.0f} {a[1]:.0f}")
    game.make_action([0.0] * len(BUTTONS), FRAME_SKIP)  # console commands take effect on the next tic
    walker = _Walker(game, grid, rng)
    walker.look_around()
    for leg, name in enumerate(paths):  # outbound legs follow the paths planned while sampling their targets
        walker.walk(waypoints[name], ARRIVE_TOLERANCE, stop=False, leg=f"leg {leg + 1} to {name}", path=paths[name])
    offset = len(walker.screens)
    walker.walk(a, RETURN_TOLERANCE, stop=True, leg="return to A")  # a fresh A* path from wherever the walker is

    final = np.array(walker.variables[-1])
    walls = [grid.wall_distance(x, y, math.radians(angle), WALL_VIEW_DISTANCE) < WALL_VIEW_DISTANCE
             for x, y, _, angle, _ in walker.variables]
    return {"screens": walker.screens, "variables": walker.variables, "buttons": walker.buttons, "offset": offset,
            "waypoints": waypoints, "return_error": float(np.linalg.norm(final[:2] - a)),
            "wall_fraction": float(np.mean(walls))}
