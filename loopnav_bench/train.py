"""`loopnav train`: what every trainer is given, and the dispatch to a model's trainer by name.

A trainer is registered in the `loopnav.trainers` entry-point group (see `loopnav_bench.registry`) as
`fn(options: TrainOptions, progress) -> Path` (the final checkpoint folder). What only one model understands (a
WorldPack context variant, an autoencoder to reuse) travels in `options.model_args`, which the trainer validates with
`loopnav_bench.models.bind_args`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from loopnav_bench.console import ProgressFn
from loopnav_bench.distributed import DEFAULT_DEVICE
from loopnav_bench.registry import TRAINERS


@dataclass
class TrainOptions:
    """What `loopnav train` passes to a trainer. None means the preset's default."""

    data: Path
    output_dir: Path
    preset: str = "tiny"
    steps: int | None = None
    resume: bool = False
    allow_changed_settings: bool = False  # resume with other settings; each checkpoint records the change
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = DEFAULT_DEVICE
    save_every: int = 500
    threads: int | None = None  # torch CPU threads per process; None: the process's cores over the local ranks
    model_args: dict[str, Any] = field(default_factory=dict)  # the model's own options (`--model-args k=v,...`)


Trainer = Callable[[TrainOptions, "ProgressFn | None"], Path]


def train(model: str, options: TrainOptions, progress: ProgressFn | None = None) -> Path:
    """Run the trainer registered as `model`; returns its final checkpoint folder."""
    trainer = TRAINERS.load(model)
    if not callable(trainer):
        raise TypeError(f"trainer {model!r} -> {TRAINERS.entries()[model].value} is not callable")
    import torch

    torch.set_num_threads(options.threads or default_threads())  # set, never left to contention with other ranks
    return trainer(options, progress)


def default_threads() -> int:
    """This process's share of the cores it may run on: all of them, split over torchrun's local ranks."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
