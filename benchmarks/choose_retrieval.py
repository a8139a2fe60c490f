"""Choose WorldPack's retrieval parameters for a data source from data: how well do the frames a setting retrieves
match the frame the model must predict?

    python benchmarks/choose_retrieval.py runs/full --split val [--split train --limit 40] [--out retrieval.json]

For every `--stride`-th return-leg frame t of each loop, each candidate setting ranks the ground-truth context frames
[0, min(offset, t − exclusion)) (what a rollout retrieves from, ground truth first) and keeps its top k. Reported per
task: the PSNR and SSIM between the target frame and the top-1 retrieved frame, the best PSNR among the top k, and the
median |Δyaw| of the top-1 (co- or anti-directional). `nearest-pose` (the floor baseline's pose distance) and the
oracle (the context frame with the best PSNR) bound the table. The setting with the best top-1 PSNR on the chosen
split wins; the README records the table.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from baselines.floors import pose_distance
from loopnav_bench.fileio import write_json_atomic
from loopnav_bench.metrics import psnr, ssim
from loopnav_bench.schema import units_per_block, wrap_angle
from loopnav_bench.shards import read_trajectories
from worldpack.retrieval import PAPER_PARAMS, RetrievalParams, retrieval_log_scores


def candidates() -> dict[str, RetrievalParams]:
    """The paper's setting, the earlier hand-set ViZDoom one, and a grid around co-directional retrieval."""
    found = {"paper": PAPER_PARAMS, "sigma_s=0.5 (old vizdoom)": RetrievalParams(sigma_s=0.5)}
    for sigma_s, sigma_l, w_a in itertools.product((0.5, 1.0, 2.0, 4.0), (1.0, 3.0, 10.0), (0.0, 0.1, 1.0)):
        found[f"sigma_s={sigma_s} sigma_l={sigma_l} w_a={w_a}"] = RetrievalParams(sigma_s=sigma_s, sigma_l=sigma_l,
                                                                                   w_a=w_a)
    return found


def measure(data: Path, split: str, limit: int | None, stride: int, k: int) -> dict[str, dict[str, dict[str, float]]]:
    settings = candidates()
    names = [*settings, "nearest-pose", "oracle"]
    per: dict[str, dict[str, dict[str, list[float]]]] = {}
    for n, traj in enumerate(read_trajectories(data, split=split)):
        if limit is not None and n >= limit:
            break
        units, task = units_per_block(traj.meta), traj.meta["task"]
        for t in range(traj.offset, len(traj), stride):
            pool = min(traj.offset, t - PAPER_PARAMS.exclusion)
            if pool <= 0:
                continue
            target = traj.frames[t]
            values = psnr(traj.frames[:pool], np.repeat(target[None], pool, axis=0))  # every candidate's PSNR
            rankings = {name: np.argsort(-retrieval_log_scores(traj.poses[:pool], traj.poses[t],
                                                               **params.score_kwargs(units)), kind="stable")[:k]
                        for name, params in settings.items()}
            rankings["nearest-pose"] = np.argsort(pose_distance(traj.poses[:pool], traj.poses[t:t + 1], units)[0],
                                                  kind="stable")[:k]
            rankings["oracle"] = np.argsort(-values, kind="stable")[:k]
            for name in names:
                top = rankings[name]
                row = per.setdefault(task, {}).setdefault(name, {"psnr": [], "ssim": [], "best_k": [], "dyaw": []})
                row["psnr"].append(float(values[top[0]]))
                row["ssim"].append(float(ssim(traj.frames[top[0]][None], target[None])[0]))
                row["best_k"].append(float(values[top].max()))
                row["dyaw"].append(float(abs(wrap_angle(traj.poses[top[0], 3] - traj.poses[t, 3]))))
    return {task: {name: {"psnr": float(np.mean(r["psnr"])), "ssim": float(np.mean(r["ssim"])),
                          "best_k_psnr": float(np.mean(r["best_k"])),
                          "median_dyaw_deg": float(np.degrees(np.median(r["dyaw"]))),
                          "frames": len(r["psnr"])} for name, r in by_name.items()} for task, by_name in per.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=None, help="at most N loops")
    parser.add_argument("--stride", type=int, default=4, help="every N-th return-leg frame")
    parser.add_argument("-k", type=int, default=4, help="retrieved frames per target")
    parser.add_argument("--top", type=int, default=12, help="rows shown per task")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = measure(args.data, args.split, args.limit, args.stride, args.k)
    console = Console()
    for task, by_name in sorted(results.items()):
        table = Table(title=f"{args.split} {task}: target vs retrieved context frame")
        for column in ("setting", "top-1 PSNR", "top-1 SSIM", f"best of {args.k} PSNR", "median |Δyaw|°", "frames"):
            table.add_column(column, justify="left" if column == "setting" else "right")
        ranked = sorted(by_name.items(), key=lambda kv: -kv[1]["psnr"])
        shown = ranked[:args.top] + [kv for kv in ranked[args.top:] if kv[0] in ("paper", "sigma_s=0.5 (old vizdoom)",
                                                                                  "nearest-pose")]
        for name, r in shown:
            table.add_row(name, f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r['best_k_psnr']:.2f}",
                          f"{r['median_dyaw_deg']:.0f}", str(r["frames"]))
        console.print(table)
    if args.out:
        write_json_atomic(args.out, {"data": str(args.data), "split": args.split, "k": args.k, "stride": args.stride,
                                     "results": results})


if __name__ == "__main__":
    main()
