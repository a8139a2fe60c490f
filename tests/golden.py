"""Golden rollouts: what every shipped checkpoint produces on two fixed synthetic loops, stored in
tests/golden/rollouts.json and compared by tests/test_golden.py.

Regenerate (after a change that is meant to change the models' numbers; say why in the commit):

    OMP_NUM_THREADS=1 .venv/bin/python tests/golden.py --write

Per checkpoint and trajectory it stores, for every predicted frame, the PSNR against the ground truth and the mean of
each colour channel (grey levels): a numeric summary, not a hash, so that last-bit differences of another CPU or
torch build pass and a change of behaviour (weights, sampler, conditioning, decoding) does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden" / "rollouts.json"
SIZE = 32  # the shipped checkpoints' image size
SEED = 7
# Far above the drift measured between 1 and 2 torch threads (0 dB, at most 0.001 grey levels), far below a change of
# behaviour (docs/testing.md)
PSNR_TOL_DB, MEAN_TOL_GREY = 0.1, 0.5


def trajectories():
    from conftest import make_trajectory

    return [make_trajectory(0, length=20, size=SIZE, task="ABA"),
            make_trajectory(1, length=24, size=SIZE, task="ABCA", offset=14)]


def shipped() -> list[tuple[str, str, Path]]:
    """(model, checkpoint name, folder) of every checkpoint shipped with a registered model, in name order."""
    from loopnav_bench.models import model_class, shipped_checkpoints
    from loopnav_bench.registry import MODELS

    found = []
    for model in MODELS.names():
        folder = getattr(model_class(model), "shipped_dir", None)
        if folder is not None:
            found += [(model, name, path) for name, path in shipped_checkpoints(folder, model).items()]
    return found


def summarise(model: str, checkpoint: str) -> dict[str, Any]:
    """{trajectory id: {"psnr": [per frame], "channel_means": [per frame [r, g, b]]}} of one shipped checkpoint."""
    import torch

    from loopnav_bench.metrics import cap_values, psnr, resize_frames
    from loopnav_bench.models import RolloutRequest, load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as evaluate runs them
    try:
        network = load_model(model, checkpoint=checkpoint, seed=SEED)
        summary = {}
        for traj in trajectories():
            request = RolloutRequest.from_trajectory(traj, seed=SEED)
            frames = resize_frames(network.rollout(request), traj.frames.shape[1:3])
            summary[traj.id] = {
                "psnr": [round(float(v), 4) for v in cap_values("psnr", psnr(frames, traj.frames[traj.target]))],
                "channel_means": [[round(float(c), 3) for c in f.reshape(-1, 3).mean(0)] for f in frames]}
        return summary
    finally:
        torch.set_num_threads(threads)


def compute() -> dict[str, Any]:
    return {f"{model}/{name}": summarise(model, name) for model, name, _ in shipped()}


def differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Where `found` (one checkpoint's summary) leaves the tolerances around `expected`, in words."""
    problems = []
    for traj_id, want in expected.items():
        got = found.get(traj_id)
        if got is None or len(got["psnr"]) != len(want["psnr"]):
            problems.append(f"{traj_id}: {len(want['psnr'])} frames expected, got {got and len(got['psnr'])}")
            continue
        psnr_gap = np.abs(np.subtract(got["psnr"], want["psnr"])).max()
        mean_gap = np.abs(np.subtract(got["channel_means"], want["channel_means"])).max()
        if psnr_gap > PSNR_TOL_DB:
            problems.append(f"{traj_id}: PSNR off by up to {psnr_gap:.3f} dB (tolerance {PSNR_TOL_DB})")
        if mean_gap > MEAN_TOL_GREY:
            problems.append(f"{traj_id}: channel means off by up to {mean_gap:.2f} grey levels "
                            f"(tolerance {MEAN_TOL_GREY})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"store the current rollouts in {GOLDEN}")
    args = parser.parse_args(argv)
    found = compute()
    if args.write:
        from loopnav_bench.fileio import write_json_atomic

        write_json_atomic(GOLDEN, found)
        print(f"wrote {GOLDEN} ({len(found)} checkpoints)")
        return 0
    expected = json.loads(GOLDEN.read_text())
    problems = [f"{key}: {p}" for key in sorted(expected.keys() | found.keys())
                for p in (differences(expected[key], found[key]) if key in expected and key in found
                          else [f"{'not shipped' if key in expected else 'no golden rollout'}"])]
    print("\n".join(problems) or f"all {len(found)} checkpoints match {GOLDEN}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
