"""The results contract: what `loopnav evaluate` writes and `leaderboard` (tables, plots, Hub push) reads.

One owner for the names both sides must agree on: the results and samples file names, the keys of a results file and
of a per-trajectory row, the folder a model's results go in, and the identity of a prepared data set (also recorded
in every training checkpoint).

    <out>/<model_dirname(entry)>/results_<ts>.json   aggregates, FVD, config, seeds, data identity, environment
    <out>/<model_dirname(entry)>/samples_<ts>.jsonl  one ROW_KEYS row per trajectory, with per-frame metric series
    <out>/<model_dirname(entry)>/<run_key>/predictions/<id>.npz   the predicted frames (and reported memories)
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loopnav_bench.fileio import resolve_within
from loopnav_bench.shards import load_manifest, manifest_hash

RESULTS_PREFIX, SAMPLES_PREFIX = "results_", "samples_"
PREDICTIONS = "predictions"
# the keys of a results file the leaderboard relies on (dotted: nested)
RESULTS_KEYS = ("model", "data.manifest_hash", "n_trajectories", "eval_size", "higher_is_better", "metrics", "results")
ROW_KEYS = ("id", "split", "task", "range", "length", "context_len", "target_len", "metrics")
_UNSAFE = re.compile(r'[/\\:"<>|?*\[\]\s]')  # lm-eval's model-name rule, plus whitespace


def timestamp() -> str:
    """UTC, ISO 8601 with ':' replaced by '-' (file-name safe): string order is time order."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%f")


def results_files(folder: Path, stamp: str) -> tuple[Path, Path]:
    """The (results, samples) pair of one run."""
    return folder / f"{RESULTS_PREFIX}{stamp}.json", folder / f"{SAMPLES_PREFIX}{stamp}.jsonl"


def prediction_file(run_dir: Path, trajectory_id: str) -> Path:
    """Where a run saves one trajectory's prediction: <run_dir>/predictions/<id>.npz (the run folder sits beside the
    results file and is named by its `run_key`)."""
    return resolve_within(Path(run_dir) / PREDICTIONS, f"{trajectory_id}.npz", "trajectory id")


MAX_ENTRY_BYTES = 200  # an entry's folder name, with room for a suffix under common file systems' 255-byte limit


def model_dirname(name: str) -> str:
    """The folder of a leaderboard entry, locally and on the Hub: characters that paths or shells mind become '__',
    and leading or trailing dots go, so no name can climb out of the results folder."""
    return _UNSAFE.sub("__", name).strip(".") or "model"


def data_identity(data: str | Path, split: str | None = None) -> dict[str, Any]:
    """What identifies a prepared set (and the split used, for a checkpoint): results and checkpoints record it;
    `manifest_hash` is what must match."""
    manifest = load_manifest(data)
    identity = {"path": str(Path(data).resolve()), "manifest_hash": manifest_hash(data), "source": manifest["source"],
                "source_settings": manifest["settings"], "schema_version": manifest["schema_version"],
                "prepared": manifest["created"]}
    return identity if split is None else {**identity, "split": split}
