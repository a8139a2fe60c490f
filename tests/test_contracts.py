"""The keys that name resumable work, and the leaderboard's grouping: every input of the run key and of the score key
changes its key, one key of each is pinned for a fixed synthetic set, and results that must not be ranked together
land in separate tables.

The run key names `run-<key>/` (the predictions: a changed input must never reuse them); the score key names
`score-<key>/` (the rows). Both are computed inside `evaluate`, so each test goes through it with one input changed.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from conftest import SyntheticSource
from results_fixtures import write_run

import loopnav_bench.evaluate as evaluate_module
import loopnav_bench.metrics as metrics
from baselines.floors import CopyLastModel
from leaderboard.results import group_runs, load_runs
from loopnav_bench.evaluate import EVAL_THREADS, EvalConfig, evaluate
from loopnav_bench.shards import manifest_hash, prepare

# The keys of copy-last (limit 1, PSNR) on SyntheticSource() (see conftest). They changed if and only if a key's
# inputs or its hashing changed; when that is intended, say so in the commit and update them.
PINNED_MANIFEST = "e52eed16e4d7721d9fffdf5eb5653a2c30096c904de342f850bf734213b53e7f"
PINNED_RUN_KEY = "run-3e8895590ac8b240"
PINNED_SCORE_KEY = "score-10c3a8e797a6fa76"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("contracts") / "shards"
    prepare(SyntheticSource(), out)
    return out


_fresh = itertools.count()  # a new output folder per call, so no key is found from an earlier call's files


def evaluated(data, tmp_path, instance=None, **overrides) -> dict:
    """The results of copy-last on one trajectory, in a fresh output folder, with `overrides` applied."""
    settings = {"model": "copy-last", "metrics": ["psnr"], "limit": 1, "label": "entry", **overrides}
    config = EvalConfig(data=data, output_dir=tmp_path / f"out{next(_fresh)}", **settings)
    return evaluate(config, model=instance).results


def keys(data, tmp_path, instance=None, **overrides) -> tuple[str, str]:
    """(run key, score key) of `evaluated`."""
    results = evaluated(data, tmp_path, instance, **overrides)
    return results["run_key"], results["score_key"]


def test_pinned_keys_of_a_fixed_synthetic_set(shards, tmp_path):
    assert manifest_hash(shards) == PINNED_MANIFEST, "the shard bytes changed: every run key changes with them"
    assert keys(shards, tmp_path, label=None) == (PINNED_RUN_KEY, PINNED_SCORE_KEY)


# ---------------------------------------------------------------------------------------------------- run key


def test_run_key_changes_with_the_registered_model(shards, tmp_path):
    model = CopyLastModel()
    assert keys(shards, tmp_path, model, model="copy-last")[0] != keys(shards, tmp_path, model, model="other")[0]


def test_run_key_changes_with_the_model_args(shards, tmp_path):
    from baselines.floors import NearestPoseModel

    plain, weighted = (keys(shards, tmp_path, NearestPoseModel(**args), model="nearest-pose")[0]
                       for args in ({}, {"yaw_weight": 1.0}))
    assert plain != weighted


def test_run_key_follows_the_checkpoint_bytes_not_its_path(shards, tmp_path):
    def key_of(path, content: bytes) -> str:
        path.write_bytes(content)
        model = CopyLastModel()
        model.checkpoint = str(path)
        return keys(shards, tmp_path, model)[0]

    first = key_of(tmp_path / "a.safetensors", b"weights one")
    assert key_of(tmp_path / "b.safetensors", b"weights one") == first
    assert key_of(tmp_path / "a.safetensors", b"weights two") != first
    assert keys(shards, tmp_path)[0] != first  # no checkpoint at all


def test_run_key_changes_with_the_data_set(shards, tmp_path):
    other = tmp_path / "other"
    prepare(SyntheticSource(per_split=2), other)
    assert keys(shards, tmp_path)[0] != keys(other, tmp_path)[0]


def test_run_key_changes_with_the_seed(shards, tmp_path):
    assert keys(shards, tmp_path, seed=0)[0] != keys(shards, tmp_path, seed=1)[0]


@pytest.mark.parametrize("constant", ["PROTOCOL_VERSION", "SCHEMA_VERSION"])
def test_run_key_changes_with_protocol_and_schema_versions(shards, tmp_path, monkeypatch, constant):
    before = keys(shards, tmp_path)[0]
    monkeypatch.setattr(evaluate_module, constant, "999")
    assert keys(shards, tmp_path)[0] != before


def test_both_keys_change_with_the_device_type(shards, tmp_path, monkeypatch):
    before = keys(shards, tmp_path)
    monkeypatch.setattr(evaluate_module, "_device_type", lambda device: "cuda")  # as if on a GPU: other kernels
    after = keys(shards, tmp_path)
    assert after[0] != before[0] and after[1] != before[1]


def test_run_key_ignores_what_does_not_change_predictions(shards, tmp_path):
    """Eval size, metrics, batch sizes and the output folder reuse the predictions."""
    run_key = keys(shards, tmp_path)[0]
    assert keys(shards, tmp_path, eval_size=(12, 12), metrics=["ssim"], batch_size=3, metric_batch_size=2)[0] == run_key


# ---------------------------------------------------------------------------------------------------- score key


def test_score_key_changes_with_the_eval_size_and_the_metrics(shards, tmp_path):
    native, small, other_metrics = (keys(shards, tmp_path, **o)[1]
                                    for o in ({}, {"eval_size": (8, 8)}, {"metrics": ["psnr", "ssim"]}))
    assert len({native, small, other_metrics}) == 3


def test_score_key_changes_with_a_metric_implementation(shards, tmp_path, monkeypatch):
    """Another implementation or weight file of the same metric (its `info`) must not reuse the rows."""
    before = keys(shards, tmp_path)[1]
    real = metrics.load_frame_metric

    def other_weights(name, *args, **kwargs):
        metric = real(name, *args, **kwargs)
        metric.info = {**metric.info, "weights": {"sha256": "0" * 64}}
        return metric

    monkeypatch.setattr(metrics, "load_frame_metric", other_weights)
    assert keys(shards, tmp_path)[1] != before


def test_score_key_changes_with_the_resize_filter_and_the_protocol(shards, tmp_path, monkeypatch):
    before = keys(shards, tmp_path)[1]
    monkeypatch.setattr(metrics, "RESIZE_FILTER", "cv2.INTER_LINEAR")
    resized = keys(shards, tmp_path)[1]
    monkeypatch.setattr(evaluate_module, "PROTOCOL_VERSION", "999")
    assert len({before, resized, keys(shards, tmp_path)[1]}) == 3


def test_score_key_changes_with_the_fvd_mode(shards, tmp_path):
    """Also when FVD is unavailable (no I3D weights here), so that its implementation info cannot tell them apart."""
    found = [evaluated(shards, tmp_path, metrics=["psnr", "fvd"], fvd_mode=mode) for mode in ("default", "loopnav-v1")]
    assert not found[0]["metrics"]["fvd"]["available"]
    assert found[0]["score_key"] != found[1]["score_key"]


class FakeFVD:
    """An FVD whose info records its covariance as the real one does (no I3D weights needed: only keys are read)."""

    def __init__(self, mode="default", device="cpu", covariance="population"):
        self.info = {"verified": True, "mode": mode, "covariance": covariance if mode == "default" else None}

    def features(self, frames):
        return np.zeros(4)

    def distance(self, predicted, target):
        return {"value": 0.0, "n_videos": len(predicted)}


def test_score_key_changes_with_the_fvd_covariance(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(metrics.fvd, "FVD", FakeFVD)
    found = [keys(shards, tmp_path, metrics=["psnr", "fvd"], fvd_covariance=c)[1] for c in ("population", "sample")]
    assert found[0] != found[1]


# ---------------------------------------------------------------------------------------------------- threads


def test_rows_do_not_depend_on_the_callers_thread_count(shards, tmp_path):
    """Evaluation runs torch on EVAL_THREADS threads whatever the caller set (torchrun sets 1 per rank); another
    count rounds WorldPack's reductions differently."""
    import torch

    def rows(threads: int) -> tuple[list[dict], dict]:
        torch.set_num_threads(threads)
        outcome = evaluate(EvalConfig(data=shards, output_dir=tmp_path / f"t{threads}", model="worldpack",
                                      model_args={"sampler_steps": 2}, metrics=["psnr"], limit=2))
        assert torch.get_num_threads() == threads  # the caller's count is given back
        return [json.loads(line) for line in outcome.samples_path.read_text().splitlines()], outcome.results["env"]

    saved = torch.get_num_threads()
    try:
        (one, env), (two, _) = rows(1), rows(2)
    finally:
        torch.set_num_threads(saved)
    assert one == two and env["torch_threads"] == EVAL_THREADS


# ---------------------------------------------------------------------------------------------------- grouping


def test_results_at_another_eval_size_or_split_are_never_ranked_together(tmp_path):
    manifest = "c" * 64
    write_run(tmp_path, "alpha", "2026-01-01T09-00-00.000001", 0.5, manifest=manifest, eval_size=(32, 32))
    write_run(tmp_path, "alpha", "2026-01-02T09-00-00.000001", 0.6, manifest=manifest, eval_size=(64, 64))
    write_run(tmp_path, "alpha", "2026-01-03T09-00-00.000001", 0.7, manifest=manifest, eval_size=None)
    write_run(tmp_path, "alpha", "2026-01-04T09-00-00.000001", 0.8, manifest=manifest, eval_size=(32, 32),
              split="val")
    write_run(tmp_path, "alpha", "2026-01-05T09-00-00.000001", 0.9, manifest="d" * 64, eval_size=(32, 32))
    groups = group_runs(load_runs(tmp_path))
    assert len(groups) == 5
    assert all(len(g.runs) == 1 and not g.superseded for g in groups)  # none hides another as "older"
    assert {(g.key.split, g.key.eval_size, g.key.manifest_hash[0]) for g in groups} == {
        ("test", (32, 32), "c"), ("test", (64, 64), "c"), ("test", None, "c"), ("val", (32, 32), "c"),
        ("test", (32, 32), "d")}
