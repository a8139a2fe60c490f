"""LPIPS and DreamSim through loopnav's real loading code, on stand-in weight files in the upstream layouts.

The stand-ins have random values, so they never pass verification: loading them needs the opt-in and the
results say `verified: False`. What is tested is the wiring (files, ranges, batching, shapes), not the numbers.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from metrics_standins import isolate_caches, write_alexnet, write_dreamsim_cache

from loopnav_bench.metrics import MetricUnavailable, load_frame_metric


@pytest.fixture(scope="module")
def alexnet_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("torch_home")
    write_alexnet(home)
    return home


@pytest.fixture(autouse=True)
def _caches(monkeypatch, tmp_path):
    isolate_caches(monkeypatch, tmp_path / "caches")


def _frames(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_lpips_refuses_a_stand_in_trunk_unless_opted_in_and_then_marks_it(monkeypatch, alexnet_home):
    monkeypatch.setenv("TORCH_HOME", str(alexnet_home))
    with pytest.raises(MetricUnavailable, match="alexnet-owt-7be5be79.pth has sha256 .* expected 7be5be79"):
        load_frame_metric("lpips")
    monkeypatch.setenv("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS", "1")
    metric = load_frame_metric("lpips", batch_size=3)
    assert metric.info["verified"] is False and metric.info["variant"] == "alex"
    statuses = {w["id"]: w["status"] for w in metric.info["weights"]}
    assert statuses == {"lpips/alexnet": "mismatch", "lpips/linear-alex": "verified"}


@pytest.mark.slow  # AlexNet through both implementations
def test_lpips_equals_upstream_lpips_as_loopnav_averages_it(monkeypatch, alexnet_home):
    """common_metrics_on_video_quality (LoopNav's metric code) builds LPIPS(net='alex', spatial=True) from the same
    pre-placed trunk and takes the mean of each frame's map; loopnav must agree, and not with spatial=False's value."""
    import lpips

    monkeypatch.setenv("TORCH_HOME", str(alexnet_home))
    monkeypatch.setenv("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS", "1")
    hub_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(alexnet_home / "hub"))
    try:
        upstream = {spatial: lpips.LPIPS(net="alex", spatial=spatial, verbose=False) for spatial in (True, False)}
    finally:
        torch.hub.set_dir(hub_dir)
    metric = load_frame_metric("lpips", batch_size=4)
    a, b = _frames(7, 64, 1), _frames(7, 64, 2)
    signed = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():  # upstream scores one frame at a time
        expected = np.array([upstream[True](signed(a[i:i + 1]), signed(b[i:i + 1])).mean().item() for i in range(7)])
        per_layer_mean = upstream[False](signed(a), signed(b)).flatten().double().numpy()
    batched = metric(a, b)
    np.testing.assert_allclose(batched, expected, rtol=1e-6, atol=1e-8)
    assert np.abs(per_layer_mean - expected).max() > 1e-6  # the two averagings differ by more than the tolerance
    assert "spatial=True" in metric.info["implementation"]
    per_frame = np.concatenate([metric(a[i:i + 1], b[i:i + 1]) for i in range(len(a))])
    np.testing.assert_allclose(per_frame, batched, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(metric(a, b), batched)  # deterministic
    assert batched.dtype == np.float64 and batched.shape == (7,) and (batched > 0).all()
    np.testing.assert_allclose(metric(a, a), 0.0, atol=1e-7)


def test_lpips_rejects_a_linear_head_file_of_the_wrong_layout(monkeypatch, alexnet_home, tmp_path):
    from loopnav_bench.metrics import weights

    bogus = tmp_path / "lpips_pkg" / "weights" / "v0.1" / "alex.pth"
    bogus.parent.mkdir(parents=True)
    torch.save({"lin0.weight": torch.zeros(1)}, bogus)
    monkeypatch.setitem(weights.ROOTS, "lpips_package", lambda: tmp_path / "lpips_pkg")
    monkeypatch.setenv("TORCH_HOME", str(alexnet_home))
    monkeypatch.setenv("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS", "1")
    with pytest.raises(MetricUnavailable, match="not an LPIPS alex linear-head file"):
        load_frame_metric("lpips")


@pytest.fixture(scope="module")
def dreamsim_cache(tmp_path_factory):
    return write_dreamsim_cache(tmp_path_factory.mktemp("loopnav_cache") / "dreamsim", "clip_vitb32")


def test_dreamsim_loads_the_cache_layout_and_scores_in_batches(monkeypatch, dreamsim_cache):
    monkeypatch.setenv("LOOPNAV_CACHE_DIR", str(dreamsim_cache.parent))
    with pytest.raises(MetricUnavailable, match="clip_vitb32_pretrain.pth.tar cannot be verified"):
        load_frame_metric("dreamsim", variant="clip_vitb32")
    monkeypatch.setenv("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS", "1")
    hub_dir = torch.hub.get_dir()
    metric = load_frame_metric("dreamsim", variant="clip_vitb32", batch_size=2)
    assert torch.hub.get_dir() == hub_dir
    assert metric.info["variant"] == "clip_vitb32" and metric.info["verified"] is False
    assert {w["status"] for w in metric.info["weights"]} == {"unverifiable"}
    a, b = _frames(2, 32, 3), _frames(1, 32, 4)
    pred, target = a, np.concatenate([b, a[1:]])  # one different pair, one identical pair
    batched = metric(pred, target)
    assert batched.shape == (2,) and batched.dtype == np.float64 and batched[0] > 0
    np.testing.assert_allclose(batched[1], 0.0, atol=1e-6)
    np.testing.assert_allclose(metric(pred[:1], target[:1]), batched[:1], rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not os.environ.get("LOOPNAV_SLOW_TESTS"),
                    reason="DreamSim ensemble (3x ViT-B/16, ~1.4 GB of stand-in files) is slow on CPU; "
                           "set LOOPNAV_SLOW_TESTS=1 to run it")
def test_dreamsim_ensemble_through_torch_hub_restores_the_hub_dir(monkeypatch, tmp_path):
    cache = write_dreamsim_cache(tmp_path / "loopnav" / "dreamsim", "ensemble")
    monkeypatch.setenv("LOOPNAV_CACHE_DIR", str(cache.parent))
    monkeypatch.setenv("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS", "1")
    hub_dir = torch.hub.get_dir()
    metric = load_frame_metric("dreamsim", batch_size=2)
    assert torch.hub.get_dir() == hub_dir and metric.info["variant"] == "ensemble"
    a, b = _frames(2, 24, 5), _frames(2, 24, 6)
    values = metric(a, b)
    assert values.shape == (2,) and (values > 0).all()
    np.testing.assert_allclose(metric(a, a), 0.0, atol=1e-6)
