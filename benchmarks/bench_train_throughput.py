"""WorldPack training throughput: tokens per second and model FLOPs utilisation (MFU) of the real training loop.

    python benchmarks/bench_train_throughput.py --preset small --device cuda --dtype bf16 [--variant full]
    python benchmarks/bench_train_throughput.py --preset tiny --device cpu --dtype fp32 --steps 6   # smoke run

The loop timed is `modelkit.train.fit` itself (batch building, autocast forward and backward, gradient clipping,
AdamW, EMA), fed by the same `MemoryBatches` source as `loopnav train`, over synthetic latent trajectories of the
preset's latent size (random latents, random-walk poses), so no data set is needed. Step time is taken between the
per-step progress callbacks, which follow a device sync (the loss is read back each step), after `--warmup` steps
and leaving out the last step, which also writes the checkpoint. The time the batch source alone takes (on the device,
as `fit` uses it) is measured too: `fit` builds each batch in the training process between steps, so that time is
device idle time.

FLOPs per step are counted once with `torch.utils.flop_counter.FlopCounterMode` over one forward and backward pass of
the model's loss on a batch of the same size (matmuls, convolutions, attention; the optimizer and elementwise ops
are not counted, the usual MFU convention). MFU = FLOPs per step / step time / peak dense FLOP/s of the device
(`PEAK_TFLOPS` for bf16 on known GPUs, or `--peak-tflops`). Tokens per step = batch × (target + context tokens),
the tokens the transformer processes, padded context slots included.

`fit` uses bf16 autocast on CUDA and fp32 on CPU; --dtype states which one is expected and is checked against it.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from loopnav_bench.fileio import write_json_atomic
from loopnav_bench.schema import ACTION_LAYOUTS
from modelkit.autoencoder import preset_config
from modelkit.presets import get_preset
from modelkit.train import LoopConfig, fit
from modelkit.train_data import EncodedTrajectory
from worldpack.context import VARIANTS
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.packing import tokens_per_frame
from worldpack.presets import PRESETS
from worldpack.retrieval import RETRIEVAL_PRESETS
from worldpack.train import MemoryBatches

# Peak dense bf16 tensor-core FLOP/s (no sparsity), from the vendors' data sheets, matched against the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
ACTION_DIM = len(ACTION_LAYOUTS["vizdoom-v1"])
FRAMES_PER_TRAJECTORY = 256
SYNTHETIC_TRAJECTORIES = 16


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in PEAK_TFLOPS.items() if key in name), None)


def synthetic_trajectories(config: WorldPackConfig, seed: int) -> list[EncodedTrajectory]:
    """Latent trajectories shaped like encoded ViZDoom loops: walks in the plane with turning and looking."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(SYNTHETIC_TRAJECTORIES):
        steps = rng.normal(0, 1, (FRAMES_PER_TRAJECTORY, 5)) * [8.0, 8.0, 0.0, 0.1, 0.02]
        poses = np.cumsum(steps, axis=0)
        latents = torch.randn(FRAMES_PER_TRAJECTORY, config.latent_channels, config.latent_size, config.latent_size)
        actions = rng.normal(0, 1, (FRAMES_PER_TRAJECTORY, config.action_dim)).astype(np.float32)
        out.append(EncodedTrajectory(latents, poses, actions, units_per_block=32.0, offset=FRAMES_PER_TRAJECTORY // 2))
    return out


def tokens_per_example(config: WorldPackConfig) -> tuple[int, int]:
    """(target tokens, context tokens) of one training example, counted as the model patchifies (padded)."""
    grid = (config.latent_size, config.latent_size)
    return tokens_per_frame(grid, config.patch), sum(tokens_per_frame(grid, kernel) for kernel in config.kernels)


def flops_per_step(model: WorldPack, batch: dict[str, torch.Tensor], device: torch.device) -> int:
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model.loss(batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(preset: str, variant: str, device: torch.device, batch_size: int, steps: int, warmup: int,
            peak: float | None, seed: int = 0) -> dict:
    settings = get_preset(PRESETS, preset, "worldpack")
    config = WorldPackConfig(latent_channels=preset_config(settings.autoencoder).latent_channels,
                             latent_size=preset_config(settings.autoencoder).latent_size,
                             action_dim=ACTION_DIM, variant=variant, retrieval=RETRIEVAL_PRESETS["vizdoom"],
                             **settings.model)
    batches = MemoryBatches(synthetic_trajectories(config, seed), config).to(device)
    model = WorldPack(config).to(device)
    rng = np.random.default_rng(seed)
    flops = flops_per_step(model, batches(rng, batch_size), device)
    started = time.perf_counter()
    for _ in range(steps):
        batches(rng, batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the gathers run asynchronously
    batch_seconds = (time.perf_counter() - started) / steps

    stamps: list[float] = []

    def on_step(description: str, done: int, total: int, **fields: object) -> None:
        stamps.append(time.perf_counter())

    loop = LoopConfig(steps=warmup + steps + 1, batch_size=batch_size, lr=settings.lr, seed=seed,
                      save_every=10**9)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        fit(model, batches, loop, Path(scratch) / "run", {"model": "worldpack", "config": config.to_dict()},
            device=str(device), progress=on_step)
    # stamps[i] is taken right after step i + 1; the last step also saved the checkpoint
    step_seconds = (stamps[warmup + steps - 1] - stamps[warmup - 1]) / steps
    target_tokens, context_tokens = tokens_per_example(config)
    achieved = flops / step_seconds
    return {
        "preset": preset, "variant": variant, "batch_size": batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_example": {"target": target_tokens, "context": context_tokens},
        "flops_per_step": flops, "step_seconds": step_seconds,
        "tokens_per_second": batch_size * (target_tokens + context_tokens) / step_seconds,
        "samples_per_second": batch_size / step_seconds,
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak, "mfu": achieved / (peak * 1e12) if peak else None,
        # fit builds each batch (host index arithmetic, device gathers) before the step that uses it, so this part of
        # step_seconds leaves the device mostly idle; compute_mfu is what the device would reach with batches built
        # elsewhere (loader workers)
        "batch_build_seconds": batch_seconds,
        "compute_mfu": flops / max(step_seconds - batch_seconds, 1e-9) / (peak * 1e12) if peak else None,
        "timed_steps": steps, "warmup_steps": warmup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--variant", default="full", choices=sorted(VARIANTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=("bf16", "fp32"),
                        help="expected compute type: the training loop runs bf16 autocast on CUDA and fp32 on CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocator, autotuning); at least 1")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak dense FLOP/s in TFLOP/s (default: looked up for known GPUs)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch build or machine has no CUDA device")
    expected = "bf16" if device.type == "cuda" else "fp32"
    if args.dtype and args.dtype != expected:
        parser.error(f"--dtype {args.dtype}: the training loop computes in {expected} on {device.type}")
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1 (the first step also allocates and autotunes)")
    peak = args.peak_tflops or peak_tflops(device)
    result = measure(args.preset, args.variant, device,
                     args.batch_size or get_preset(PRESETS, args.preset, "worldpack").batch_size,
                     args.steps, args.warmup, peak)
    result.update(dtype=expected, device=str(device), device_name=torch.cuda.get_device_name(device)
                  if device.type == "cuda" else platform.processor() or platform.machine(),
                  torch=torch.__version__, threads=torch.get_num_threads())
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a (no peak FLOP/s for this device)"
    print(f"{args.preset}/{args.variant} on {result['device_name']} ({expected}), batch {result['batch_size']}, "
          f"{result['parameters'] / 1e6:.2f}M parameters\n"
          f"  step {result['step_seconds'] * 1e3:.1f} ms, {result['tokens_per_second']:,.0f} tokens/s, "
          f"{result['samples_per_second']:.1f} samples/s\n"
          f"  {result['flops_per_step'] / 1e9:.2f} GFLOP/step, {result['achieved_tflops']:.3f} TFLOP/s, MFU {mfu}\n"
          f"  building the batch: {result['batch_build_seconds'] * 1e3:.1f} ms of each step"
          + (f" (MFU without it: {result['compute_mfu']:.1%})" if result["compute_mfu"] is not None else ""))
    if args.out:
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
