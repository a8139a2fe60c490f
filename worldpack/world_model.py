"""WorldPack behind the harness's WorldModel API (registered as "worldpack").

A rollout encodes the context frames, then for each target step picks the context exactly as in training
(context.build_example: recent frames plus memories retrieved with the known pose of the frame being predicted),
samples the next latent with EDM and appends it, so later steps see their own predictions. Requests are advanced
in lockstep as one batch; each draws its noise from its own generator (RolloutRequest.seed), so a trajectory's
frames do not depend on which others share its batch. Frames come back at the checkpoint's image size.

Without --checkpoint the committed tiny checkpoint (worldpack/checkpoints/tiny, trained on embedded ViZDoom data)
is used. Model args: `sampler_steps=N`, `solver=euler|heun` override the checkpoint's sampler.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loopnav_bench.models import RolloutRequest, WorldModel
from worldpack import checkpoint as ckpt
from worldpack.context import build_example, collate
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.train import load_autoencoder

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "tiny"


class WorldPackModel(WorldModel):
    name = "worldpack"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 sampler_steps: int | None = None, solver: str | None = None, **model_args: Any):
        super().__init__(checkpoint, device, seed, **model_args)
        self.step_dir = ckpt.resolve(checkpoint or DEFAULT_CHECKPOINT)
        self.saved = ckpt.read_config(self.step_dir)
        if self.saved.get("model") != "worldpack":
            raise ValueError(f"{self.step_dir / ckpt.CONFIG}: holds a {self.saved.get('model')!r} model, not worldpack")
        config = WorldPackConfig.from_dict(self.saved["config"])
        edm = replace(config.edm, **{k: v for k, v in (("steps", sampler_steps), ("solver", solver)) if v is not None})
        self.config = replace(config, edm=edm)
        self.model = WorldPack(self.config)
        self.model.load_state_dict(ckpt.load_tensors(self.step_dir / ckpt.WEIGHTS))
        self.model.to(device).eval()
        self.codec, _ = load_autoencoder(self.step_dir, device)
        self.sampler_args = {"sampler_steps": edm.steps, "solver": edm.solver}

    def rollout(self, request: RolloutRequest) -> np.ndarray:
        return self.rollout_batch([request])[0]

    @torch.no_grad()
    def rollout_batch(self, requests: list[RolloutRequest]) -> list[np.ndarray]:
        states = [self._start(r) for r in requests]
        horizon = max(r.horizon for r in requests)
        for step in range(horizon):
            active = [s for s in states if step < s["request"].horizon]
            current = [s["offset"] + step for s in active]
            examples = [build_example(s["latents"], s["poses"], s["actions"], t, t - 1, self.config.layout,
                                      self.config.retrieval, s["units"]) for s, t in zip(active, current)]
            batch = {k: v.to(self.device) for k, v in collate(examples).items()}
            noise = torch.cat([torch.randn(self.model.noise_shape(1), generator=s["generator"]) for s in active])
            predicted = self.model.sample(batch, noise.to(self.device))
            for s, t, latent in zip(active, current, predicted):
                s["latents"][t] = latent
        return [self.codec.decode(s["latents"][s["offset"]:]) for s in states]

    def _start(self, request: RolloutRequest) -> dict[str, Any]:
        width = request.context_actions.shape[1]
        if width != self.config.action_dim:
            raise ValueError(f"trajectory {request.id!r}: actions have {width} components "
                             f"({request.meta.get('action_layout')}), but {self.step_dir} was trained on "
                             f"{self.config.action_dim} ({self.saved.get('action_layout')})")
        context = self.codec.encode(request.context_frames)
        latents = torch.cat([context, context.new_zeros((request.horizon, *context.shape[1:]))])
        return {"request": request, "offset": len(context), "latents": latents,
                "poses": np.concatenate([request.context_poses, request.target_poses]),
                "actions": np.concatenate([request.context_actions, request.target_actions]),
                "units": float(request.meta.get("units_per_block", 1.0)),
                "generator": torch.Generator().manual_seed(request.seed)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "checkpoint": str(self.step_dir), "variant": self.config.variant,
                "context_frames": self.config.layout.frames, "effective_context": self.model.effective_context(),
                "retrieval": self.config.retrieval.to_dict(), **self.sampler_args,
                "image_size": self.codec.image_size,
                "trained_steps": self.saved["step"], "data": self.saved["data"]}
