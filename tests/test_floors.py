"""Floor baselines: copy-last, nearest-pose (hand-built poses), dummy."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_trajectory

from baselines.floors import CopyLastModel, DummyModel, NearestPoseModel, pose_distance
from loopnav_bench.models import RolloutRequest


def _request(context_poses, target_poses, units_per_block=None) -> RolloutRequest:
    """Context frame i is filled with the value i, so a prediction names the context frame it copied."""
    n, horizon = len(context_poses), len(target_poses)
    frames = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(n)])
    meta = {} if units_per_block is None else {"units_per_block": units_per_block}
    return RolloutRequest(id="hand", context_frames=frames, context_poses=np.asarray(context_poses, float),
                          context_actions=np.zeros((n, 4), np.float32), target_poses=np.asarray(target_poses, float),
                          target_actions=np.zeros((horizon, 4), np.float32), meta=meta)


def test_copy_last_repeats_the_last_context_frame():
    traj = make_trajectory(length=20, offset=7)
    request = RolloutRequest.from_trajectory(traj)
    out = CopyLastModel().rollout(request)
    assert out.shape == (13, *traj.frames.shape[1:]) and out.dtype == np.uint8
    assert (out == traj.frames[6]).all()


def test_pose_distance_follows_the_documented_formula():
    context = [[0, 0, 0, 0.0, 0.0]]
    target = [[3, 4, 0, 0.5, -0.25]]
    # |(3,4,0)| / 2 blocks + 4 * 0.5 rad + 2 * 0.25 rad
    assert pose_distance(context, target, units_per_block=2.0)[0, 0] == pytest.approx(2.5 + 2.0 + 0.5)
    # yaw differences wrap: 3.1 and -3.1 rad are 0.083 rad apart, not 6.2
    wrapped = pose_distance([[0, 0, 0, 3.1, 0]], [[0, 0, 0, -3.1, 0]])[0, 0]
    assert wrapped == pytest.approx(4.0 * (2 * np.pi - 6.2))


def test_nearest_pose_picks_the_frame_seen_from_the_nearest_pose():
    context = [
        [0, 0, 0, 0.0, 0],      # 0: at A facing +x
        [5, 0, 0, 0.0, 0],      # 1: at B facing +x
        [5, 0, 0, np.pi, 0],    # 2: at B turned around
        [2, 0, 0, np.pi, 0],    # 3: on the way back, facing -x
    ]
    target = [
        [0.2, 0, 0, 0.05, 0],   # near A, facing +x          -> 0
        [4.8, 0, 0, -3.1, 0],   # near B facing -x (wrapped) -> 2
        [2.4, 0, 0, 3.0, 0],    # near frame 3's pose         -> 3
        [2.4, 0, 0, 0.0, 0],    # halfway facing +x: 2.4 blocks from A beats 2.6 from B -> 0
    ]
    model = NearestPoseModel()
    request = _request(context, target)
    assert model.nearest_context_index(request).tolist() == [0, 2, 3, 0]
    assert model.rollout(request)[:, 0, 0, 0].tolist() == [0, 2, 3, 0]


def test_nearest_pose_scales_positions_by_units_per_block():
    # Frame 0 stands 8 units away facing the right way; frame 1 stands on the spot but 0.5 rad off.
    context, target = [[8, 0, 0, 0.0, 0], [0, 0, 0, 0.5, 0]], [[0, 0, 0, 0.0, 0]]
    model = NearestPoseModel()
    assert model.nearest_context_index(_request(context, target)).tolist() == [1]        # 8 blocks > 2
    assert model.nearest_context_index(_request(context, target, 64.0)).tolist() == [0]  # 1/8 block < 2


def test_nearest_pose_weights_and_ties():
    context, target = [[0, 0, 0, 0.0, 0], [0, 0, 0, 0.0, 0], [2, 0, 0, 0.3, 0]], [[0, 0, 0, 0.3, 0]]
    # frames 0 and 1 cost 4 * 0.3 = 1.2, frame 2 costs 2 blocks: the tie goes to the later frame
    assert NearestPoseModel().nearest_context_index(_request(context, target)).tolist() == [1]
    assert NearestPoseModel(yaw_weight=10).nearest_context_index(_request(context, target)).tolist() == [2]  # 3 > 2
    with pytest.raises(ValueError, match="not \\['yaw_wieght'\\]"):
        NearestPoseModel(yaw_wieght=1)


def test_dummy_is_seeded_noise_of_the_right_shape():
    traj = make_trajectory(length=20, offset=5)
    first = DummyModel().rollout(RolloutRequest.from_trajectory(traj, seed=1))
    again = DummyModel().rollout(RolloutRequest.from_trajectory(traj, seed=1))
    other = DummyModel().rollout(RolloutRequest.from_trajectory(traj, seed=2))
    assert first.shape == (15, *traj.frames.shape[1:]) and first.dtype == np.uint8
    assert (first == again).all() and not (first == other).all()
