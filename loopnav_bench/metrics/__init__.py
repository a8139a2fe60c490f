"""Metrics for LoopNav evaluation: SSIM, PSNR, LPIPS, DreamSim per frame; FVD per set; aggregation; weights.
Every metric is one spec in `specs.METRICS` (loader, direction, default weights variant, display cap).

Pretrained weights are never downloaded here. They are located and sha256-checked by `weights` (see
`loopnav weights check`); a metric whose files are missing or unverified raises MetricUnavailable with the reason.
"""

from importlib import import_module
from typing import Any

from loopnav_bench.metrics.aggregate import aggregate, cap_values, trajectory_mean
from loopnav_bench.metrics.specs import FRAME_METRICS, HIGHER_IS_BETTER, METRICS, PSNR_CAP, SET_METRICS, MetricSpec
from loopnav_bench.metrics.weights import MetricUnavailable, weights_status

# What computes on frames needs torch: imported on first use, so that reading results (the leaderboard, the paper,
# the report) never pays for it.
_LAZY = {"FrameMetric": "frame", "load_frame_metric": "frame",
         "FVD": "fvd", "FVD_MODES": "fvd", "frechet_distance": "fvd",
         "RESIZE_FILTER": "pixel", "psnr": "pixel", "resize_frames": "pixel", "ssim": "pixel"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["FRAME_METRICS", "FVD", "FVD_MODES", "HIGHER_IS_BETTER", "METRICS", "MetricSpec", "PSNR_CAP",
           "SET_METRICS", "RESIZE_FILTER", "FrameMetric",
           "MetricUnavailable", "aggregate", "cap_values", "frechet_distance", "load_frame_metric", "psnr",
           "resize_frames", "ssim", "trajectory_mean", "weights_status"]
