"""Promises of the README checked against independent references, where a weaker test once let a broken one pass:
the bootstrap interval (a plain resampling loop, and its coverage on a known distribution), the literal 100 dB PSNR
cap (on an evaluation whose predictions are the ground truth), atomic writes (a crash inside the write), and shard
verification on every reader (`read_trajectories`, `train`, `score`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SyntheticSource
from test_evaluate import zero_inside_frames

from leaderboard.bootstrap import BootstrapSpec, mean_ci
from loopnav_bench.evaluate import EvalConfig, evaluate, score
from loopnav_bench.fileio import atomic_path, write_json_atomic
from loopnav_bench.metrics import PSNR_CAP
from loopnav_bench.models import WorldModel
from loopnav_bench.shards import ShardError, prepare, read_trajectories, shard_paths

# ---------------------------------------------------------------------------------------------------- bootstrap


def plain_bootstrap(values: np.ndarray, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """The textbook percentile bootstrap: resample n of n with replacement, take the mean, read off the percentiles."""
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def test_bootstrap_matches_a_plain_resampling_loop():
    values = np.random.default_rng(5).gamma(2.0, 3.0, size=40)  # skewed: the interval is not symmetric
    _, low, high = mean_ci(values, BootstrapSpec(resamples=20000, seed=1))
    ref_low, ref_high = plain_bootstrap(values, 20000, 0.95, seed=2)
    width = ref_high - ref_low
    # another stream of resamples: the ends agree to Monte Carlo error (about 1% of the width at 20000 resamples)
    assert abs(low - ref_low) < 0.03 * width and abs(high - ref_high) < 0.03 * width
    assert BootstrapSpec().confidence == 0.95 and "95% CI" in BootstrapSpec().text()


def test_bootstrap_95_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    trials, covered = 1000, 0
    for trial in range(trials):
        sample = rng.normal(3.0, 2.0, size=40)
        _, low, high = mean_ci(sample, BootstrapSpec(resamples=500, seed=trial))
        covered += low <= 3.0 <= high
    # about 0.94 at n = 40 (the percentile bootstrap under-covers a little), give or take 0.007; a 90% interval
    # would cover about 0.89
    assert 0.92 <= covered / trials <= 0.97, covered / trials


# ---------------------------------------------------------------------------------------------------- PSNR cap


class GroundTruth(WorldModel):
    """Predicts the target frames exactly (it reads them from the shards: a test's oracle, never a real model)."""

    name = "oracle"

    def __init__(self, data, **kwargs):
        super().__init__(**kwargs)
        self.frames = {t.id: t.frames[t.offset:] for t in read_trajectories(data)}

    def rollout(self, request):
        return self.frames[request.id]


def test_identical_frames_score_the_literal_100_db_cap(tiny_shards, tmp_path):
    assert PSNR_CAP == 100.0  # LoopNav's metric code returns 100 for MSE < 1e-10
    outcome = evaluate(EvalConfig(data=tiny_shards, output_dir=tmp_path, model="oracle", metrics=["ssim", "psnr"]),
                       model=GroundTruth(tiny_shards))
    rows = [json.loads(line) for line in outcome.samples_path.read_text().splitlines()]
    assert rows and all(v == 100.0 for r in rows for v in r["metrics"]["psnr"])
    assert all(v == pytest.approx(1.0) for r in rows for v in r["metrics"]["ssim"])
    for key, cell in outcome.results["results"].items():
        assert cell["psnr"]["mean"] == 100.0, key
        assert cell["psnr"]["n_capped"] == sum(len(r["metrics"]["psnr"]) for r in rows
                                               if f"{r['split']}/{r['task']}/{r['range']}" == key)


# ---------------------------------------------------------------------------------------------------- atomic writes


def test_a_crash_inside_a_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"old": True})
    old = path.read_bytes()
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(b'{"new": ')  # half of the new file is written...
            f.flush()
            assert path.read_bytes() == old  # ...and nobody reading the path sees it
            raise RuntimeError("killed")
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_a_crash_inside_a_prediction_write_keeps_the_saved_prediction(tiny_shards, tmp_path, monkeypatch):
    config = EvalConfig(data=tiny_shards, output_dir=tmp_path, model="copy-last", metrics=["psnr"], limit=1)
    evaluate(config)
    saved = next(tmp_path.rglob("predictions/*.npz"))
    before = saved.read_bytes()

    def dies_half_way(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise RuntimeError("killed")

    monkeypatch.setattr(np, "savez_compressed", dies_half_way)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate(EvalConfig(**{**config.__dict__, "resume": False}))
    assert saved.read_bytes() == before


# ---------------------------------------------------------------------------------------------------- shard checks


@pytest.fixture
def changed_train_shard(tiny_shards):
    first = shard_paths(tiny_shards, "train")[0]
    zero_inside_frames(first)
    return tiny_shards, first


def test_read_trajectories_refuses_a_changed_shard(changed_train_shard):
    data, changed = changed_train_shard
    with pytest.raises(ShardError, match=rf"{changed}: sha256 .* does not match the manifest"):
        list(read_trajectories(data, "train"))
    assert len(list(read_trajectories(data, "test"))) == 4  # the other split's shards are fine


def test_train_refuses_a_changed_shard(changed_train_shard, tmp_path):
    from loopnav_bench.train import TrainOptions, train

    data, changed = changed_train_shard
    with pytest.raises(ShardError, match=rf"{changed}: sha256 .* does not match the manifest"):
        train("autoencoder", TrainOptions(data=data, output_dir=tmp_path / "ae", steps=1, device="cpu"))
    assert not (tmp_path / "ae").exists() or not any((tmp_path / "ae").iterdir())


def test_score_refuses_a_changed_shard(tmp_path):
    data = tmp_path / "shards"
    prepare(SyntheticSource(), data)
    outcome = evaluate(EvalConfig(data=data, output_dir=tmp_path / "out", model="copy-last", metrics=["psnr"]))
    changed = shard_paths(data, "test")[0]
    zero_inside_frames(changed)
    with pytest.raises(ShardError, match=rf"{changed}: sha256 .* does not match the manifest"):
        score(outcome.results_path.parent / outcome.results["run_key"], metrics=["ssim"])
