"""Size presets, as DiT's `DiT_models` dict: each trained model keeps a `PRESETS: dict[str, Preset]` beside its
network (`tiny` trains on a CPU in minutes; `small` is for a GPU), and `get_preset` picks one by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    model: dict[str, Any]      # the network's config fields; what the data determine is filled in by the trainer
    steps: int                 # default optimizer steps
    batch_size: int
    lr: float
    ema_decay: float = 0.999   # EMA horizon ~ 1/(1 - decay) steps: short CPU runs need a short one
    autoencoder: str | None = None  # latent models: the modelkit.autoencoder preset of their latent space


def get_preset(presets: dict[str, Preset], name: str, model: str) -> Preset:
    if name not in presets:
        raise ValueError(f"unknown {model} preset {name!r}; choose from {', '.join(presets)}")
    return presets[name]
