"""What the NWM and DIAMOND baselines share beyond worldpack's pieces: size presets and training-loop settings.
(The checkpoint-loading WorldModel base class and the lockstep rollout are in worldpack/world_model.py.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worldpack.train import LoopConfig, TrainOptions


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


def loop_config(options: TrainOptions, preset: Preset) -> LoopConfig:
    """The preset's loop settings, with the options' overrides."""
    return LoopConfig(steps=options.steps or preset.steps, batch_size=options.batch_size or preset.batch_size,
                      lr=options.lr or preset.lr, seed=options.seed, ema_decay=preset.ema_decay,
                      save_every=options.save_every)
