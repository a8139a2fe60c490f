"""Per-frame metrics behind one interface: `load_frame_metric(name)` -> FrameMetric, called on uint8 frame batches.

SSIM and PSNR need no weights. LPIPS (AlexNet, v0.1) and DreamSim load their pretrained files only from the locations
the weights registry verifies; nothing is downloaded here. A metric that cannot be loaded raises MetricUnavailable
with the reason, so the caller can report it as unavailable instead of dropping it.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Optional

import numpy as np
import torch

from loopnav_bench.metrics import pixel, weights
from loopnav_bench.metrics.pixel import Frames, as_pair, to_unit_nchw
from loopnav_bench.metrics.specs import FRAME_METRICS, METRICS
from loopnav_bench.metrics.weights import MetricUnavailable

DREAMSIM_SIZE = 224  # DreamSim's own preprocessing: bicubic resize to 224x224, values in [0, 1]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # uint8 [B,H,W,3] x2 -> [B]


class FrameMetric:
    """A loaded per-frame metric: `metric(pred, target)` maps uint8 [N, H, W, 3] pairs to float64 [N].

    Frames are scored `batch_size` at a time, so any N fits in memory; results do not depend on the batch size.
    `info` records what produced the numbers (implementation, variant, weight files with sha256, verified).
    """

    def __init__(self, name: str, score: ScoreFn, info: dict, batch_size: int = 32):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name, self.info, self.batch_size, self._score = name, info, batch_size, score

    def __call__(self, pred: Frames, target: Frames) -> np.ndarray:
        pred_t, target_t = as_pair(pred, target)
        with torch.inference_mode():
            parts = [self._score(pred_t[i:i + self.batch_size], target_t[i:i + self.batch_size]).double().cpu()
                     for i in range(0, len(pred_t), self.batch_size)]
        return torch.cat(parts).numpy() if parts else np.zeros(0)

    def __repr__(self) -> str:
        return f"FrameMetric({self.name!r}, variant={self.info.get('variant')!r}, verified={self.info.get('verified')})"


def _lpips_model(files: dict, device: str) -> torch.nn.Module:
    """LPIPS-alex v0.1 with both weight files loaded from the verified paths (never from torchvision's downloader)."""
    import lpips
    import torchvision

    # pnet_rand builds the AlexNet trunk without asking torchvision for weights; pretrained=False skips lpips' own
    # non-strict load of the linear heads. Both are then loaded strictly below. spatial=True as LoopNav's metric code
    # (common_metrics_on_video_quality: calculate_lpips.py) builds it: each layer's map is upsampled to the image
    # size before the mean, which differs from spatial=False's per-layer mean by up to ~3e-5.
    model = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True, spatial=True, verbose=False)
    alexnet = torchvision.models.alexnet()
    alexnet.load_state_dict(torch.load(files["lpips/alexnet"], map_location="cpu", weights_only=True))
    for stage in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
        for index, layer in stage.named_children():
            layer.load_state_dict(alexnet.features[int(index)].state_dict())
    heads = torch.load(files["lpips/linear-alex"], map_location="cpu", weights_only=True)
    # lins: same modules
    expected = {k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")}
    if set(heads) != expected:
        raise MetricUnavailable(f"{files['lpips/linear-alex']}: not an LPIPS alex linear-head file "
                                f"(keys {sorted(heads)[:3]}…, expected {sorted(expected)[:3]}…)", "weights-invalid")
    model.load_state_dict(heads, strict=False)
    return model.eval().requires_grad_(False).to(device)


def load_lpips(device: str, variant: Optional[str]) -> tuple[ScoreFn, dict]:
    files, info = weights.require("lpips", variant)
    try:
        model = _lpips_model(files, device)
    except MetricUnavailable:
        raise
    except (RuntimeError, KeyError) as err:  # an opted-in unverified file with the wrong layout
        raise MetricUnavailable(f"lpips: cannot load weights ({err})", "weights-invalid") from None

    def score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        to_signed = lambda frames: to_unit_nchw(frames, device, torch.float32) * 2 - 1  # noqa: E731  LPIPS wants [-1, 1]
        return model(to_signed(pred), to_signed(target)).mean(dim=(1, 2, 3))

    return score, {**info, "implementation": "lpips 0.1.4 LPIPS(net='alex', version='0.1', spatial=True), mean of the "
                                             "map (as common_metrics_on_video_quality)", "input_range": "[-1, 1]"}


def load_dreamsim(device: str, variant: Optional[str]) -> tuple[ScoreFn, dict]:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    _, info = weights.require("dreamsim", variant)  # verifies the files; DreamSim itself opens them from its cache dir
    from dreamsim import dreamsim

    hub_dir = torch.hub.get_dir()
    try:  # DreamSim prints to stdout (kept off it: stdout may carry JSON) and repoints torch.hub (restored)
        with contextlib.redirect_stdout(sys.stderr):
            model, _ = dreamsim(pretrained=True, device=device, cache_dir=str(weights.dreamsim_cache_dir()),
                                dreamsim_type=info["variant"])
    except (RuntimeError, KeyError, ValueError, OSError) as err:
        raise MetricUnavailable(f"dreamsim ({info['variant']}): cannot load weights from "
                                f"{weights.dreamsim_cache_dir()} ({err})", "weights-invalid") from None
    finally:
        torch.hub.set_dir(hub_dir)

    def prepare(frames: torch.Tensor) -> torch.Tensor:
        nchw = frames.to(device).permute(0, 3, 1, 2)
        return resize(nchw, [DREAMSIM_SIZE, DREAMSIM_SIZE], InterpolationMode.BICUBIC, antialias=True).float() / 255

    def score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return model(prepare(pred), prepare(target)).reshape(-1)

    return score, {**info, "implementation": f"dreamsim 0.2.1 dreamsim(dreamsim_type={info['variant']!r})",
                   "input": f"bicubic (antialiased) resize to {DREAMSIM_SIZE}x{DREAMSIM_SIZE}, [0, 1]"}


def load_ssim(device: str, variant: Optional[str]) -> tuple[ScoreFn, dict]:
    info = ("loopnav torch float64: Gaussian 11x11 sigma 1.5, K1 0.01, K2 0.03, population covariance, valid region "
            "(5 px border cropped), per channel on [0, 1]; equals skimage structural_similarity(gaussian_weights=True, "
            "sigma=1.5, use_sample_covariance=False, data_range=1)")
    return (lambda pred, target: torch.from_numpy(pixel.ssim(pred, target, device=device))), _no_weights(info)


def load_psnr(device: str, variant: Optional[str]) -> tuple[ScoreFn, dict]:
    info = "10*log10(1/MSE) per frame on [0, 1]; +inf for identical frames"
    return (lambda pred, target: torch.from_numpy(pixel.psnr(pred, target))), _no_weights(info)


def _no_weights(implementation: str) -> dict:
    return {"implementation": implementation, "variant": None, "verified": True, "weights": []}


def load_frame_metric(name: str, device: str = "cpu", batch_size: int = 32,
                      variant: Optional[str] = None) -> FrameMetric:
    """Build a per-frame metric by name (one of FRAME_METRICS). Raises MetricUnavailable when weights are missing or
    unverified (see `loopnav weights check`), ValueError for an unknown name."""
    if name not in FRAME_METRICS:
        raise ValueError(f"unknown frame metric {name!r}; choose from {', '.join(FRAME_METRICS)}")
    score, info = METRICS[name].load()(device, variant)
    return FrameMetric(name, score, info, batch_size)
