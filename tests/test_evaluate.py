"""`loopnav evaluate` and `loopnav score` end to end on the tiny synthetic shard set (single process)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SyntheticSource
from typer.testing import CliRunner

import loopnav_bench.metrics as metrics
from baselines.floors import CopyLastModel
from loopnav.cli import app
from loopnav_bench.evaluate import EvalConfig, EvaluationError, evaluate, parse_eval_size, score
from loopnav_bench.models import RolloutRequest, WorldModel
from loopnav_bench.shards import manifest_hash, prepare, read_trajectories

PIXEL = ["ssim", "psnr"]


@pytest.fixture
def no_lpips_no_fvd(monkeypatch):
    """LPIPS and FVD report missing weights, whatever this machine has; SSIM and PSNR stay real."""
    real = metrics.load_frame_metric

    def load(name, device="cpu", batch_size=32, *args, **kwargs):
        if name == "lpips":
            raise metrics.MetricUnavailable("lpips: weights missing (test)")
        return real(name, device, batch_size, *args, **kwargs)

    class NoFVD:
        def __init__(self, *args, **kwargs):
            raise metrics.MetricUnavailable("fvd: i3d weights missing (test)")

    monkeypatch.setattr(metrics, "load_frame_metric", load)
    monkeypatch.setattr(metrics.fvd, "FVD", NoFVD)  # where the fvd spec loads it from


def _config(data, out, **overrides) -> EvalConfig:
    settings = {"model": "copy-last", "metrics": PIXEL, "batch_size": 1, **overrides}
    return EvalConfig(data=data, output_dir=out, **settings)


def _rows(outcome) -> list[dict]:
    return [json.loads(line) for line in outcome.samples_path.read_text().splitlines()]


class CountingModel(CopyLastModel):
    """copy-last that counts its rollouts and can be told to die after `fail_after` of them (a simulated kill)."""

    def __init__(self, fail_after: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.calls, self.fail_after = [], fail_after

    def rollout(self, request):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise RuntimeError("killed")
        self.calls.append(request.id)
        return super().rollout(request)


def test_evaluate_end_to_end(tiny_shards, tmp_path, no_lpips_no_fvd):
    outcome = evaluate(_config(tiny_shards, tmp_path / "out", metrics=[*PIXEL, "lpips", "fvd"]))
    results, rows = outcome.results, _rows(outcome)
    trajectories = {t.id: t for t in read_trajectories(tiny_shards, "test")}

    assert outcome.results_path.parent == tmp_path / "out" / "copy-last"
    assert outcome.samples_path.name == results["samples_file"]
    assert [r["id"] for r in rows] == list(trajectories)  # manifest order, one row per trajectory
    for row in rows:
        traj = trajectories[row["id"]]
        assert row["context_len"] == row["offset"] == traj.offset and row["length"] == len(traj)
        assert row["target_len"] == len(traj) - traj.offset
        assert all(len(row["metrics"][name]) == row["target_len"] for name in PIXEL)
        assert row["metrics"]["lpips"] is None
        # scored against frames [offset, T) exactly: copy-last's SSIM recomputed by hand
        expected = metrics.load_frame_metric("ssim", "cpu", 8)(
            np.repeat(traj.frames[traj.offset - 1:traj.offset], row["target_len"], 0), traj.frames[traj.offset:])
        np.testing.assert_allclose(row["metrics"]["ssim"], expected)

    assert set(results["results"]) == {"test/ABA/5", "test/ABCA/5"}
    cell = results["results"]["test/ABA/5"]
    assert cell["n"] == 2 and cell["lpips"] is None and cell["context_len_mean"] == 12.0
    aba = [np.mean(r["metrics"]["ssim"]) for r in rows if r["task"] == "ABA"]
    assert cell["ssim"]["mean"] == pytest.approx(np.mean(aba))
    assert results["metrics"]["lpips"] == {"available": False, "verified": False,
                                           "reason": "lpips: weights missing (test)", "reason_code": "unavailable"}
    assert results["metrics"]["ssim"]["available"] is True
    assert results["fvd"] == {"test": {"value": None, "reason": "fvd: i3d weights missing (test)", "mode": "default"}}
    assert results["higher_is_better"]["lpips"] is False and results["higher_is_better"]["ssim"] is True
    assert results["data"]["manifest_hash"] == manifest_hash(tiny_shards)
    assert results["n_trajectories"] == {"original": 4, "effective": 4}
    assert results["eval_size"] == "native" and results["resize_filter"] == metrics.RESIZE_FILTER
    assert results["config"]["model"] == "copy-last" and results["seeds"]["seed"] == 0
    assert {"torch", "device", "world_size"} <= set(results["env"])

    saved = np.load(tmp_path / "out" / "copy-last" / results["run_key"] / "predictions" / f"{rows[0]['id']}.npz")
    traj = trajectories[rows[0]["id"]]
    assert (saved["frames"] == traj.frames[traj.offset - 1]).all()


def test_model_sees_only_the_context(tiny_shards, tmp_path):
    trajectories = {t.id: t for t in read_trajectories(tiny_shards, "test")}
    seen = []

    class Spy(CopyLastModel):
        def rollout(self, request: RolloutRequest):
            traj = trajectories[request.id]
            frame_arrays = [v for v in vars(request).values() if isinstance(v, np.ndarray) and v.ndim == 4]
            assert len(frame_arrays) == 1 and frame_arrays[0] is request.context_frames
            assert np.array_equal(request.context_frames, traj.frames[:traj.offset])
            assert np.array_equal(request.target_poses, traj.poses[traj.offset:])
            assert request.horizon == len(traj) - traj.offset
            seen.append(request.id)
            return super().rollout(request)

    evaluate(_config(tiny_shards, tmp_path / "out", batch_size=3), model=Spy())
    assert seen == list(trajectories)


def test_wrong_number_of_frames_names_model_and_trajectory(tiny_shards, tmp_path):
    class Short(WorldModel):
        def rollout(self, request):
            return request.context_frames[:request.horizon - 1]

    with pytest.raises(EvaluationError, match=r"model 'short' on trajectory 'synthetic_ABA_5_test_0': returned 11 "
                                              r"frames; the target \[offset, T\) has 12"):
        evaluate(_config(tiny_shards, tmp_path / "out", model="short"), model=Short())


def test_resume_after_a_kill_recomputes_nothing_finished(tiny_shards, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="killed"):
        evaluate(_config(tiny_shards, out), model=CountingModel(fail_after=2))
    rows_dir = next(out.glob("copy-last/run-*/score-*/rows"))
    finished = {p.name: p.read_bytes() for p in rows_dir.iterdir()}
    assert len(finished) == 2 and not list(out.glob("copy-last/results_*"))

    resumed = CountingModel()
    outcome = evaluate(_config(tiny_shards, out), model=resumed)
    assert len(resumed.calls) == 2 and not {f"{i}.json" for i in resumed.calls} & set(finished)
    assert all((rows_dir / name).read_bytes() == data for name, data in finished.items())
    fresh = evaluate(_config(tiny_shards, tmp_path / "fresh"))
    assert outcome.results["results"] == fresh.results["results"]
    assert _rows(outcome) == _rows(fresh)

    # the same settings again: nothing to do; another seed: a new run; another eval size: predictions reused
    again = CountingModel()
    assert evaluate(_config(tiny_shards, out), model=again).results["run_key"] == outcome.results["run_key"]
    assert again.calls == []
    reseeded = CountingModel()
    other = evaluate(_config(tiny_shards, out, seed=1), model=reseeded)
    assert other.results["run_key"] != outcome.results["run_key"] and len(reseeded.calls) == 4
    resized = CountingModel()
    small = evaluate(_config(tiny_shards, out, eval_size=(12, 12)), model=resized)
    assert small.results["run_key"] == outcome.results["run_key"]
    assert small.results["score_key"] != outcome.results["score_key"] and resized.calls == []
    assert small.results["eval_size"] == [12, 12]
    rerun = CountingModel()
    evaluate(_config(tiny_shards, out, resume=False), model=rerun)
    assert len(rerun.calls) == 4  # --no-resume rolls out and scores everything again


def test_run_key_follows_the_model_instance_args(tiny_shards, tmp_path):
    from baselines.floors import NearestPoseModel

    keys = [evaluate(_config(tiny_shards, tmp_path, model="nearest-pose", limit=1), model=NearestPoseModel(**args))
            .results["run_key"] for args in ({}, {"yaw_weight": 4.0}, {"yaw_weight": 1.0})]
    assert keys[0] == keys[1] != keys[2]  # explicit defaults are the same model; other weights are not


def test_predictions_at_another_size_are_resized_like_the_ground_truth(tiny_shards, tmp_path):
    class HalfSize(CopyLastModel):
        def rollout(self, request):
            return metrics.resize_frames(super().rollout(request), (8, 8))

    outcome = evaluate(_config(tiny_shards, tmp_path / "out", model="half", metrics=["psnr"]), model=HalfSize())
    traj = next(read_trajectories(tiny_shards, "test"))
    last = np.repeat(traj.frames[traj.offset - 1:traj.offset], len(traj) - traj.offset, 0)
    expected = metrics.psnr(metrics.resize_frames(metrics.resize_frames(last, (8, 8)), (16, 16)),
                            traj.frames[traj.offset:])
    np.testing.assert_allclose(_rows(outcome)[0]["metrics"]["psnr"], expected)


def test_score_rescores_saved_predictions_like_evaluate(tiny_shards, tmp_path):
    out = tmp_path / "out"
    evaluated = evaluate(_config(tiny_shards, out, eval_size=(12, 12)))
    run = out / "copy-last" / evaluated.results["run_key"]
    rescored = score(run / "predictions", eval_size=(12, 12), metrics=PIXEL)
    assert rescored.results["results"] == evaluated.results["results"]
    assert _rows(rescored) == _rows(evaluated)
    assert rescored.results["model_describe"] == evaluated.results["model_describe"]

    native = score(run, metrics=["ssim"])
    assert set(native.results["metrics"]) == {"ssim"}
    assert native.results["results"] != evaluated.results["results"]

    other_set = tmp_path / "other"
    prepare(SyntheticSource(per_split=2), other_set)
    with pytest.raises(EvaluationError, match="manifest hash .* differs"):
        score(run, data=other_set)
    next(run.glob("predictions/*.npz")).unlink()
    with pytest.raises(EvaluationError, match="no saved prediction for trajectory"):
        score(run, metrics=PIXEL)


def test_selection_limit_and_unknown_filters(tiny_shards, tmp_path):
    outcome = evaluate(_config(tiny_shards, tmp_path / "out", tasks=["ABA"], limit=1))
    assert outcome.results["n_trajectories"] == {"original": 2, "effective": 1}
    assert [r["id"] for r in _rows(outcome)] == ["synthetic_ABA_5_test_0"]
    with pytest.raises(EvaluationError, match=r"no task \['ABX'\].*it has \['ABA', 'ABCA'\]"):
        evaluate(_config(tiny_shards, tmp_path / "out", tasks=["ABX"]))
    with pytest.raises(EvaluationError, match=r"no split \['val'\]"):
        evaluate(_config(tiny_shards, tmp_path / "out", split=["val"]))
    with pytest.raises(EvaluationError, match="unknown metric"):
        evaluate(_config(tiny_shards, tmp_path / "out", metrics=["ssim", "fid"]))


def test_fvd_gets_every_video_of_the_split_at_the_eval_size_once(tiny_shards, tmp_path, monkeypatch):
    shapes, groups = [], []

    class RecordingFVD:
        info = {"verified": True}

        def __init__(self, mode="default", device="cpu", covariance="population"):
            self.mode, self.covariance = mode, covariance

        def features(self, video):
            shapes.append(video.shape)
            return np.full((1, 1), float(len(shapes)))

        def distance(self, predicted, target):
            groups.append(len(predicted))
            return {"value": float(sum(f[0, 0] for f in predicted)), "n_videos": len(predicted),
                    "covariance": self.covariance}

    monkeypatch.setattr(metrics.fvd, "FVD", RecordingFVD)
    outcome = evaluate(_config(tiny_shards, tmp_path / "out", metrics=["ssim", "fvd"], eval_size=(12, 12),
                               fvd_mode="loopnav-v1", fvd_covariance="sample"))
    assert shapes == [(12, 12, 12, 3)] * 8  # each of the 4 test videos once, predicted and target
    assert groups == [4, 2, 2]  # the split, then its two cells, from the same features
    fvd = outcome.results["fvd"]["test"]
    # features are numbered in call order: predictions get 1, 3, 5, 7; the split alternates ABA, ABCA
    assert (fvd["value"], fvd["n_videos"], fvd["mode"], fvd["covariance"]) == (16.0, 4, "loopnav-v1", "sample")
    assert {key: cell["value"] for key, cell in fvd["cells"].items()} == {"ABA/5": 6.0, "ABCA/5": 10.0}


def test_loopnav_v1_fvd_per_cell_is_the_mean_over_the_cell_as_loopnav_reports_it(tiny_shards, tmp_path, monkeypatch):
    """With a stand-in I3D: the split value averages all trajectories, each cell only its own (LoopNav's tables)."""
    from metrics_standins import isolate_caches, write_i3d

    isolate_caches(monkeypatch, tmp_path / "caches")
    write_i3d(tmp_path / "caches" / "loopnav")
    monkeypatch.setenv("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS", "1")
    outcome = evaluate(_config(tiny_shards, tmp_path / "out", model="dummy", metrics=["fvd"], fvd_mode="loopnav-v1"))
    fvd = outcome.results["fvd"]["test"]
    per_video = dict(zip((r["id"] for r in _rows(outcome)), fvd["per_video"]))
    tasks = {r["id"]: r["task"] for r in _rows(outcome)}
    assert len(set(per_video.values())) == 4 and fvd["value"] == pytest.approx(np.mean(list(per_video.values())))
    for task in ("ABA", "ABCA"):
        cell = fvd["cells"][f"{task}/5"]
        assert cell["value"] == pytest.approx(np.mean([v for k, v in per_video.items() if tasks[k] == task]))
        assert cell["n_videos"] == 2 and cell["value"] != pytest.approx(fvd["value"])
    assert outcome.results["metrics"]["fvd"]["verified"] is False


def test_parse_eval_size():
    assert parse_eval_size("64") == (64, 64)
    assert parse_eval_size("64x96") == (64, 96)
    assert parse_eval_size(None) is None and parse_eval_size("native") is None
    for bad in ("0", "64x", "big", "-3"):
        with pytest.raises(EvaluationError, match="is not N or HxW"):
            parse_eval_size(bad)


def test_cli_evaluate_then_score(tiny_shards, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--model", "nearest-pose", "--data", str(tiny_shards), "--output-dir",
                                 str(out), "--metrics", "ssim,psnr", "--eval-size", "12", "--limit", "2",
                                 "--model-args", "yaw_weight=2"])
    assert result.exit_code == 0, result.output
    # the entry is named after the model and the args it was given
    results = json.loads(next(out.glob("nearest-pose__yaw_weight=2__/results_*.json")).read_text())
    assert results["config"]["model_args"] == {"yaw_weight": 2} and results["eval_size"] == [12, 12]
    assert results["model"] == "nearest-pose[yaw_weight=2]"
    # the summary is the leaderboard's view of this run: the label is not read as markup, the interval is named
    assert "nearest-pose[yaw_weight=2]" in result.output and "mean [95% CI]" in result.output
    assert "resumed" not in result.output

    run = out / "nearest-pose__yaw_weight=2__" / results["run_key"]
    result = runner.invoke(app, ["score", "--predictions", str(run), "--metrics", "ssim,psnr", "--eval-size", "12"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("nearest-pose__yaw_weight=2__/results_*.json"))) == 2

    args = ["evaluate", "--model", "nearest-pose", "--data", str(tiny_shards), "-o", str(out), "--metrics", "ssim,psnr",
            "--eval-size", "12", "--model-args", "yaw_weight=2"]
    result = runner.invoke(app, args)  # all 4: the 2 rows of the run above are kept, and it says so
    assert result.exit_code == 0 and "resumed 2 of 4 trajectories" in result.output, result.output
    result = runner.invoke(app, [*args, "--no-resume"])
    assert result.exit_code == 0 and "resumed" not in result.output

    result = runner.invoke(app, ["evaluate", "--model", "copy-last", "--data", str(tiny_shards), "-o", str(out),
                                 "--eval-size", "12x"])
    assert result.exit_code == 2 and "is not N or HxW" in result.output


def test_labels_keep_two_entries_of_one_model_apart_on_the_leaderboard(tiny_shards, tmp_path):
    from leaderboard.results import group_runs, load_runs

    out = tmp_path / "out"
    plain = evaluate(_config(tiny_shards, out, label="copy-last-a"))
    other = evaluate(_config(tiny_shards, out, label="copy-last-b", seed=1))
    assert (plain.results["model"], plain.results["registered_model"]) == ("copy-last-a", "copy-last")
    assert plain.results_path.parent.name == "copy-last-a" and other.results_path.parent.name == "copy-last-b"
    (group,) = group_runs(load_runs(out))
    assert [run.model for run in group.runs] == ["copy-last-a", "copy-last-b"] and not group.superseded
    rescored = score(out / "copy-last-a" / plain.results["run_key"], metrics=PIXEL)
    assert rescored.results["model"] == "copy-last-a"


def zero_inside_frames(shard, n_bytes: int = 8192) -> None:
    """Zero `n_bytes` in the middle of the shard's first frames.npy: the tar stays readable, the pixels change."""
    import tarfile

    with tarfile.open(shard) as tar:
        member = next(m for m in tar if m.name.endswith(".frames.npy"))
    start = member.offset_data + (member.size - n_bytes) // 2
    with open(shard, "r+b") as f:
        f.seek(start)
        f.write(bytes(n_bytes))


def test_evaluate_refuses_a_changed_shard_and_keeps_no_row_from_it(tiny_shards, tmp_path):
    from loopnav_bench.shards import shard_paths

    _, changed = shard_paths(tiny_shards, "test")  # 3 trajectories, then 1
    clean = changed.read_bytes()
    zero_inside_frames(changed)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["evaluate", "--model", "copy-last", "--data", str(tiny_shards), "-o", str(out),
                                      "--metrics", "ssim,psnr", "--batch-size", "1"])
    assert result.exit_code != 0
    shown = "".join(result.output.split())  # rich folds long lines
    assert str(changed) in shown and "doesnotmatchthemanifest" in shown
    assert not list(out.rglob("results_*.json"))
    rows = {p.stem for p in out.rglob("rows/*.json")}
    changed_ids = {t.id for t in read_trajectories(changed)}
    assert rows and not rows & changed_ids  # rows of the verified shard only

    changed.write_bytes(clean)  # the data restored: the same run resumes and matches a fresh run exactly
    resumed = evaluate(_config(tiny_shards, out))
    fresh = evaluate(_config(tiny_shards, tmp_path / "fresh"))
    assert _rows(resumed) == _rows(fresh)
