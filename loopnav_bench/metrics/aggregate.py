"""Aggregate per-frame metric values into per-(split, task, range) means, LoopNav style.

Each trajectory's frames are averaged first, then trajectories are averaged with equal weight (LoopNav's
calcmetric.py: per frame -> mean per trajectory -> mean over trajectories). `std` is the sample standard deviation
(ddof=1) of the per-trajectory means and `stderr` = std / sqrt(n); both are 0 for a single trajectory.

PSNR is +inf for a frame identical to its target. Such frames are capped at its spec's cap (PSNR_CAP = 100 dB), the
value LoopNav's metric code (JunyaoHu/common_metrics_on_video_quality) returns for MSE < 1e-10: `cap_values` does it
when per-frame rows are written (so rows stay strict JSON), `trajectory_mean` again for rows from elsewhere, and the
number of frames at the cap is reported as `n_capped`. Any other non-finite value is an error.
"""

from __future__ import annotations

import math

import numpy as np

from loopnav_bench.metrics.specs import METRICS

CAPS = {name: spec.cap for name, spec in METRICS.items() if spec.cap is not None}


def cap_values(name: str, values: np.ndarray) -> np.ndarray:
    """Per-frame values with the metric's cap applied (+inf PSNR -> PSNR_CAP); other metrics unchanged."""
    values = np.asarray(values, np.float64)
    return np.minimum(values, CAPS[name]) if name in CAPS else values


def trajectory_mean(row: dict, name: str) -> tuple[float, int] | None:
    """A trajectory's mean over frames of one metric, and how many of its frames sit at the metric's cap."""
    values = row["metrics"].get(name)
    if values is None:
        return None
    values = cap_values(name, np.asarray(values, np.float64).reshape(-1))
    if len(values) == 0:
        raise ValueError(f"trajectory {row['id']}: metric {name!r} has no frames")
    capped = int((values >= CAPS[name]).sum()) if name in CAPS else 0
    if not np.isfinite(values).all():
        raise ValueError(f"trajectory {row['id']}: metric {name!r} has non-finite values")
    return float(values.mean()), capped


def _summary(means: list[float], capped: int, name: str) -> dict:
    n = len(means)
    std = float(np.std(means, ddof=1)) if n > 1 else 0.0
    summary = {"mean": float(np.mean(means)), "std": std, "stderr": std / math.sqrt(n), "n": n}
    if name in CAPS:
        summary["n_capped"] = capped
    return summary


def aggregate(rows: list[dict], metrics: list[str]) -> dict:
    """rows: {"id", "split", "task", "range", "metrics": {name: per-frame floats or None}} (one per trajectory).

    Returns {"<split>/<task>/<range>": {"split", "task", "range", "n", name: {"mean","std","stderr","n"} or None}}.
    A metric is None for a cell when no trajectory of it has values (the metric was unavailable); otherwise `n`
    counts the trajectories that have values.
    """
    cells: dict[str, list[dict]] = {}
    for row in rows:
        cells.setdefault(f"{row['split']}/{row['task']}/{row['range']}", []).append(row)
    out = {}
    for key, members in cells.items():
        first = members[0]
        cell = {"split": first["split"], "task": first["task"], "range": first["range"], "n": len(members)}
        for name in metrics:
            found = [m for m in (trajectory_mean(row, name) for row in members) if m is not None]
            cell[name] = _summary([m for m, _ in found], sum(c for _, c in found), name) if found else None
        out[key] = cell
    return out
