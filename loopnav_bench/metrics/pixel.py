"""Pixel metrics (SSIM, PSNR), the frame-batch input check, and the one evaluation resize filter.

Both metrics work on uint8 RGB frames scaled to [0, 1] (data range L = 1) and return one float64 value per frame.
SSIM follows Wang et al. 2004 exactly as scikit-image computes it with `gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1`: an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population
(co)variances, per channel, averaged over the "valid" region (5 px cropped at each border) and then over channels.
It is batched float64 code (numpy + cv2 on CPU, torch on GPU) and matches skimage to ~1e-12.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import cv2
import numpy as np
import torch

Frames = Union[np.ndarray, torch.Tensor]  # uint8 [N, H, W, 3]
Array = Union[np.ndarray, torch.Tensor]

SSIM_SIGMA, SSIM_RADIUS, SSIM_K1, SSIM_K2 = 1.5, 5, 0.01, 0.03
RESIZE_FILTER = "cv2.INTER_AREA"
CPU_CHUNK_PIXELS = 16384  # SSIM frames per CPU chunk = this // (H * W): 5 float64 RGB maps stay near 2 MB


def as_frames(frames: Frames, what: str = "frames") -> torch.Tensor:
    """Check uint8 [N, H, W, 3] (numpy or torch) and return it as a torch tensor without copying when possible."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what}: expected a numpy array or torch tensor, got {type(frames).__name__}")
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(f"{what}: expected uint8 [N, H, W, 3], got {str(tensor.dtype).replace('torch.', '')} "
                         f"{list(tensor.shape)}")
    return tensor


def as_pair(pred: Frames, target: Frames) -> tuple[torch.Tensor, torch.Tensor]:
    pred_t, target_t = as_frames(pred, "pred"), as_frames(target, "target")
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred {list(pred_t.shape)} and target {list(target_t.shape)} must have the same shape "
                         f"(resize with resize_frames first)")
    return pred_t, target_t


def to_unit_nchw(frames: torch.Tensor, device: Union[str, torch.device], dtype: torch.dtype) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> [N, 3, H, W] in [0, 1] on `device`."""
    return frames.to(device).permute(0, 3, 1, 2).to(dtype) / 255.0


def _gaussian_taps() -> np.ndarray:
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    taps = np.exp(-(offsets ** 2) / (2 * SSIM_SIGMA ** 2))
    return taps / taps.sum()


def _blur_cv2(maps: list[np.ndarray]) -> list[np.ndarray]:
    """Valid 11x11 Gaussian blur of [B, H, W, 3] float64 maps, frame by frame with cv2's separable filter."""
    kernel, r = _gaussian_taps()[:, None], SSIM_RADIUS
    return [np.stack([cv2.sepFilter2D(frame, cv2.CV_64F, kernel, kernel)[r:-r, r:-r] for frame in m]) for m in maps]


def _band(size: int, taps: torch.Tensor) -> torch.Tensor:
    """[size, size - 10] matrix whose columns are the 11 taps at each valid position: `x @ band` blurs the last axis."""
    valid = torch.arange(size - 2 * SSIM_RADIUS, device=taps.device)
    band = torch.zeros(size, len(valid), dtype=taps.dtype, device=taps.device)
    for k, tap in enumerate(taps):
        band[valid + k, valid] = tap
    return band


def _blur_matmul(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Valid 11x11 Gaussian blur of [B, 3, H, W] maps as two banded matmuls for the whole batch (cuBLAS on GPU)."""
    stacked = torch.stack(maps)
    taps = torch.from_numpy(_gaussian_taps()).to(stacked.device, stacked.dtype)
    rows, cols = _band(stacked.shape[-2], taps), _band(stacked.shape[-1], taps)
    return list((rows.T @ (stacked @ cols)).unbind(0))


def _ssim_values(x: Array, y: Array, blur: Callable[[list], list]) -> Array:
    """Per-frame SSIM from [0, 1] float64 frames (numpy or torch: only shared operators are used)."""
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    mu_x, mu_y, xx, yy, xy = blur([x, y, x * x, y * y, x * y])
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(len(ssim_map), -1).mean(1)  # channels share one map size: mean of channel means


def ssim(pred: Frames, target: Frames, device: Union[str, torch.device] = "cpu",
         chunk: Optional[int] = None) -> np.ndarray:
    """Per-frame SSIM of uint8 [N, H, W, 3] frames, float64 [N]. Frames must be at least 11x11.

    On CPU the maps are numpy and the blur is cv2's separable filter, frame by frame, in chunks that keep the maps
    near 2 MB: this work is memory-bound, and float64 torch matmuls or depthwise convolutions were slower (and
    multi-threaded torch ops stall on a busy machine). Elsewhere (GPU) it is torch, with the blur as batched banded
    matmuls, 256 frames per chunk. Both paths evaluate the same float64 sums (they agree to ~1e-15).
    """
    pred_t, target_t = as_pair(pred, target)
    height, width = pred_t.shape[1:3]
    if min(height, width) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs frames of at least {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1}, got "
                         f"{height}x{width}")
    on_cpu = torch.device(device).type == "cpu"
    chunk = chunk or (max(1, CPU_CHUNK_PIXELS // (height * width)) if on_cpu else 256)
    out = []
    for i in range(0, len(pred_t), chunk):
        if on_cpu:
            x, y = (t[i:i + chunk].numpy(force=True).astype(np.float64) / 255.0 for t in (pred_t, target_t))
            out.append(_ssim_values(x, y, _blur_cv2))
        else:
            x, y = (to_unit_nchw(t[i:i + chunk], device, torch.float64) for t in (pred_t, target_t))
            out.append(_ssim_values(x, y, _blur_matmul).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def psnr(pred: Frames, target: Frames) -> np.ndarray:
    """Per-frame PSNR in dB on [0, 1] (L = 1), float64 [N]. Identical frames give +inf (see `aggregate`)."""
    pred_t, target_t = as_pair(pred, target)
    # exact integer squared error per frame (int64 dot products), then one float64 division per frame
    diff = (pred_t.numpy(force=True).astype(np.int64) - target_t.numpy(force=True)).reshape(len(pred_t), -1)
    mse = np.einsum("ij,ij->i", diff, diff) / (255.0 ** 2 * max(diff.shape[1], 1))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def resize_frames(frames: np.ndarray, size: Optional[tuple[int, int]]) -> np.ndarray:
    """Resize uint8 [N, H, W, 3] frames to `size` = (height, width) with cv2.INTER_AREA; identity when None or equal.

    INTER_AREA averages source pixels, so downscaling (the usual case: ground truth to a model's output size) does
    not alias. LoopNav's calcmetric.py uses cv2's default INTER_LINEAR instead; values differ slightly.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"resize_frames: expected uint8 [N, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if size is None or tuple(frames.shape[1:3]) == tuple(size):
        return frames
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"resize_frames: size must be positive (height, width), got {size}")
    return np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in frames]) \
        if len(frames) else np.zeros((0, height, width, 3), np.uint8)
