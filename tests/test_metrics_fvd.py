"""FVD: Fréchet distance against closed forms, and the I3D wiring through a stand-in TorchScript detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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
    # y = 2x + 3 on four points: 32 + 2c, with c = 1 for the population covariance (StyleGAN-V) -> 34, and
    # c = 4/3 for the sample covariance (np.cov, common_metrics_on_video_quality) -> 34.667
    x = np.array([[0, 0], [2, 0], [0, 2], [2, 2]], np.float64)
    assert frechet_distance(*feature_stats(x), *feature_stats(2 * x + 3)) == pytest.approx(34.0, rel=1e-10)
    sample = frechet_distance(*feature_stats(x, "sample"), *feature_stats(2 * x + 3, "sample"))
    assert sample == pytest.approx(32 + 8 / 3, rel=1e-10)
    np.testing.assert_allclose(feature_stats(x, "sample")[1], np.cov(x, rowvar=False), rtol=1e-12)
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


def test_frames_are_resized_as_common_metrics_does_rounding_the_long_side_up(detector):
    """fvd/styleganv/fvd.py preprocess_single: short side exactly 224, long side ceil(64 * 224 / 36) = ceil(398.2) =
    399 (as 640x360 -> 399x224), then the centre 224 columns from (399 - 224) // 2 = 87."""
    video = np.zeros((10, 36, 64, 3), np.uint8)
    video[..., 0] = np.arange(64, dtype=np.uint8)[None, None, :] * 4  # a ramp, so the resize and crop positions show
    video[..., 1] = np.arange(36, dtype=np.uint8)[None, :, None] * 7
    frames = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255

    def upstream(width: int) -> torch.Tensor:
        resized = F.interpolate(frames, size=(224, width), mode="bilinear", align_corners=False)
        start = (width - 224) // 2
        return (resized[..., start:start + 224] * 2 - 1).permute(1, 0, 2, 3)

    prepared = FVD()._prepare(torch.from_numpy(video))
    torch.testing.assert_close(prepared, upstream(399), rtol=0, atol=1e-6)
    assert (prepared - upstream(398)).abs().max() > 1e-3  # rounding to 398 (the old behaviour) would not pass
    tall = FVD()._prepare(torch.from_numpy(np.ascontiguousarray(video.transpose(0, 2, 1, 3))))
    assert tall.shape == (3, 10, 224, 224)


def test_the_covariance_convention_is_a_choice_and_is_recorded(detector):
    videos, others = _videos(4, 20, 16, 16, seed=6), _videos(4, 20, 16, 16, seed=7)
    population, sample = FVD(clip_len=10), FVD(clip_len=10, covariance="sample")
    assert (population.info["covariance"], sample.info["covariance"]) == ("population (ddof=0)", "sample (ddof=1)")
    pred = np.concatenate([population.features(v) for v in others])
    gt = np.concatenate([population.features(v) for v in videos])
    expected = {ddof: frechet_distance(pred.mean(0), np.cov(pred, rowvar=False, ddof=ddof), gt.mean(0),
                                       np.cov(gt, rowvar=False, ddof=ddof)) for ddof in (0, 1)}
    assert population.compute(others, videos)["value"] == pytest.approx(expected[0], rel=1e-6)
    result = sample.compute(others, videos)
    assert result["value"] == pytest.approx(expected[1], rel=1e-6) and result["covariance"] == "sample"
    assert abs(expected[1] - expected[0]) > 1e-3 * expected[0]
    assert FVD(mode="loopnav-v1", covariance="sample").info["covariance"] is None  # no covariance term there
    with pytest.raises(ValueError, match="unknown FVD covariance"):
        FVD(covariance="unbiased")


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
