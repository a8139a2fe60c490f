"""The trajectory schema: what validate() accepts and the clear error it gives for each kind of broken trajectory."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
from conftest import make_trajectory

from loopnav_bench.schema import ACTION_LAYOUTS, TrajectoryError, decode_jpeg, frames_from_jpeg, make_key, wrap_angle


def test_valid_trajectory_and_context_target_slices():
    traj = make_trajectory(length=24, offset=10)
    assert traj.validate() is traj
    assert (traj.context, traj.target) == (slice(0, 10), slice(10, 24))
    assert len(traj.frames[traj.context]) + len(traj.frames[traj.target]) == len(traj)


@pytest.mark.parametrize("change, message", [
    (lambda t: {"poses": t.poses[:-1]}, "length mismatch: 24 frames, 23 poses"),
    (lambda t: {"actions": t.actions[:-2]}, "length mismatch: 24 frames, 24 poses, 22 actions"),
    (lambda t: {"raw_actions": t.raw_actions[:-1]}, "23 raw action records"),
    (lambda t: {"jpeg": [b""] * 3}, "3 JPEG frames"),
    (lambda t: {"poses": np.where(np.arange(24)[:, None] == 7, np.nan, t.poses)}, "pose at frame 7 is not finite"),
    (lambda t: {"offset": 0}, "offset 0 must be an integer in (0, 24)"),
    (lambda t: {"offset": 24}, "offset 24 must be an integer in (0, 24)"),
    (lambda t: {"offset": 3.0}, "offset 3.0 must be an integer"),
    (lambda t: {"frames": t.frames.astype(np.float32)}, "frames must be a uint8 numpy array, got float32"),
    (lambda t: {"actions": t.actions.astype(np.float64)}, "actions must be a float32 array, got float64"),
    (lambda t: {"poses": t.poses.astype(np.int64)}, "poses must be a float32/float64 array, got int64"),
    (lambda t: {"frames": t.frames[..., :2]}, "frames must have shape [T,H,W,3], got [24, 16, 16, 2]"),
    (lambda t: {"poses": t.poses[:, :3]}, "poses must have shape [T,5]"),
    (lambda t: {"actions": t.actions[:, :3]}, "actions must have shape [T,4] for layout 'vizdoom-v1'"),
    (lambda t: {"poses": t.poses + np.array([0, 0, 0, 4.0, 0])}, "yaw must be wrapped"),
    (lambda t: {"meta": dict(t.meta, id="a.b")}, "must be a dot-free key"),
    (lambda t: {"meta": dict(t.meta, task="ABAB")}, "task 'ABAB' is not one of"),
    (lambda t: {"meta": dict(t.meta, action_layout="keys")}, "unknown action layout 'keys'"),
    (lambda t: {"meta": {k: v for k, v in t.meta.items() if k != "fps"}}, "meta lacks ['fps']"),
])
def test_validate_names_the_file_trajectory_and_problem(change, message):
    traj = make_trajectory(length=24)
    broken = dataclasses.replace(traj, **change(traj))
    with pytest.raises(TrajectoryError) as err:
        broken.validate("shard-000.tar")
    assert message in str(err.value)
    assert str(err.value).startswith(f"shard-000.tar: trajectory {broken.meta.get('id')!r}: ")


def test_wrap_angle_maps_to_half_open_interval():
    angles = np.array([-3 * math.pi, -math.pi, 0.0, math.pi, 1.5 * math.pi, 7.0])
    wrapped = wrap_angle(angles)
    assert np.all(wrapped > -math.pi) and np.all(wrapped <= math.pi)
    np.testing.assert_allclose(np.cos(wrapped), np.cos(angles), atol=1e-12)
    np.testing.assert_allclose(np.sin(wrapped), np.sin(angles), atol=1e-12)
    assert wrap_angle(-math.pi) == pytest.approx(math.pi)
    assert isinstance(wrap_angle(1.0), float)


def test_make_key_is_dot_free_and_refuses_empty():
    assert (make_key("loopnav", "ABA", "plains.village 1", 5, None, "05-10_16-21-01")
            == "loopnav_ABA_plains-village-1_5_05-10_16-21-01")
    with pytest.raises(TrajectoryError):
        make_key("..", "")


def test_frames_from_jpeg_decodes_rgb():
    image = np.zeros((8, 16, 3), np.uint8)
    image[..., 2] = 255  # pure red in OpenCV's BGR order
    data = cv2.imencode(".png", image)[1].tobytes()  # lossless, so the decoded colour is exact
    frames = frames_from_jpeg([data, data])
    assert frames.shape == (2, 8, 16, 3) and frames.dtype == np.uint8
    assert (frames[..., 0] == 255).all() and (frames[..., 1:] == 0).all()
    assert frames_from_jpeg([]).shape[0] == 0
    with pytest.raises(TrajectoryError, match="does not decode"):
        decode_jpeg(b"not an image")


def test_action_layouts_are_fixed_width_and_distinct():
    for name, layout in ACTION_LAYOUTS.items():
        assert len(layout) == len(set(layout)) > 0, name
    assert ACTION_LAYOUTS["loopnav-v1"][-2:] == ("camera_dyaw", "camera_dpitch")
    assert ACTION_LAYOUTS["recon-v1"] == ("linear_velocity", "angular_velocity")
