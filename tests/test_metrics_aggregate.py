"""Aggregation: per-trajectory means first, then over trajectories, per (split, task, range) cell."""

from __future__ import annotations

import math

import pytest

from loopnav_bench.metrics import PSNR_CAP, aggregate


def _row(id_: str, task: str, rng: int, **metrics) -> dict:
    return {"id": id_, "split": "test", "task": task, "range": rng, "metrics": metrics}


def test_trajectory_means_are_averaged_with_equal_weight():
    rows = [_row("a", "ABA", 5, ssim=[0.2, 0.4], lpips=[0.5]),          # trajectory means 0.3, 0.5
            _row("b", "ABA", 5, ssim=[0.6, 0.6, 0.6, 0.6], lpips=[0.7]),  # 0.6 (4 frames, still weight 1), 0.7
            _row("c", "ABCA", 15, ssim=[1.0], lpips=None)]
    cells = aggregate(rows, ["ssim", "lpips"])
    assert set(cells) == {"test/ABA/5", "test/ABCA/15"}
    aba = cells["test/ABA/5"]
    assert (aba["split"], aba["task"], aba["range"], aba["n"]) == ("test", "ABA", 5, 2)
    assert aba["ssim"]["mean"] == pytest.approx(0.45)  # not the frame-pooled 0.5
    assert aba["ssim"]["std"] == pytest.approx(math.sqrt(((0.3 - 0.45) ** 2 + (0.6 - 0.45) ** 2) / 1))
    assert aba["ssim"]["stderr"] == pytest.approx(aba["ssim"]["std"] / math.sqrt(2)) and aba["ssim"]["n"] == 2
    assert aba["lpips"]["mean"] == pytest.approx(0.6)
    abca = cells["test/ABCA/15"]
    assert abca["lpips"] is None  # unavailable stays null, never dropped silently
    assert abca["ssim"] == {"mean": 1.0, "std": 0.0, "stderr": 0.0, "n": 1}


def test_infinite_psnr_is_capped_and_counted():
    rows = [_row("a", "ABA", 5, psnr=[math.inf, 20.0]), _row("b", "ABA", 5, psnr=[30.0])]
    cell = aggregate(rows, ["psnr"])["test/ABA/5"]
    assert cell["psnr"]["mean"] == pytest.approx(((PSNR_CAP + 20.0) / 2 + 30.0) / 2)
    assert cell["psnr"]["n_capped"] == 1


def test_partial_availability_counts_only_scored_trajectories():
    rows = [_row("a", "ABA", 5, dreamsim=[0.1]), _row("b", "ABA", 5, dreamsim=None)]
    cell = aggregate(rows, ["dreamsim"])["test/ABA/5"]
    assert cell["n"] == 2 and cell["dreamsim"]["n"] == 1 and cell["dreamsim"]["mean"] == pytest.approx(0.1)


def test_bad_values_name_the_trajectory():
    with pytest.raises(ValueError, match="trajectory x: metric 'ssim' has non-finite"):
        aggregate([_row("x", "ABA", 5, ssim=[float("nan")])], ["ssim"])
    with pytest.raises(ValueError, match="trajectory y: metric 'lpips' has no frames"):
        aggregate([_row("y", "ABA", 5, lpips=[])], ["lpips"])
