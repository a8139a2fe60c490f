"""Metrics for LoopNav evaluation: SSIM, PSNR, LPIPS, DreamSim per frame; FVD per set; aggregation; weights.
Every metric is one spec in `specs.METRICS` (loader, direction, default weights variant, display cap).

Pretrained weights are never downloaded here. They are located and sha256-checked by `weights` (see
`loopnav weights check`); a metric whose files are missing or unverified raises MetricUnavailable with the reason.
"""

from loopnav_bench.metrics.aggregate import aggregate, cap_values, trajectory_mean
from loopnav_bench.metrics.frame import FrameMetric, load_frame_metric
from loopnav_bench.metrics.fvd import FVD, FVD_MODES, frechet_distance
from loopnav_bench.metrics.pixel import RESIZE_FILTER, psnr, resize_frames, ssim
from loopnav_bench.metrics.specs import FRAME_METRICS, HIGHER_IS_BETTER, METRICS, PSNR_CAP, SET_METRICS, MetricSpec
from loopnav_bench.metrics.weights import MetricUnavailable, weights_status

__all__ = ["FRAME_METRICS", "FVD", "FVD_MODES", "HIGHER_IS_BETTER", "METRICS", "MetricSpec", "PSNR_CAP",
           "SET_METRICS", "RESIZE_FILTER", "FrameMetric",
           "MetricUnavailable", "aggregate", "cap_values", "frechet_distance", "load_frame_metric", "psnr",
           "resize_frames", "ssim", "trajectory_mean", "weights_status"]
