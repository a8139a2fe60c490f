"""`loopnav train --model nwm`: NWM's training examples (a 4-frame context and goals around it) and trainer.

Model args (`--model-args k=v,...`): `autoencoder` (a trained autoencoder run, or a latent model's checkpoint whose
autoencoder travels with it, instead of training one first) and `autoencoder_steps`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from baselines.nwm import NWM, PRESETS, NWMConfig, context_window, goal_action
from loopnav_bench.console import ProgressFn
from loopnav_bench.models import bind_args
from loopnav_bench.schema import Trajectory, units_per_block
from loopnav_bench.train import TrainOptions
from modelkit.cdit import TIME_SCALE
from modelkit.presets import get_preset
from modelkit.train import fit, loop_config
from modelkit.train_autoencoder import LatentArgs, latent_data
from modelkit.train_data import DeviceBatches, EncodedTrajectory, trajectory_starts


def waypoint_spacing(trajectories: list[Trajectory]) -> float:
    """Mean planar distance between consecutive frames, in blocks (NWM's metric_waypoint_spacing, measured)."""
    steps = [np.linalg.norm(np.diff(t.poses[:, :2], axis=0), axis=1) / units_per_block(t.meta)
             for t in trajectories]
    mean = float(np.concatenate(steps).mean())
    if not mean > 0:
        raise ValueError("the training trajectories never move: the waypoint spacing would be 0")
    return mean


class GoalBatches(DeviceBatches):
    """NWM training items: a context window ending at a random frame, and `goals_per_context` goals around it.

    Every trajectory's latents sit in one tensor (on the training device after `to`) and each frame's goal range is
    known up front, so a batch is index arithmetic on the host and two gathers on the device. The current frames are
    drawn uniformly over all those with a goal in range.
    """

    def __init__(self, encoded: list[EncodedTrajectory], config: NWMConfig):
        self.config = config
        lengths = np.array([len(e.latents) for e in encoded])
        self.first = np.repeat(trajectory_starts(lengths), lengths)  # each frame's trajectory start
        local = np.arange(len(self.first)) - self.first
        self.latents = torch.cat([e.latents for e in encoded])
        self.poses = np.concatenate([e.poses for e in encoded])
        self.units = np.repeat([e.units_per_block for e in encoded], lengths)
        low, high = config.goal_offsets  # each frame's goal offsets, kept inside its trajectory
        self.low, self.high = np.maximum(low, -local), np.minimum(high, np.repeat(lengths, lengths) - 1 - local)
        self.currents = np.flatnonzero((local >= config.context - 1) & (self.low <= self.high))
        if not len(self.currents):
            raise ValueError(f"no trajectory is long enough for a context of {config.context} frames and a goal")

    def __call__(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        goals = self.config.goals_per_context
        if batch_size % goals:
            raise ValueError(f"batch size {batch_size} is not a multiple of goals_per_context {goals}")
        current = rng.choice(self.currents, size=batch_size // goals)
        offsets = rng.integers(self.low[current, None], self.high[current, None] + 1, size=(len(current), goals))
        first = self.first[current]
        context = first[:, None] + context_window(current - first, self.config.context)
        action = goal_action(self.poses[current, None], self.poses[current[:, None] + offsets],
                             self.units[current, None], self.config.waypoint_spacing)
        return {"context": self.gather(self.latents, context.repeat(goals, axis=0)),
                "target": self.gather(self.latents, (current[:, None] + offsets).reshape(-1)),
                "action": self.put(action.reshape(-1, action.shape[-1])),
                "rel_t": self.put((offsets.reshape(-1) / TIME_SCALE).astype(np.float32))}


def train_nwm(options: TrainOptions, progress: ProgressFn | None = None) -> Path:
    """`loopnav train --model nwm`: the latent stage first (into output_dir/autoencoder) unless the `autoencoder`
    model arg names a trained one (worldpack/checkpoints/fine-memory shares WorldPack's), then the CDiT."""
    args = bind_args(LatentArgs, options.model_args, "nwm")
    preset = get_preset(PRESETS, options.preset, "nwm")
    data = latent_data(options, preset.autoencoder, args, progress)
    latent = data.encoded[0].latents.shape
    config = NWMConfig(latent_channels=latent[1], latent_size=latent[-1],
                       waypoint_spacing=waypoint_spacing(data.trajectories), **preset.model)
    torch.manual_seed(options.seed)  # initialisation; every training step reseeds itself
    model = NWM(config)
    run_config = {"model": "nwm", "config": config.to_dict(), "preset": options.preset, "autoencoder": data.codec_spec,
                  "action_layout": data.trajectories[0].meta["action_layout"], "data": data.identity}
    return fit(model, GoalBatches(data.encoded, config), loop_config(options, preset), options.output_dir, run_config,
               device=options.device, resume=options.resume,
               allow_changed_settings=options.allow_changed_settings, extra_files=data.extra_files, progress=progress,
               description="nwm")
