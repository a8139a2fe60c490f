"""Synthetic `loopnav evaluate` outputs for the leaderboard and paper tests.

`write_run` writes a results/samples pair in exactly the `loopnav evaluate` output contract; `results_tree` builds a
small directory of runs: two models on one manifest (ABA/ABCA x ranges 5 and 15), an older run of one of them, one
run whose LPIPS weights were unverified, one run on a different manifest, and DreamSim unavailable for one model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

METRICS = {"ssim": True, "psnr": True, "lpips": False, "dreamsim": False, "fvd": False}
MANIFEST, OTHER_MANIFEST = "a" * 64, "b" * 64


def write_run(root: Path, model: str, ts: str, quality: float, *, manifest: str = MANIFEST, eval_size=(32, 32),
              unverified: tuple[str, ...] = (), unavailable: tuple[str, ...] = (), n_per_cell: int = 4,
              effective: int | None = None, split: str = "test", seed: int = 0,
              ranges: tuple[int, ...] = (5, 15), oracle: bool = False) -> Path:
    """Write `<root>/<model>/<run-key>/results_<ts>.json` + `samples_<ts>.jsonl`; higher `quality` = better scores."""
    rng = np.random.default_rng(seed)
    run_dir = root / model / f"run-{ts[:10]}-{manifest[:4]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    rows, results = [], {}
    for task in ("ABA", "ABCA"):
        for range_ in ranges:
            cell_rows = []
            for i in range(n_per_cell):
                target_len = 3 * range_ + 2 * i + (4 if task == "ABCA" else 0)
                ramp = np.linspace(0.0, 1.0, target_len)  # errors grow away from the context, shrink near A again
                base = quality - 0.2 * np.sin(np.pi * ramp) + rng.normal(0, 0.03, target_len)
                per_frame = {"ssim": np.clip(base, 0, 1), "psnr": 10 + 15 * base, "lpips": np.clip(1 - base, 0, 1),
                             "dreamsim": np.clip(0.8 - base / 2, 0, 1)}
                cell_rows.append({
                    "id": f"{split}-{task}-{range_}-{i:03d}", "split": split, "task": task, "range": range_,
                    "location": f"village{i % 2}", "offset": 20 + i, "length": 20 + i + target_len,
                    "context_len": 20 + i, "target_len": target_len,
                    "metrics": {m: None if m in unavailable else [round(float(v), 6) for v in per_frame[m]]
                                for m in per_frame}})
            summary = {"split": split, "task": task, "range": range_, "n": n_per_cell,
                       "context_len_mean": float(np.mean([r["context_len"] for r in cell_rows])),
                       "length_mean": float(np.mean([r["length"] for r in cell_rows]))}
            for m in ("ssim", "psnr", "lpips", "dreamsim"):
                if m in unavailable:
                    summary[m] = None
                    continue
                per_traj = np.array([np.mean(r["metrics"][m]) for r in cell_rows])
                summary[m] = {"mean": float(per_traj.mean()), "std": float(per_traj.std(ddof=1)),
                              "stderr": float(per_traj.std(ddof=1) / np.sqrt(len(per_traj))), "n": len(per_traj)}
            results[f"{split}/{task}/{range_}"] = summary
            rows += cell_rows
    metrics = {m: {"available": m not in unavailable,
                   "reason": "weights missing: run `loopnav weights download " + m + "`" if m in unavailable else None,
                   "verified": m not in unverified,
                   "info": {"verified": m not in unverified,
                            "unverified_reason": "LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS=1 was set"}
                   if m in unverified else {}}
               for m in METRICS}
    n_total = len(rows)
    document = {
        "model": model, "oracle": oracle, "model_describe": {"name": model, "model_args": {}, "checkpoint": None},
        "data": {"path": "/data/doom", "manifest_hash": manifest, "source": "vizdoom"},
        "n_trajectories": {"original": n_total, "effective": n_total if effective is None else effective},
        "eval_size": list(eval_size) if eval_size else "native", "resize_filter": "area",
        "higher_is_better": METRICS, "metrics": metrics, "results": results,
        "fvd": {split: None if "fvd" in unavailable else {
            "value": 400.0 / quality, "mode": "set", "n_videos": n_total,
            # per cell; in ABCA/15 a better model scores worse, so each column is ranked on its own
            "cells": {f"{t}/{r}": {"value": 100.0 * quality if (t, r) == ("ABCA", 15) else 300.0 / quality + r,
                                   "n_videos": n_per_cell} for t in ("ABA", "ABCA") for r in ranges}}},
        "config": {"batch_size": 1}, "seeds": {"python": 0}, "env": {"torch": "2.13.0"}, "date": ts,
        "loopnav_version": "0.1.0"}
    (run_dir / f"results_{ts}.json").write_text(json.dumps(document, indent=2))
    (run_dir / f"samples_{ts}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir / f"results_{ts}.json"


def results_tree(root: Path) -> Path:
    write_run(root, "alpha", "2026-01-01T09-00-00.000001", 0.40, seed=1)                # superseded by the next one
    write_run(root, "alpha", "2026-01-02T10-00-00.000001", 0.70, seed=2, unavailable=("dreamsim",))
    write_run(root, "beta", "2026-01-02T11-00-00.000001", 0.95, seed=3, unverified=("lpips",))  # best LPIPS, unverified
    write_run(root, "gamma", "2026-01-03T12-00-00.000001", 0.99, seed=4, manifest=OTHER_MANIFEST)
    return root
