"""LoopNav ingestion: the MJPG reader against OpenCV, row selection from the split CSVs, the Minecraft -> schema
conversion, the split point, every quirk, bit-exact shards, and Hub fetching through an injected download function."""

from __future__ import annotations

import json
import math
import shutil
import struct

import cv2
import numpy as np
import pytest
from raw_fixtures import loop_entries, make_loopnav_root, write_avi, write_csv

from loopnav_bench.schema import wrap_angle
from loopnav_bench.shards import load_manifest, manifest_hash, prepare, read_trajectories
from loopnav_bench.sources import SkipTrajectory
from loopnav_bench.sources.avi import AviError, read_mjpeg_frames
from loopnav_bench.sources.loopnav import LoopNavSource, frame_clock, split_offset


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("loopnav") / "data"
    return root, make_loopnav_root(root)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("loopnav-shards") / "out"
    prepare(LoopNavSource(input=raw[0]), out)
    return out


# ---------------------------------------------------------------------------------------------------- the AVI reader


def test_mjpeg_frames_are_the_exact_chunks_opencv_wrote(tmp_path):
    path = tmp_path / "clip.avi"
    write_avi(path, 30)
    frames = read_mjpeg_frames(path)
    assert len(frames) == 30
    data, position = path.read_bytes(), 0
    for jpeg in frames:  # each payload sits in the file right after its '00dc' chunk header, in order
        position = data.index(b"00dc" + struct.pack("<I", len(jpeg)) + jpeg, position) + 8 + len(jpeg)
        assert jpeg.startswith(b"\xff\xd8") and jpeg.rstrip(b"\x00").endswith(b"\xff\xd9")

    exact = cv2.VideoCapture(str(path), cv2.CAP_OPENCV_MJPEG)  # OpenCV's own MJPEG reader: same libjpeg decode
    default = cv2.VideoCapture(str(path))
    for jpeg in frames:
        ours = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        ok, theirs = exact.read()
        assert ok and np.array_equal(ours, theirs)
        ok, ffmpeg = default.read()  # another decoder (FFmpeg): same image up to IDCT/upsampling rounding
        assert ok and np.abs(ours.astype(int) - ffmpeg).mean() < 4
    assert not exact.read()[0]


def riff(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)


def avi_bytes(frames: list[bytes], codec: bytes = b"MJPG") -> bytes:
    """An OpenDML AVI made by hand: an audio stream before the video one (so video is stream 01), JUNK, LIST 'rec ',
    odd-sized (padded) chunks, and a second RIFF 'AVIX' holding the later frames."""
    audio = riff(b"LIST", b"strl" + riff(b"strh", b"auds" + b"\x00" * 52))
    video = riff(b"LIST", b"strl" + riff(b"strh", b"vids" + codec + b"\x00" * 48) + riff(b"strf", b"\x00" * 40))
    header = riff(b"LIST", b"hdrl" + riff(b"avih", b"\x00" * 56) + audio + video)
    first = riff(b"JUNK", b"xyz") + riff(b"01wb", b"\x01\x02\x03")  # not a video chunk name: ignored
    first += riff(b"00wb", b"sound") + riff(b"LIST", b"rec " + riff(b"01dc", frames[0]) + riff(b"00wb", b"s"))
    first += b"".join(riff(b"01dc", f) for f in frames[1:2]) + riff(b"ix01", b"\x00" * 24)
    later = b"".join(riff(b"01dc", f) for f in frames[2:])
    return (riff(b"RIFF", b"AVI " + header + riff(b"LIST", b"movi" + first) + riff(b"idx1", b""))
            + riff(b"RIFF", b"AVIX" + riff(b"LIST", b"movi" + later)))


def test_mjpeg_reader_handles_opendml_rec_lists_and_padding(tmp_path):
    images = [np.full((8, 8, 3), 20 * i, np.uint8) for i in range(4)]
    frames = [cv2.imencode(".jpg", image)[1].tobytes() for image in images]
    frames[1] += b"\x00" * (1 - len(frames[1]) % 2)  # odd length: the chunk's pad byte must not leak into the frame
    assert len(frames[1]) % 2 == 1
    path = tmp_path / "opendml.avi"
    path.write_bytes(avi_bytes(frames))
    assert read_mjpeg_frames(path) == frames


@pytest.mark.parametrize("content, message", [
    (lambda frames: avi_bytes(frames, codec=b"H264"), "video codec b'H264' is not motion JPEG"),
    (lambda frames: avi_bytes(frames)[:-7], "runs past its container (truncated file?)"),
    (lambda frames: b"RIFF\x04\x00\x00\x00WAVE", "not an AVI file"),
    (lambda frames: avi_bytes([frames[0], b"\x00\x01garbage"]), "video chunk 1 at byte"),
])
def test_mjpeg_reader_errors_name_the_file(tmp_path, content, message):
    frames = [cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()] * 3
    path = tmp_path / "bad.avi"
    path.write_bytes(content(frames))
    with pytest.raises(AviError, match=f"{path}: .*{message.replace('(', '.').replace(')', '.')}"):
        read_mjpeg_frames(path)


# ---------------------------------------------------------------------------------------------------- planning


def test_plan_reads_splits_from_the_csvs_and_rejects_escaping_rows(raw):
    root, rows = raw
    source = LoopNavSource(input=root)
    plan = source.plan()
    assert [s["video"] for s in plan["train"]] == [rows["aba"]["video"], rows["abca"]["video"]]
    assert [s["video"] for s in plan["val"]] == [rows["mismatch"]["video"]]
    assert len(plan["test"]) == 4  # the escaping row is not planned...
    assert source.rejected_inputs() == [{"input": "test.csv:6", "reason": source.rejected_inputs()[0]["reason"]}]
    assert source.rejected_inputs()[0]["reason"].startswith("path escapes the data root: path '../outside/")
    spec = plan["train"][1]
    assert (spec["task"], spec["range"], spec["location"], spec["split"]) == ("ABCA", 15, "plains_village_1", "train")


def test_plan_filters_by_split_task_range_and_limit(raw):
    root, rows = raw
    assert LoopNavSource(input=root, splits=["val"]).plan().keys() == {"val"}
    only_abca = LoopNavSource(input=root, tasks=["ABCA"]).plan()
    assert [s["task"] for split in only_abca.values() for s in split] == ["ABCA", "ABCA"]
    range5 = LoopNavSource(input=root, ranges=[5], limit=1).plan()
    assert {k: [s["video"] for s in v] for k, v in range5.items()} == {
        "train": [rows["aba"]["video"]], "val": [rows["mismatch"]["video"]], "test": [rows["test"]["video"]]}


def test_plan_rejects_malformed_and_duplicate_rows_and_bad_csvs(tmp_path, raw):
    root = tmp_path / "data"
    shutil.copytree(raw[0], root)
    row = raw[1]["aba"]
    write_csv(root, "train", [row, row, dict(row, rng="far"), dict(row, task="ABAB")])
    source = LoopNavSource(input=root, splits=["train"])
    assert len(source.plan()["train"]) == 1
    reasons = [r["reason"] for r in source.rejected_inputs()]
    assert reasons[0].startswith("duplicate trajectory") and reasons[1].startswith("malformed CSV row: invalid literal")
    assert reasons[2] == "malformed CSV row: unknown path_type 'ABAB'"

    (root / "val.csv").write_text("video,json\na.avi,a.json\n")
    with pytest.raises(ValueError, match=f"{root / 'val.csv'}: header .* lacks the LoopNav columns"):
        LoopNavSource(input=root, splits=["val"]).plan()
    (root / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no split file test.csv"):
        LoopNavSource(input=root, splits=["test"]).plan()


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of --input DIR or --hub-repo"),
    ({"input": "/nonexistent/loopnav"}, "/nonexistent/loopnav: no such LoopNav data directory"),
    ({"input": ".", "tasks": ["ABBA"]}, "unknown LoopNav task"),
    ({"input": ".", "splits": ["dev"]}, "unknown split"),
    ({"input": ".", "limit": 0}, "--limit must be at least 1"),
])
def test_bad_options_are_refused_at_once(kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        LoopNavSource(**kwargs)


# ---------------------------------------------------------------------------------------------------- conversion


def test_split_offset_is_the_last_frame_with_an_outbound_goal():
    entries, turn = loop_entries(legs=2)
    assert split_offset(entries) == turn
    assert entries[turn + 1]["goal"]["rangeSq"] == 1  # the next entry already heads back to A
    entries[turn + 3]["goal"] = {"x": entries[0]["x"] + 2.5, "z": entries[0]["z"]}  # a late goal 2.5 blocks away
    assert split_offset(entries) == turn + 3
    # within 2 in both: not outbound
    entries[turn + 3]["goal"] = {"x": entries[0]["x"] + 1.9, "z": entries[0]["z"] - 1.9}
    assert split_offset(entries) == turn
    assert split_offset([dict(e, goal=None) for e in entries]) is None


def test_poses_are_converted_to_the_z_up_schema_frame(raw):
    root, rows = raw
    source = LoopNavSource(input=root, splits=["train"])
    traj = source.load(source.plan()["train"][1])  # ABCA: east, then north, then back
    mc = rows["abca"]["entries"]
    mc_xyz = np.array([[e["x"], e["y"], e["z"]] for e in mc])
    np.testing.assert_array_equal(traj.poses[:, :3], np.stack([mc_xyz[:, 0], -mc_xyz[:, 2], mc_xyz[:, 1]], axis=1))
    np.testing.assert_array_equal(traj.poses[:, 4], [e["pitch"] for e in mc])
    # Our yaw must point along the motion in our ground plane, once the eased camera has caught up with the body.
    step = np.diff(traj.poses[:, :2], axis=0)
    settled = (np.linalg.norm(step, axis=1) > 1e-6) & (traj.actions[1:, 7] == 0)
    heading = np.arctan2(step[:, 1], step[:, 0])[settled]
    assert np.abs(wrap_angle(heading - traj.poses[1:, 3][settled])).max() < 2e-3
    assert settled.sum() > 20 and np.abs(traj.poses[:, 3]).max() <= math.pi
    # East is yaw 0, north is +pi/2 (the outbound legs of this loop).
    east = int(np.argmax(traj.poses[:, 0] > traj.poses[0, 0] + 5))
    assert traj.poses[east, 3] == pytest.approx(0, abs=1e-3)
    assert traj.poses[traj.offset, 3] == pytest.approx(math.pi / 2, abs=1e-3)


def test_actions_are_the_controls_that_produced_each_frame_as_the_recorder_orders_them(raw):
    """The fixture replays the collector's tick (step, then the pathfinder sets keys, then the packet), so a key is
    recorded one entry before the motion it causes. actions[i] must be the control that produced frames[i]."""
    root, rows = raw
    source = LoopNavSource(input=root, splits=["train"])
    traj = source.load(source.plan()["train"][1])
    entries = rows["abca"]["entries"]
    assert traj.meta["action_layout"] == "loopnav-v1" and traj.actions.shape == (len(entries), 9)
    forward = np.array([e["action"]["forward"] for e in entries], np.float32)
    moved = np.linalg.norm(np.diff(traj.poses[:, :2], axis=0), axis=1) > 1e-6
    np.testing.assert_array_equal(traj.actions[1:, 0], moved)  # frame i moved exactly when actions[i] held forward
    assert (forward[1:] != moved).sum() >= 4  # the entry's own keys would not: they lead the motion by one entry
    np.testing.assert_array_equal(traj.actions[1:, 0], forward[:-1])
    np.testing.assert_array_equal(traj.actions[1:, 4], [float(e["action"]["jump"]) for e in entries[:-1]])
    assert traj.actions[0, :7].sum() == 0 and traj.actions[:, 4].sum() > 0
    assert traj.actions[:, [1, 2, 3, 5, 6]].sum() == 0
    # the camera delta of entry i is already in entry i's yaw: it is the yaw change from frame i-1 to frame i
    dyaw = wrap_angle(np.diff(traj.poses[:, 3]))
    assert np.abs(wrap_angle(traj.actions[1:, 7] - dyaw)).max() < 2e-3  # JSON yaw is rounded to 3 decimals
    np.testing.assert_allclose(traj.actions[1:, 8], np.diff(traj.poses[:, 4]), atol=2e-3)
    assert np.abs(traj.actions[:, 7]).max() == pytest.approx(0.15) and np.abs(traj.actions[:, 8]).max() > 0
    assert traj.raw_actions == entries and traj.meta["action_alignment"].startswith("actions[i] = movement keys")


def test_the_frame_clock_marks_heartbeat_frames(raw, prepared):
    """The recorder emits a frame only on a pose change or a 1 s heartbeat: the 3 s idle at A ends in heartbeats."""
    root, rows = raw
    source = LoopNavSource(input=root, splits=["train"])
    traj = source.load(source.plan()["train"][0])
    n = len(rows["aba"]["entries"])
    assert traj.meta["frame_clock"] == {"nominal_fps": 20, "heartbeat_frames": [n - 2, n - 1], "frame_count_gaps": 0}
    broken = [dict(e) for e in rows["aba"]["entries"]]
    del broken[10]
    assert frame_clock(broken)["frame_count_gaps"] == 1
    summary = load_manifest(prepared)["summary"]
    assert (summary["action_alignment"].startswith("actions[i] = movement keys")
            and "heartbeat" in summary["frame_clock"])
    # two heartbeats in each of the 4 prepared loops, except the one whose video lost its last 2 frames
    assert summary["trajectories_with_heartbeats"] == 3 and summary["heartbeat_frames"] == 6
    assert summary["frame_count_gaps"] == 0


def test_quirks_are_repaired_or_skipped_with_reasons(raw):
    root, rows = raw
    source = LoopNavSource(input=root)
    plan = source.plan()
    mismatch = source.load(plan["val"][0])
    n = len(rows["mismatch"]["entries"])
    assert len(mismatch) == n - 2 and mismatch.raw_actions == rows["mismatch"]["entries"][:n - 2]
    assert mismatch.meta["repairs"] == [f"frame count mismatch: {n} json entries, {n - 2} video frames; "
                                        f"kept the first {n - 2} of each"]
    unwrapped = source.load(plan["train"][1])
    assert unwrapped.meta["repairs"][0].startswith("yaw unwrapped: Mineflayer yaw spans [9.")
    assert source.load(plan["train"][0]).meta["repairs"] == []
    reasons = {}
    for spec in plan["test"][1:]:
        with pytest.raises(SkipTrajectory) as err:
            source.load(spec)
        reasons[spec["video"]] = str(err.value).split(":")[0]
    assert sorted(reasons.values()) == ["empty trajectory", "missing file", "no outbound goal"]


def test_prepared_shards_are_bit_exact_and_the_manifest_counts_everything(raw, prepared):
    root, rows = raw
    manifest = load_manifest(prepared)
    assert manifest["n"] == 4
    assert manifest["splits"]["train"]["counts"] == {"ABA": {"5": 1}, "ABCA": {"15": 1}}
    assert manifest["skipped"]["by_reason"] == {"path escapes the data root": 1, "empty trajectory": 1,
                                                 "no outbound goal": 1, "missing file": 1}
    assert manifest["repaired"]["by_reason"] == {"yaw unwrapped": 1, "frame count mismatch": 1}
    by_video = {t.meta["original_ids"]["video"]: t for t in read_trajectories(prepared)}
    for name in ("aba", "abca", "mismatch", "test"):
        traj, row = by_video[rows[name]["video"]], rows[name]
        source_jpeg = read_mjpeg_frames(root / row["video"])
        assert traj.jpeg == source_jpeg[:len(traj)]  # the original MJPG chunks, byte for byte
        np.testing.assert_array_equal(
            traj.frames[3], cv2.cvtColor(cv2.imdecode(np.frombuffer(source_jpeg[3], np.uint8), 1), cv2.COLOR_BGR2RGB))
        assert traj.offset == row["offset"] and traj.raw_actions == row["entries"][:len(traj)]
        assert (traj.meta["fps"], traj.meta["units_per_block"], traj.meta["range"]) == (20, 1, row["rng"])
        assert traj.meta["location"] == row["location"] and traj.meta["task"] == row["task"]


# ---------------------------------------------------------------------------------------------------- the Hub


class FakeHub:
    """Serves a local folder as if it were the Hub repo, recording every file asked for."""

    def __init__(self, folder):
        self.folder, self.requests = folder, []

    def __call__(self, filename):
        self.requests.append(filename)
        if not (self.folder / filename).is_file():
            raise OSError(f"[Errno 101] Network is unreachable: {filename}")
        return str(self.folder / filename)


def test_hub_fetches_only_the_csvs_and_the_selected_rows(raw, tmp_path):
    hub = FakeHub(raw[0])
    source = LoopNavSource(hub_repo="kevinLian/LoopNav", splits=["train", "test"], tasks=["ABA"], ranges=[5], limit=1,
                           download=hub)
    plan = source.plan()
    assert hub.requests == ["train.csv", "test.csv"]
    assert [s["video"] for s in plan["train"] + plan["test"]] == [raw[1]["aba"]["video"], raw[1]["test"]["video"]]
    manifest = prepare(source, tmp_path / "out")
    selected = {raw[1]["aba"]["video"], raw[1]["aba"]["json"], raw[1]["test"]["video"], raw[1]["test"]["json"]}
    assert set(hub.requests) - {"train.csv", "test.csv"} == selected
    assert manifest["n"] == 2 and manifest["settings"]["hub_repo"] == "kevinLian/LoopNav"
    local = {t.id: t for t in read_trajectories(tmp_path / "out")}
    assert local[plan["train"][0]["id"]].jpeg == read_mjpeg_frames(raw[0] / raw[1]["aba"]["video"])


def test_hub_rows_escaping_the_repo_are_rejected(raw, tmp_path):
    folder = tmp_path / "hub"
    shutil.copytree(raw[0], folder)
    source = LoopNavSource(hub_repo="kevinLian/LoopNav", splits=["test"], download=FakeHub(folder))
    assert len(source.plan()["test"]) == 4
    assert source.rejected_inputs()[0]["reason"] == ("path escapes the data root: path '../outside/05-12_09-00-00.avi' "
                                                     "escapes the data root kevinLian/LoopNav")


def test_hub_connection_failures_and_offline_mode_fail_clearly(raw, tmp_path, monkeypatch):
    source = LoopNavSource(hub_repo="kevinLian/LoopNav", splits=["val"], download=FakeHub(tmp_path))
    with pytest.raises(ConnectionError, match=r"kevinLian/LoopNav/val.csv: could not download \(OSError"):
        source.plan()
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="huggingface_hub is in offline mode .* pass --input DIR"):
        LoopNavSource(hub_repo="kevinLian/LoopNav")


def test_unreadable_json_and_video_are_skipped_with_the_file_named(raw, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(raw[0], root)
    source = LoopNavSource(input=root, splits=["train"])
    aba, abca = source.plan()["train"]
    (root / aba["json"]).write_text("[{'x': 1,")
    (root / abca["video"]).write_bytes(b"RIFF")
    with pytest.raises(SkipTrajectory, match=f"unreadable json: {root / aba['json']}"):
        source.load(aba)
    with pytest.raises(SkipTrajectory, match=f"unreadable video: {root / abca['video']}: too short"):
        source.load(abca)
    (root / aba["json"]).write_text(json.dumps([{"x": 1}]))
    with pytest.raises(SkipTrajectory, match="entry lacks a pose field"):
        source.load(aba)


def test_worker_processes_write_the_same_bytes(raw, prepared, tmp_path):
    """Sources travel to spawned workers by pickling; the shards must not depend on how many there are."""
    manifest = prepare(LoopNavSource(input=raw[0]), tmp_path / "out", workers=2)
    assert manifest_hash(tmp_path / "out") == manifest_hash(prepared)
    assert manifest["skipped"] == load_manifest(prepared)["skipped"]
