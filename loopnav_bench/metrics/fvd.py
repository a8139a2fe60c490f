"""Fréchet Video Distance with the StyleGAN-V TorchScript I3D (Kinetics-400), in two documented modes.

Preprocessing (JunyaoHu/common_metrics_on_video_quality: fvd/styleganv/fvd.py `preprocess_single`, the path LoopNav's
calcmetric.py calls): frames scaled to [0, 1], the shorter side resized to exactly 224 and the longer one to
ceil(long * 224 / short) (bilinear, align_corners=False, no antialias; 640x360 -> 399x224), centre crop 224x224,
mapped to [-1, 1], laid out [B, 3, T, 224, 224], and passed as `detector(x, rescale=False, resize=False,
return_features=True)`, which returns one 400-d feature row per clip.

Modes:
- "default": distributional FVD. Each video is cut into non-overlapping `clip_len`-frame windows from its first frame
  (the tail that does not fill a window is dropped; a video shorter than `clip_len` contributes no clip and is counted
  in `n_videos_too_short`). FD between the two sets of clip features.
- "loopnav-v1": the FVD of LoopNav's calcmetric.py. The whole clip is one I3D input (>= 10 frames) and videos go in
  one at a time, so the covariance term vanishes: per trajectory ||f(pred) - f(gt)||^2, then the mean over the
  trajectories of a (task, range) cell. Not a distributional FVD. It matches that script's FVD on the same frames; which
  frames the script compares is a separate matter (README, "LoopNav's metric script").

Covariance (default mode): "population" (ddof=0) as StyleGAN-V's FeatureStats, or "sample" (ddof=1) as np.cov in
common_metrics_on_video_quality's `compute_stats`. They differ by a factor N/(N-1) on the trace terms.

The detector is TorchScript: torch.jit.load runs code from the file, so it is only loaded after the weights registry
checked it (no upstream sha256 is established, so that takes LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS=1; see weights.py).
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from loopnav_bench.console import ProgressFn
from loopnav_bench.metrics import weights
from loopnav_bench.metrics.weights import MetricUnavailable

FVD_MODES = ("default", "loopnav-v1")
COVARIANCES = {"population": 0, "sample": 1}  # name -> ddof
I3D_SIZE = 224
FEATURE_DIM = 400
LOOPNAV_MIN_FRAMES = 10  # the I3D's temporal pooling needs at least this many frames (LoopNav's own check)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) for two Gaussians; the imaginary round-off of sqrtm is dropped."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape} {mu2.shape}, "
                         f"sigma {sigma1.shape} {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products (few clips, constant videos) are expected; the result is fine
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # near-singular: nudge the diagonals, as pytorch-fid does
        offset = np.eye(len(mu1)) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean.real))


def feature_stats(features: np.ndarray, covariance: str = "population") -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of feature rows [N, D]: "population" (ddof=0, StyleGAN-V) or "sample" (ddof=1, np.cov)."""
    features = np.asarray(features, np.float64)
    mu = features.mean(axis=0)
    centred = features - mu
    return mu, centred.T @ centred / (len(features) - COVARIANCES[covariance])


def _check_video(video: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(video)) if isinstance(video, np.ndarray) else video
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3:
        shape = list(getattr(video, "shape", []))
        raise ValueError(f"FVD: expected a uint8 video [T, H, W, 3], "
                         f"got {getattr(video, 'dtype', type(video))} {shape}")
    return tensor


class FVD:
    """I3D features and Fréchet distance; `mode` is "default" (distributional) or "loopnav-v1" (see module doc)."""

    def __init__(self, mode: str = "default", device: str = "cpu", clip_len: int = 16, batch_size: int = 4,
                 covariance: str = "population"):
        if mode not in FVD_MODES:
            raise ValueError(f"unknown FVD mode {mode!r}; choose from {', '.join(FVD_MODES)}")
        if covariance not in COVARIANCES:
            raise ValueError(f"unknown FVD covariance {covariance!r}; choose from {', '.join(COVARIANCES)}")
        if clip_len < LOOPNAV_MIN_FRAMES:
            raise ValueError(f"clip_len must be >= {LOOPNAV_MIN_FRAMES} (I3D temporal pooling), got {clip_len}")
        self.mode, self.device, self.clip_len, self.batch_size = mode, device, clip_len, batch_size
        self.covariance = covariance if mode == "default" else None  # loopnav-v1 has no covariance term
        files, info = weights.require("fvd")
        path = files["fvd/i3d"]
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; this file format is the upstream one
                warnings.simplefilter("ignore", DeprecationWarning)
                self.detector = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as err:
            raise MetricUnavailable(f"fvd: {path} is not a loadable TorchScript I3D ({err})",
                                    "weights-invalid") from None
        windowing = (f"non-overlapping {clip_len}-frame windows from frame 0; partial tail dropped; videos shorter "
                     f"than {clip_len} frames give no clip" if mode == "default" else
                     f"whole clip as one input (>= {LOOPNAV_MIN_FRAMES} frames), batch 1, mean term only, averaged "
                     f"over trajectories")
        self.info = {**info, "mode": mode, "clip_len": clip_len if mode == "default" else None,
                     "detector": "StyleGAN-V i3d_torchscript.pt (Kinetics-400 I3D), rescale=False, resize=False, "
                                 "return_features=True",
                     "preprocess": f"shorter side bilinear to {I3D_SIZE}, longer side to ceil(long * {I3D_SIZE} / "
                                   f"short), centre crop {I3D_SIZE}x{I3D_SIZE}, [-1, 1]",
                     "covariance": self.covariance and f"{self.covariance} (ddof={COVARIANCES[self.covariance]})",
                     "windowing": windowing}

    def _prepare(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> float [3, T, 224, 224] in [-1, 1]."""
        frames = video.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        height, width = frames.shape[-2:]
        scale = I3D_SIZE / min(height, width)
        # the short side is exactly 224 and the long side rounds up, as preprocess_single does (round gave 398 for 640)
        size = (I3D_SIZE, math.ceil(width * scale)) if height < width else (math.ceil(height * scale), I3D_SIZE)
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
        top, left = (size[0] - I3D_SIZE) // 2, (size[1] - I3D_SIZE) // 2
        frames = frames[..., top:top + I3D_SIZE, left:left + I3D_SIZE]
        return (frames * 2 - 1).permute(1, 0, 2, 3)

    def _embed(self, clips: list[torch.Tensor]) -> np.ndarray:
        rows = []
        with torch.inference_mode():
            for i in range(0, len(clips), self.batch_size):
                batch = torch.stack(clips[i:i + self.batch_size])
                out = self.detector(batch, rescale=False, resize=False, return_features=True)
                if out.ndim != 2 or out.shape[0] != len(batch):
                    raise MetricUnavailable(f"fvd: the I3D detector returned shape {list(out.shape)} for a batch of "
                                            f"{len(batch)}; expected [{len(batch)}, {FEATURE_DIM}]", "weights-invalid")
                rows.append(out.double().cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, FEATURE_DIM))

    def features(self, video: np.ndarray) -> np.ndarray:
        """I3D features of one uint8 video [T, H, W, 3]: one row per window (default) or one row (loopnav-v1)."""
        tensor = _check_video(video)
        if self.mode == "loopnav-v1":
            if len(tensor) < LOOPNAV_MIN_FRAMES:
                raise ValueError(f"FVD loopnav-v1 needs at least {LOOPNAV_MIN_FRAMES} frames, got {len(tensor)}")
            return self._embed([self._prepare(tensor)])
        starts = range(0, len(tensor) - self.clip_len + 1, self.clip_len)
        return self._embed([self._prepare(tensor[s:s + self.clip_len]) for s in starts])

    def compute(self, pred_videos: list[np.ndarray], gt_videos: list[np.ndarray],
                progress: Optional[ProgressFn] = None) -> dict:
        """FVD between predicted and ground-truth videos (paired by index in loopnav-v1 mode)."""
        if len(pred_videos) != len(gt_videos):
            raise ValueError(f"FVD needs equally many predicted and ground-truth videos (got {len(pred_videos)} and "
                             f"{len(gt_videos)})")
        pred_feats, gt_feats = [], []
        for i, (pred, gt) in enumerate(zip(pred_videos, gt_videos)):
            pred_feats.append(self.features(pred))
            gt_feats.append(self.features(gt))
            if progress:
                progress(f"fvd ({self.mode})", i + 1, len(pred_videos))
        return self.distance(pred_feats, gt_feats)

    def distance(self, pred_feats: list[np.ndarray], gt_feats: list[np.ndarray]) -> dict:
        """FVD from per-video features (`features` of each video), so one set of features serves several groupings
        (a split and each of its cells)."""
        if len(pred_feats) != len(gt_feats) or not pred_feats:
            raise ValueError(f"FVD needs equally many predicted and ground-truth videos (got {len(pred_feats)} and "
                             f"{len(gt_feats)}), at least one")
        result = {"mode": self.mode, "n_videos": len(pred_feats), "clip_len": self.info["clip_len"],
                  "covariance": self.covariance, "verified": self.info["verified"]}
        if self.mode == "loopnav-v1":
            per_video = [float(np.sum((p[0] - g[0]) ** 2)) for p, g in zip(pred_feats, gt_feats)]
            return {**result, "value": float(np.mean(per_video)), "std": float(np.std(per_video)),
                    "n_clips": len(per_video), "per_video": per_video}
        pred_all, gt_all = np.concatenate(pred_feats), np.concatenate(gt_feats)
        too_short = sum(len(p) == 0 or len(g) == 0 for p, g in zip(pred_feats, gt_feats))
        if len(pred_all) < 2 or len(gt_all) < 2:
            raise ValueError(f"FVD needs at least 2 clips of {self.clip_len} frames per side; got {len(pred_all)} "
                             f"predicted and {len(gt_all)} ground-truth clips ({too_short} videos too short)")
        value = frechet_distance(*feature_stats(pred_all, self.covariance), *feature_stats(gt_all, self.covariance))
        return {**result, "value": value, "n_clips": len(pred_all), "n_clips_gt": len(gt_all),
                "n_videos_too_short": too_short, "feature_dim": pred_all.shape[1]}
