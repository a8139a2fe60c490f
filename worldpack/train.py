"""The training loop shared by every model here, the trainer registry, and the autoencoder and WorldPack trainers.

`fit` trains any nn.Module that has `loss(batch) -> Tensor`, drawing batches from a model-specific builder
`builder(rng, batch_size)`. It runs in one process or under `torchrun` (DDP; NCCL on GPUs, gloo on CPUs), with bf16
autocast on a GPU, AdamW with linear warmup, gradient clipping, an EMA of the weights, and checkpoints as safetensors +
JSON (checkpoint.py). Every step reseeds numpy and torch from (seed, rank, step), so a resumed run needs no saved RNG
state and draws exactly the batches and noise an uninterrupted run would.

Trainers are registered by name in TRAINERS ("module:function", imported lazily); `loopnav train --model NAME`
dispatches there. A trainer is `fn(options: TrainOptions, progress) -> Path` (the final checkpoint folder).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from loopnav_bench.console import ProgressFn
from loopnav_bench.schema import Trajectory
from worldpack import checkpoint as ckpt
from worldpack.autoencoder import Autoencoder, AutoencoderConfig, DiffusersAutoencoder
from worldpack.data import (BatchBuilder, ContextBatches, EncodedTrajectory, ImageBatches, data_identity,
                            encode_trajectories, load_split)
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.presets import get_preset
from worldpack.retrieval import RETRIEVAL_PRESETS


@dataclass
class TrainOptions:
    """What `loopnav train` passes to a trainer. None means the preset's default."""

    data: Path
    output_dir: Path
    preset: str = "tiny"
    steps: int | None = None
    resume: bool = False
    variant: str = "full"
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    autoencoder: Path | None = None   # a trained autoencoder (run or step folder) or a local diffusers AutoencoderKL
    autoencoder_steps: int | None = None  # steps of the autoencoder stage that `worldpack` runs first
    save_every: int = 500


@dataclass
class LoopConfig:
    steps: int
    batch_size: int            # global: split evenly over the ranks
    lr: float
    seed: int = 0
    weight_decay: float = 0.0  # NWM: 0
    warmup: int = 100
    grad_clip: float = 10.0    # NWM: 10
    ema_decay: float = 0.999   # NWM: 0.9999 over ~100k steps; shorter runs need a shorter horizon
    save_every: int = 500


TRAINERS: dict[str, str] = {
    "autoencoder": "worldpack.train:train_autoencoder",
    "worldpack": "worldpack.train:train_worldpack",
    "nwm": "baselines.nwm:train_nwm",
    "diamond": "baselines.diamond:train_diamond",
}


def get_trainer(name: str) -> Callable[[TrainOptions, ProgressFn | None], Path]:
    if name not in TRAINERS:
        close = difflib.get_close_matches(name, TRAINERS, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"no trainer for model {name!r}.{hint} Trainable: {', '.join(sorted(TRAINERS))}")
    module, _, attr = TRAINERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


# ------------------------------------------------------------------------------------------------ the loop


class _LossModule(nn.Module):
    """DDP synchronises gradients through forward(); route it to the model's loss."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch)


@dataclass
class _Distributed:
    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def start(cls, device: str) -> "_Distributed":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if world_size == 1:
            return cls(0, 1, torch.device(device))
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), world_size, torch.device(device))

    def mean(self, value: torch.Tensor) -> float:
        if self.world_size > 1:
            import torch.distributed as dist

            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world_size
        return float(value.detach())

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def _seed_step(seed: int, rank: int, step: int) -> np.random.Generator:
    sequence = np.random.SeedSequence([seed, rank, step])
    torch.manual_seed(int(sequence.generate_state(1, np.uint64)[0] % (2**63)))
    return np.random.default_rng(sequence)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def fit(model: nn.Module, batches: BatchBuilder, loop: LoopConfig, output_dir: Path, run_config: dict[str, Any],
        *, device: str = "auto", resume: bool = False, extra_files: dict[str, dict[str, torch.Tensor]] | None = None,
        progress: ProgressFn | None = None, description: str = "train") -> Path:
    """Train `model` for loop.steps optimizer steps; return the last checkpoint folder.

    `run_config` (JSON-able: model name and config, data identity, ...) is written into every checkpoint along with
    the loop settings, the step and the loss history. With resume=True an existing run in output_dir continues
    from its latest checkpoint; without it an existing run is an error, so nothing is overwritten by accident.
    """
    dist = _Distributed.start(device)
    output_dir = Path(output_dir)
    model.to(dist.device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
    step, losses, window = 0, [], []
    if (output_dir / ckpt.LATEST).exists():
        if not resume:
            raise FileExistsError(f"{output_dir}: already holds a training run; pass --resume to continue it "
                                  "or choose another --output-dir")
        step_dir = ckpt.resolve(output_dir)
        saved = ckpt.read_config(step_dir)
        if saved["config"] != json.loads(json.dumps(run_config["config"])):
            raise ValueError(f"{step_dir / ckpt.CONFIG}: the saved model config differs from this run's; "
                             "resume with the same --preset and --variant")
        state = ckpt.load_tensors(step_dir / ckpt.TRAIN_STATE, dist.device)
        model.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("raw.")})
        ema.load_state_dict(ckpt.load_tensors(step_dir / ckpt.WEIGHTS, dist.device))
        ckpt.load_optimizer_tensors(optimizer, state)
        step, losses = saved["step"], saved["losses"]
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        trainee: nn.Module = DistributedDataParallel(_LossModule(model))
    else:
        trainee = _LossModule(model)
    if loop.batch_size % dist.world_size:
        raise ValueError(f"batch size {loop.batch_size} does not divide over {dist.world_size} processes")
    per_rank = loop.batch_size // dist.world_size
    use_bf16 = dist.device.type == "cuda"

    def save() -> None:
        config = {**run_config, "train": asdict(loop), "world_size": dist.world_size, "step": step, "losses": losses}
        train_state = {**{f"raw.{k}": v for k, v in model.state_dict().items()}, **ckpt.optimizer_tensors(optimizer)}
        files = {ckpt.WEIGHTS: ema.state_dict(), ckpt.TRAIN_STATE: train_state, **(extra_files or {})}
        ckpt.write_step(output_dir, step, config, files)

    model.train()
    first_step, started = step, time.perf_counter()
    while step < loop.steps:
        rng = _seed_step(loop.seed, dist.rank, step)
        batch = _to_device(batches(rng, per_rank), dist.device)
        for group in optimizer.param_groups:
            group["lr"] = loop.lr * min(1.0, (step + 1) / max(loop.warmup, 1))
        with torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = trainee(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
        optimizer.step()
        with torch.no_grad():
            # warm-up (as timm/diffusers do) so that short runs do not keep much of the initialisation in the EMA
            decay = min(loop.ema_decay, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
            for e, b in zip(ema.buffers(), model.buffers()):
                e.copy_(b)
        step += 1
        loss_value = dist.mean(loss)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step}; lower --lr or check the data")
        window.append(loss_value)
        if step % loop.save_every == 0 or step == loop.steps:
            losses.append([step, sum(window) / len(window)])
            window.clear()
            if dist.rank == 0:
                save()
            dist.barrier()
        if progress and dist.rank == 0:
            rate = loop.batch_size * (step - first_step) / (time.perf_counter() - started)
            progress(description, step, loop.steps, loss=loss_value, samples_s=rate)
    if not (output_dir / ckpt.LATEST).exists():
        raise ValueError(f"nothing to train: --steps {loop.steps} and no checkpoint in {output_dir}")
    return ckpt.resolve(output_dir)


# ------------------------------------------------------------------------------------------------ trainers


def loop_config(options: TrainOptions, steps: int, batch_size: int, lr: float,
                ema_decay: float = LoopConfig.ema_decay) -> LoopConfig:
    """A model's default loop settings, with the command line's overrides."""
    return LoopConfig(steps=options.steps or steps, batch_size=options.batch_size or batch_size, lr=options.lr or lr,
                      seed=options.seed, ema_decay=ema_decay, save_every=options.save_every)


def train_autoencoder(options: TrainOptions, progress: ProgressFn | None = None,
                      trajectories: list[Trajectory] | None = None) -> Path:
    """Stage 1: the latent space. L1 + MSE reconstruction of train-split frames at the preset's image size."""
    preset = get_preset(options.preset)
    trajectories = trajectories or load_split(options.data, progress=progress)
    torch.manual_seed(options.seed)  # initialisation; every training step reseeds itself
    model = Autoencoder(preset.autoencoder)
    run_config = {"model": "autoencoder", "config": preset.autoencoder.to_dict(), "preset": options.preset,
                  "data": data_identity(options.data)}
    loop = loop_config(options, preset.autoencoder_steps, preset.batch_size, 1e-3)
    return fit(model, ImageBatches(trajectories, preset.autoencoder.image_size), loop, options.output_dir, run_config,
               device=options.device, resume=options.resume, progress=progress, description="autoencoder")


def load_autoencoder(path: Path, device: str | torch.device = "cpu") -> tuple[Autoencoder | DiffusersAutoencoder, dict]:
    """A trained autoencoder (run or step folder of `--model autoencoder`, or a WorldPack checkpoint, whose
    autoencoder travels with it), or a local diffusers AutoencoderKL directory. Returns it and its spec for configs."""
    path = Path(path)
    config_file = path / ckpt.CONFIG
    if config_file.exists() and ckpt.read_config(path).get("_class_name") == "AutoencoderKL":
        codec = DiffusersAutoencoder(str(path), device=str(device))
        return codec, {"kind": "diffusers", "path": str(path), "image_size": codec.image_size}
    step_dir = ckpt.resolve(path)
    saved = ckpt.read_config(step_dir)
    if saved["model"] == "autoencoder":
        config, weights = saved["config"], ckpt.WEIGHTS
    elif "autoencoder" in saved and saved["autoencoder"]["kind"] == "ours":
        config, weights = saved["autoencoder"]["config"], "autoencoder.safetensors"
    elif "autoencoder" in saved:
        return load_autoencoder(Path(saved["autoencoder"]["path"]), device)
    else:
        raise ValueError(f"{step_dir / ckpt.CONFIG}: holds a {saved['model']!r} model, not an autoencoder")
    model = Autoencoder(AutoencoderConfig.from_dict(config))
    model.load_state_dict(ckpt.load_tensors(step_dir / weights))
    return model.to(device).eval(), {"kind": "ours", "config": config}


@dataclass
class LatentData:
    """The train split in a model's latent space: where every latent-space trainer (WorldPack, NWM) starts."""

    trajectories: list[Trajectory]
    encoded: list[EncodedTrajectory]
    codec_spec: dict[str, Any]                   # recorded in the run config: which latent space
    extra_files: dict[str, dict[str, torch.Tensor]]  # our autoencoder's weights travel inside every checkpoint
    identity: dict[str, Any]                     # data_identity of the train split


def latent_data(options: TrainOptions, progress: ProgressFn | None = None) -> LatentData:
    """Stage 1 (the autoencoder, into output_dir/autoencoder) unless --autoencoder names one, then the train split
    encoded with it on the training device."""
    trajectories = load_split(options.data, progress=progress)
    ae_path = options.autoencoder
    if ae_path is None:
        stage = replace(options, output_dir=options.output_dir / "autoencoder", steps=options.autoencoder_steps,
                        batch_size=None, lr=None)
        ae_path = train_autoencoder(stage, progress, trajectories)
    codec, codec_spec = load_autoencoder(ae_path, _Distributed.start(options.device).device)
    encoded = encode_trajectories(trajectories, codec.encode, progress)
    extra = {"autoencoder.safetensors": codec.state_dict()} if codec_spec["kind"] == "ours" else {}
    return LatentData(trajectories, encoded, codec_spec, extra, data_identity(options.data))


def train_worldpack(options: TrainOptions, progress: ProgressFn | None = None) -> Path:
    """Stage 2 (after `latent_data`'s stage 1): the diffusion model."""
    preset = get_preset(options.preset)
    data = latent_data(options, progress)
    latent, first = data.encoded[0].latents.shape, data.trajectories[0]
    retrieval = RETRIEVAL_PRESETS.get(data.identity["source"], RETRIEVAL_PRESETS["paper"])
    config = WorldPackConfig(latent_channels=latent[1], latent_size=latent[-1], action_dim=first.actions.shape[1],
                             variant=options.variant, retrieval=retrieval, **preset.model)
    torch.manual_seed(options.seed)
    model = WorldPack(config)
    batches = ContextBatches(data.encoded, config.layout, config.retrieval, config.max_time_shift)
    run_config = {"model": "worldpack", "config": config.to_dict(), "preset": options.preset,
                  "autoencoder": data.codec_spec, "action_layout": first.meta["action_layout"], "data": data.identity}
    loop = loop_config(options, preset.steps, preset.batch_size, preset.lr)
    return fit(model, batches, loop, options.output_dir, run_config, device=options.device, resume=options.resume,
               extra_files=data.extra_files, progress=progress, description=f"worldpack ({options.variant})")
