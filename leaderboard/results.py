"""Load `loopnav evaluate` outputs and group them into sets whose numbers may be compared.

An evaluation writes `results_<ts>.json` (aggregates and reproducibility metadata) beside `samples_<ts>.jsonl`
(one row per trajectory with per-frame metrics), possibly nested as `<out>/<model>/<run-key>/`. Two results are only
ranked together when they share the data manifest, the evaluation size and the split: a `GroupKey`. Within a group
the newest run of each model (by the `<ts>` in its file name) is used; older ones are kept as `superseded`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from loopnav_bench.contract import RESULTS_KEYS, RESULTS_PREFIX, ROW_KEYS, results_files
from loopnav_bench.fileio import read_json

POOLED = (None, "all", "*")  # task/range values of pooled aggregate cells, which the per-cell table skips


class ResultsError(ValueError):
    """A results or samples file is missing, malformed, or inconsistent with its partner."""


@dataclass(frozen=True)
class GroupKey:
    """What must match for two results to be ranked together."""

    split: str
    manifest_hash: str
    eval_size: tuple[int, int] | None  # None: each model's native resolution

    @property
    def size_text(self) -> str:
        return "native resolution" if self.eval_size is None else f"{self.eval_size[0]}x{self.eval_size[1]}"

    @property
    def title(self) -> str:
        return f"split {self.split} · manifest {self.manifest_hash[:12]} · eval size {self.size_text}"

    @property
    def slug(self) -> str:
        """A file-name-safe label, for one plot folder per group."""
        size = "native" if self.eval_size is None else f"{self.eval_size[0]}x{self.eval_size[1]}"
        return f"{self.split}-{self.manifest_hash[:12]}-{size}"


@dataclass(eq=False)  # identity semantics: a run is hashable and equal only to itself
class Run:
    """One evaluation: a results file and its samples file (same timestamp)."""

    results_path: Path
    samples_path: Path
    results: dict[str, Any]

    @property
    def timestamp(self) -> str:
        return self.results_path.stem[len(RESULTS_PREFIX):]

    @property
    def model(self) -> str:
        return self.results["model"]

    @property
    def oracle(self) -> bool:
        """The entry saw the target frames (`loopnav evaluate --model oracle-copy`): a reference, never ranked."""
        return bool(self.results.get("oracle"))

    @property
    def n_trajectories(self) -> dict[str, int]:
        return self.results["n_trajectories"]

    @property
    def complete(self) -> bool:
        counts = self.n_trajectories
        return counts["effective"] >= counts["original"]

    @property
    def eval_size(self) -> tuple[int, int] | None:
        size = self.results["eval_size"]
        return None if size == "native" else (int(size[0]), int(size[1]))

    @property
    def cells(self) -> list[dict[str, Any]]:
        """The per (split, task, range) aggregate cells, without pooled ones."""
        return [c for c in self.results["results"].values()
                if c.get("split") not in POOLED and c.get("task") not in POOLED and c.get("range") not in POOLED]

    @property
    def splits(self) -> list[str]:
        return sorted({cell["split"] for cell in self.cells})

    def higher_is_better(self, metric: str) -> bool | None:
        return self.results["higher_is_better"].get(metric)

    def key(self, split: str) -> GroupKey:
        return GroupKey(split, self.results["data"]["manifest_hash"], self.eval_size)

    def metric_info(self, metric: str) -> dict[str, Any]:
        """`{"available", "reason", "verified", "info"}` for one metric, or {} if never computed."""
        return self.results["metrics"].get(metric) or {}

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """The per-trajectory rows, read (and checked) on first use."""
        return read_samples(self.samples_path)

    def cell_rows(self, split: str, task: str, range_: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["split"] == split and r["task"] == task and str(r["range"]) == range_]


@dataclass
class Group:
    key: GroupKey
    runs: list[Run]                                       # newest run per model, sorted by model name
    superseded: list[Run] = field(default_factory=list)   # older runs of the same model in this group


def range_order(value: str) -> tuple:
    """Sort key putting numeric navigation ranges in numeric order ("5" < "15" < "30")."""
    return (0, float(value), "") if value.replace(".", "", 1).isdigit() else (1, 0.0, value)


def _lookup(obj: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(dotted)
        obj = obj[part]
    return obj


def load_run(results_path: Path) -> Run:
    """Read one results file, check the keys the leaderboard relies on, and find its samples file."""
    results = read_json(results_path)
    if not isinstance(results, dict):
        raise ResultsError(f"{results_path}: expected a JSON object, got {type(results).__name__}")
    for dotted in RESULTS_KEYS:
        try:
            _lookup(results, dotted)
        except KeyError:
            raise ResultsError(f"{results_path}: missing key {dotted!r} "
                               "(not a `loopnav evaluate` results file?)") from None
    _check_types(results_path, results)
    for name, cell in results["results"].items():
        if not isinstance(cell, dict) or not {"split", "task", "range"} <= cell.keys():
            raise ResultsError(f"{results_path}: results[{name!r}] lacks split/task/range")
    _, samples_path = results_files(results_path.parent, results_path.stem[len(RESULTS_PREFIX):])
    if not samples_path.is_file():
        raise ResultsError(f"{results_path}: its per-trajectory rows {samples_path.name} are missing")
    run = Run(results_path, samples_path, results)
    run.rows  # read and checked now, so that a bad samples file skips its run instead of failing the whole board
    return run


_TYPES = {"model": str, "n_trajectories": dict, "higher_is_better": dict, "metrics": dict, "results": dict}


def _check_types(path: Path, results: dict[str, Any]) -> None:
    """The types of what the leaderboard reads, so that an edited file is named instead of failing later."""
    for key, kind in _TYPES.items():
        if not isinstance(results[key], kind):
            raise ResultsError(f"{path}: {key!r} is a {type(results[key]).__name__}, not a {kind.__name__}")
    if not all(isinstance(results["n_trajectories"].get(k), int) for k in ("original", "effective")):
        raise ResultsError(f"{path}: 'n_trajectories' needs whole numbers 'original' and 'effective'")
    size = results["eval_size"]
    if size != "native" and not (isinstance(size, list) and len(size) == 2 and all(type(v) is int for v in size)):
        raise ResultsError(f"{path}: 'eval_size' is {size!r}, not \"native\" nor [height, width]")
    if not isinstance(results["data"]["manifest_hash"], str):
        raise ResultsError(f"{path}: 'data.manifest_hash' is not a string")


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Read a samples JSONL file; every row must carry the keys the table and plots use."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file") from None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ResultsError(f"{path}:{line_no}: not valid JSON ({err})") from None
        if not isinstance(row, dict):
            raise ResultsError(f"{path}:{line_no}: a JSON {type(row).__name__}, not a row")
        if missing := [k for k in ROW_KEYS if k not in row]:
            raise ResultsError(f"{path}:{line_no}: row lacks {', '.join(missing)}")
        if not isinstance(row["metrics"], dict):
            raise ResultsError(f"{path}:{line_no}: 'metrics' is not an object")
        for name, series in row["metrics"].items():
            if series is not None and not (isinstance(series, list) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) for v in series)):
                # (an infinite PSNR is an identical frame, which the board caps as evaluate does)
                raise ResultsError(f"{path}:{line_no}: metric {name!r} is not a list of numbers (or holds NaN)")
        rows.append(row)
    return rows


def load_runs(directory: Path, skip: Callable[[str], None] | None = None) -> list[Run]:
    """Every run under `directory` (searched recursively), oldest first.

    A results file that does not load raises ResultsError, or, given `skip`, is passed over: `skip(message)` gets
    the message naming it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ResultsError(f"{directory}: no such directory")
    paths = sorted(directory.rglob(f"{RESULTS_PREFIX}*.json"))
    if not paths:
        raise ResultsError(f"{directory}: no {RESULTS_PREFIX}<ts>.json files found (run `loopnav evaluate` first)")
    runs = []
    for path in paths:
        try:
            runs.append(load_run(path))
        except ValueError as err:  # ResultsError, or read_json's "not valid JSON"
            if skip is None:
                raise
            skip(str(err))
    if not runs:
        raise ResultsError(f"{directory}: none of its {len(paths)} results files loads")
    return sorted(runs, key=lambda run: (run.timestamp, str(run.results_path)))


def group_runs(runs: list[Run]) -> list[Group]:
    """Split runs into comparable groups; keep the newest run per model in each group.

    Timestamps are ISO 8601 with ':' replaced by '-', so string order is time order.
    """
    by_key: dict[GroupKey, dict[str, list[Run]]] = {}
    for run in runs:
        for split in run.splits:
            by_key.setdefault(run.key(split), {}).setdefault(run.model, []).append(run)
    groups = []
    for key in sorted(by_key, key=lambda k: (k.split, k.manifest_hash, k.eval_size or (0, 0))):
        newest, older = [], []
        for model in sorted(by_key[key]):
            ordered = sorted(by_key[key][model], key=lambda run: run.timestamp)
            newest.append(ordered[-1])
            older.extend(ordered[:-1])
        groups.append(Group(key, newest, older))
    return groups
