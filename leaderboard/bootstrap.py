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


def mean_ci(values: np.ndarray, spec: BootstrapSpec = BootstrapSpec()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and percentile-bootstrap interval over axis 0 of `values` ([n] or [n, L]); returns (mean, low, high)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 0:
        raise ValueError("cannot bootstrap an empty set of trajectories")
    rng = np.random.default_rng(spec.seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=spec.resamples).astype(np.float64)
    means = counts @ values.reshape(n, -1) / n
    tail = (1.0 - spec.confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    shape = values.shape[1:]
    return values.mean(axis=0), low.reshape(shape), high.reshape(shape)
