"""`loopnav train --model diamond`: DIAMOND's training examples (4 frames and the actions between them, in pixels)
and trainer. It takes no model args."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from baselines.diamond import PRESETS, Diamond, DiamondConfig, action_mapping, step_window
from loopnav_bench.console import ProgressFn
from loopnav_bench.contract import data_identity
from loopnav_bench.schema import Trajectory
from loopnav_bench.train import TrainOptions
from modelkit.presets import get_preset
from modelkit.train import fit, loop_config
from modelkit.train_data import DeviceBatches, load_split, pixels_float, pixels_uint8, trajectory_starts


class FrameBatches(DeviceBatches):
    """Random (trajectory, frame t ≥ context) pairs: pixels resized once to the model's size and kept as uint8 (on the
    training device after `to`), every trajectory's frames and actions in one tensor each, gathered a batch at once."""

    def __init__(self, trajectories: list[Trajectory], config: DiamondConfig):
        mapping = action_mapping(config.action_layout)
        self.context = config.context
        # contiguous (frames_to_tensor's are channels-last): the target's noise (randn_like) follows its layout
        self.frames = torch.cat([pixels_uint8(t.frames, config.image_size) for t in trajectories]).contiguous()
        self.actions = torch.from_numpy(np.concatenate([mapping(t.actions) for t in trajectories]))
        self.lengths = np.array([len(t.frames) for t in trajectories])
        self.starts = trajectory_starts(self.lengths)
        targets = np.maximum(self.lengths - self.context, 0).astype(np.float64)
        if targets.sum() == 0:
            raise ValueError(f"no trajectory is longer than the {self.context}-frame context")
        self.weights = targets / targets.sum()

    def __call__(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        trajectory = rng.choice(len(self.lengths), size=batch_size, p=self.weights)
        t = rng.integers(self.context, self.lengths[trajectory])
        frame_index, action_index = step_window(t, self.context)
        start = self.starts[trajectory]
        return {"context": pixels_float(self.gather(self.frames, start[:, None] + frame_index)),
                "actions": self.gather(self.actions, start[:, None] + action_index),
                "target": pixels_float(self.gather(self.frames, start + t))}


def train_diamond(options: TrainOptions, progress: ProgressFn | None = None) -> Path:
    """`loopnav train --model diamond`: the denoiser on the train split's pixels at the data's resolution."""
    if options.model_args:
        raise ValueError(f"diamond takes no training model args (it works in pixel space with a fixed 4-frame "
                         f"context), got {sorted(options.model_args)}")
    preset = get_preset(PRESETS, options.preset, "diamond")
    trajectories = load_split(options.data, progress=progress)
    layout = trajectories[0].meta["action_layout"]
    config = DiamondConfig(**{"image_size": trajectories[0].frames.shape[1], "action_layout": layout, **preset.model})
    run_config = {"model": "diamond", "config": config.to_dict(), "preset": options.preset, "action_layout": layout,
                  "action_bits": action_mapping(layout).names(), "data": data_identity(options.data, "train")}
    torch.manual_seed(options.seed)  # initialisation; every training step reseeds itself
    return fit(Diamond(config), FrameBatches(trajectories, config), loop_config(options, preset), options.output_dir,
               run_config, device=options.device, resume=options.resume,
               allow_changed_settings=options.allow_changed_settings, progress=progress, description="diamond")
