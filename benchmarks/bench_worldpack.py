"""Cost of WorldPack's packed 19-frame context against NWM-style 4 recent frames, at the same width and depth.

For each variant: the context tokens, the time of one denoiser evaluation and of one full frame prediction (the EDM
sampler: 2·steps − 1 evaluations with Heun), and the peak memory of inference. The paper reports 1.09× the time and
0.99× the memory for WorldPack over its baseline; packing gives fewer context tokens than 4 full frames here
(3.25 frames' worth in `full`, 3.81 in `fine-memory`, against 4), so we expect ≤ 1.0× the time.

Time: on a GPU, synchronised wall time; on a CPU, process CPU time with one intra-op thread (robust to other jobs on a
shared machine). Memory: on a GPU, torch.cuda.max_memory_allocated during inference; on a CPU, each variant runs in its
own process and reports the growth of its peak resident set size (ru_maxrss) over inference, so weights are excluded in
both. One measurement is `--rounds` rounds (at least 5), each running both variants in its own process, in alternating
order, so that drift of the machine hits both alike; it reports each ratio's median over the rounds with its range.

    .venv/bin/python benchmarks/bench_worldpack.py --preset small --device cpu --out runs/bench_worldpack.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from loopnav_bench.fileio import write_json_atomic
from modelkit.adapter import collate
from modelkit.autoencoder import preset_config
from modelkit.presets import get_preset
from worldpack.context import build_example, cumulative_actions
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.packing import tokens_per_frame
from worldpack.presets import PRESETS
from worldpack.retrieval import VIZDOOM_PARAMS

VARIANTS = ("full", "base")


def _timed(fn, repeats: int, device: torch.device) -> float:
    """Median time of fn() in milliseconds, after one warm-up call: wall time on a GPU (synchronised), process CPU
    time on a CPU (one intra-op thread), which other load on a shared machine does not inflate."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((clock() - start) * 1000)
    return statistics.median(times)


def measure(variant: str, preset: str, device: str, batch: int, repeats: int) -> dict:
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    p = get_preset(PRESETS, preset, "worldpack")
    config = WorldPackConfig(latent_size=preset_config(p.autoencoder).latent_size,
                             latent_channels=preset_config(p.autoencoder).latent_channels,
                             variant=variant, retrieval=VIZDOOM_PARAMS, **p.model)
    model = WorldPack(config).to(dev).eval()
    # a straight corridor walked out and back, long enough that every slot (recent and retrieved) is filled
    length = 60
    poses = np.zeros((length, 5))
    poses[:, 0] = np.concatenate([np.arange(length // 2), np.arange(length // 2)[::-1]]) * 16.0
    poses[length // 2:, 3] = np.pi
    latents = torch.randn(length, config.latent_channels, config.latent_size, config.latent_size)
    actions = np.zeros((length, config.action_dim), np.float32)
    example = build_example(latents, poses, cumulative_actions(actions), length - 1, length - 2, config.layout,
                            config.retrieval, 32.0, split=length // 2)
    assert bool(example["context_valid"].all()), "benchmark context must fill every slot"
    cond = {k: v.to(dev) for k, v in collate([example] * batch).items()}
    noise = torch.randn(model.noise_shape(batch), device=dev)
    c_noise = torch.zeros(batch, device=dev)
    context_tokens = model.context_tokens(cond)[0].shape[1]

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        denoiser_ms = _timed(lambda: model.denoiser(noise, c_noise, cond), repeats, dev)
        frame_ms = _timed(lambda: model.sample(cond, noise), max(1, repeats // 4), dev)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"variant": variant, "context_frames": config.layout.frames, "effective_context": model.effective_context(),
            "target_tokens": tokens_per_frame((config.latent_size, config.latent_size), config.patch),
            "context_tokens": context_tokens,
            "denoiser_ms": denoiser_ms, "frame_ms": frame_ms, "evaluations_per_frame": 2 * config.edm.steps - 1,
            "peak_memory_mb": peak / 2**20, "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per variant and round (median)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of both variants (at least 5)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # child process: one variant, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.preset, args.device, args.batch, args.repeats)))
        return
    if args.rounds < 5:
        parser.error(f"--rounds {args.rounds}: at least 5 (one run per variant is not a measurement)")
    rounds = []
    for n in range(args.rounds):
        measured = {}
        for variant in VARIANTS if n % 2 == 0 else VARIANTS[::-1]:  # one process each, so peak RSS is per variant
            command = [sys.executable, __file__, "--one", variant, "--preset", args.preset, "--device", args.device,
                       "--batch", str(args.batch), "--repeats", str(args.repeats)]
            measured[variant] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        rounds.append(measured)
    keys = ("context_tokens", "denoiser_ms", "frame_ms", "peak_memory_mb")
    per_round = {key: [r["full"][key] / r["base"][key] for r in rounds] for key in keys}
    ratios = {key: statistics.median(values) for key, values in per_round.items()}
    rows = [{**rounds[0][variant], **{key: statistics.median(r[variant][key] for r in rounds) for key in keys}}
            for variant in VARIANTS]  # each variant's median over the rounds
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu, 1 thread, process CPU time"
    result = {"preset": args.preset, "device": device_name, "batch": args.batch, "torch": torch.__version__,
              "rounds": args.rounds, "rows": rows, "ratio_full_over_base": ratios,
              "ratio_range": {key: [min(values), max(values)] for key, values in per_round.items()}}
    print(f"{'variant':8} {'frames':>6} {'eff.ctx':>7} {'ctx tok':>7} "
          f"{'denoiser ms':>11} {'frame ms':>9} {'peak MB':>8}")
    for r in rows:
        print(f"{r['variant']:8} {r['context_frames']:>6} {r['effective_context']:>7.2f} {r['context_tokens']:>7} "
              f"{r['denoiser_ms']:>11.2f} {r['frame_ms']:>9.1f} {r['peak_memory_mb']:>8.1f}")
    print(f"full / base, median of {args.rounds} interleaved rounds (range): "
          + ", ".join(f"{k} {v:.2f}x ({result['ratio_range'][k][0]:.2f}-{result['ratio_range'][k][1]:.2f})"
                      for k, v in ratios.items()))
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
