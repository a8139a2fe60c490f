"""Batched loopnav metrics vs a per-frame loop in the style of LoopNav's metric script.

LoopNav's calcmetric.py (via JunyaoHu/common_metrics_on_video_quality) scores one frame at a time: SSIM per channel
with cv2.filter2D in float64 numpy, PSNR in numpy, LPIPS with one forward pass per frame pair. loopnav scores the
same frames in batches (torch float64 SSIM, vectorised PSNR, batched LPIPS). This script times both on the same
frames and checks that the values agree to 1e-5.

No pretrained weights exist offline: LPIPS runs with a stand-in AlexNet trunk (random values, written to a temporary
TORCH_HOME, used through LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS=1). Speed does not depend on the weight values.

    python benchmarks/bench_metrics.py [--n 1000] [--sizes 64,128] [--batch-size 64] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import loopnav_bench  # noqa: F401  (torchvision shim before lpips)


def loop_ssim(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per frame, per channel: Gaussian 11x11 (sigma 1.5) with cv2.filter2D, valid region, float64 on [0, 1]."""
    window = cv2.getGaussianKernel(11, 1.5)
    window = window @ window.T
    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.filter2D(img, -1, window)[5:-5, 5:-5]

    values = []
    for a, b in zip(pred, target):
        channels = []
        for c in range(3):
            x, y = a[..., c].astype(np.float64) / 255, b[..., c].astype(np.float64) / 255
            mx, my = blur(x), blur(y)
            vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
            channels.append((((2 * mx * my + c1) * (2 * cov + c2))
                             / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean())
        values.append(np.mean(channels))
    return np.array(values)


def loop_psnr(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    values = []
    for a, b in zip(pred, target):
        mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)
        values.append(100.0 if mse < 1e-10 else 20 * np.log10(1 / np.sqrt(mse)))
    return np.array(values)


def loop_lpips(model: torch.nn.Module, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    values = []
    with torch.no_grad():
        for a, b in zip(pred, target):
            x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 * 2 - 1
            y = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255 * 2 - 1
            values.append(model(x, y).item())
    return np.array(values)


def frames(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth images plus a noisy, shifted copy: realistic SSIM/LPIPS ranges, no identical pairs."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8).reshape(n * 8, 8, 3), (size, n * size),
                      interpolation=cv2.INTER_CUBIC).reshape(n, size, size, 3)
    noisy = np.clip(np.roll(base, 2, axis=2).astype(int) + rng.integers(-25, 26, base.shape), 0, 255).astype(np.uint8)
    return base, noisy


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="frame pairs per size")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch and cv2 threads for both sides (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:  # on a shared, oversubscribed machine multi-threaded torch ops stall; 1 thread is comparable
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)

    with tempfile.TemporaryDirectory() as home:
        os.environ["TORCH_HOME"] = home
        os.environ["LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS"] = "1"
        import lpips
        import torchvision

        from loopnav_bench.metrics import load_frame_metric

        checkpoint = Path(home) / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
        checkpoint.parent.mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet().state_dict(), checkpoint)
        torch.hub.set_dir(str(Path(home) / "hub"))  # so upstream lpips finds the same stand-in trunk
        per_frame_lpips = lpips.LPIPS(net="alex", verbose=False).eval()
        batched = {name: load_frame_metric(name, batch_size=args.batch_size) for name in ("ssim", "psnr", "lpips")}

        results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                              f"torch {torch.__version__}, {torch.get_num_threads()} threads",
                   "n": args.n, "batch_size": args.batch_size, "lpips_weights": "stand-in (random) AlexNet trunk",
                   "sizes": {}}
        for size in (int(s) for s in args.sizes.split(",")):
            pred, target = frames(args.n, size, seed=size)
            loop = {"ssim": timed(loop_ssim, pred, target), "psnr": timed(loop_psnr, pred, target),
                    "lpips": timed(loop_lpips, per_frame_lpips, pred, target)}
            ours = {name: timed(metric, pred, target) for name, metric in batched.items()}
            row = {}
            for name in ("ssim", "psnr", "lpips"):
                (ref, t_loop), (val, t_ours) = loop[name], ours[name]
                row[name] = {"loop_fps": args.n / t_loop, "batched_fps": args.n / t_ours, "speedup": t_loop / t_ours,
                             "max_abs_diff": float(np.abs(ref - val).max())}
            t_loop_all, t_ours_all = sum(t for _, t in loop.values()), sum(t for _, t in ours.values())
            row["all"] = {"loop_fps": args.n / t_loop_all, "batched_fps": args.n / t_ours_all,
                          "speedup": t_loop_all / t_ours_all}
            results["sizes"][size] = row
            print(f"\n{size}x{size}, {args.n} pairs ({results['machine']})")
            print(f"{'metric':8} {'loop f/s':>10} {'batched f/s':>12} {'speedup':>8} {'max |diff|':>11}")
            for name, r in row.items():
                diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
                print(f"{name:8} {r['loop_fps']:10.0f} {r['batched_fps']:12.0f} {r['speedup']:7.1f}x {diff:>11}")
            worst = max(r["max_abs_diff"] for n_, r in row.items() if n_ != "all")
            assert worst <= 1e-5, f"batched and per-frame values differ by {worst:.2e} at {size}x{size}"
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
