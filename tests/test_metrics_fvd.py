"""FVD: Fréchet distance against closed forms, and the I3D wiring through a stand-in TorchScript detector."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_standins import isolate_caches, write_i3d

from loopnav_bench.metrics import FVD, MetricUnavailable, frechet_distance
from loopnav_bench.metrics.fvd import feature_stats


@pytest.fixture(autouse=True)
def _caches(monkeypatch, tmp_path):
    isolate_caches(monkeypatch, tmp_path / "caches")


@pytest.fixture
def detector(monkeypatch, tmp_path):
    write_i3d(tmp_path / "caches" / "loopnav")
    monkeypatch.setenv("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS", "1")


def _videos(n: int, frames: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8) for _ in range(n)]


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # full covariance with itself: 0; shifted copy: only the mean term
    m = rng.normal(size=(5, 5))
    sigma = m @ m.T
    assert frechet_distance(mu1, sigma, mu1, sigma) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), abs=1e-8)
    # y = 2x + 3 on four points: 32 + 2c with the population covariance c = 1 (StyleGAN-V convention) -> 34
    x = np.array([[0, 0], [2, 0], [0, 2], [2, 2]], np.float64)
    assert frechet_distance(*feature_stats(x), *feature_stats(2 * x + 3)) == pytest.approx(34.0, rel=1e-10)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu1, sigma, mu2[:4], sigma)


def test_detector_is_called_as_stylegan_v_with_224_centre_crops_in_minus_one_to_one(detector):
    fvd = FVD(clip_len=16)
    assert fvd.info["verified"] is False and fvd.info["mode"] == "default"
    video = np.zeros((40, 36, 64, 3), np.uint8)
    video[:, :, 32:] = 255  # right half white: a centre crop of the resized frame keeps both halves
    feats = fvd.features(video)
    assert feats.shape == (2, 400)  # 40 frames -> two whole 16-frame windows, the 8-frame tail dropped
    low, high, frames, height, width, rescale, resize = feats[0, :7]
    assert (low, high) == pytest.approx((-1.0, 1.0), abs=1e-6)  # bilinear upsampling overshoots by float round-off
    assert (frames, height, width) == (16, 224, 224) and (rescale, resize) == (0, 0)


def test_fvd_of_a_set_with_itself_is_zero_and_grows_with_a_shift(detector):
    fvd = FVD(clip_len=10, batch_size=2)
    videos = _videos(3, 12, 16, 16, seed=1)
    same = fvd.compute(videos, videos)
    assert same["value"] == pytest.approx(0.0, abs=1e-4)  # up to sqrtm round-off on a rank-deficient covariance
    assert (same["n_videos"], same["n_clips"], same["n_clips_gt"], same["clip_len"]) == (3, 3, 3, 10)
    darker = [(v // 2).astype(np.uint8) for v in videos]
    shifted = fvd.compute(darker, videos)
    assert shifted["value"] > 1.0 and shifted["mode"] == "default"
    # batching is invisible: same features whatever the batch size
    two_windows = np.concatenate(videos[:2])
    np.testing.assert_allclose(FVD(clip_len=10, batch_size=1).features(two_windows), fvd.features(two_windows),
                               atol=1e-5)


def test_default_mode_counts_short_videos_and_needs_two_clips(detector):
    fvd = FVD(clip_len=10)
    long_videos, short = _videos(3, 10, 16, 16, seed=2), _videos(1, 7, 16, 16, seed=3)
    result = fvd.compute(long_videos + short, long_videos + short)
    assert result["n_videos"] == 4 and result["n_clips"] == 3 and result["n_videos_too_short"] == 1
    with pytest.raises(ValueError, match="at least 2 clips"):
        fvd.compute(short + long_videos[:1], short + long_videos[:1])
    with pytest.raises(ValueError, match="equally many"):
        fvd.compute(long_videos, long_videos[:2])


def test_loopnav_v1_is_the_mean_of_per_trajectory_squared_feature_distances(detector):
    fvd = FVD(mode="loopnav-v1")
    pred, gt = _videos(3, 11, 12, 16, seed=4), _videos(3, 11, 12, 16, seed=5)
    feats = [(fvd.features(p), fvd.features(g)) for p, g in zip(pred, gt)]
    assert all(p.shape == (1, 400) and p[0, 2] == 11 for p, _ in feats)  # the whole clip is one input
    expected = [float(np.sum((p[0] - g[0]) ** 2)) for p, g in feats]
    result = fvd.compute(pred, gt)
    assert result["per_video"] == pytest.approx(expected) and result["value"] == pytest.approx(np.mean(expected))
    assert result["mode"] == "loopnav-v1" and result["n_clips"] == 3
    with pytest.raises(ValueError, match="at least 10 frames"):
        fvd.features(pred[0][:9])


def test_fvd_refuses_what_it_cannot_verify_or_read(monkeypatch, tmp_path):
    with pytest.raises(MetricUnavailable, match="i3d_torchscript.pt"):
        FVD()
    path = write_i3d(tmp_path / "caches" / "loopnav")
    with pytest.raises(MetricUnavailable, match="cannot be verified"):
        FVD()
    monkeypatch.setenv("LOOPNAV_ALLOW_UNVERIFIED_WEIGHTS", "1")
    path.write_bytes(b"not a torchscript archive")
    with pytest.raises(MetricUnavailable, match="not a loadable TorchScript"):
        FVD()
    with pytest.raises(ValueError, match="unknown FVD mode"):
        FVD(mode="pooled")
    write_i3d(tmp_path / "caches" / "loopnav")
    with pytest.raises(ValueError, match=r"uint8 video \[T, H, W, 3\]"):
        FVD().features(np.zeros((16, 8, 8), np.uint8))
