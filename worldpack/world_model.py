"""WorldPack behind the harness's WorldModel API (registered as "worldpack"), on the kit's checkpoint adapter.

A rollout encodes the context frames, then for each target step picks the context exactly as in training
(context.select_context: recent frames plus memories retrieved with the known pose of the frame being predicted,
reported through RolloutRequest.report_memory so that `loopnav show` can draw them),
samples the next latent with EDM and appends it, so later steps see their own predictions. Requests are advanced
in lockstep, in network calls of a fixed batch shape; each draws its noise from its own generator
(RolloutRequest.seed), so a trajectory's frames are bit-identical whichever others share its batch. Frames come
back at the checkpoint's image size.

Memories are retrieved among the real context frames first (generated frames only when too few real ones score).
Without --checkpoint the shipped default checkpoint is used; `--checkpoint NAME` picks another shipped one (see
`loopnav models`). Model args: `sampler_steps=N`, `solver=euler|heun` override the checkpoint's sampler;
`memory=off` leaves the retrieved slots empty (does the model use its memory?); `generated_level=L` (a checkpoint
trained with reliability=slot) announces generated frames at reliability level L instead of the checkpoint's
`generated_level`, real frames staying at 0.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loopnav_bench.models import SHIPPED_DIR, RolloutRequest
from loopnav_bench.schema import units_per_block
from modelkit.adapter import CheckpointedModel, lockstep_rollout, rollout_buffer
from modelkit.autoencoder import load_autoencoder
from worldpack.context import cumulative_actions, example_from_slots, select_context
from worldpack.model import WorldPack, WorldPackConfig


class WorldPackModel(CheckpointedModel):
    name = "worldpack"
    description = "WorldPack (Oshima et al.): packed context and pose-retrieved memories"
    shipped_dir = Path(__file__).parent / SHIPPED_DIR
    config_class, network_class, default_checkpoint = WorldPackConfig, WorldPack, "fine-memory"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0, memory: str = "on",
                 generated_level: float | None = None, **model_args: Any):
        if memory not in ("on", "off"):
            raise ValueError(f"worldpack: model arg memory={memory!r} is not on or off")
        if generated_level is not None and generated_level < 0:
            raise ValueError(f"worldpack: model arg generated_level={generated_level!r} is a noise std, not negative")
        super().__init__(checkpoint, device, seed, **model_args)
        self.model_args["memory"] = memory  # changes the frames: keys evaluate's resume
        self.memory = memory == "on"
        if generated_level is not None:
            if self.config.reliability != "slot":
                raise ValueError(f"worldpack: model arg generated_level: {self.step_dir} was trained with "
                                 f"reliability={self.config.reliability!r}, which announces no level per slot")
            self.model_args["generated_level"] = generated_level
            self.config = replace(self.config, generated_level=float(generated_level))
        self.codec, _ = load_autoencoder(self.step_dir, device)

    def rollout_batch(self, requests: list[RolloutRequest]) -> list[np.ndarray]:
        states = [self._start(r) for r in requests]
        buffers = [s["latents"] for s in states]

        def conditioning(i: int, t: int) -> dict[str, torch.Tensor]:
            s = states[i]  # the context exactly as in training (build_example): recent frames plus memories at pose t
            slots = select_context(s["poses"], t, t - 1, self.config.layout, self.config.retrieval, s["units"],
                                   split=s["offset"], memory=self.memory)
            requests[i].report_memory(t - s["offset"], slots[len(self.config.layout.recent):])
            return example_from_slots(buffers[i], s["poses"], s["cum_actions"], t, t - 1, slots, s["units"],
                                      split=s["offset"], level=self.config.generated_level)

        predicted = lockstep_rollout(buffers, [s["offset"] for s in states], [r.seed for r in requests],
                                     conditioning, self.model.sample, self.device)
        return [self.codec.decode(latents) for latents in predicted]

    def _start(self, request: RolloutRequest) -> dict[str, Any]:
        width = request.context_actions.shape[1]
        if width != self.config.action_dim:
            raise ValueError(f"trajectory {request.id!r}: actions have {width} components "
                             f"({request.meta.get('action_layout')}), but {self.step_dir} was trained on "
                             f"{self.config.action_dim} ({self.saved.get('action_layout')})")
        return {"request": request, "offset": len(request.context_frames),
                "latents": rollout_buffer(self.codec.encode, request),
                "poses": np.concatenate([request.context_poses, request.target_poses]),
                "cum_actions": cumulative_actions(np.concatenate([request.context_actions, request.target_actions])),
                "units": units_per_block(request.meta)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "variant": self.config.variant, "memory": "on" if self.memory else "off",
                "layout": asdict(self.config.layout),  # as stored in the checkpoint: `variant` is only its name
                "context_frames": self.config.layout.frames, "effective_context": self.model.effective_context(),
                "retrieval": self.config.retrieval.to_dict(), "image_size": self.codec.image_size,
                **({"generated_level": self.config.generated_level} if self.config.reliability == "slot" else {})}
