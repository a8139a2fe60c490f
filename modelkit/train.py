"""The training loop every model here shares.

`fit` trains any nn.Module that has `loss(batch) -> Tensor`, drawing batches from a model-specific source
`source(rng, batch_size)` that it first moves to the training device (train_data.py). It runs in one process or under
`torchrun` (DDP; NCCL on GPUs, gloo on CPUs), with bf16 autocast on a GPU, AdamW with linear warmup, gradient
clipping, an EMA of the weights, and checkpoints as safetensors + JSON (checkpoint.py). Every step reseeds numpy and
torch from (seed, rank, step), so a resumed run needs no saved RNG state and draws exactly the batches and noise an
uninterrupted run would.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from loopnav_bench.console import ProgressFn, console
from loopnav_bench.distributed import DEFAULT_DEVICE, DistContext
from loopnav_bench.train import TrainOptions
from modelkit import checkpoint as ckpt
from modelkit.presets import Preset
from modelkit.train_data import BatchSource


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
    log_every: int = 25        # steps between loss reads (each waits for the device) and non-finite checks


def loop_config(options: TrainOptions, preset: Preset) -> LoopConfig:
    """A preset's loop settings, with the command line's overrides."""
    return LoopConfig(steps=options.steps or preset.steps, batch_size=options.batch_size or preset.batch_size,
                      lr=options.lr or preset.lr, seed=options.seed, ema_decay=preset.ema_decay,
                      save_every=options.save_every)


_FREE_TO_CHANGE = ("steps", "save_every", "log_every")  # how long and how often: the steps themselves are the same


def changed_settings(saved: dict[str, Any], run_config: dict[str, Any], loop: LoopConfig) -> dict[str, tuple]:
    """Every setting of a saved checkpoint that this run would change, as {dotted name: (saved, now)}: the model's
    config and recipe, the data (by manifest hash) and the loop's settings but its length and saving interval."""
    def comparable(config: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in config.items() if k in _RUN_SETTINGS}
        kept["data"] = (config.get("data") or {}).get("manifest_hash")
        kept["train"] = {k: v for k, v in train.items() if k not in _FREE_TO_CHANGE}
        return _flatten(json.loads(json.dumps(kept)))  # tuples as lists, as the saved JSON has them

    before, now = comparable(saved, saved.get("train", {})), comparable(run_config, asdict(loop))
    return {k: (before.get(k), now.get(k)) for k in sorted(before.keys() | now.keys()) if before.get(k) != now.get(k)}


_RUN_SETTINGS = ("model", "config", "recipe", "preset", "autoencoder", "action_layout", "action_bits", "init")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class _LossModule(nn.Module):
    """DDP synchronises gradients through forward(); route it to the model's loss."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch)


def _seed_step(seed: int, rank: int, step: int) -> np.random.Generator:
    sequence = np.random.SeedSequence([seed, rank, step])
    torch.manual_seed(int(sequence.generate_state(1, np.uint64)[0] % (2**63)))
    return np.random.default_rng(sequence)


def fit(model: nn.Module, batches: BatchSource, loop: LoopConfig, output_dir: Path, run_config: dict[str, Any],
        *, device: str = DEFAULT_DEVICE, resume: bool = False, allow_changed_settings: bool = False,
        extra_files: dict[str, dict[str, torch.Tensor]] | None = None,
        progress: ProgressFn | None = None, description: str = "train") -> Path:
    """Train `model` for loop.steps optimizer steps; return the last checkpoint folder.

    `run_config` (JSON-able: model name and config, data identity, ...) is written into every checkpoint along with
    the loop settings, the step and the loss history. With resume=True an existing run in output_dir continues
    from its latest checkpoint; without it an existing run is an error, so nothing is overwritten by accident.
    A resumed run must keep the settings it was trained with (`changed_settings`); with allow_changed_settings a
    change is recorded in every later checkpoint as "setting_changes" (the step it took effect and old -> new).
    """
    dist = DistContext.for_device(device)
    device = torch.device(dist.device(device))
    output_dir = Path(output_dir)
    model.to(device)
    batches.to(device)  # once: every batch is then gathered on the device
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
    step, losses, changes = 0, [], []
    ckpt.run_folder(output_dir)  # refuses, before any step, a folder holding files train did not write
    if (output_dir / ckpt.LATEST).exists():
        if not resume:
            raise FileExistsError(f"{output_dir}: already holds a training run; pass --resume to continue it "
                                  "or choose another --output-dir")
        step_dir = ckpt.resolve(output_dir)
        saved = ckpt.read_config(step_dir)
        changes = saved.get("setting_changes", [])
        if differ := changed_settings(saved, run_config, loop):
            listed = "; ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in differ.items())
            if not allow_changed_settings:
                raise ValueError(f"{step_dir / ckpt.CONFIG}: this run was trained with other settings ({listed}); "
                                 "resume with the same --data, --preset, --model-args, --seed, --lr and --batch-size, "
                                 "or pass --allow-changed-settings to record the change")
            changes = [*changes, {"from_step": saved["step"], "changed": {k: list(v) for k, v in differ.items()}}]
        state = ckpt.load_tensors(step_dir / ckpt.TRAIN_STATE, device)
        model.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("raw.")})
        ema.load_state_dict(ckpt.load_tensors(step_dir / ckpt.WEIGHTS, device))
        ckpt.load_optimizer_tensors(optimizer, state)
        step, losses = saved["step"], saved["losses"]
    elif resume and dist.rank == 0:
        console.print(f"{description}: no run in {output_dir} to resume; starting a new one")
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        trainee: nn.Module = DistributedDataParallel(_LossModule(model))
    else:
        trainee = _LossModule(model)
    if loop.batch_size % dist.world_size:
        raise ValueError(f"batch size {loop.batch_size} does not divide over {dist.world_size} processes")
    per_rank = loop.batch_size // dist.world_size
    use_bf16 = device.type == "cuda"

    def save() -> None:
        config = {**run_config, "train": asdict(loop), "world_size": dist.world_size, "step": step, "losses": losses,
                  **({"setting_changes": changes} if changes else {})}
        train_state = {**{f"raw.{k}": v for k, v in model.state_dict().items()}, **ckpt.optimizer_tensors(optimizer)}
        files = {ckpt.WEIGHTS: ema.state_dict(), ckpt.TRAIN_STATE: train_state, **(extra_files or {})}
        ckpt.write_step(output_dir, step, config, files)

    model.train()
    first_step, started = step, time.perf_counter()
    # the loss stays on the device between reads: reading it every step would wait for the device every step
    window, window_steps, loss_value = torch.zeros((), device=device), 0, float("nan")
    params, ema_params = list(model.parameters()), list(ema.parameters())
    while step < loop.steps:
        rng = _seed_step(loop.seed, dist.rank, step)
        batch = batches(rng, per_rank)
        for group in optimizer.param_groups:
            group["lr"] = loop.lr * min(1.0, (step + 1) / max(loop.warmup, 1))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = trainee(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
        optimizer.step()
        with torch.no_grad():
            # warm-up (as timm/diffusers do) so that short runs do not keep much of the initialisation in the EMA
            decay = min(loop.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, params, 1 - decay)
            for e, b in zip(ema.buffers(), model.buffers()):
                e.copy_(b)
            window += loss.detach()
        step, window_steps = step + 1, window_steps + 1
        saving = step % loop.save_every == 0 or step == loop.steps
        if saving or step % loop.log_every == 0:
            loss_value = dist.mean(window) / window_steps
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} by step {step}; lower --lr or check the data")
        if saving:
            losses.append([step, loss_value])
            window.zero_()
            window_steps = 0
            if dist.rank == 0:
                save()
            dist.barrier()
        if progress and dist.rank == 0:
            rate = loop.batch_size * (step - first_step) / (time.perf_counter() - started)
            progress(description, step, loop.steps, loss=loss_value, samples_s=rate)
    if not (output_dir / ckpt.LATEST).exists():
        raise ValueError(f"nothing to train: --steps {loop.steps} and no checkpoint in {output_dir}")
    return ckpt.resolve(output_dir)
