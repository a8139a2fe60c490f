"""Does an entry use its memory? Two leaderboard sections that answer it for any model.

Memory reliance: for every entry X whose twin `X+swap` (`loopnav evaluate --context-ablation swap`) is in the same
group, the paired difference X − X+swap per task and range and pooled per task (`paired.compare_runs`: matched
trajectories, bootstrap 95% CI, sign-flip p, Holm over the rows of that entry). A model that never looks further back
than the swap's K frames shows exactly 0; one that recalls older frames loses what it recalled, so its difference is
positive for a higher-is-better metric.

Revisit curve: the revisit score of a target frame is the PSNR of the oracle-copy entry on it, i.e. how well the
context already shows this view. Target frames of one task are binned by that score (REVISIT_BINS bins at its
quantiles, pooled over ranges); per bin, each entry's mean PSNR over the frames in it and its paired difference to a
reference entry, with percentile-bootstrap bands that resample trajectories (a trajectory's frames stay together;
a bin's value is the ratio of resampled sums over resampled frame counts). A model that uses its memory rises with the
revisit score; one that does not stays flat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leaderboard.bootstrap import BootstrapSpec, percentile_interval, resample_counts
from leaderboard.paired import Comparison, PairedSpec, compare_runs, comparison_records, headers, paired_columns
from leaderboard.results import Group, ResultsError, Run
from loopnav_bench.ablation import ContextAblation
from loopnav_bench.metrics import cap_values

SWAP = ContextAblation("swap").suffix  # the twin of entry X is X + SWAP
REVISIT_METRIC = "psnr"
REVISIT_BINS = 5


def swap_twins(group: Group) -> list[tuple[Run, Run]]:
    """(X, X+swap) for every entry of the group that has its swap twin there."""
    runs = {run.model: run for run in group.runs}
    return [(run, runs[run.model + SWAP]) for run in group.runs if run.model + SWAP in runs]


def memory_reliance(group: Group, metrics: list[str], spec: PairedSpec = PairedSpec()) -> tuple[list[Comparison],
                                                                                                   list[str]]:
    """The X − X+swap comparisons of the group, and a note for each twin that cannot be paired (and why)."""
    comparisons, notes = [], []
    for run, twin in swap_twins(group):
        shared = [m for m in metrics if all(r.metric_info(m).get("available") is not False for r in (run, twin))]
        try:
            comparisons.append(Comparison(group.key, run, twin, compare_runs(run, twin, group.key.split, shared, spec),
                                          spec))
        except ResultsError as err:
            notes.append(f"memory reliance of {run.model} not shown: {err}")
    return comparisons, notes


def keep_recent(comparison: Comparison) -> Any:
    return (comparison.b.results.get("context_ablation") or {}).get("keep_recent", "?")


def reliance_title(comparison: Comparison) -> str:
    return (f"{comparison.a.model} − {comparison.b.model} "
            f"(context frames older than the last {keep_recent(comparison)} swapped)")


# ---- revisit curve ---------------------------------------------------------------------------------------------

@dataclass
class Band:
    mean: list[float | None]
    low: list[float | None]
    high: list[float | None]


@dataclass
class RevisitCurve:
    """One task's target frames binned by revisit score: per entry, its PSNR and its difference to the reference."""

    task: str
    oracle: str
    reference: str | None
    edges: list[float]
    frames: list[int]          # target frames per bin
    trajectories: list[int]    # trajectories with at least one frame in the bin
    psnr: dict[str, Band] = field(default_factory=dict)
    difference: dict[str, Band] = field(default_factory=dict)  # entry − reference

    def record(self) -> dict[str, Any]:
        return {"task": self.task, "oracle": self.oracle, "reference": self.reference, "metric": REVISIT_METRIC,
                "bin_edges": self.edges, "frames": self.frames, "trajectories": self.trajectories,
                "psnr": {k: vars(v) for k, v in self.psnr.items()},
                "difference_to_reference": {k: vars(v) for k, v in self.difference.items()}}


def default_reference(group: Group) -> str | None:
    """The first `base`-like entry (neither oracle nor ablated), else copy-last, else none."""
    plain = [run.model for run in group.runs if not run.oracle and not run.model.endswith(SWAP)]
    return next((m for m in plain if "base" in m), "copy-last" if "copy-last" in plain else None)


def _series(run: Run, split: str, task: str) -> dict[str, np.ndarray]:
    return {r["id"]: cap_values(REVISIT_METRIC, np.asarray(r["metrics"][REVISIT_METRIC], np.float64))
            for r in run.rows if r["split"] == split and r["task"] == task and r["metrics"].get(REVISIT_METRIC)}


def _binned(values: dict[str, np.ndarray], bins: dict[str, np.ndarray], ids: list[str], n_bins: int,
            spec: BootstrapSpec) -> Band:
    """Per bin: mean of the values of its frames, and the bootstrap interval resampling trajectories."""
    sums, counts = np.zeros((len(ids), n_bins)), np.zeros((len(ids), n_bins))
    for i, key in enumerate(ids):
        np.add.at(sums[i], bins[key], values[key])
        np.add.at(counts[i], bins[key], 1)
    weights = resample_counts(len(ids), spec)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums.sum(0) / counts.sum(0)
        resampled = (weights @ sums) / (weights @ counts)
    low, high = percentile_interval(resampled, spec)

    def clean(x: np.ndarray) -> list[float | None]:
        return [None if not np.isfinite(v) else float(v) for v in x]

    return Band(clean(mean), clean(low), clean(high))


def revisit_curves(group: Group, reference: str | None = None,
                   spec: BootstrapSpec = BootstrapSpec()) -> tuple[list[RevisitCurve], list[str]]:
    """One curve per task, when the group has an oracle-copy run with PSNR; notes say what was left out and why."""
    oracle = next((run for run in group.runs if run.oracle and not run.model.endswith(SWAP)), None)
    if oracle is None:
        return [], ["revisit curve: no oracle entry in this group (`loopnav evaluate --model oracle-copy`)"]
    names = [run.model for run in group.runs]
    if reference is not None and reference not in names:
        raise ResultsError(f"--reference {reference!r}: no such entry in {group.key.title}; it has {', '.join(names)}")
    reference = reference or default_reference(group)
    split, notes, curves = group.key.split, [], []
    for task in sorted({r["task"] for r in oracle.rows if r["split"] == split}):
        scores = _series(oracle, split, task)
        if not scores:
            continue
        ids = sorted(scores)
        edges = np.unique(np.quantile(np.concatenate([scores[k] for k in ids]), np.linspace(0, 1, REVISIT_BINS + 1)))
        n_bins = max(len(edges) - 1, 1)
        bins = {k: np.clip(np.searchsorted(edges, scores[k], side="right") - 1, 0, n_bins - 1) for k in ids}
        stacked = np.concatenate([bins[k] for k in ids])
        curve = RevisitCurve(task, oracle.model, reference, [float(e) for e in edges],
                             np.bincount(stacked, minlength=n_bins).tolist(),
                             [int(sum(np.any(bins[k] == b) for k in ids)) for b in range(n_bins)])
        series = {run.model: _series(run, split, task) for run in group.runs if not run.oracle}
        for model, values in series.items():
            if sorted(values) != ids or any(len(values[k]) != len(scores[k]) for k in ids):
                notes.append(f"revisit curve {task}: {model} left out, its trajectories differ from {oracle.model}'s")
                continue
            curve.psnr[model] = _binned(values, bins, ids, n_bins, spec)
            if reference in series and model != reference and sorted(series[reference]) == ids:
                difference = {k: values[k] - series[reference][k] for k in ids}
                curve.difference[model] = _binned(difference, bins, ids, n_bins, spec)
        curves.append(curve)
    return curves, notes


# ---- rendering (the leaderboard's formats call these) ----------------------------------------------------------

def reliance_markdown(comparisons: list[Comparison]) -> list[str]:
    from leaderboard.table import md_row

    lines = []
    for c in comparisons:
        lines += ["", f"Memory reliance · {reliance_title(c)}:", "",
                  md_row(headers(c.a.model, c.b.model)),
                  md_row([":---", ":---", "---:", *("---:" for _ in range(6)), ":---"])]
        lines += [md_row(paired_columns(r, c.spec.alpha, c.a.model, c.b.model)) for r in c.rows]
    if comparisons:
        lines += ["", f"*Memory reliance: {comparisons[0].spec.text()}.*"]
    return lines


def reliance_rich(comparisons: list[Comparison]) -> list[Any]:
    from leaderboard.paired import render_comparison_rich

    return [render_comparison_rich([c], title=f"Memory reliance · {reliance_title(c)}") for c in comparisons]


def reliance_records(comparisons: list[Comparison]) -> list[dict[str, Any]]:
    records = comparison_records(comparisons)["comparisons"]
    return [{"entry": c.a.model, "swapped": c.b.model, "keep_recent": keep_recent(c), **record}
            for c, record in zip(comparisons, records)]
