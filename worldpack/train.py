"""`loopnav train --model worldpack`: the latent stage (modelkit.train_autoencoder), then the diffusion model on
random (trajectory, target frame, time shift) examples built exactly as a rollout builds them (`build_example`).

Model args (`--model-args k=v,...`): `variant` (full, base, pack-only, retrieval-only), `autoencoder` (a trained
autoencoder run or a local diffusers AutoencoderKL folder, instead of training one first), `autoencoder_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from loopnav_bench.console import ProgressFn
from loopnav_bench.models import bind_args
from loopnav_bench.train import TrainOptions
from modelkit.adapter import collate
from modelkit.presets import get_preset
from modelkit.train import fit, loop_config
from modelkit.train_autoencoder import LatentArgs, latent_data
from modelkit.train_data import EncodedTrajectory
from worldpack.context import ContextLayout, build_example
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.presets import PRESETS
from worldpack.retrieval import RETRIEVAL_PRESETS, RetrievalParams


@dataclass
class WorldPackArgs(LatentArgs):
    variant: str = "full"   # the context layout: full, base, pack-only, retrieval-only


class ContextBatches:
    """Random (trajectory, target frame, time shift) triples turned into WorldPack examples by `build_example`."""

    def __init__(self, encoded: list[EncodedTrajectory], layout: ContextLayout, params: RetrievalParams,
                 max_time_shift: int):
        self.encoded, self.layout, self.params, self.max_time_shift = encoded, layout, params, max_time_shift
        lengths = np.array([len(e.latents) - 1 for e in encoded], dtype=np.float64)  # targets per trajectory
        if lengths.sum() <= 0:
            raise ValueError("no trajectory has two frames or more")
        self.weights = lengths / lengths.sum()

    def __call__(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        examples = []
        for t in rng.choice(len(self.encoded), size=batch_size, p=self.weights):
            e = self.encoded[t]
            current = int(rng.integers(1, len(e.latents)))
            last_seen = current - int(rng.integers(1, min(self.max_time_shift, current) + 1))
            example = build_example(e.latents, e.poses, e.actions, current, last_seen, self.layout, self.params,
                                    e.units_per_block)
            example["target"] = e.latents[current]
            examples.append(example)
        return collate(examples)


def train_worldpack(options: TrainOptions, progress: ProgressFn | None = None) -> Path:
    args = bind_args(WorldPackArgs, options.model_args, "worldpack")
    preset = get_preset(PRESETS, options.preset, "worldpack")
    data = latent_data(options, preset.autoencoder, args, progress)
    latent, first = data.encoded[0].latents.shape, data.trajectories[0]
    retrieval = RETRIEVAL_PRESETS.get(data.identity["source"], RETRIEVAL_PRESETS["paper"])
    config = WorldPackConfig(latent_channels=latent[1], latent_size=latent[-1], action_dim=first.actions.shape[1],
                             variant=args.variant, retrieval=retrieval, **preset.model)
    torch.manual_seed(options.seed)
    model = WorldPack(config)
    batches = ContextBatches(data.encoded, config.layout, config.retrieval, config.max_time_shift)
    run_config = {"model": "worldpack", "config": config.to_dict(), "preset": options.preset,
                  "autoencoder": data.codec_spec, "action_layout": first.meta["action_layout"], "data": data.identity}
    return fit(model, batches, loop_config(options, preset), options.output_dir, run_config, device=options.device,
               resume=options.resume, extra_files=data.extra_files, progress=progress,
               description=f"worldpack ({args.variant})")
