"""`loopnav train --model nwm`: NWM's training examples (a 4-frame context and goals around it) and trainer.

Model args (`--model-args k=v,...`): `autoencoder` (a trained autoencoder run, or a latent model's checkpoint whose
autoencoder travels with it, instead of training one first) and `autoencoder_steps`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from baselines.nwm import NWM, PRESETS, TIME_SCALE, NWMConfig, context_window, goal_action
from loopnav_bench.console import ProgressFn
from loopnav_bench.models import bind_args
from loopnav_bench.schema import Trajectory, units_per_block
from loopnav_bench.train import TrainOptions
from modelkit.presets import get_preset
from modelkit.train import fit, loop_config
from modelkit.train_autoencoder import LatentArgs, latent_data
from modelkit.train_data import EncodedTrajectory


def waypoint_spacing(trajectories: list[Trajectory]) -> float:
    """Mean planar distance between consecutive frames, in blocks (NWM's metric_waypoint_spacing, measured)."""
    steps = [np.linalg.norm(np.diff(t.poses[:, :2], axis=0), axis=1) / units_per_block(t.meta)
             for t in trajectories]
    mean = float(np.concatenate(steps).mean())
    if not mean > 0:
        raise ValueError("the training trajectories never move: the waypoint spacing would be 0")
    return mean




class GoalBatches:
    """NWM training items: a context window ending at a random frame, and `goals_per_context` goals around it."""

    def __init__(self, encoded: list[EncodedTrajectory], config: NWMConfig):
        self.encoded, self.config = encoded, config
        # the current frames that have at least one goal in range, per trajectory
        self.currents = [np.array([c for c in range(config.context - 1, len(e.latents))
                                   if len(self._offsets(c, len(e.latents)))]) for e in encoded]
        counts = np.array([len(c) for c in self.currents], dtype=np.float64)
        if counts.sum() == 0:
            raise ValueError(f"no trajectory is long enough for a context of {config.context} frames and a goal")
        self.weights = counts / counts.sum()

    def _offsets(self, current: int, length: int) -> np.ndarray:
        low, high = self.config.goal_offsets
        return np.arange(max(low, -current), min(high, length - 1 - current) + 1)

    def __call__(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        goals = self.config.goals_per_context
        if batch_size % goals:
            raise ValueError(f"batch size {batch_size} is not a multiple of goals_per_context {goals}")
        items: dict[str, list[torch.Tensor]] = {"context": [], "target": [], "action": [], "rel_t": []}
        for t in rng.choice(len(self.encoded), size=batch_size // goals, p=self.weights):
            e = self.encoded[t]
            current = int(rng.choice(self.currents[t]))
            offsets = rng.choice(self._offsets(current, len(e.latents)), size=goals)
            context = e.latents.index_select(0, torch.from_numpy(context_window(current, self.config.context)))
            action = goal_action(e.poses[current], e.poses[current + offsets], e.units_per_block,
                                 self.config.waypoint_spacing)
            items["context"] += [context] * goals
            items["target"].append(e.latents.index_select(0, torch.from_numpy(current + offsets)))
            items["action"].append(torch.from_numpy(action))
            items["rel_t"].append(torch.from_numpy(offsets / TIME_SCALE).float())
        return {k: torch.stack(v) if k == "context" else torch.cat(v) for k, v in items.items()}


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
               device=options.device, resume=options.resume, extra_files=data.extra_files, progress=progress,
               description="nwm")
