"""Trajectory shards: webdataset tars plus a manifest, written atomically and resumably, read back as Trajectory.

Layout of a prepared set:
    DIR/manifest.json                     schema version, source settings, counts, every shard's sha256 and keys,
                                          every skipped or repaired input with its reason
    DIR/<split>/<name>-000000.tar         one sample per trajectory (ShardWriter's naming)

One sample (key = the trajectory id, dot-free):
    <key>.meta.json         meta, plus offset, schema_version and frame_codec
    <key>.poses.npy         float64 [T,5]
    <key>.actions.npy       float32 [T,A]
    <key>.raw_actions.json  the source's per-frame action records
    frame_codec "raw":  <key>.frames.npy  uint8 [T,H,W,3]
    frame_codec "jpeg": <key>.frames.mjpeg  the source's JPEG bitstreams, concatenated (an MJPEG stream), untouched
                        <key>.frame_bytes.npy  int64 [T], the byte length of each JPEG
Every sample of a set has the same fields (the HF `webdataset` builder requires it).
"""

from __future__ import annotations

import glob
import hashlib
import io
import itertools
import json
import multiprocessing
import tarfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from loopnav_bench.fileio import (
    OwnedFolder,
    atomic_path,
    read_json,
    resolve_within,
    sha256_file,
    sha256_json,
    write_bytes_atomic,
    write_json_atomic,
)
from loopnav_bench.processes import die_with_parent
from loopnav_bench.schema import SCHEMA_VERSION, SPLITS, Trajectory, TrajectoryError, frames_from_jpeg
from loopnav_bench.sources import SkipTrajectory, Source

MANIFEST = "manifest.json"
STATE = ".prepare-state.json"
CARD = "README.md"  # dataset card: `datasets.load_dataset(DIR)` reads its splits and features
TAR_MTIME = 0  # fixed tar metadata so that the same trajectories give byte-identical shards


class ShardError(ValueError):
    """A shard set that does not match its manifest or the schema; the message names the file."""


# ---------------------------------------------------------------------------------------------------- encoding


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_sample(traj: Trajectory) -> dict[str, bytes]:
    meta = dict(traj.meta, offset=int(traj.offset), schema_version=SCHEMA_VERSION,
                frame_codec="jpeg" if traj.jpeg is not None else "raw", length=len(traj))
    sample = {
        "meta.json": json.dumps(meta, sort_keys=True).encode(),
        "poses.npy": _npy(traj.poses.astype(np.float64)),
        "actions.npy": _npy(traj.actions),
        "raw_actions.json": json.dumps(traj.raw_actions, sort_keys=True).encode(),
    }
    if traj.jpeg is not None:
        sample["frames.mjpeg"] = b"".join(traj.jpeg)
        sample["frame_bytes.npy"] = _npy(np.array([len(j) for j in traj.jpeg], dtype=np.int64))
    else:
        sample["frames.npy"] = _npy(traj.frames)
    return sample


def sample_features(sample: dict[str, bytes]) -> dict[str, Any]:
    """Each field's type as the dataset card declares it: an .npy's dtype and shape after the time axis (read from its
    header), else the extension ("json", "mjpeg")."""
    features: dict[str, Any] = {}
    for field, data in sample.items():
        if field.endswith(".npy"):
            stream = io.BytesIO(data)
            version = np.lib.format.read_magic(stream)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(stream)
            features[field] = {"dtype": dtype.name, "shape": [None, *shape[1:]]}
        else:
            features[field] = field.rsplit(".", 1)[-1]
    return features


def decode_sample(sample: dict[str, Any], where: str = "") -> Trajectory:
    """A sample (field -> bytes, as in a tar or a webdataset pipeline) -> a validated Trajectory."""
    try:
        meta = json.loads(sample["meta.json"])
        offset = meta.pop("offset")
        codec = meta.pop("frame_codec")
        meta.pop("length", None)
        version = meta.pop("schema_version")
        if version != SCHEMA_VERSION:
            raise TrajectoryError(f"schema version {version} (this loopnav reads {SCHEMA_VERSION}); "
                                  "re-run loopnav prepare")
        jpeg = None
        if codec == "jpeg":
            stream, sizes = sample["frames.mjpeg"], _load_npy(sample["frame_bytes.npy"])
            ends = np.cumsum(sizes)
            if len(ends) and ends[-1] != len(stream):
                raise TrajectoryError(f"frames.mjpeg holds {len(stream)} bytes, frame_bytes.npy says {int(ends[-1])}")
            jpeg = [stream[e - s:e] for s, e in zip(sizes.tolist(), ends.tolist())]
            frames = frames_from_jpeg(jpeg)
        else:
            frames = _load_npy(sample["frames.npy"])
        traj = Trajectory(frames=frames, poses=_load_npy(sample["poses.npy"]), actions=_load_npy(sample["actions.npy"]),
                          offset=offset, meta=meta, raw_actions=json.loads(sample["raw_actions.json"]), jpeg=jpeg)
    except KeyError as err:
        raise TrajectoryError(f"{where}: sample {sample.get('__key__', '?')!r} lacks field {err}") from None
    except (ValueError, EOFError) as err:  # a damaged .npy or .json member, or one of the checks above
        raise TrajectoryError(f"{where}: sample {sample.get('__key__', '?')!r}: {err}") from None
    return traj.validate(where)


# ---------------------------------------------------------------------------------------------------- reading


def iter_tar_samples(path: str | Path, fields: set[str] | None = None, data: bytes | None = None
                     ) -> Iterator[dict[str, Any]]:
    """Group a webdataset tar's members into samples, splitting each name at the first dot of its basename.

    With `fields`, only those members are read (e.g. {"meta.json"} to list trajectories without their frames).
    With `data`, the tar is parsed from those bytes (already read from `path`) instead of the file."""
    sample: dict[str, Any] = {}
    try:
        with tarfile.open(path, fileobj=None if data is None else io.BytesIO(data)) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                directory, _, base = member.name.rpartition("/")
                key, dot, field = base.partition(".")
                if not dot or (fields is not None and field not in fields):
                    continue
                key = f"{directory}/{key}" if directory else key
                if sample and sample["__key__"] != key:
                    yield sample
                    sample = {}
                sample["__key__"] = key
                sample[field] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError) as err:
        raise ShardError(f"{path}: not a readable tar shard ({err})") from None
    if sample:
        yield sample


def iter_verified_samples(path: str | Path, sha256: str) -> Iterator[dict[str, Any]]:
    """The samples of a shard whose bytes match the manifest's sha256, else ShardError naming the shard.

    The shard is read once: hashed and then parsed from memory (a shard is at most a few hundred MB), so no sample
    of a changed shard is ever used, and checking costs no second read of the file."""
    data = Path(path).read_bytes()
    if (digest := hashlib.sha256(data).hexdigest()) != sha256:
        raise ShardError(f"{path}: sha256 {digest[:12]}… does not match the manifest's {sha256[:12]}… "
                         f"(changed since `loopnav prepare`; `loopnav validate` checks the whole set)")
    yield from iter_tar_samples(path, data=data)


def load_manifest(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    path = root / MANIFEST
    if not path.exists():
        hint = " (a prepare is in progress or was interrupted: re-run it)" if (root / STATE).exists() else ""
        raise ShardError(f"{path}: no manifest; is {root} a directory written by `loopnav prepare`?{hint}")
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise ShardError(f"{path}: a JSON {type(manifest).__name__}, not a loopnav manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(f"{path}: schema version {manifest.get('schema_version')!r}, "
                         f"this loopnav reads {SCHEMA_VERSION}")
    _check_manifest_shape(path, manifest)
    return manifest


def _check_manifest_shape(path: Path, manifest: dict[str, Any]) -> None:
    """The keys and types every reader of a manifest relies on, so that a damaged one is named, not a traceback."""
    def need(obj: Any, key: str, kind: type, where: str) -> Any:
        if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
            raise ShardError(f"{path}: {where}{key!r} is missing or not a {kind.__name__}; re-run `loopnav prepare`")
        return obj[key]

    for key, kind in (("source", str), ("settings", dict), ("n", int), ("splits", dict), ("created", str)):
        need(manifest, key, kind, "")
    for split, info in manifest["splits"].items():
        need(info, "n", int, f"splits.{split}.")
        need(info, "counts", dict, f"splits.{split}.")
        for i, shard in enumerate(need(info, "shards", list, f"splits.{split}.")):
            for key, kind in (("path", str), ("sha256", str), ("keys", list)):
                need(shard, key, kind, f"splits.{split}.shards[{i}].")


def listed_shards(root: str | Path, split: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(path inside `root`, manifest entry) of every shard of a prepared set, in manifest order, optionally for one
    split. A shard path that leaves the root is an error naming it."""
    root = Path(root)
    manifest = load_manifest(root)
    if split is not None and split not in manifest["splits"]:
        raise ShardError(f"{root / MANIFEST}: no split {split!r}; it has {sorted(manifest['splits'])}")
    splits = [split] if split else list(manifest["splits"])
    return [(resolve_within(root, shard["path"], "shard path"), shard)
            for s in splits for shard in manifest["splits"][s]["shards"]]


def manifest_shards(root: str | Path, split: str | None = None) -> list[tuple[Path, str]]:
    """(path, sha256) of every shard of a prepared set, in manifest order, optionally for one split."""
    return [(path, shard["sha256"]) for path, shard in listed_shards(root, split)]


def listed_samples(path: Path, samples: Iterable[dict[str, Any]], keys: list[str]) -> Iterator[dict[str, Any]]:
    """A shard's samples, checked against the keys its manifest entry lists, so that no count is ever silently
    wrong: a sample it does not list is an error when it comes, a listed one the shard lacks (lost, or without the
    fields being read) at the end; each error names the shard and the key."""
    listed, seen = set(keys), []
    for sample in samples:
        if sample["__key__"] not in listed:
            raise ShardError(f"{path}: holds sample {sample['__key__']!r}, which {MANIFEST} does not list")
        seen.append(sample["__key__"])
        yield sample
    if seen != list(keys):
        found = set(seen)
        if missing := [key for key in keys if key not in found]:
            raise ShardError(f"{path}: sample {missing[0]!r}, listed in {MANIFEST}, is missing or incomplete "
                             f"({len(missing)} of {len(keys)} listed samples lack)")
        raise ShardError(f"{path}: holds its samples repeated or in another order than {MANIFEST} lists")


def shard_paths(root: str | Path, split: str | None = None) -> list[Path]:
    """The shard files of a prepared set, in manifest order, optionally for one split."""
    return [path for path, _ in manifest_shards(root, split)]


def read_trajectories(path: str | Path, split: str | None = None) -> Iterator[Trajectory]:
    """Yield every Trajectory of a prepared set (a directory with manifest.json) or of one .tar shard.

    `split` ("train", "val" or "test") restricts a directory to one split. Trajectories are validated as they are read,
    and a directory's shards are checked against the manifest's sha256 first.
    """
    path = Path(path)
    if path.is_file():
        samples = [(path, iter_tar_samples(path))]
    elif path.is_dir():
        samples = [(tar, listed_samples(tar, iter_verified_samples(tar, shard["sha256"]), shard["keys"]))
                   for tar, shard in listed_shards(path, split)]
    else:
        raise FileNotFoundError(f"{path}: no such shard file or directory")
    for tar, shard_samples in samples:
        for sample in shard_samples:
            traj = decode_sample(sample, where=str(tar))
            if split is None or traj.meta["split"] == split:
                yield traj


def webdataset_pipeline(urls: list[str], shuffle: int = 0, seed: int = 0):
    """A torch-DataLoader-ready IterableDataset of Trajectory, split by node (rank) and by DataLoader worker.

    No resampling: each shard is read once per epoch by exactly one (rank, worker). For evaluation keep shuffle=0.
    """
    import webdataset as wds

    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node,
                             workersplitter=wds.split_by_worker, empty_check=False, seed=seed)
    if shuffle:
        dataset = dataset.shuffle(shuffle)
    return dataset.map(lambda sample: decode_sample(sample, where=sample.get("__url__", "")))


# ---------------------------------------------------------------------------------------------------- writing


class _TarShard:
    """A shard being written: samples stream into a temporary tar that replaces the final path only when complete.
    The file is created with the first sample, so a shard whose inputs were all skipped is never written."""

    def __init__(self, path: Path):
        self.path = path
        self._writer = None

    def __enter__(self) -> "_TarShard":
        return self

    def write(self, key: str, sample: dict[str, bytes]) -> None:
        if self._writer is None:
            import webdataset as wds

            self._atomic = atomic_path(self.path)
            self._stream = open(self._atomic.__enter__(), "wb")  # noqa: SIM115  (closed in __exit__)
            self._writer = wds.TarWriter(self._stream, mtime=TAR_MTIME, user="loopnav", group="loopnav", mode=0o644)
        self._writer.write({"__key__": key, **sample})

    def __exit__(self, *exc_info) -> None:
        if self._writer is not None:
            self._writer.close()
            self._stream.close()
            self._atomic.__exit__(*exc_info)


def _counts(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        for task, by_range in record["counts"].items():
            counts[task].update(by_range)
    return {task: dict(sorted(c.items(), key=lambda kv: (len(kv[0]), kv[0]))) for task, c in sorted(counts.items())}


_WORKER_SOURCE: Source | None = None


def _init_worker(source: Source) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source


def _init_pool_worker(source: Source) -> None:
    die_with_parent()  # a killed prepare leaves no worker (nor, through its source's reaper, engine) behind
    _init_worker(source)


def _load_one(spec: Any) -> tuple[Any, dict[str, bytes] | None, dict[str, Any] | None, str | None]:
    """Load and encode one spec in a worker. Workers send back encoded samples, not decoded frames: for JPEG
    sources that is ~10x fewer bytes through the pipe, and the parent only writes them."""
    try:
        traj = _WORKER_SOURCE.load(spec).validate()
    except SkipTrajectory as err:
        return spec, None, None, str(err)
    except TrajectoryError as err:
        return spec, None, None, f"invalid trajectory: {err}"
    return spec, encode_sample(traj), traj.meta, None


def prepare(source: Source, out: str | Path, *, workers: int = 1, overwrite: bool = False,
            progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Write `source` as shards under `out` and return the manifest.

    Resumable: shards finished by an earlier, interrupted run with the same settings are kept and skipped.
    Deterministic: shard i of a split always holds the trajectories planned for its slot, whatever `workers` is.
    """
    out = Path(out)
    settings = {"source": source.name, **source.settings()}
    settings_hash = sha256_json(settings)
    state_path, manifest_path = out / STATE, out / MANIFEST
    previous = _previous_records(out)

    if not overwrite:
        for path, record in previous.items():
            if record.get("settings_hash") != settings_hash:
                raise ShardError(f"{path}: {out} was prepared with other settings; "
                                 "pass --overwrite or choose another --out")
        if manifest_path in previous:
            return previous[manifest_path]
    plan = source.plan()
    jobs = []  # (split, shard path, specs)
    for split, specs in plan.items():
        if split not in SPLITS:
            raise ShardError(f"source {source.name} planned an unknown split {split!r}")
        for i in range(0, len(specs), source.shard_size):
            rel = f"{split}/{source.name}-{i // source.shard_size:06d}.tar"
            jobs.append((split, rel, specs[i:i + source.shard_size]))
    owned = {rel for record in previous.values() for rel in _listed_files(record)}
    planned = [CARD, *(rel for _, rel, _ in jobs)]
    # the manifest and state are prepare's proof of what it wrote; without them --out must be empty
    OwnedFolder(out, "loopnav prepare", [MANIFEST, STATE, *owned] if previous else ()).check(planned)
    _remove_stale_temporaries(out, [MANIFEST, STATE, *owned, *planned])
    if overwrite:  # only what loopnav's own manifest and state list: other files in --out are never touched
        for rel in owned:
            resolve_within(out, rel, "shard path").unlink(missing_ok=True)
        for path in previous:
            path.unlink()
        previous = {}
    state = previous.get(state_path) or {"settings_hash": settings_hash, "shards": {}}
    state["planned"] = sorted({*state.get("planned", []), *planned})
    write_json_atomic(state_path, state)  # claims the planned shard paths before any is written

    def done(rel: str) -> bool:
        record = state["shards"].get(rel)
        return record is not None and (not record["keys"] or (out / rel).exists()
                                       and (out / rel).stat().st_size == record["bytes"])

    total = sum(len(specs) for *_, specs in jobs)
    finished = sum(len(specs) for _, rel, specs in jobs if done(rel))
    if progress:
        progress(f"{source.name} → {out}", finished, total)

    pending = [job for job in jobs if not done(job[1])]
    specs_todo = [spec for *_, specs in pending for spec in specs]
    pool = None
    if workers > 1 and specs_todo:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_pool_worker, initargs=(source,))
        # One ordered stream over every pending spec keeps the workers busy across shard boundaries; runs of
        # consecutive specs (which sources order by map or file) let a worker reuse what it has loaded.
        chunk = max(1, min(8, len(specs_todo) // (4 * workers)))
        results = pool.imap(_load_one, specs_todo, chunksize=chunk)
    else:
        _init_worker(source)
        results = map(_load_one, specs_todo)
    try:
        for split, rel, specs in pending:
            keys, metas, skipped, repaired, features = [], [], [], [], []
            counts: dict[str, Counter] = defaultdict(Counter)
            with _TarShard(out / rel) as shard:
                for spec, sample, meta, reason in itertools.islice(results, len(specs)):
                    if sample is None:
                        skipped.append({"input": spec, "reason": reason})
                    else:
                        shard.write(meta["id"], sample)
                        features.append(sample_features(sample))
                        keys.append(meta["id"])
                        metas.append(meta)
                        counts[meta["task"]][str(meta["range"])] += 1
                        repaired += [{"input": spec, "id": meta["id"], "reason": r} for r in meta.get("repairs", [])]
                    finished += 1
                    if progress:
                        progress(f"{source.name} → {out}", finished, total)
            path = out / rel
            state["shards"][rel] = {
                "path": rel, "split": split, "sha256": sha256_file(path) if keys else None,
                "bytes": path.stat().st_size if keys else 0, "keys": keys,
                "counts": {k: dict(v) for k, v in counts.items()},
                "skipped": skipped, "repaired": repaired, "metas": metas,
                "features": features[0] if features and all(f == features[0] for f in features) else None,
            }
            write_json_atomic(state_path, state)  # the shard is final only once it is recorded here
    finally:
        if pool:
            pool.close()
            pool.join()

    manifest = _manifest(source, settings, settings_hash, [state["shards"][rel] for _, rel, _ in jobs])
    if not manifest["n"]:
        state_path.unlink()  # nothing was written: leave no half-made set behind
        skipped = manifest["skipped"]
        if not skipped["n"]:
            raise ShardError(f"{out}: nothing to prepare: source {source.name} selected no input")
        first = skipped["items"][0]
        raise ShardError(f"{out}: nothing prepared: all {skipped['n']} inputs were skipped "
                         f"({', '.join(f'{n} {reason}' for reason, n in skipped['by_reason'].items())}); "
                         f"first: {input_name(first['input'])}: {first['reason']}")
    write_bytes_atomic(out / CARD, _dataset_card(manifest, [state["shards"][rel] for _, rel, _ in jobs]).encode())
    write_json_atomic(manifest_path, manifest)
    state_path.unlink(missing_ok=True)
    return manifest


def _previous_records(out: Path) -> dict[Path, dict[str, Any]]:
    """loopnav's own manifest and prepare state in `out`, by path."""
    records = {}
    for path in (out / MANIFEST, out / STATE):
        if path.exists():
            record = read_json(path)
            if not isinstance(record, dict) or not isinstance(record.get("settings_hash"), str):
                raise ShardError(f"{path}: not written by loopnav prepare; choose another --out")
            records[path] = record
    return records


def _listed_files(record: dict[str, Any]) -> list[str]:
    """The files a manifest or a prepare state names as loopnav's (paths relative to its directory)."""
    if "splits" in record:
        return [*record.get("card", []), *(shard["path"] for split in record["splits"].values()
                                          for shard in split["shards"])]
    return [*record.get("planned", []), *record["shards"]]


def _dataset_card(manifest: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """A dataset card whose YAML gives `datasets.load_dataset(DIR)` the splits and, when every sample has the same
    fields, dtypes and shapes, the features: then it skips inferring them (and frames stay uint8 arrays, not lists)."""
    import yaml

    card: dict[str, Any] = {"configs": [{"config_name": "default", "data_files": [
        {"split": split, "path": [shard["path"] for shard in info["shards"]]}  # listed: a stray .tar is never loaded
        for split, info in manifest["splits"].items()]}]}
    found = [r.get("features") for r in records if r["keys"]]  # None: mixed, or a state from before cards
    if found and all(f == found[0] for f in found) and None not in found:
        card["dataset_info"] = {"features": [*(_card_feature(name, kind) for name, kind in sorted(found[0].items())),
                                             {"name": "__key__", "dtype": "string"},
                                             {"name": "__url__", "dtype": "string"}]}
    arrays = sorted(name for name, kind in (found[0] if found and found[0] else {}).items() if isinstance(kind, dict))
    return (f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n\n# {manifest['source']} trajectories for LoopNav\n\n"
            "Written by `loopnav prepare`; `manifest.json` lists every shard with its sha256 "
            f"and every skipped input.\n\n{datasets_recipe(arrays)}")


def datasets_recipe(arrays: list[str], folder: str = "<this folder>") -> str:
    """How to load a prepared folder with `datasets` (the dataset card carries it; docs/data.md quotes it)."""
    return (f"```python\nrows = datasets.load_dataset(\"{folder}\", split=\"test\").with_format(\n"
            f"    \"numpy\", columns={arrays}, dtype=None, output_all_columns=True)\n```\n\n"
            "The arrays keep their stored dtypes (uint8 frames, float64 poses) and `meta.json` stays a dict of plain "
            "Python values. `load_dataset` first writes an Arrow copy of every split of the folder, larger than "
            "the shards, under `~/.cache/huggingface/datasets` (`cache_dir=` or `HF_DATASETS_CACHE` moves it); "
            "`streaming=True` writes none, but then frames come back as int64 and scalars as 0-d arrays.\n")


def _card_feature(name: str, kind: Any) -> dict[str, Any]:
    if kind == "json":
        return {"name": name, "dtype": "json"}
    if not isinstance(kind, dict):
        return {"name": name, "dtype": "binary"}  # e.g. frames.mjpeg: the source's JPEG bytes
    if len(kind["shape"]) == 1:
        return {"name": name, "list": kind["dtype"]}
    return {"name": name, "dtype": {f"array{len(kind['shape'])}_d": kind}}


def _remove_stale_temporaries(out: Path, rels: Iterable[str]) -> None:
    """Delete the temporary files (`atomic_path`'s `.<name>.<random>.tmp`) a killed prepare left beside its files."""
    for rel in set(rels):
        path = out / rel
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)


def input_name(spec: Any) -> str:
    """A source's input spec as one short line: the id, path or name sources put in their specs, else compact JSON."""
    if isinstance(spec, dict) and (name := next((spec[k] for k in ("id", "path", "name") if k in spec), None)):
        return str(name)
    return spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True, default=str)


def _manifest(source: Source, settings: dict, settings_hash: str, records: list[dict]) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split in SPLITS:
        mine = [r for r in records if r["split"] == split and r["keys"]]  # no empty shards, no empty splits
        if not mine:
            continue
        splits[split] = {
            "n": sum(len(r["keys"]) for r in mine),
            "counts": _counts(mine),
            "shards": [{k: r[k] for k in ("path", "sha256", "bytes", "keys")} for r in mine],
        }
    skipped = source.rejected_inputs() + [s for r in records for s in r["skipped"]]
    repaired = [s for r in records for s in r["repaired"]]
    summary = source.summary([m for r in records for m in r.get("metas", [])], skipped)
    from loopnav_bench import __version__

    return {
        "schema_version": SCHEMA_VERSION, "loopnav_version": __version__, "source": source.name,
        "settings": settings, "settings_hash": settings_hash,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "card": [CARD],
        "n": sum(s["n"] for s in splits.values()), "splits": splits,
        "skipped": {"n": len(skipped), "by_reason": _reason_counts(skipped), "items": skipped},
        "repaired": {"n": len(repaired), "by_reason": _reason_counts(repaired), "items": repaired},
        **({"summary": summary} if summary else {}),
    }


def _reason_counts(items: list[dict]) -> dict[str, int]:
    """Count reasons by kind: the text before the first ':' (sources put the specifics after it)."""
    return dict(Counter(item["reason"].split(":")[0] for item in items).most_common())


def manifest_hash(root: str | Path) -> str:
    """Identity of a prepared set for results and resume keys: the hash of its shard list (paths and sha256)."""
    manifest = load_manifest(root)
    return sha256_json({s: [(sh["path"], sh["sha256"]) for sh in v["shards"]] for s, v in manifest["splits"].items()})


# ---------------------------------------------------------------------------------------------------- validation


def validate(root: str | Path, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Check a prepared set against its manifest: every shard's path (inside the root), presence and sha256, its
    keys, every sample against the schema, and every count the manifest states, recomputed from the samples; a
    shard file the manifest does not list is an error too. Raises ShardError naming the first bad file; returns a
    summary whose counts are the recomputed ones."""
    root = Path(root)
    manifest = load_manifest(root)
    shards = [(split, path, shard) for split in manifest["splits"] for path, shard in listed_shards(root, split)]
    stored = {resolve_within(root, path.relative_to(root), "shard") for path in root.rglob("*.tar")}
    if unlisted := sorted(stored - {path for _, path, _ in shards}):
        raise ShardError(f"{unlisted[0]}: a shard {root / MANIFEST} does not list (readers of the folder would "
                         f"load it); move it out of {root}")
    seen_ids: set[str] = set()
    counts: dict[str, dict[str, Counter]] = {split: defaultdict(Counter) for split in manifest["splits"]}
    for i, (split, path, shard) in enumerate(shards):
        if not path.exists():
            raise ShardError(f"{path}: listed in {root / MANIFEST} but missing")
        for sample in listed_samples(path, iter_verified_samples(path, shard["sha256"]), shard["keys"]):
            traj = decode_sample(sample, where=str(path))
            if traj.meta["split"] != split:
                raise ShardError(f"{path}: trajectory {traj.id!r} is marked split {traj.meta['split']!r}, "
                                 f"shard is in {split!r}")
            if traj.id in seen_ids:
                raise ShardError(f"{path}: trajectory id {traj.id!r} appears twice in the set")
            seen_ids.add(traj.id)
            counts[split][traj.meta["task"]][str(traj.meta["range"])] += 1
        if progress:
            progress("validating", i + 1, len(shards))
    found = {split: {"n": sum(sum(c.values()) for c in by_task.values()),
                     "counts": _counts([{"counts": by_task}])} for split, by_task in counts.items()}
    for split, info in manifest["splits"].items():
        for key in ("n", "counts"):
            if info[key] != found[split][key]:
                raise ShardError(f"{root / MANIFEST}: splits.{split}.{key} says {info[key]}, the shards hold "
                                 f"{found[split][key]}")
    if (n := len(seen_ids)) != manifest["n"]:
        raise ShardError(f"{root / MANIFEST}: says {manifest['n']} trajectories, the shards hold {n}")
    return {"root": str(root), "n": n, "shards": len(shards), "splits": {s: v["n"] for s, v in found.items()}}
