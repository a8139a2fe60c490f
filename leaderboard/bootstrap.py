"""Percentile-bootstrap confidence intervals over trajectories, vectorised with numpy.

Trajectories are the unit of resampling (frames of one trajectory are not independent). A resample is drawn as a
vector of multinomial counts over the n trajectories, so the B resampled means of every column at once are one
matrix product `counts @ values / n` instead of B fancy-indexed copies; memory stays O(B * n + B * L).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BootstrapSpec:
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0  # the same seed for every cell, so each interval is reproducible on its own

    def describe(self) -> dict:
        return {"method": "percentile bootstrap over trajectories", **asdict(self)}

    def text(self) -> str:
        return (f"{self.confidence:.0%} CI: percentile bootstrap over trajectories "
                f"({self.resamples} resamples, seed {self.seed})")


def resample_counts(n: int, spec: BootstrapSpec) -> np.ndarray:
    """[resamples, n]: how often each of the n trajectories is drawn in each resample (seeded by spec.seed)."""
    rng = np.random.default_rng(spec.seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=spec.resamples).astype(np.float64)


def percentile_interval(resampled: np.ndarray, spec: BootstrapSpec) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) percentiles of resampled statistics [resamples, ...] at the spec's confidence; NaN resamples
    (a ratio whose resample drew no frame) are left out."""
    tail = (1.0 - spec.confidence) / 2 * 100
    low, high = np.nanpercentile(resampled, [tail, 100 - tail], axis=0)
    return low, high


def mean_ci(values: np.ndarray, spec: BootstrapSpec = BootstrapSpec()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and percentile-bootstrap interval over axis 0 of `values` ([n] or [n, L]); returns (mean, low, high)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 0:
        raise ValueError("cannot bootstrap an empty set of trajectories")
    means = resample_counts(n, spec) @ values.reshape(n, -1) / n
    low, high = percentile_interval(means, spec)
    shape = values.shape[1:]
    return values.mean(axis=0), low.reshape(shape), high.reshape(shape)
