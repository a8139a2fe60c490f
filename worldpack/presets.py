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
    "cpu": Preset(model={"hidden": 96, "depth": 5, "heads": 4, "patch": 2,
                         # round-2 options, chosen on val by fine-tuning the shipped base (docs/models.md, "Options"):
                         # corrupt only the slots a rollout generates and announce them at 0.5; RoPE on half of each
                         # head; a null key/value; a quarter of training at the sampler's own σ
                         "context_noise_max": 0.6, "reliability": "slot", "generated_level": 0.5,
                         "rope_fraction": 0.5, "cross_bias_kv": True,
                         "edm": EDMConfig(steps=2, solver="euler", schedule_rate=0.25)},
                  steps=6000, batch_size=32, lr=5e-4, ema_decay=0.998, autoencoder="cpu"),
    "tiny": Preset(model={"hidden": 96, "depth": 4, "heads": 4, "patch": 2}, steps=1200, batch_size=16, lr=3e-4,
                   autoencoder="tiny"),
    "small": Preset(model={"hidden": 160, "depth": 8, "heads": 5, "patch": 2}, steps=100_000, batch_size=64,
                    lr=1e-4, autoencoder="small"),
}
