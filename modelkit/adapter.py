"""Trained models behind the harness's WorldModel API: the checkpoint-loading adapter and the lockstep rollout that
WorldPack, NWM and DIAMOND share.

A rollout advances a batch of requests together, one frame per step: for each trajectory still running it builds the
conditioning of its next frame from its buffer (real context frames, then its own predictions), samples, and writes
the frame back. Each trajectory draws its noise from its own generator (RolloutRequest.seed) and every network call
has the same shape, so its frames do not depend on which others share its batch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from loopnav_bench.models import RolloutRequest, WorldModel, model_arg_names, shipped_checkpoints
from modelkit import checkpoint as ckpt
from modelkit.diffusion import SOLVERS

# Rows of every rollout network call. Matmul kernels pick their blocking, and so their rounding, by the batch's size
# (here a grey level in most frames between batches of 1 and 8); one fixed shape, padded when fewer trajectories are
# active, gives each row the same arithmetic whatever shares the call, its position and the padding included.
# 4 rather than 8: a batch's last, longest trajectory runs alone for hundreds of steps, padded to LANES rows.
LANES = 4


class CheckpointedModel(WorldModel):
    """The WorldModel adapter of a model trained with `fit`: loads the EMA weights of a training run (or a step
    folder) into `network_class(config_class.from_dict(...))`. `checkpoint` is a path, or the name of a checkpoint
    shipped in `shipped_dir` (`loopnav models` lists them); none means `default_checkpoint`. Model args
    `sampler_steps=N` and `solver=euler|heun` override the checkpoint's sampler."""

    config_class: Any
    network_class: Callable[[Any], nn.Module]
    shipped_dir: Path           # <the model's package>/checkpoints
    default_checkpoint: str     # the name of the shipped checkpoint used when none is given

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", seed: int = 0,
                 sampler_steps: int | None = None, solver: str | None = None, **model_args: Any):
        # sampler settings change the frames, so they stay in model_args, which key evaluate's resume
        super().__init__(checkpoint, device, seed, sampler_steps=sampler_steps, solver=solver, **model_args)
        if model_args:
            raise ValueError(f"--model-args {', '.join(sorted(model_args))}: model {self.name!r} takes "
                             f"{', '.join(model_arg_names(type(self)))}")
        if sampler_steps is not None and (type(sampler_steps) is not int or sampler_steps < 1):
            raise ValueError(f"--model-args sampler_steps={sampler_steps!r}: a whole number of at least 1")
        if solver not in (None, *SOLVERS):
            raise ValueError(f"--model-args solver={solver!r}: choose {' or '.join(SOLVERS)}")
        self.step_dir = ckpt.resolve(self.locate(checkpoint or self.default_checkpoint))
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

    @classmethod
    def locate(cls, checkpoint: str, option: str = "--checkpoint ") -> Path:
        """A path as given, else a shipped checkpoint's folder by name (`option` names where it was given)."""
        if Path(checkpoint).exists():
            return Path(checkpoint)
        shipped = shipped_checkpoints(cls.shipped_dir, cls.name)
        if checkpoint in shipped:
            return shipped[checkpoint]
        raise FileNotFoundError(f"{option}{checkpoint}: no such file or folder, nor a shipped {cls.name} "
                                f"checkpoint (shipped: {', '.join(shipped) or 'none'})")

    def rollout(self, request: RolloutRequest) -> np.ndarray:
        return self.rollout_batch([request])[0]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "checkpoint": str(self.step_dir),
                "sampler_steps": self.config.edm.steps, "solver": self.config.edm.solver,
                "trained_steps": self.saved["step"], "data": self.saved["data"],
                **({"init": self.saved["init"]} if "init" in self.saved else {})}  # fine-tuned: from what


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-example tensors -> one batch, key by key."""
    return {key: torch.stack([e[key] for e in examples]) for key in examples[0]}


def rollout_buffer(encode: Callable[[np.ndarray], torch.Tensor], request: RolloutRequest) -> torch.Tensor:
    """The encoded context frames followed by room for the `horizon` predicted ones, on the CPU (where
    lockstep_rollout keeps its buffers)."""
    context = encode(request.context_frames).cpu()
    return torch.cat([context, context.new_zeros((request.horizon, *context.shape[1:]))])


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
