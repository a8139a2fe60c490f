"""Shared by the published-model tests: where the upstream golden fixtures are, and LoopNav-layout shards to run
the adapters on."""

from __future__ import annotations

from pathlib import Path

import pytest
from raw_fixtures import add_trajectory, write_csv

from loopnav_bench.models import RolloutRequest
from loopnav_bench.shards import prepare, read_trajectories
from loopnav_bench.sources.loopnav import LoopNavSource

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the repository (a worktree of it sits one folder deeper)
UPSTREAM = next((p / "shared/fixtures/upstream" for p in (ROOT.parent, ROOT.parent.parent)
                 if (p / "shared/fixtures/upstream").is_dir()), None)


def upstream_fixtures(model: str) -> Path:
    """The model's golden fixture folder, or skip the test saying why."""
    if UPSTREAM is None or not (UPSTREAM / model).is_dir():
        pytest.skip(f"the upstream golden fixtures (../shared/fixtures/upstream/{model}) are not on this machine")
    return UPSTREAM / model


def linked_copy(source: Path, dest: Path) -> Path:
    """A fixture folder of symlinks, so a test can replace one file."""
    dest.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        (dest / file.name).symlink_to(file)
    return dest


def loopnav_shards(root: Path, out: Path) -> Path:
    """Two synthetic LoopNav ABA-5 loops (train split), prepared as shards."""
    rows = [add_trajectory(root, "ABA", "plains_village_1", 5, "05-10_16-21-01"),
            add_trajectory(root, "ABA", "plains_village_2", 5, "05-10_16-22-01", seed=1)]
    write_csv(root, "train", rows)
    prepare(LoopNavSource(input=root, splits=["train"]), out)
    return out


def requests_of(shards: Path, horizon: int) -> list[RolloutRequest]:
    """Rollout requests of the shards' trajectories, their return legs cut to `horizon` frames to keep tests short."""
    requests = [RolloutRequest.from_trajectory(t, seed=3) for t in read_trajectories(shards, split="train")]
    for r in requests:
        r.target_poses, r.target_actions = r.target_poses[:horizon], r.target_actions[:horizon]
    return requests


def check_adapter(model, shards: Path, refused_layout: str) -> None:
    """What every published-model adapter must do on tiny LoopNav loops: frames at the tiny native 80x160, the same
    frames alone as in a batch, other frames for another seed, and a layout it cannot map refused naming both."""
    import numpy as np

    requests = requests_of(shards, horizon=3)
    together = model.rollout_batch(requests)
    alone = [model.rollout(r) for r in requests]
    assert [f.shape for f in together] == [(3, 80, 160, 3)] * len(requests)
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))
    requests[0].seed += 1
    assert not np.array_equal(model.rollout(requests[0]), together[0])
    request = requests_of(shards, horizon=1)[0]
    request.meta["action_layout"] = refused_layout
    with pytest.raises(ValueError, match=rf"{model.name} maps only loopnav-v1 .* not '{refused_layout}'"):
        model.rollout(request)


def evaluate_end_to_end(name: str, checkpoint: Path, shards: Path, out: Path, model_args: str) -> str:
    """`loopnav evaluate --model NAME` on two trajectories; the results file as text."""
    import json

    from typer.testing import CliRunner

    from loopnav.cli import app

    result = CliRunner().invoke(app, ["evaluate", "--model", name, "--checkpoint", str(checkpoint), "--data",
                                      str(shards), "--split", "train", "--limit", "2", "--metrics", "ssim,psnr",
                                      "--model-args", model_args, "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return json.dumps(json.loads(next(out.rglob("results_*.json")).read_text()))
