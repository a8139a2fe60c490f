"""Size presets, as DiT's `DiT_models` dict: `tiny` trains on a CPU in minutes (tests, the committed checkpoint);
`small` is for a GPU on 64 px frames, sized so that its shipped fp16 weights stay under 16 MB (5.9 M weights;
CDiT-S, 384 wide and 12 deep, would be 94 MB)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worldpack.autoencoder import AutoencoderConfig


@dataclass(frozen=True)
class Preset:
    autoencoder: AutoencoderConfig
    model: dict[str, Any]          # WorldPackConfig fields (latent size and action width are filled from data)
    steps: int                     # default training steps of the diffusion model
    autoencoder_steps: int         # default training steps of the autoencoder stage
    batch_size: int
    lr: float


PRESETS: dict[str, Preset] = {
    "tiny": Preset(autoencoder=AutoencoderConfig(image_size=32, channels=(16, 32), latent_channels=4),
                   model={"hidden": 96, "depth": 4, "heads": 4, "patch": 2},
                   steps=1200, autoencoder_steps=500, batch_size=16, lr=3e-4),
    "small": Preset(autoencoder=AutoencoderConfig(image_size=64, channels=(64, 128), latent_channels=4),
                    model={"hidden": 160, "depth": 8, "heads": 5, "patch": 2},
                    steps=100_000, autoencoder_steps=20_000, batch_size=64, lr=1e-4),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
