"""Evaluation: roll a world model out under the LoopNav protocol, save its predictions, score them, write results.

Protocol (PROTOCOL_VERSION): the model gets a `RolloutRequest` with the context frames, poses and actions of
[0, offset) and only the poses and actions of the target [offset, T); it returns exactly T - offset frames. Those are
scored against ground-truth frames [offset, T), both resized with `metrics.resize_frames` to the evaluation size
(`--eval-size`, default the data's native size). `--context-ablation swap` changes the context frames older than
the last K (ablation.py); an oracle model (`WorldModel.oracle`) alone also gets the target frames at that size.

Layout under the output directory (the run and score folders are named by hashes of every setting that changes
their contents, so a changed setting never reuses stale work and a rerun resumes where the last one stopped):

    <out>/<model>/results_<ts>.json                     the results contract (contract.py): aggregates, FVD,
    <out>/<model>/samples_<ts>.jsonl                    config, seeds, data, environment; one row per trajectory
    <out>/<model>/run-<key>/run.json                    what produced the predictions (model, args, checkpoint, data)
    <out>/<model>/run-<key>/predictions/<id>.npz        predicted target frames, uint8 [T - offset, h, w, 3]
    <out>/<model>/run-<key>/score-<key>/score.json      scoring settings (eval size, metrics, weights, FVD mode)
    <out>/<model>/run-<key>/score-<key>/rows/<id>.json  finished rows; `samples_*.jsonl` is merged from these
    <out>/<model>/run-<key>/score-<key>/ranks/<attempt>/rank-<r>.done|failed   torchrun bookkeeping (distributed.py)
"""

from __future__ import annotations

import contextlib
import json
import platform
import random
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from loopnav_bench import __version__
from loopnav_bench.ablation import DEFAULT_KEEP_RECENT, ContextAblation, donor_for, swap_context
from loopnav_bench.contract import (
    MAX_ENTRY_BYTES,
    PREDICTIONS,
    data_identity,
    model_dirname,
    prediction_file,
    results_files,
    timestamp,
)
from loopnav_bench.distributed import DEFAULT_DEVICE, DistContext, PeerFailed, RankMarkers
from loopnav_bench.fileio import atomic_path, read_json, resolve_within, sha256_file, sha256_json, write_json_atomic
from loopnav_bench.models import RolloutRequest, WorldModel, load_model
from loopnav_bench.schema import SCHEMA_VERSION, Trajectory
from loopnav_bench.shards import (
    MANIFEST,
    decode_sample,
    iter_tar_samples,
    iter_verified_samples,
    listed_samples,
    listed_shards,
    load_manifest,
    manifest_hash,
)

PROTOCOL_VERSION = "1"  # bump when what the model sees or which frames are scored changes
EVAL_THREADS = 1  # torch CPU threads per process, whatever the cores or ranks: another count rounds reductions
# differently, so rows would depend on the machine and on torchrun (which sets OMP_NUM_THREADS=1 per rank)
MAX_EVAL_SIDE = 2048  # 3x LoopNav's 640x360 frames; 99999x99999 would need 28 GiB per frame
FVD = "fvd"
Progress = Callable[..., None]


class EvaluationError(ValueError):
    """A problem with the inputs, a model's output or a rank; the message names the file, model or trajectory."""


@dataclass
class EvalConfig:
    """Everything `loopnav evaluate` takes. Recorded in full in the results file."""

    data: Path
    output_dir: Path
    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    split: list[str] = field(default_factory=lambda: ["test"])
    tasks: list[str] | None = None
    ranges: list[int] | None = None
    limit: int | None = None
    metrics: list[str] | None = None  # frame metric names and/or "fvd"; None: all of them
    eval_size: tuple[int, int] | None = None  # (height, width); None: each trajectory's native size
    device: str = DEFAULT_DEVICE
    batch_size: int = 8  # trajectories per rollout_batch call
    metric_batch_size: int = 32  # frames per metric forward pass
    seed: int = 0
    fvd_mode: str = "default"
    fvd_covariance: str = "population"  # default mode only: "population" (StyleGAN-V) or "sample" (np.cov)
    resume: bool = True
    label: str | None = None  # the entry's name in results and on the leaderboard; default: the model name
    context_ablation: str = "none"  # ablation.ABLATIONS: "swap" replaces context frames older than keep_recent
    keep_recent: int = DEFAULT_KEEP_RECENT

    @property
    def ablation(self) -> ContextAblation:
        return ContextAblation(self.context_ablation, self.keep_recent)

    @property
    def entry(self) -> str:
        """What this run is called on the leaderboard: --label, else the model with the model args given, e.g.
        `worldpack[memory=off]`, so that variants of one registered model are told apart; `+swap` under the
        context-swap ablation, so it never replaces the plain run."""
        args = ",".join(f"{key}={value}" for key, value in self.model_args.items())
        return (self.label or (f"{self.model}[{args}]" if args else self.model)) + self.ablation.suffix


@dataclass(frozen=True)
class Item:
    """One selected trajectory: its place in the deterministic list, its shard (with the manifest's sha256, which the
    shard is checked against when its frames are read) and its meta (read without frames)."""

    index: int
    id: str
    shard: Path
    shard_sha256: str
    meta: dict[str, Any]


@dataclass
class Outcome:
    results_path: Path
    samples_path: Path
    results: dict[str, Any]
    resumed: int = 0  # trajectories whose rows an earlier run had finished


def parse_eval_size(text: str | None) -> tuple[int, int] | None:
    """'64' -> (64, 64); '64x96' -> (64, 96) as height x width; None or 'native' -> None."""
    if text is None or text.strip().lower() == "native":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match or int(match.group(1)) == 0 or (match.group(2) and int(match.group(2)) == 0):
        raise EvaluationError(f"--eval-size {text!r} is not N or HxW (e.g. 64 or 64x96) with positive sizes")
    height, width = int(match.group(1)), int(match.group(2) or match.group(1))
    if max(height, width) > MAX_EVAL_SIDE:
        raise EvaluationError(f"--eval-size {text!r}: at most {MAX_EVAL_SIDE} pixels a side (each frame is resized to "
                              f"it in memory)")
    return height, width


def checkpoint_sha256(path: str | None) -> str | None:
    """sha256 of a checkpoint file, or of the (relative path, sha256) list of a checkpoint directory."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        return sha256_json([(str(f.relative_to(path)), sha256_file(f)) for f in sorted(path.rglob("*")) if f.is_file()])
    raise EvaluationError(f"--checkpoint {path}: no such file or directory")


# ---------------------------------------------------------------------------------------------------- selection


def select_trajectories(data: Path, splits: list[str], tasks: list[str] | None = None,
                        ranges: list[int] | None = None, limit: int | None = None) -> tuple[list[Item], int]:
    """The deterministic trajectory list (manifest order) of `splits`, filtered by task and range, and the count
    before `limit` cut it. The same on every rank and every rerun."""
    manifest = load_manifest(data)
    missing = [s for s in splits if s not in manifest["splits"]]
    if missing:
        raise EvaluationError(f"{data / MANIFEST}: no split {missing}; it has {sorted(manifest['splits'])}")
    available_tasks = {t for s in splits for t in manifest["splits"][s]["counts"]}
    available_ranges = {int(r) for s in splits for by in manifest["splits"][s]["counts"].values() for r in by
                        if r != "None"}  # RECON has no loop range
    if tasks and (unknown := sorted(set(tasks) - available_tasks)):
        raise EvaluationError(f"{data}: no task {unknown} in split {splits}; it has {sorted(available_tasks)}")
    if ranges and (unknown := sorted(set(ranges) - available_ranges)):
        raise EvaluationError(f"{data}: no range {unknown} in split {splits}; it has {sorted(available_ranges)}")
    if limit is not None and limit < 1:
        raise EvaluationError(f"--limit {limit} must be at least 1")
    items: list[Item] = []
    for split in splits:
        for path, shard in listed_shards(data, split):
            # frames are not read here; every key the manifest lists must be there, so no count is silently short
            for sample in listed_samples(path, iter_tar_samples(path, fields={"meta.json"}), shard["keys"]):
                try:
                    meta = json.loads(sample["meta.json"])
                    task, range_ = meta["task"], meta["range"]  # RECON has no loop range (None)
                    range_ = None if range_ is None else int(range_)
                except (ValueError, KeyError, TypeError) as err:
                    raise EvaluationError(f"{path}: sample {sample['__key__']!r}: meta.json is not valid "
                                          f"({type(err).__name__}: {err})") from None
                if (tasks is None or task in tasks) and (ranges is None or range_ is not None and range_ in ranges):
                    items.append(Item(len(items), sample["__key__"], path, shard["sha256"], meta))
    if not items:
        raise EvaluationError(f"{data}: no trajectory of split {splits} matches tasks {tasks} and ranges {ranges}")
    return items[:limit], len(items)


def load_trajectories(items: list[Item]) -> Iterator[tuple[Item, Trajectory]]:
    """Decode exactly these items, shard by shard, in their order, from shards that match the manifest's sha256."""
    by_shard: dict[tuple[Path, str], dict[str, Item]] = {}
    for item in items:
        by_shard.setdefault((item.shard, item.shard_sha256), {})[item.id] = item
    for (shard, sha256), wanted in by_shard.items():
        for sample in iter_verified_samples(shard, sha256):
            if (item := wanted.get(sample["__key__"])) is not None:
                yield item, decode_sample(sample, where=str(shard))


# ---------------------------------------------------------------------------------------------------- run folders


@dataclass
class RunDirs:
    """The folders of one rollout setting (`run`) and one scoring setting of it (`score`)."""

    run: Path
    score: Path

    def prediction(self, trajectory_id: str) -> Path:
        return prediction_file(self.run, trajectory_id)

    def row(self, trajectory_id: str) -> Path:
        return resolve_within(self.score / "rows", f"{trajectory_id}.json", "trajectory id")


def save_prediction(path: Path, frames: np.ndarray, memory: np.ndarray | None = None) -> None:
    """The predicted frames, and the memories the model reported for them (RolloutRequest.report_memory)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, frames=frames, **({} if memory is None else {"memory": memory}))


def read_prediction(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A saved prediction: its frames, and the memories the model reported for them (None if it reported none)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["frames"], archive["memory"] if "memory" in archive.files else None
    except (OSError, KeyError, ValueError) as err:
        raise EvaluationError(f"{path}: not a loopnav prediction file ({err})") from None


def load_prediction(path: Path) -> np.ndarray:
    return read_prediction(path)[0]


def check_prediction(frames: Any, request: RolloutRequest, producer: str) -> np.ndarray:
    """A model's output must be uint8 [horizon, h, w, 3]; anything else is an error naming producer and trajectory."""
    shape = list(getattr(frames, "shape", []))
    where = f"{producer} on trajectory {request.id!r}"
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise EvaluationError(f"{where}: returned {type(frames).__name__} {getattr(frames, 'dtype', '')} {shape}; "
                              f"expected a uint8 numpy array [T, H, W, 3]")
    if len(frames) != request.horizon:
        raise EvaluationError(f"{where}: returned {len(frames)} frames; the target [offset, T) has {request.horizon}")
    return frames


def _device_type(device: str) -> str:
    import torch

    try:
        return torch.device(device).type
    except RuntimeError as err:
        raise EvaluationError(f"--device {device!r}: {err}") from None


@contextlib.contextmanager
def fixed_threads() -> Iterator[None]:
    """Torch on EVAL_THREADS intra-op threads while evaluating or scoring; the caller's count afterwards."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(EVAL_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------- scoring


class Scorer:
    """The frame metrics of one evaluation, loaded once; unavailable ones stay null with their reason."""

    def __init__(self, names: list[str] | None, device: str, batch_size: int, eval_size: tuple[int, int] | None,
                 fvd_mode: str, fvd_covariance: str = "population"):
        from loopnav_bench.metrics import FRAME_METRICS, METRICS, MetricUnavailable, load_frame_metric

        if names is not None and not names:
            raise EvaluationError(f"--metrics names no metric; choose from {list(METRICS)}")
        names = list(names) if names is not None else list(METRICS)
        if unknown := sorted(set(names) - set(METRICS)):
            raise EvaluationError(f"unknown metric {unknown}; choose from {list(METRICS)}")
        self.frame_names = [n for n in FRAME_METRICS if n in names]  # registry order, whatever the order given
        self.eval_size, self.fvd_mode, self.device_type = eval_size, fvd_mode, _device_type(device)
        self.frame_metrics: dict[str, Any] = {}
        self.status: dict[str, dict[str, Any]] = {}
        for name in self.frame_names:
            try:
                metric = load_frame_metric(name, device, batch_size)
            except MetricUnavailable as err:
                self.status[name] = {"available": False, "verified": False, "reason": str(err), "reason_code": err.code}
                continue
            self.frame_metrics[name] = metric
            info = dict(metric.info)
            self.status[name] = {"available": True, "verified": bool(info.get("verified")), "reason": None,
                                 "info": info}
        self.fvd = None
        if FVD in names:
            try:
                self.fvd = METRICS[FVD].load()(mode=fvd_mode, device=device, covariance=fvd_covariance)
                self.status[FVD] = {"available": True, "verified": bool(self.fvd.info.get("verified")), "reason": None,
                                    "info": dict(self.fvd.info), "mode": fvd_mode}
            except MetricUnavailable as err:
                self.status[FVD] = {"available": False, "verified": False, "reason": str(err), "reason_code": err.code,
                                    "mode": fvd_mode}

    def settings(self) -> dict[str, Any]:
        """What changes a row's numbers: keys the score folder."""
        from loopnav_bench.metrics import RESIZE_FILTER

        implementations = {name: s.get("info") if s["available"] else None for name, s in self.status.items()}
        return {"protocol": PROTOCOL_VERSION, "eval_size": self.eval_size, "resize_filter": RESIZE_FILTER,
                "metrics": implementations, "fvd_mode": self.fvd_mode if FVD in self.status else None,
                "device_type": self.device_type}

    def resize(self, frames: np.ndarray, traj: Trajectory) -> np.ndarray:
        """To the evaluation size, or to the trajectory's own size (predictions may come at any size)."""
        from loopnav_bench.metrics import resize_frames

        return resize_frames(frames, self.eval_size or traj.frames.shape[1:3])

    def row(self, traj: Trajectory, prediction: np.ndarray) -> dict[str, Any]:
        """The trajectory's row: identity, lengths and one value per target frame for every frame metric."""
        from loopnav_bench.metrics import cap_values

        target, predicted = self.resize(traj.frames[traj.target], traj), self.resize(prediction, traj)
        metrics: dict[str, list[float] | None] = {name: None for name in self.frame_names}
        for name, metric in self.frame_metrics.items():
            metrics[name] = cap_values(name, metric(predicted, target)).tolist()  # strict JSON: no +inf PSNR
        return {"id": traj.id, "split": traj.meta["split"], "task": traj.meta["task"], "range": traj.meta["range"],
                "location": traj.meta["location"], "offset": int(traj.offset), "length": len(traj),
                "context_len": int(traj.offset), "target_len": len(traj) - int(traj.offset), "metrics": metrics}


# ---------------------------------------------------------------------------------------------------- the engine


@dataclass
class Job:
    """One evaluation or re-scoring: what to run over, where, and with which settings."""

    config: EvalConfig
    items: list[Item]
    n_original: int
    dirs: RunDirs
    run_settings: dict[str, Any]
    scorer: Scorer
    model: WorldModel | None  # None when re-scoring saved predictions
    model_describe: dict[str, Any]
    started: float  # time.time() when the command started, for the wall time in the results
    donors: dict[str, Item] = field(default_factory=dict)  # recipient id -> donor, under the swap ablation


def _batches(pairs: Iterable[tuple[Item, Trajectory]], size: int) -> Iterator[list[tuple[Item, Trajectory]]]:
    batch: list[tuple[Item, Trajectory]] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _model_requests(job: Job, batch: list[tuple[Item, Trajectory]],
                    requests: list[RolloutRequest]) -> list[RolloutRequest]:
    """What the model gets: the context ablation applied, and the target frames (at the evaluation size) only when the
    model's class declares itself an oracle; every other model never sees a target frame."""
    if job.donors:
        wanted = {job.donors[r.id].id: job.donors[r.id] for r in requests}
        donors = {item.id: traj.frames for item, traj in load_trajectories(list(wanted.values()))}
        requests = [swap_context(r, donors[job.donors[r.id].id], job.config.keep_recent) for r in requests]
    if type(job.model).oracle:
        requests = [replace(r, target_frames=job.scorer.resize(traj.frames[traj.target], traj))
                    for r, (_, traj) in zip(requests, batch)]
    return requests


def _predict(job: Job, batch: list[tuple[Item, Trajectory]]) -> list[np.ndarray]:
    """Saved predictions where they exist (resume, re-scoring), a rollout for the rest (saved before scoring)."""
    requests = [RolloutRequest.from_trajectory(traj, seed=job.config.seed) for _, traj in batch]
    paths = [job.dirs.prediction(r.id) for r in requests]
    fresh = job.model is not None and not job.config.resume  # --no-resume rolls out again
    todo = [i for i, p in enumerate(paths) if fresh or not p.exists()]
    if todo and job.model is None:
        raise EvaluationError(f"{paths[todo[0]]}: no saved prediction for trajectory {requests[todo[0]].id!r}; "
                              f"run `loopnav evaluate` with this model and data first")
    predictions: list[np.ndarray | None] = [None] * len(batch)
    if todo:
        seed_everything(requests[todo[0]].seed)  # for models that draw from global RNGs
        given = _model_requests(job, [batch[i] for i in todo], [requests[i] for i in todo])
        produced = job.model.rollout_batch(given)
        name = f"model {job.config.model!r}"
        if len(produced) != len(todo):
            raise EvaluationError(f"{name}: rollout_batch returned {len(produced)} outputs for {len(todo)} requests")
        for i, frames in zip(todo, produced):
            predictions[i] = check_prediction(frames, requests[i], name)
            try:
                memory = requests[i].reported_memory()
            except ValueError as err:
                raise EvaluationError(f"{name}: {err}") from None
            save_prediction(paths[i], predictions[i], memory)
    for i, path in enumerate(paths):
        if predictions[i] is None:
            predictions[i] = check_prediction(load_prediction(path), requests[i], f"saved prediction {path}")
    return predictions


def _work(job: Job, mine: list[Item], markers: RankMarkers, progress: Progress | None) -> None:
    """Roll out and score this rank's items, skipping finished rows; each row is written atomically when done."""
    pending = [item for item in mine if not (job.config.resume and job.dirs.row(item.id).exists())]
    done = len(mine) - len(pending)
    label = f"{job.config.model} → rows"
    if progress:
        progress(label, done, len(mine))
    for batch in _batches(load_trajectories(pending), job.config.batch_size):
        markers.check_peers()
        for (item, traj), prediction in zip(batch, _predict(job, batch)):
            row = job.scorer.row(traj, prediction)
            if job.donors:
                row["donor"] = job.donors[item.id].id
            write_json_atomic(job.dirs.row(item.id), row)
        done += len(batch)
        if progress:
            progress(label, done, len(mine))


def run_job(job: Job, ctx: DistContext, progress: Progress | None = None) -> Outcome | None:
    """Run a job on this process's share of the trajectories; rank 0 merges and returns the Outcome (others None).

    Raises EvaluationError when any rank failed, on every rank, after all of them have stopped."""
    made = [d for d in (job.dirs.score, job.dirs.run, job.dirs.run.parent, Path(job.config.output_dir))
            if not d.exists()]  # deepest first: what a failed attempt may take back
    if ctx.is_main:
        write_json_atomic(job.dirs.run / "run.json", {
            "run_settings": job.run_settings, "data": str(Path(job.config.data).resolve()),
            "selection": {k: getattr(job.config, k) for k in ("split", "tasks", "ranges", "limit")},
            "label": job.config.entry, "model_describe": job.model_describe, "updated": _now(),
        })
        write_json_atomic(job.dirs.score / "score.json", job.scorer.settings())
    resumed = sum(job.config.resume and job.dirs.row(item.id).exists() for item in job.items)  # before any is written
    markers = RankMarkers(job.dirs.score / "ranks" / ctx.shared_token(), ctx.rank)
    mine = job.items[ctx.rank::ctx.world_size]  # by index modulo world size: exactly once, no resampling
    failure: BaseException | None = None
    try:
        _work(job, mine, markers, progress if ctx.is_main else None)
        markers.done()
    except PeerFailed:
        pass
    except Exception as err:  # noqa: BLE001 - recorded for the other ranks, then re-raised below
        markers.failed(err)
        failure = err
    n_failed = ctx.count_failed(failure is not None)
    if failure is None and n_failed:
        failure = EvaluationError(f"{n_failed} of {ctx.world_size} ranks failed: {'; '.join(markers.failures())}")
    if failure is not None:
        ctx.barrier()  # every rank has read the markers
        if ctx.is_main:
            _discard_failed_attempt(markers, made)
        raise failure
    if not ctx.is_main:
        return None
    shutil.rmtree(markers.folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # the ranks folder itself, unless another attempt is running
        markers.folder.parent.rmdir()
    return replace(_merge(job, ctx.world_size), resumed=resumed)


def _discard_failed_attempt(markers: RankMarkers, made: list[Path]) -> None:
    """A failed attempt leaves nothing that claims otherwise: its rank markers go (the error was reported), and so do
    the folders it made (deepest first) while they hold no finished row or prediction, which a rerun resumes from."""
    shutil.rmtree(markers.folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        markers.folder.parent.rmdir()
    for folder in made:
        if any(folder.glob("rows/*.json")) or any(folder.glob("predictions/*.npz")):
            return
        for record in ("score.json", "run.json"):
            (folder / record).unlink(missing_ok=True)
        for sub in ("ranks", "rows", "predictions", ""):
            with contextlib.suppress(OSError):  # not empty: something else is there, so it stays
                (folder / sub).rmdir()


def _merge(job: Job, world_size: int) -> Outcome:
    """Read every row back (from whichever rank wrote it), aggregate, compute FVD, and write results and samples."""
    from loopnav_bench.metrics import HIGHER_IS_BETTER, RESIZE_FILTER, aggregate, weights_status

    rows = []
    for item in job.items:
        path = job.dirs.row(item.id)
        if not path.exists():
            raise EvaluationError(f"{path}: row of trajectory {item.id!r} is missing after all ranks finished")
        rows.append(read_json(path))
    cells = aggregate(rows, job.scorer.frame_names)
    for key, cell in cells.items():  # the leaderboard shows how much context and how long a return each cell has
        members = [r for r in rows if f"{r['split']}/{r['task']}/{r['range']}" == key]
        for length in ("context_len", "target_len", "length"):
            cell[f"{length}_mean"] = float(np.mean([r[length] for r in members]))
    results_path, samples_path = results_files(Path(job.config.output_dir) / model_dirname(job.config.entry),
                                               timestamp())
    with atomic_path(samples_path) as tmp:
        tmp.write_text("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
    results = {
        "loopnav_version": __version__, **_git_info(), "date": _now(),
        "model": job.config.entry, "registered_model": job.config.model, "model_describe": job.model_describe,
        "oracle": bool(job.run_settings.get("oracle")),  # saw the target frames: never ranked
        "context_ablation": job.config.ablation.record(),
        "results": cells,
        "fvd": _fvd_per_split(job),
        "higher_is_better": {name: HIGHER_IS_BETTER[name] for name in job.scorer.status},
        "metrics": job.scorer.status,
        "weights_status": weights_status(job.scorer.status),  # only the files of the metrics this run used
        "eval_size": list(job.scorer.eval_size) if job.scorer.eval_size else "native",
        "resize_filter": RESIZE_FILTER,
        "protocol": {"version": PROTOCOL_VERSION, "schema_version": SCHEMA_VERSION,
                     "context": "frames, poses, actions [0, offset)", "given": "poses, actions [offset, T)",
                     "scored": "frames [offset, T)"},
        "config": {**asdict(job.config), "data": str(job.config.data), "output_dir": str(job.config.output_dir)},
        "seeds": {"seed": job.config.seed,
                  "per_trajectory": "models.request_seed(seed, id): sha256(f'{seed}:{id}')[:4]"},
        "data": data_identity(job.config.data),
        "n_trajectories": {"original": job.n_original, "effective": len(job.items)},
        "run_key": job.dirs.run.name, "score_key": job.dirs.score.name,
        "run_dir": str(job.dirs.run), "samples_file": samples_path.name,
        "env": _environment(job.config.device, world_size),
        "total_evaluation_time_seconds": round(time.time() - job.started, 3),
    }
    write_json_atomic(results_path, results)
    return Outcome(results_path, samples_path, results)


def _fvd_per_split(job: Job) -> dict[str, Any]:
    """FVD is set-level: one value per split from all its videos at the evaluation size, and one per (task, range)
    cell under "cells" (as LoopNav's tables report it), or null with the reason. I3D runs once per video."""
    status = job.scorer.status.get(FVD)
    if status is None:
        return {}
    mode = job.config.fvd_mode
    splits = sorted({item.meta["split"] for item in job.items})
    if job.scorer.fvd is None:
        return {s: {"value": None, "reason": status["reason"], "mode": mode} for s in splits}
    features: dict[str, tuple[np.ndarray, np.ndarray] | str] = {}
    for item, traj in load_trajectories(job.items):
        target = job.scorer.resize(traj.frames[traj.target], traj)
        predicted = job.scorer.resize(load_prediction(job.dirs.prediction(item.id)), traj)
        try:
            features[item.id] = job.scorer.fvd.features(predicted), job.scorer.fvd.features(target)
        except ValueError as err:  # a video too short for this mode: its groups are reported without a value
            features[item.id] = f"trajectory {item.id!r}: {err}"

    def fvd_of(items: list[Item]) -> dict[str, Any]:
        pairs = [features[item.id] for item in items]
        try:
            if problems := [p for p in pairs if isinstance(p, str)]:
                raise ValueError(problems[0])
            return {**job.scorer.fvd.distance([p for p, _ in pairs], [g for _, g in pairs]), "mode": mode}
        except ValueError as err:  # too few or too short videos: reported, like missing weights
            return {"value": None, "reason": str(err), "n_videos": len(items), "mode": mode}

    fvd: dict[str, Any] = {}
    for split in splits:
        members = [item for item in job.items if item.meta["split"] == split]
        cells: dict[str, list[Item]] = {}
        for item in members:
            cells.setdefault(f"{item.meta['task']}/{item.meta['range']}", []).append(item)
        fvd[split] = {**fvd_of(members), "cells": {key: fvd_of(cell) for key, cell in sorted(cells.items())}}
    return fvd


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git_info() -> dict[str, Any]:
    """The commit of the loopnav checkout this code runs from, if it runs from one."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"git_hash": None, "git_dirty": None}
    if head.returncode != 0:
        return {"git_hash": None, "git_dirty": None}
    return {"git_hash": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


def _environment(device: str, world_size: int) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(), "platform": platform.platform(), "numpy": np.__version__,
        "torch": torch.__version__, "cuda_available": cuda, "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None, "device": device,
        "device_name": (torch.cuda.get_device_name(torch.device(device)) if cuda and device.startswith("cuda")
                        else platform.processor() or platform.machine()),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "torch_threads": torch.get_num_threads(), "world_size": world_size,
    }


# ---------------------------------------------------------------------------------------------------- entry points


def _scorer(config: EvalConfig) -> Scorer:
    return Scorer(config.metrics, config.device, config.metric_batch_size, config.eval_size, config.fvd_mode,
                  config.fvd_covariance)


def evaluate(config: EvalConfig, model: WorldModel | None = None, progress: Progress | None = None) -> Outcome | None:
    """Roll `config.model` (or the given model instance) out on the selected trajectories, score, write results.

    Resumes from the rows and predictions of an earlier run with the same settings. Under torchrun every rank calls
    this; rank 0 returns the Outcome, the others None."""
    started = time.time()
    if config.batch_size < 1:
        raise EvaluationError(f"--batch-size {config.batch_size} must be at least 1")
    if (size := len(model_dirname(config.entry).encode())) > MAX_ENTRY_BYTES:
        raise EvaluationError(f"--label {config.entry[:40]}...: {size} bytes; an entry's name names its results "
                              f"folder, so at most {MAX_ENTRY_BYTES}")
    with DistContext.start() as ctx, fixed_threads():
        config = replace(config, device=ctx.device(config.device))
        items, n_original = select_trajectories(Path(config.data), config.split, config.tasks, config.ranges,
                                                config.limit)
        ablation = config.ablation
        donors = {}
        if ablation.active:  # donors come from the whole split, so a filter never changes a trajectory's donor
            pool, _ = select_trajectories(Path(config.data), config.split)
            donors = {item.id: donor_for(item, pool, config.seed) for item in items}
        if model is None:
            model = load_model(config.model, config.checkpoint, config.device, config.seed, **config.model_args)
        scorer = _scorer(config)
        run_settings = {
            "model": config.model, "model_args": model.model_args,  # as the model holds them, defaults included
            "checkpoint_sha256": checkpoint_sha256(model.checkpoint), "manifest_hash": manifest_hash(config.data),
            "protocol": PROTOCOL_VERSION, "schema_version": SCHEMA_VERSION, "seed": config.seed,
            "device_type": _device_type(config.device),  # CPU and GPU kernels differ in the last bits
        }
        if ablation.active:  # only then, so that plain runs keep the keys they had
            run_settings["context_ablation"] = ablation.settings()
        if type(model).oracle:  # an oracle's choice depends on the size it compares the targets at
            run_settings.update(oracle=True, eval_size=config.eval_size)
        run = Path(config.output_dir) / model_dirname(config.entry) / f"run-{sha256_json(run_settings)[:16]}"
        dirs = RunDirs(run, run / f"score-{sha256_json(scorer.settings())[:16]}")
        job = Job(config, items, n_original, dirs, run_settings, scorer, model, model.describe(), started, donors)
        return run_job(job, ctx, progress)


_RUN_RECORD = {"run_settings": dict, "selection": dict, "data": str, "label": str, "model_describe": dict}
_RUN_SETTINGS = {"model": str, "model_args": dict, "manifest_hash": str, "seed": int}


def _check_run_record(path: Path, record: Any) -> None:
    """What `score` reads of run.json, so that a damaged one is named instead of failing later."""
    if not isinstance(record, dict):
        raise EvaluationError(f"{path}: a JSON {type(record).__name__}, not a run record of `loopnav evaluate`")
    for where, obj, types in (("", record, _RUN_RECORD), ("run_settings.", record.get("run_settings"),
                                                           _RUN_SETTINGS)):
        for key, kind in types.items():
            if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
                raise EvaluationError(f"{path}: {where}{key} is missing or not a {kind.__name__} (damaged? run "
                                      f"`loopnav evaluate` again)")
    if not set(record["selection"]) <= {"split", "tasks", "ranges", "limit"}:
        raise EvaluationError(f"{path}: selection holds unknown keys {sorted(record['selection'])}")


def score(predictions: Path, data: Path | None = None, output_dir: Path | None = None,
          metrics: list[str] | None = None, eval_size: tuple[int, int] | None = None, fvd_mode: str = "default",
          fvd_covariance: str = "population", device: str = DEFAULT_DEVICE, metric_batch_size: int = 32,
          resume: bool = False,
          progress: Progress | None = None) -> Outcome | None:
    """Re-score the saved predictions of an earlier `evaluate` run (its run folder or its predictions folder)
    without the model. The data must be the same prepared set (checked by manifest hash)."""
    started = time.time()
    run = Path(predictions)
    run = run.parent if run.name == PREDICTIONS else run
    if not (run / "run.json").exists():
        raise EvaluationError(f"{run}: no run.json; pass a run folder written by `loopnav evaluate` "
                              f"(<output-dir>/<model>/run-<key>)")
    record = read_json(run / "run.json")
    _check_run_record(run / "run.json", record)
    settings, selection = record["run_settings"], record["selection"]
    data = Path(data or record["data"])
    if (found := manifest_hash(data)) != settings["manifest_hash"]:
        raise EvaluationError(f"{data / MANIFEST}: manifest hash {found[:12]}… differs from the one the predictions in "
                              f"{run} were made from ({settings['manifest_hash'][:12]}…); pass --data with that set")
    ablation = ContextAblation(**settings.get("context_ablation", {}))
    if settings.get("oracle") and eval_size != (recorded := settings["eval_size"] and tuple(settings["eval_size"])):
        raise EvaluationError(f"{run}: an oracle's predictions were chosen at eval size {recorded or 'native'}; "
                              f"score them at that size, or evaluate again at the new one")
    with DistContext.start() as ctx, fixed_threads():
        config = EvalConfig(data=data, output_dir=Path(output_dir) if output_dir else run.parent.parent,
                            model=settings["model"], model_args=settings["model_args"], seed=settings["seed"],
                            label=record["label"].removesuffix(ablation.suffix), context_ablation=ablation.kind,
                            keep_recent=ablation.keep_recent,
                            metrics=metrics, eval_size=eval_size, device=ctx.device(device),
                            metric_batch_size=metric_batch_size, fvd_mode=fvd_mode, fvd_covariance=fvd_covariance,
                            resume=resume, **selection)
        items, n_original = select_trajectories(data, config.split, config.tasks, config.ranges, config.limit)
        scorer = _scorer(config)
        dirs = RunDirs(run, run / f"score-{sha256_json(scorer.settings())[:16]}")
        job = Job(config, items, n_original, dirs, settings, scorer, None, record["model_describe"], started)
        return run_job(job, ctx, progress)
