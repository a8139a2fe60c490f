"""Does a model use its memory? The context-swap ablation and the oracle-copy ceiling, end to end on synthetic loops.

The synthetic loops (conftest.make_trajectory) draw every frame from the pose, so two loops at different locations
would look alike; here the lower half of the blue channel also encodes the location, so a donor's frames differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SyntheticSource, make_trajectory

from loopnav_bench.ablation import ContextAblation, donor_for, swap_context
from loopnav_bench.evaluate import EvalConfig, EvaluationError, evaluate, load_prediction, score, select_trajectories
from loopnav_bench.models import RolloutRequest, WorldModel
from loopnav_bench.shards import prepare

PIXEL = ["ssim", "psnr"]


class PlacesSource(SyntheticSource):
    """Six test loops over two locations that look different (and longer ones, so the swap reaches past K=4)."""

    name = "synthetic-places"

    def __init__(self):
        super().__init__(per_split=6)

    def load(self, spec):
        index = spec["index"]
        traj = make_trajectory(index, length=24 + 2 * index, task="ABA" if index % 2 == 0 else "ABCA",
                               split=spec["split"])
        traj.meta["location"] = f"loc{index % 3 == 0}"
        traj.frames[:, traj.frames.shape[1] // 2:, :, 2] = 120 if index % 3 == 0 else 10
        return traj


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    out = tmp_path_factory.mktemp("places") / "shards"
    prepare(PlacesSource(), out)
    return out


def _run(data, out, model, **overrides):
    config = EvalConfig(data=data, output_dir=out, model=model, metrics=PIXEL, batch_size=2, **overrides)
    return evaluate(config)


def _rows(outcome) -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, outcome.samples_path.read_text().splitlines())}


def _predictions(outcome) -> dict[str, np.ndarray]:
    folder = Path(outcome.results["run_dir"]) / "predictions"
    return {path.stem: load_prediction(path) for path in sorted(folder.glob("*.npz"))}


def test_donor_is_another_location_of_the_split_and_fixed_by_seed_and_id(places):
    pool, _ = select_trajectories(places, ["test"])
    for item in pool:
        donor = donor_for(item, pool, seed=0)
        assert donor.meta["split"] == "test" and donor.meta["location"] != item.meta["location"]
        assert donor_for(item, list(reversed(pool)), seed=0) is donor  # pool order does not matter
    assert {donor_for(pool[0], pool, seed).id for seed in range(20)} == {
        i.id for i in pool if i.meta["location"] != pool[0].meta["location"]}  # the seed picks among all of them


def test_swap_replaces_only_the_frames_older_than_the_last_k():
    request = RolloutRequest.from_trajectory(make_trajectory(0, length=30))  # offset 15
    donor = np.full((6, 8, 8, 3), 7, np.uint8)
    donor[:, 0, 0, 0] = np.arange(6)  # survives the resize to 16x16 only as a changed corner; tells frames apart
    swapped = swap_context(request, donor, keep_recent=4)
    assert np.array_equal(swapped.context_frames[11:], request.context_frames[11:])
    assert not np.array_equal(swapped.context_frames[:11], request.context_frames[:11])
    assert np.array_equal(swapped.context_frames[0], swapped.context_frames[6])  # cycled: index 6 is donor frame 0
    assert swapped.context_frames.shape == request.context_frames.shape
    for name in ("context_poses", "context_actions", "target_poses", "target_actions"):
        assert np.array_equal(getattr(swapped, name), getattr(request, name))
    assert swap_context(request, donor, keep_recent=15) is request  # nothing older than the last 15


def test_bad_ablation_options_are_refused():
    with pytest.raises(ValueError, match="--context-ablation 'shuffle'"):
        ContextAblation("shuffle")
    with pytest.raises(ValueError, match="--keep-recent -1"):
        ContextAblation("swap", -1)
    with pytest.raises(ValueError, match="only with --context-ablation swap"):
        ContextAblation("none", 8)


def test_swap_run_is_its_own_entry_with_the_ablation_in_key_results_and_rows(places, tmp_path):
    plain = _run(places, tmp_path, "nearest-pose")
    swapped = _run(places, tmp_path, "nearest-pose", context_ablation="swap")
    assert swapped.results["model"] == "nearest-pose+swap" and plain.results["model"] == "nearest-pose"
    assert swapped.results["run_key"] != plain.results["run_key"]
    assert swapped.results["context_ablation"]["kind"] == "swap"
    assert swapped.results["context_ablation"]["keep_recent"] == 4
    assert plain.results["context_ablation"] == {"kind": "none", "keep_recent": None}
    eight = _run(places, tmp_path, "nearest-pose", context_ablation="swap", keep_recent=8)
    assert eight.results["run_key"] != swapped.results["run_key"]
    pool, _ = select_trajectories(places, ["test"])
    by_id = {item.id: item for item in pool}
    for row in _rows(swapped).values():
        assert row["donor"] == donor_for(by_id[row["id"]], pool, 0).id
    # nearest-pose recalls old context frames, which are now another place's: it loses in PSNR
    psnr = {name: np.mean([np.mean(r["metrics"]["psnr"]) for r in _rows(o).values()])
            for name, o in (("plain", plain), ("swap", swapped))}
    assert psnr["swap"] < psnr["plain"]
    # re-scoring keeps the entry's name and ablation
    rescored = score(Path(swapped.results["run_dir"]))
    assert rescored.results["model"] == "nearest-pose+swap" and rescored.results["context_ablation"]["kind"] == "swap"


SHORT_CONTEXT = [("copy-last", None), ("nwm", None), pytest.param("diamond", None, marks=pytest.mark.slow),
                 ("worldpack", "base")]  # DIAMOND: pixel-space rollouts take seconds


@pytest.mark.usefixtures("torch_single_thread")
@pytest.mark.parametrize("model,checkpoint", SHORT_CONTEXT, ids=["copy-last", "nwm", "diamond", "worldpack"])
def test_a_model_seeing_at_most_k_frames_predicts_bit_identical_frames_under_swap(places, tmp_path, model,
                                                                                   checkpoint):
    """copy-last sees 1 frame, NWM and DIAMOND their 4 (context_window, step_window), WorldPack `base` its 4 most
    recent (context.VARIANTS): with K = 4 none of them can see a swapped frame."""
    options = {"checkpoint": checkpoint, "limit": 4}
    plain = _run(places, tmp_path, model, **options)
    swapped = _run(places, tmp_path, model, context_ablation="swap", **options)
    before, after = _predictions(plain), _predictions(swapped)
    assert before.keys() == after.keys() and len(before) == 4
    for key in before:
        assert np.array_equal(before[key], after[key]), key
    rows, swapped_rows = _rows(plain), _rows(swapped)
    assert all(rows[key]["metrics"] == swapped_rows[key]["metrics"] for key in rows)


class Spy(WorldModel):
    """Records what it is given; copies the last context frame."""

    takes_checkpoint = False
    seen: list = []

    def rollout(self, request):
        Spy.seen.append(request.target_frames)
        return np.repeat(request.context_frames[-1:], request.horizon, axis=0)


class OracleSpy(Spy):
    oracle = True


def test_only_an_oracle_is_given_the_target_frames(places, tmp_path):
    Spy.seen = []
    evaluate(EvalConfig(data=places, output_dir=tmp_path, model="spy", metrics=PIXEL, limit=3), model=Spy())
    assert len(Spy.seen) == 3 and all(frames is None for frames in Spy.seen)
    Spy.seen = []
    outcome = evaluate(EvalConfig(data=places, output_dir=tmp_path, model="oracle-spy", metrics=PIXEL, limit=3,
                                  eval_size=(12, 12)), model=OracleSpy())
    assert len(Spy.seen) == 3 and all(frames.shape[1:] == (12, 12, 3) for frames in Spy.seen)
    assert outcome.results["oracle"] is True


@pytest.mark.parametrize("eval_size", [None, (12, 12)])
def test_nearest_pose_never_beats_the_oracle_copy_in_psnr(places, tmp_path, eval_size):
    oracle = _rows(_run(places, tmp_path, "oracle-copy", eval_size=eval_size))
    nearest = _rows(_run(places, tmp_path, "nearest-pose", eval_size=eval_size))
    copy_last = _rows(_run(places, tmp_path, "copy-last", eval_size=eval_size))
    for key, row in oracle.items():
        ceiling = np.array(row["metrics"]["psnr"])
        assert np.all(ceiling >= np.array(nearest[key]["metrics"]["psnr"])), key  # frame by frame, exactly
        assert np.all(ceiling >= np.array(copy_last[key]["metrics"]["psnr"])), key


def test_an_oracle_is_marked_and_its_predictions_are_not_rescored_at_another_size(places, tmp_path):
    outcome = _run(places, tmp_path, "oracle-copy", eval_size=(12, 12), limit=2)
    assert outcome.results["oracle"] is True and outcome.results["model_describe"]["oracle"] is True
    assert _run(places, tmp_path, "nearest-pose", limit=2).results["oracle"] is False
    run = Path(outcome.results["run_dir"])
    with pytest.raises(EvaluationError, match="chosen at eval size"):
        score(run, eval_size=(16, 16))
    assert score(run, eval_size=(12, 12)).results["oracle"] is True


def test_cli_takes_the_ablation_and_refuses_a_bad_one(places, tmp_path):
    from typer.testing import CliRunner

    from loopnav.cli import app

    common = ["evaluate", "--model", "copy-last", "--data", str(places), "--metrics", "psnr,ssim", "-o", str(tmp_path),
              "--limit", "2"]
    result = CliRunner().invoke(app, [*common, "--context-ablation", "swap", "--keep-recent", "2"])
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "copy-last+swap").glob("results_*.json")
    assert json.loads(path.read_text())["context_ablation"]["keep_recent"] == 2
    bad = CliRunner().invoke(app, [*common, "--context-ablation", "shuffle"])
    assert bad.exit_code == 2 and "--context-ablation 'shuffle'" in bad.output
