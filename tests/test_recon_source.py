"""RECON ingestion: raw HDF5 and NoMaD folders, the restricted unpickler, splits, the fixed split point, action
alignment, and bit-exact JPEGs in the shards."""

from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pytest
from raw_fixtures import Payload, make_recon_root, write_recon_hdf5

from loopnav_bench.schema import wrap_angle
from loopnav_bench.shards import prepare, read_trajectories
from loopnav_bench.sources import SkipTrajectory
from loopnav_bench.sources.recon import FPS, ReconSource, RestrictedUnpickler, hash_split, pose_velocities

HDF5 = "jackal_2019-08-02-16-23-30_0_r00"
SHORT = "jackal_2019-08-02-17-00-00_0_r01"
NOMAD = "jackal_2019-09-01-10-00-00_1_r00_0"
NOMAD_EXTRA_POSE = "jackal_2019-09-01-11-00-00_1_r00_1"


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    base = tmp_path_factory.mktemp("recon")
    marker = base / "pwned"
    return base / "data", make_recon_root(base / "data", marker), marker


def spec_of(source, name):
    return next(s for specs in source.plan().values() for s in specs if s["name"] == name)


def unpickle(data: bytes):
    return RestrictedUnpickler(io.BytesIO(data)).load()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_rebuilds_numpy_data(protocol):
    value = {"position": np.arange(12.0).reshape(6, 2), "yaw": np.linspace(0, 1, 6, dtype=np.float32),
             "meta": [1, "a", (2.5, None)], "scalar": np.float64(3.5), "ids": {1, 2}}
    back = unpickle(pickle.dumps(value, protocol=protocol))
    np.testing.assert_array_equal(back["position"], value["position"])
    assert back["yaw"].dtype == np.float32 and back["meta"] == [1, "a", (2.5, None)] and back["scalar"] == 3.5


@pytest.mark.parametrize("payload", [Payload, lambda marker: os.system])
def test_restricted_unpickler_refuses_callables(tmp_path, payload):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"position": payload(marker)})
    with pytest.raises(pickle.UnpicklingError, match="refused to load"):
        unpickle(data)
    assert not marker.exists()


def test_malicious_traj_data_is_skipped_and_never_executed(raw):
    root, _, marker = raw
    source = ReconSource(input=root)
    with pytest.raises(SkipTrajectory, match=r"refused pickle: .*evil/traj_data.pkl: refused to load io.open"):
        source.load(spec_of(source, "evil"))
    assert not marker.exists()


def test_hdf5_trajectory_keeps_jpegs_poses_and_commands(raw):
    root, inputs, _ = raw
    source = ReconSource(input=root)
    traj = source.load(spec_of(source, HDF5))
    expected = inputs[HDF5]
    assert traj.jpeg == expected["jpeg"] and len(traj) == 28
    np.testing.assert_array_equal(traj.poses[:, :3], expected["position"])
    np.testing.assert_allclose(traj.poses[:, 3], wrap_angle(expected["yaw"]))
    assert (traj.poses[:, 4] == 0).all()
    # actions[i] is the command that drove frame i-1 -> i; raw_actions keeps row i verbatim
    np.testing.assert_array_equal(traj.actions[0], [0, 0])
    np.testing.assert_allclose(traj.actions[1:, 0], expected["linear"][:-1], rtol=1e-6)
    np.testing.assert_allclose(traj.actions[1:, 1], expected["angular"][:-1], rtol=1e-6)
    assert traj.raw_actions[5] == {"linear_velocity": expected["linear"][5], "angular_velocity": expected["angular"][5]}
    assert traj.offset == 20 and traj.meta["task"] == "RECON" and traj.meta["range"] is None
    assert (traj.meta["fps"], traj.meta["units_per_block"], traj.meta["actions_from"]) == (FPS, 1.0, "commands")


def test_nomad_folder_actions_come_from_poses(raw):
    root, inputs, _ = raw
    source = ReconSource(input=root, context_frames=5)
    traj = source.load(spec_of(source, NOMAD))
    expected = inputs[NOMAD]
    assert traj.jpeg == expected["jpeg"] and traj.offset == 5 and traj.raw_actions is None
    np.testing.assert_array_equal(traj.poses[:, :2], expected["position"])
    assert traj.meta["actions_from"] == "poses"
    # the fixture drives at 0.5 m/s turning 0.1 rad per frame: the implied velocities must say so
    np.testing.assert_allclose(traj.actions[1:, 1], 0.1 * FPS, rtol=1e-5)
    np.testing.assert_allclose(traj.actions[1:, 0], 0.5 * np.cos(0.1), rtol=1e-3)  # chord along the previous heading


def test_pose_velocities_sign_conventions():
    poses = np.zeros((3, 5))
    poses[:, 0] = [0.0, -0.25, -0.5]  # moving along -x while facing -x (yaw pi): forward
    poses[:, 3] = [np.pi, np.pi, -np.pi + 0.1]  # then a CCW turn across the wrap point
    velocities = pose_velocities(poses)
    assert velocities[1, 0] == pytest.approx(0.25 * FPS) and velocities[2, 1] == pytest.approx(0.1 * FPS)


def test_repairs_and_skips_are_recorded_in_the_manifest(raw, tmp_path):
    root, _, marker = raw
    manifest = prepare(ReconSource(input=root), tmp_path / "out")
    assert manifest["n"] == 3
    assert manifest["skipped"]["by_reason"] == {"refused pickle": 1, "too short": 1}
    assert manifest["repaired"]["by_reason"] == {"frame count mismatch": 1}
    assert manifest["repaired"]["items"][0]["id"] == f"recon_{NOMAD_EXTRA_POSE}"
    assert manifest["splits"][hash_split(HDF5)]["counts"]["RECON"]["None"] >= 1
    trajectories = {t.meta["original_ids"]["name"]: t for t in read_trajectories(tmp_path / "out")}
    assert len(trajectories[NOMAD_EXTRA_POSE]) == 24
    assert {name: t.meta["split"] for name, t in trajectories.items()} == {n: hash_split(n) for n in trajectories}
    assert trajectories[HDF5].jpeg == raw[1][HDF5]["jpeg"]  # bit-exact through the shard
    assert not marker.exists()


def test_hash_split_is_deterministic_and_near_the_documented_fractions():
    names = [f"jackal_{i:05d}" for i in range(4000)]
    splits = [hash_split(n) for n in names]
    assert splits == [hash_split(n) for n in names]
    shares = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert shares["train"] == pytest.approx(0.8, abs=0.03) and shares["val"] == pytest.approx(0.1, abs=0.02)


def test_split_file_json_and_nomad_folder(raw, tmp_path):
    root = raw[0]
    mapping = tmp_path / "splits.json"
    mapping.write_text(json.dumps({"train": [HDF5], "test": [NOMAD, "jackal_gone"]}))
    source = ReconSource(input=root, split_file=mapping)
    plan = source.plan()
    assert [s["name"] for s in plan["train"]] == [HDF5] and [s["name"] for s in plan["test"]] == [NOMAD]
    reasons = sorted(r["reason"].split(":")[0] for r in source.rejected_inputs())
    assert reasons == ["not found"] + ["not in split file"] * 3

    nomad = tmp_path / "data_splits"
    for split, names in {"train": [NOMAD, NOMAD_EXTRA_POSE], "test": [HDF5]}.items():
        (nomad / split).mkdir(parents=True)
        (nomad / split / "traj_names.txt").write_text("\n".join(names) + "\n")
    plan = ReconSource(input=root, split_file=nomad, splits=["train", "test"], limit=1).plan()
    assert {k: [s["name"] for s in v] for k, v in plan.items()} == {"train": [NOMAD], "test": [HDF5]}

    mapping.write_text(json.dumps({"train": [HDF5], "test": [HDF5]}))
    with pytest.raises(ValueError, match=f"{mapping}: '{HDF5}' is listed in both train and test"):
        ReconSource(input=root, split_file=mapping).plan()


def test_bad_inputs_fail_or_skip_with_the_file_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no RECON trajectories"):
        ReconSource(input=tmp_path).plan()
    with pytest.raises(ValueError, match="--context-frames must be at least 1"):
        ReconSource(input=tmp_path, context_frames=0)
    path = tmp_path / "jackal_x.hdf5"
    write_recon_hdf5(path, 25)
    import h5py

    with h5py.File(path, "a") as f:
        del f["commands/angular_velocity"]
    source = ReconSource(input=tmp_path)
    with pytest.raises(SkipTrajectory, match=rf"missing datasets: {path} lacks \['commands/angular_velocity'\]"):
        source.load(spec_of(source, "jackal_x"))
    path.write_bytes(b"not hdf5")
    with pytest.raises(SkipTrajectory, match=f"unreadable hdf5: {path}"):
        source.load(spec_of(source, "jackal_x"))


def test_loaded_trajectory_layout_is_stable_across_sources(raw):
    root = raw[0]
    source = ReconSource(input=root)
    a, b = source.load(spec_of(source, HDF5)), source.load(spec_of(source, NOMAD))
    assert set(a.meta) == set(b.meta) and a.actions.shape[1] == b.actions.shape[1] == 2
    assert a.meta["action_layout"] == b.meta["action_layout"] == "recon-v1"
