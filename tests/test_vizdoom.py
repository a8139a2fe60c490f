"""The ViZDoom source: the planner on hand-made geometry, then real loops walked in the simulator (small and fast)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from loopnav_bench.sources.doom_planner import MIN_CLEARANCE, build_grid, classify_lines


def _sector(floor: float, ceiling: float, lines: list[tuple[float, float, float, float]], blocking: bool = False):
    return SimpleNamespace(floor_height=floor, ceiling_height=ceiling,
                           lines=[SimpleNamespace(x1=a, y1=b, x2=c, y2=d, is_blocking=blocking)
                                  for a, b, c, d in lines])


def _two_rooms(door_ceiling: float = 128.0):
    """Two 512x512 rooms side by side joined by a 128-wide doorway sector, whose ceiling makes it open or closed."""
    left = _sector(0, 128, [(0, 0, 512, 0), (0, 0, 0, 512), (0, 512, 512, 512),
                            (512, 0, 512, 192), (512, 320, 512, 512), (512, 192, 512, 320)])
    door = _sector(0, door_ceiling, [(512, 192, 512, 320), (640, 192, 640, 320),
                                     (512, 192, 640, 192), (512, 320, 640, 320)])
    right = _sector(0, 128, [(640, 0, 1152, 0), (1152, 0, 1152, 512), (640, 512, 1152, 512),
                             (640, 0, 640, 192), (640, 320, 640, 512), (640, 192, 640, 320)])
    return [left, door, right]


def test_lines_between_open_sectors_do_not_block_but_closed_doors_and_high_steps_do():
    blocking, one_sided = classify_lines(_two_rooms())
    assert (512, 192, 512, 320) not in blocking and (512, 192, 512, 320) not in one_sided
    assert (0, 0, 0, 512) in one_sided and (0, 0, 0, 512) in blocking
    closed, _ = classify_lines(_two_rooms(door_ceiling=0))
    assert (512, 192, 512, 320) in closed
    step = [_sector(0, 128, [(0, 0, 64, 0), (0, 0, 0, 64), (0, 64, 64, 64), (64, 0, 64, 64)]),
            _sector(40, 168, [(64, 0, 64, 64), (64, 0, 128, 0), (64, 64, 128, 64), (128, 0, 128, 64)])]
    assert (64, 0, 64, 64) in classify_lines(step)[0]


def test_grid_region_spans_open_doorway_and_stops_at_a_closed_one():
    grid = build_grid(_two_rooms())
    points = grid.region_points()
    assert points[:, 0].min() < 200 and points[:, 0].max() > 900  # both rooms
    assert ((points[:, 0] > -16) & (points[:, 0] < 1168)).all()   # nothing outside the map
    assert grid.clearance[grid.region].min() >= MIN_CLEARANCE
    closed = build_grid(_two_rooms(door_ceiling=0)).region_points()
    assert closed[:, 0].max() < 512 or closed[:, 0].min() > 640  # one room only


def test_a_star_goes_through_the_doorway_and_keeps_off_walls():
    grid = build_grid(_two_rooms())
    path = np.array(grid.plan((100, 100), (1050, 100)))
    crossing = path[(path[:, 0] > 520) & (path[:, 0] < 630)]
    assert len(crossing) and (crossing[:, 1] > 192).all() and (crossing[:, 1] < 320).all()
    assert np.linalg.norm(path[-1] - (1050, 100)) < grid.cell
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert steps.max() <= grid.cell * math.sqrt(2) + 1e-6  # connected, 8-neighbour steps
    # the wall cost pulls a path through an open room away from the wall it could hug
    along_wall = np.array(grid.plan((60, 60), (460, 60)))
    assert along_wall[:, 1].max() > 80
    assert grid.plan((100, 100), (5000, 5000)) is None


def test_solid_things_become_walls():
    free = build_grid(_two_rooms())
    blocked = build_grid(_two_rooms(), obstacles=[(256, 256, 16)])
    row, col = free.to_cell(256, 256)
    assert free.region[row, col] and not blocked.region[row, col]


vizdoom = pytest.importorskip("vizdoom")

from loopnav_bench.shards import prepare, read_trajectories  # noqa: E402
from loopnav_bench.sources import SkipTrajectory  # noqa: E402
from loopnav_bench.sources.vizdoom import (  # noqa: E402
    ARRIVE_TOLERANCE,
    FRAME_SKIP,
    LOOK_AROUND_STEP,
    MAPS,
    RETURN_TOLERANCE,
    UNITS_PER_BLOCK,
    VizDoomSource,
)


def _small(**kwargs) -> VizDoomSource:
    return VizDoomSource(**{"tasks": ["ABA", "ABCA"], "ranges": [5], "per_cell": 1, "splits": ["test"], **kwargs})


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("vizdoom") / "set"
    manifest = prepare(_small(), out)
    return out, manifest


def test_splits_use_disjoint_maps_and_plan_is_deterministic():
    assert not set(MAPS["train"]) & set(MAPS["val"]) and not set(MAPS["train"]) & set(MAPS["test"])
    assert not set(MAPS["val"]) & set(MAPS["test"])
    source = VizDoomSource(preset="full")
    plan = source.plan()
    for split, specs in plan.items():
        assert {s["map"] for s in specs} <= set(MAPS[split])
    assert plan == VizDoomSource(preset="full").plan()
    assert plan != VizDoomSource(preset="full", seed=1).plan()
    limited = VizDoomSource(preset="full", limit=8).plan()["test"]
    assert {(s["task"], s["range"]) for s in limited} == {(t, r) for t in ("ABA", "ABCA") for r in (5, 15, 30, 50)}


def test_bad_settings_are_refused():
    for kwargs in ({"preset": "huge"}, {"size": 100}, {"tasks": ["RECON"]}, {"splits": ["dev"]}, {"ranges": [0]}):
        with pytest.raises(ValueError):
            VizDoomSource(**kwargs)


def test_loops_follow_the_recipe(small_set):
    out, manifest = small_set
    trajectories = list(read_trajectories(out))
    assert {t.meta["task"] for t in trajectories} == {"ABA", "ABCA"}
    for traj in trajectories:
        meta, poses, actions = traj.meta, traj.poses, traj.actions
        assert traj.frames.shape[1:] == (64, 64, 3) and meta["location"] in MAPS["test"]
        a = np.array(meta["waypoints"]["A"])
        turn_around = meta["waypoints"]["C" if meta["task"] == "ABCA" else "B"]
        # the 360° pan at A: pure ccw turns, position unchanged, yaw advancing by the sent turn
        pan = int(round(360 / LOOK_AROUND_STEP))
        assert np.allclose(actions[1:pan + 1, 2], math.radians(LOOK_AROUND_STEP))
        assert np.linalg.norm(poses[:pan + 1, :2] - a, axis=1).max() < 1.0
        yaw_steps = (np.diff(poses[:, 3]) + np.pi) % (2 * np.pi) - np.pi
        assert np.allclose(yaw_steps, actions[1:, 2], atol=1e-3)  # poses agree with the actions sent
        assert np.allclose(np.diff(poses[:, 4]), actions[1:, 3], atol=1e-3)
        # outbound reaches B (and C), the return starts there and ends within one block of A
        b_distance = np.linalg.norm(np.array(meta["waypoints"]["B"]) - a) / UNITS_PER_BLOCK
        assert 0.8 * meta["range"] - 0.5 <= b_distance < meta["range"] + 0.5
        assert np.linalg.norm(poses[traj.offset - 1, :2] - turn_around) < ARRIVE_TOLERANCE
        assert np.linalg.norm(poses[-1, :2] - a) == pytest.approx(meta["return_error"], abs=1e-2)
        assert meta["return_error"] < RETURN_TOLERANCE
        # right turn < 0
        assert traj.raw_actions[1][2] == -LOOK_AROUND_STEP / FRAME_SKIP and len(traj.raw_actions[0]) == 4
    pitch_moves = np.concatenate([t.actions[:, 3] for t in trajectories])
    assert (pitch_moves != 0).any()
    summary = manifest["summary"]
    assert summary["trajectories"] == len(trajectories)
    assert 0 < summary["success_rate"] <= 1 and summary["median_return_error_units"] < RETURN_TOLERANCE


def test_same_seed_gives_identical_shards_with_one_or_two_workers(small_set, tmp_path):
    out, manifest = small_set
    again = prepare(_small(), tmp_path / "two", workers=2)
    assert [s["sha256"] for s in again["splits"]["test"]["shards"]] == \
           [s["sha256"] for s in manifest["splits"]["test"]["shards"]]


def test_a_loop_does_not_depend_on_what_the_process_walked_before(small_set):
    out, _ = small_set
    source = _small()
    first, second = source.plan()["test"][:2]
    source.load(second)  # another map and seed first: the simulator must be reset completely
    again = source.load(first)
    stored = next(t for t in read_trajectories(out) if t.id == again.id)
    assert np.array_equal(again.frames, stored.frames) and np.array_equal(again.poses, stored.poses)


def test_an_impossible_loop_is_skipped_with_its_reason():
    source = _small()
    spec = dict(source.plan()["test"][0], range=100_000)
    with pytest.raises(SkipTrajectory, match=r"^no_target: "):
        source.load(spec)
