"""Shards: bit-exact round trips, the manifest, resume after a crash, settings checks, validation, and the two readers
users will reach for (HF `datasets` and a torch DataLoader split by node and worker)."""

from __future__ import annotations

import tarfile

import cv2
import numpy as np
import pytest
from conftest import SyntheticSource, make_trajectory

from loopnav_bench.fileio import ForeignFileError, sha256_file
from loopnav_bench.schema import frames_from_jpeg
from loopnav_bench.shards import (
    ShardError,
    decode_sample,
    encode_sample,
    iter_tar_samples,
    load_manifest,
    manifest_hash,
    prepare,
    read_trajectories,
    shard_paths,
    validate,
    webdataset_pipeline,
)
from loopnav_bench.sources import SkipTrajectory


def assert_same(a, b):
    assert a.meta == b.meta and a.offset == b.offset
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.poses, b.poses)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.actions.dtype == b.actions.dtype == np.float32
    assert a.raw_actions == b.raw_actions and a.jpeg == b.jpeg


def test_prepared_set_round_trips_exactly(tiny_shards):
    source = SyntheticSource()
    expected = [source.load(spec) for split in ("train", "test") for spec in source.plan()[split]]
    got = list(read_trajectories(tiny_shards))
    assert [t.id for t in got] == [t.id for t in expected]
    for got, want in zip(got, expected):
        assert_same(got, want)
    assert [t.id for t in read_trajectories(tiny_shards, split="test")] == [t.id for t in expected[4:]]
    single = shard_paths(tiny_shards, "train")[1]
    assert [t.id for t in read_trajectories(single)] == [expected[3].id]


def test_jpeg_trajectory_keeps_the_source_bitstreams():
    traj = make_trajectory(length=12, size=16)
    jpeg = [cv2.imencode(".jpg", frame[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()
            for frame in traj.frames]
    traj.jpeg, traj.frames = jpeg, frames_from_jpeg(jpeg)
    sample = encode_sample(traj)
    assert "frames.npy" not in sample and sample["frames.mjpeg"] == b"".join(jpeg)
    back = decode_sample({"__key__": traj.id, **sample})
    assert back.jpeg == jpeg
    assert_same(back, traj)


def test_manifest_counts_shards_and_hashes(tiny_shards):
    manifest = load_manifest(tiny_shards)
    assert manifest["n"] == 8 and manifest["source"] == "synthetic"
    assert manifest["splits"]["train"]["counts"] == {"ABA": {"5": 2}, "ABCA": {"5": 2}}
    shards = manifest["splits"]["train"]["shards"]
    assert [len(s["keys"]) for s in shards] == [3, 1]  # shard_size 3
    for shard in shards:
        path = tiny_shards / shard["path"]
        assert path.name.startswith("synthetic-") and path.suffix == ".tar"
        assert sha256_file(path) == shard["sha256"] and path.stat().st_size == shard["bytes"]
        with tarfile.open(path) as tar:
            names = tar.getnames()
        keys = {name.split(".", 1)[0] for name in names}
        assert keys == set(shard["keys"]) and not any("." in key for key in shard["keys"])
        extensions = [sorted(n.split(".", 1)[1] for n in names if n.startswith(k + ".")) for k in keys]
        assert all(e == extensions[0] for e in extensions)  # the HF builder needs one extension set
    assert manifest["skipped"]["n"] == 0 and manifest["repaired"]["n"] == 0
    assert validate(tiny_shards) == {"root": str(tiny_shards), "n": 8, "shards": 4, "splits": {"train": 4, "test": 4}}


class SkippingSource(SyntheticSource):
    """Skips index 1 and repairs index 2: both must be counted in the manifest, with their reasons."""

    def load(self, spec):
        if spec["index"] == 1:
            raise SkipTrajectory(f"no outbound goal: input {spec['index']}")
        traj = super().load(spec)
        if spec["index"] == 2:
            traj.meta["repairs"] = ["frame count mismatch: 3 json entries, 2 frames"]
        return traj

    def rejected_inputs(self):
        return [{"input": "train.csv:9", "reason": "path escapes the data root: ../x"}]


def test_skipped_and_repaired_inputs_are_counted_with_reasons(tmp_path):
    manifest = prepare(SkippingSource(), tmp_path / "out")
    assert manifest["n"] == 6
    assert manifest["skipped"]["by_reason"] == {"no outbound goal": 2, "path escapes the data root": 1}
    assert manifest["repaired"]["by_reason"] == {"frame count mismatch": 2}
    assert {item["input"]["split"] for item in manifest["skipped"]["items"]
            if isinstance(item["input"], dict)} == {"train", "test"}


def test_resume_after_a_crash_keeps_finished_shards_untouched(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare(SyntheticSource(fail_on=(3,)), out)  # train shard 0 (indices 0-2) completes, shard 1 crashes
    first = out / "train" / "synthetic-000000.tar"
    stamp, digest = first.stat().st_mtime_ns, sha256_file(first)
    assert not (out / "manifest.json").exists()
    with pytest.raises(ShardError, match="interrupted: re-run it"):
        load_manifest(out)

    manifest = prepare(SyntheticSource(), out)
    assert first.stat().st_mtime_ns == stamp and sha256_file(first) == digest
    assert manifest["n"] == 8 and validate(out)["n"] == 8
    assert not list(out.rglob("*.tmp")) and not (out / ".prepare-state.json").exists()

    fresh = prepare(SyntheticSource(), tmp_path / "fresh")  # same bytes as a run that never crashed
    assert manifest_hash(out) == manifest_hash(tmp_path / "fresh")
    assert fresh["splits"] == manifest["splits"]


def test_a_complete_set_is_not_rewritten_and_other_settings_need_overwrite(tiny_shards):
    stamp = (tiny_shards / "manifest.json").stat().st_mtime_ns
    assert prepare(SyntheticSource(), tiny_shards)["n"] == 8
    assert (tiny_shards / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(ShardError, match="prepared with other settings; pass --overwrite"):
        prepare(SyntheticSource(per_split=2), tiny_shards)
    manifest = prepare(SyntheticSource(per_split=2), tiny_shards, overwrite=True)
    assert manifest["n"] == 4 and sorted(p.name for p in tiny_shards.glob("*/*.tar")) == ["synthetic-000000.tar"] * 2


def test_validate_detects_a_corrupted_and_a_missing_shard(tiny_shards):
    shard = shard_paths(tiny_shards, "test")[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=rf"{shard}: sha256 .* does not match the manifest"):
        validate(tiny_shards)
    shard.unlink()
    with pytest.raises(ShardError, match=rf"{shard}: listed in .*manifest.json but missing"):
        validate(tiny_shards)


def test_huggingface_datasets_reads_the_shards(tiny_shards):
    import datasets

    urls = [str(p) for p in shard_paths(tiny_shards, "train")]
    rows = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train")
    assert len(rows) == 4
    expected = {t.id: t for t in read_trajectories(tiny_shards, "train")}
    for row in rows:
        traj = expected[row["__key__"]]
        np.testing.assert_array_equal(np.asarray(row["poses.npy"]), traj.poses)
        np.testing.assert_array_equal(np.asarray(row["frames.npy"], dtype=np.uint8), traj.frames)
        assert row["meta.json"]["offset"] == traj.offset and type(row["meta.json"]["offset"]) is int  # not 0-d


@pytest.mark.parametrize("world_size", [1, 2])
def test_dataloader_over_ranks_and_workers_sees_every_trajectory_once(tiny_shards, monkeypatch, world_size):
    import torch

    urls = [str(p) for p in shard_paths(tiny_shards)]  # 4 shards: 2 ranks x 2 workers get one each
    seen = []
    for rank in range(world_size):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
        loader = torch.utils.data.DataLoader(webdataset_pipeline(urls), batch_size=None, num_workers=2)
        seen += [traj.id for traj in loader]
    expected = [t.id for t in read_trajectories(tiny_shards)]
    assert sorted(seen) == sorted(expected) and len(seen) == len(expected) == 8


def test_iter_tar_samples_reports_an_unreadable_shard(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar file" * 40)
    with pytest.raises(ShardError, match=f"{bad}: not a readable tar shard"):
        list(iter_tar_samples(bad))


class SkipListed(SyntheticSource):
    """Skips the listed input indices (in every split), as a source skips unusable raw files."""

    def __init__(self, skip: tuple[int, ...], **kwargs):
        super().__init__(**kwargs)
        self.skip = skip

    def load(self, spec):
        if spec["index"] in self.skip:
            raise SkipTrajectory(f"no return frames: input {spec['index']}")
        return super().load(spec)


def test_prepare_never_deletes_or_overwrites_files_it_did_not_write(tiny_shards, tmp_path):
    user = tmp_path / "user"
    (user / "backups").mkdir(parents=True)
    (user / "backups" / "photos.tar").write_bytes(b"my photos")
    for overwrite in (False, True):
        with pytest.raises(ForeignFileError, match="backups: in .*user, which loopnav prepare did not write"):
            prepare(SyntheticSource(), user, overwrite=overwrite)
    assert (user / "backups" / "photos.tar").read_bytes() == b"my photos" and len(list(user.rglob("*"))) == 2

    (user / "notes.txt").write_text("")
    with pytest.raises(ForeignFileError, match="notes.txt: is a file, not a folder"):
        prepare(SyntheticSource(), user / "notes.txt")
    (tmp_path / "bogus").mkdir()
    (tmp_path / "bogus" / "manifest.json").write_text('{"name": "my own manifest"}')
    with pytest.raises(ShardError, match="not written by loopnav prepare"):
        prepare(SyntheticSource(), tmp_path / "bogus", overwrite=True)

    # a loopnav set with the user's files beside its shards: --overwrite replaces only the shards it listed
    foreign = [tiny_shards / "backups" / "photos.tar", tiny_shards / "train" / "mine.tar"]
    for path in foreign:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"mine")
    manifest = prepare(SyntheticSource(per_split=2), tiny_shards, overwrite=True)
    assert manifest["n"] == 4 and all(path.read_bytes() == b"mine" for path in foreign)
    assert not (tiny_shards / "train" / "synthetic-000001.tar").exists()  # loopnav's own old shard is gone

    # a user file where the new plan puts a shard is refused before anything is deleted
    squatter = tiny_shards / "test" / "synthetic-000001.tar"
    squatter.write_bytes(b"mine")
    before = {p: p.read_bytes() for p in tiny_shards.rglob("*") if p.is_file()}
    with pytest.raises(ForeignFileError, match="synthetic-000001.tar: exists but was not written by loopnav prepare"):
        prepare(SyntheticSource(per_split=4), tiny_shards, overwrite=True)
    assert {p: p.read_bytes() for p in tiny_shards.rglob("*") if p.is_file()} == before


def test_a_rerun_removes_the_temporary_files_of_a_killed_prepare(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare(SyntheticSource(fail_on=(3,)), out)
    killed = [out / "train" / ".synthetic-000001.tar.k1ll3d_x.tmp", out / ".manifest.json.k1ll3d_x.tmp"]
    for path in killed:  # what a SIGKILL leaves (an exception cleans up after itself)
        path.write_bytes(b"partial")
    kept = out / "train" / ".my-notes.tmp"
    kept.write_text("not loopnav's")
    prepare(SyntheticSource(), out)
    assert not any(path.exists() for path in killed) and kept.exists()


def test_prepare_writes_no_empty_shard_and_fails_when_nothing_is_produced(tmp_path):
    manifest = prepare(SkipListed(skip=(3,)), tmp_path / "out")  # shard 1 of each split held only input 3
    assert manifest["n"] == 6 and manifest["skipped"]["n"] == 2
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.tar")) == [
        "test/synthetic-000000.tar", "train/synthetic-000000.tar"]
    assert [len(split["shards"]) for split in manifest["splits"].values()] == [1, 1]
    assert validate(tmp_path / "out")["n"] == 6

    empty = tmp_path / "empty"
    with pytest.raises(ShardError, match=r"nothing prepared: all 8 inputs were skipped \(8 no return frames\); "
                                         r"first: .*: no return frames: input 0"):
        prepare(SkipListed(skip=(0, 1, 2, 3)), empty)
    assert not list(empty.rglob("*"))  # no manifest, no state, no shard


def test_the_dataset_card_lets_datasets_load_the_folder_with_dtypes_and_shapes(tiny_shards, tmp_path):
    import datasets

    card = (tiny_shards / "README.md").read_text()
    assert "array4_d" in card and "uint8" in card
    rows = datasets.load_dataset(str(tiny_shards), split="test", cache_dir=str(tmp_path / "cache"))
    assert isinstance(rows.features["frames.npy"], datasets.Array4D)  # declared, not inferred as nested lists
    recipe = card.split("```python\n")[1].split("```")[0].replace("<this folder>", str(tiny_shards))
    scope = {"datasets": datasets}
    exec(recipe.replace("load_dataset(", f"load_dataset(cache_dir={str(tmp_path / 'cache')!r}, path="), scope)
    rows = scope["rows"]  # the card's own recipe, run as written
    expected = {t.id: t for t in read_trajectories(tiny_shards, "test")}
    assert sorted(rows["__key__"]) == sorted(expected)
    for row in rows:
        traj = expected[row["__key__"]]
        assert row["frames.npy"].dtype == np.uint8 and row["poses.npy"].dtype == np.float64
        np.testing.assert_array_equal(row["frames.npy"], traj.frames)
        np.testing.assert_array_equal(row["actions.npy"], traj.actions)
        assert row["meta.json"]["offset"] == traj.offset and type(row["meta.json"]["offset"]) is int  # not 0-d
