"""The one metric table: every metric loopnav computes, as a spec. Adding a metric is one entry here (and, if it needs
pretrained files, their WeightFile entries in weights.REGISTRY under the metric's name).

`loader` is "module:function", imported only when the metric is used. A frame metric's loader is
`fn(device, variant) -> (score, info)`, where score maps uint8 [B, H, W, 3] pairs to [B] and `info` records what
produced the numbers; a set metric's loader is a class built as `cls(mode=..., device=...)` (FVD).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

PSNR_CAP = 100.0  # dB for identical frames, as LoopNav's metric code (common_metrics_on_video_quality) returns


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    kind: str                            # "frame": one value per frame; "set": one value per set of videos
    loader: str                          # "module:function" (frame) or "module:Class" (set), imported lazily
    default_variant: str | None = None   # which of its weight files' variants is used by default
    cap: float | None = None             # per-frame values are capped here when rows are written (strict JSON)

    def load(self) -> Any:
        module, _, attr = self.loader.partition(":")
        return getattr(importlib.import_module(module), attr)


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("ssim", True, "frame", "loopnav_bench.metrics.frame:load_ssim"),
    MetricSpec("psnr", True, "frame", "loopnav_bench.metrics.frame:load_psnr", cap=PSNR_CAP),
    MetricSpec("lpips", False, "frame", "loopnav_bench.metrics.frame:load_lpips", default_variant="alex"),
    MetricSpec("dreamsim", False, "frame", "loopnav_bench.metrics.frame:load_dreamsim", default_variant="ensemble"),
    MetricSpec("fvd", False, "set", "loopnav_bench.metrics.fvd:FVD", default_variant="styleganv"),
)}
FRAME_METRICS = tuple(name for name, spec in METRICS.items() if spec.kind == "frame")  # in the papers' order
SET_METRICS = tuple(name for name, spec in METRICS.items() if spec.kind == "set")
HIGHER_IS_BETTER = {name: spec.higher_is_better for name, spec in METRICS.items()}
