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
from modelkit.autoencoder import frames_to_tensor
from modelkit.presets import get_preset
from modelkit.train import fit, loop_config
from modelkit.train_data import load_split


class FrameBatches:
    """Random (trajectory, frame t ≥ context) pairs: pixels resized once to the model's size and kept as uint8."""

    def __init__(self, trajectories: list[Trajectory], config: DiamondConfig):
        mapping = action_mapping(config.action_layout)
        self.context = config.context
        self.frames = [frames_to_tensor(t.frames, config.image_size).add(1).mul(127.5).round().byte()
                       for t in trajectories]
        self.actions = [torch.from_numpy(mapping(t.actions)) for t in trajectories]
        lengths = np.array([max(len(f) - self.context, 0) for f in self.frames], dtype=np.float64)
        if lengths.sum() == 0:
            raise ValueError(f"no trajectory is longer than the {self.context}-frame context")
        self.weights = lengths / lengths.sum()

    def __call__(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        context, actions, target = [], [], []
        for i in rng.choice(len(self.frames), size=batch_size, p=self.weights):
            t = int(rng.integers(self.context, len(self.frames[i])))
            frame_index, action_index = (torch.from_numpy(a) for a in step_window(t, self.context))
            context.append(self.frames[i][frame_index])
            actions.append(self.actions[i][action_index])
            target.append(self.frames[i][t])
        to_float = lambda x: torch.stack(x).float() / 127.5 - 1  # noqa: E731
        return {"context": to_float(context), "actions": torch.stack(actions), "target": to_float(target)}


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
               run_config, device=options.device, resume=options.resume, progress=progress, description="diamond")
