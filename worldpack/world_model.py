"""Models trained here, behind the harness's WorldModel API: the shared checkpoint-loading adapter and lockstep
rollout (also used by the NWM and DIAMOND baselines), and WorldPack itself (registered as "worldpack").

A rollout encodes the context frames, then for each target step picks the context exactly as in training
(context.build_example: recent frames plus memories retrieved with the known pose of the frame being predicted),
samples the next latent with EDM and appends it, so later steps see their own predictions. Requests are advanced
in lockstep, in network calls of a fixed batch shape; each draws its noise from its own generator
(RolloutRequest.seed), so a trajectory's frames are bit-identical whichever others share its batch. Frames come
back at the checkpoint's image size.

Without --checkpoint the committed tiny checkpoint (worldpack/checkpoints/tiny, trained on embedded ViZDoom data)
is used. Model args: `sampler_steps=N`, `solver=euler|heun` override the checkpoint's sampler.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from loopnav_bench.models import RolloutRequest, WorldModel
from loopnav_bench.schema import units_per_block
from worldpack import checkpoint as ckpt
from worldpack.context import build_example, collate
from worldpack.diffusion import SOLVERS
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.train import load_autoencoder

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "tiny"
# Rows of every rollout network call. Matmul kernels pick their blocking, and so their rounding, by the batch's size
# (here a grey level in most frames between batches of 1 and 8); one fixed shape, padded when fewer trajectories are
# active, gives each row the same arithmetic whatever shares the call, its position and the padding included.
# 4 rather than 8: a batch's last, longest trajectory runs alone for hundreds of steps, padded to LANES rows.
LANES = 4


class CheckpointedModel(WorldModel):
    """The WorldModel adapter of a model trained with `fit`: loads the EMA weights of a training run (or a step
    folder) into `network_class(config_class.from_dict(...))`, on the committed tiny checkpoint when none is given.
    Model args `sampler_steps=N` and `solver=euler|heun` override the checkpoint's sampler."""

    config_class: Any
    network_class: Callable[[Any], nn.Module]
    default_checkpoint: Path

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 sampler_steps: int | None = None, solver: str | None = None, **model_args: Any):
        # sampler settings change the frames, so they stay in model_args, which key evaluate's resume
        super().__init__(checkpoint, device, seed, sampler_steps=sampler_steps, solver=solver, **model_args)
        if model_args:
            raise ValueError(f"{self.name} takes the model args sampler_steps and solver, not {sorted(model_args)}")
        if sampler_steps is not None and (type(sampler_steps) is not int or sampler_steps < 1):
            raise ValueError(f"--model-args sampler_steps={sampler_steps!r}: a whole number of at least 1")
        if solver not in (None, *SOLVERS):
            raise ValueError(f"--model-args solver={solver!r}: choose {' or '.join(SOLVERS)}")
        self.step_dir = ckpt.resolve(checkpoint or self.default_checkpoint)
        self.checkpoint = str(self.step_dir)  # what was loaded, the default included: evaluate hashes it
        self.saved = ckpt.read_config(self.step_dir)
        if self.saved.get("model") != self.name:
            raise ValueError(f"{self.step_dir / ckpt.CONFIG}: holds a {self.saved.get('model')!r} model, "
                             f"not {self.name}")
        config = self.config_class.from_dict(self.saved["config"])
        overrides = {k: v for k, v in (("steps", sampler_steps), ("solver", solver)) if v is not None}
        self.config = replace(config, edm=replace(config.edm, **overrides))
        self.model = self.network_class(self.config)
        try:
            self.model.load_state_dict(ckpt.load_tensors(self.step_dir / ckpt.WEIGHTS))
        except RuntimeError as err:  # tensors of another model or size
            raise ValueError(f"{self.step_dir / ckpt.WEIGHTS}: does not fit the {self.name} model of its "
                             f"{ckpt.CONFIG} ({str(err).splitlines()[0]})") from None
        self.model.to(device).eval()

    def rollout(self, request: RolloutRequest) -> np.ndarray:
        return self.rollout_batch([request])[0]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "checkpoint": str(self.step_dir),
                "sampler_steps": self.config.edm.steps, "solver": self.config.edm.solver,
                "trained_steps": self.saved["step"], "data": self.saved["data"]}


@torch.no_grad()
def lockstep_rollout(buffers: list[torch.Tensor], offsets: list[int], seeds: list[int],
                     conditioning: Callable[[int, int], dict[str, torch.Tensor]],
                     sample: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
                     device: str | torch.device) -> list[torch.Tensor]:
    """Fill each buffers[i][offsets[i]:] one frame at a time, all trajectories advancing together.

    conditioning(i, t) gives trajectory i's inputs for predicting its frame t; it reads buffers[i], whose frames
    before t are real (context) or already predicted. sample(batch, noise) returns the next frames. Each trajectory
    draws its noise from its own generator seeded with seeds[i], and every network call has exactly LANES rows, so a
    trajectory's frames do not depend on which others share its batch, rank or resumed run.
    Returns the predicted part of every buffer.
    """
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    for step in range(max((len(b) - o for b, o in zip(buffers, offsets)), default=0)):
        active = [i for i, (b, o) in enumerate(zip(buffers, offsets)) if o + step < len(b)]
        for start in range(0, len(active), LANES):
            lanes = active[start:start + LANES]
            items = [conditioning(i, offsets[i] + step) for i in lanes]
            noise = torch.cat([torch.randn(1, *buffers[i].shape[1:], generator=generators[i]) for i in lanes])
            filler = LANES - len(lanes)  # copies of the first row fill the fixed shape; their outputs are dropped
            batch = {key: value.to(device) for key, value in collate(items + items[:1] * filler).items()}
            noise = torch.cat([noise, noise[:1].expand(filler, *noise.shape[1:])])
            for i, frame in zip(lanes, sample(batch, noise.to(device)).cpu()):
                buffers[i][offsets[i] + step] = frame
    return [b[o:] for b, o in zip(buffers, offsets)]


class WorldPackModel(CheckpointedModel):
    name = "worldpack"
    config_class, network_class, default_checkpoint = WorldPackConfig, WorldPack, DEFAULT_CHECKPOINT

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0, **model_args: Any):
        super().__init__(checkpoint, device, seed, **model_args)
        self.codec, _ = load_autoencoder(self.step_dir, device)

    def rollout_batch(self, requests: list[RolloutRequest]) -> list[np.ndarray]:
        states = [self._start(r) for r in requests]
        buffers = [s["latents"] for s in states]

        def conditioning(i: int, t: int) -> dict[str, torch.Tensor]:
            s = states[i]  # the context exactly as in training: recent frames plus memories retrieved at pose t
            return build_example(buffers[i], s["poses"], s["actions"], t, t - 1, self.config.layout,
                                 self.config.retrieval, s["units"])

        predicted = lockstep_rollout(buffers, [s["offset"] for s in states], [r.seed for r in requests],
                                     conditioning, self.model.sample, self.device)
        return [self.codec.decode(latents) for latents in predicted]

    def _start(self, request: RolloutRequest) -> dict[str, Any]:
        width = request.context_actions.shape[1]
        if width != self.config.action_dim:
            raise ValueError(f"trajectory {request.id!r}: actions have {width} components "
                             f"({request.meta.get('action_layout')}), but {self.step_dir} was trained on "
                             f"{self.config.action_dim} ({self.saved.get('action_layout')})")
        context = self.codec.encode(request.context_frames).cpu()  # lockstep_rollout's buffers live on the CPU
        latents = torch.cat([context, context.new_zeros((request.horizon, *context.shape[1:]))])
        return {"request": request, "offset": len(context), "latents": latents,
                "poses": np.concatenate([request.context_poses, request.target_poses]),
                "actions": np.concatenate([request.context_actions, request.target_actions]),
                "units": units_per_block(request.meta)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "variant": self.config.variant,
                "context_frames": self.config.layout.frames, "effective_context": self.model.effective_context(),
                "retrieval": self.config.retrieval.to_dict(), "image_size": self.codec.image_size}
