"""Size presets, as DiT's `DiT_models` dict: `tiny` trains on a CPU in minutes (tests, the committed checkpoint);
`small` is for a GPU on 64 px frames, sized so that its shipped fp16 weights stay under 16 MB (5.9 M weights;
CDiT-S, 384 wide and 12 deep, would be 94 MB). `autoencoder` names the latent space's preset in
modelkit.autoencoder.PRESETS."""

from __future__ import annotations

from modelkit.diffusion import EDMConfig
from modelkit.presets import Preset

PRESETS: dict[str, Preset] = {
    # trains in under 25 minutes on a 2-core CPU, autoencoder included, on the `full` ViZDoom set's train split;
    # sizes chosen on val (README, "WorldPack on a CPU")
    # sampled with 2 Euler steps: on val they beat 3 and 6 Euler and 4 Heun steps (Heun amplifies the undertrained
    # denoiser's error at the smallest σ, as for the baselines)
    "cpu": Preset(model={"hidden": 96, "depth": 5, "heads": 4, "patch": 2, "context_noise_max": 0.3,
                         "edm": EDMConfig(steps=2, solver="euler")},
                  steps=6000, batch_size=32, lr=5e-4, ema_decay=0.998, autoencoder="cpu"),
    "tiny": Preset(model={"hidden": 96, "depth": 4, "heads": 4, "patch": 2}, steps=1200, batch_size=16, lr=3e-4,
                   autoencoder="tiny"),
    "small": Preset(model={"hidden": 160, "depth": 8, "heads": 5, "patch": 2}, steps=100_000, batch_size=64,
                    lr=1e-4, autoencoder="small"),
}
