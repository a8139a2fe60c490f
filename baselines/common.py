"""What the NWM and DIAMOND baselines share beyond worldpack's pieces: their size presets.
(The checkpoint-loading WorldModel base class and the lockstep rollout are in worldpack/world_model.py.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    model: dict[str, Any]   # the model's config fields; what the data determine is filled in by the trainer
    steps: int
    batch_size: int
    lr: float
    ema_decay: float        # EMA horizon ~ 1/(1 - decay) steps: short CPU runs need a short one


def get_preset(presets: dict[str, Preset], name: str, model: str) -> Preset:
    if name not in presets:
        raise ValueError(f"unknown {model} preset {name!r}; choose from {', '.join(presets)}")
    return presets[name]
