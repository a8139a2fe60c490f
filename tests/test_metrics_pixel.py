"""SSIM and PSNR against scikit-image, the closed-form anchors, and the evaluation resize."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from loopnav_bench.metrics import RESIZE_FILTER, load_frame_metric, psnr, resize_frames, ssim


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([structural_similarity(x / 255.0, y / 255.0, data_range=1.0, channel_axis=2,
                                           gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
                     for x, y in zip(a, b)])


def _skimage_psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([peak_signal_noise_ratio(x / 255.0, y / 255.0, data_range=1.0) for x, y in zip(a, b)])


def _structured(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Gradients, stripes and blocks: large smooth regions and sharp edges, unlike noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for _ in range(n):
        fx, fy, phase = rng.uniform(0.05, 0.6, 2).tolist() + [rng.uniform(0, 6)]
        base = 127 + 100 * np.sin(fx * xx + phase) * np.cos(fy * yy)
        block = ((xx // rng.integers(3, 9)) + (yy // rng.integers(3, 9))) % 2 * rng.integers(0, 80)
        frames.append(np.stack([base, base * 0.5 + block, 255 - base], axis=-1))
    return np.clip(frames, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("height,width", [(11, 11), (32, 48), (64, 64)])
def test_ssim_and_psnr_match_skimage_on_random_frames(height, width):
    rng = np.random.default_rng(height * width)
    a = rng.integers(0, 256, (5, height, width, 3), dtype=np.uint8)
    noise = rng.integers(-60, 61, a.shape)
    b = np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)
    np.testing.assert_allclose(ssim(a, b), _skimage_ssim(a, b), rtol=0, atol=1e-6)
    np.testing.assert_allclose(psnr(a, b), _skimage_psnr(a, b), rtol=0, atol=1e-6)


def test_ssim_and_psnr_match_skimage_on_structured_frames():
    a, b = _structured(4, 40, 56, seed=1), _structured(4, 40, 56, seed=2)
    blurred = np.stack([cv2.GaussianBlur(frame, (5, 5), 1.2) for frame in a])
    for other in (b, blurred):
        np.testing.assert_allclose(ssim(a, other), _skimage_ssim(a, other), rtol=0, atol=1e-6)
        np.testing.assert_allclose(psnr(a, other), _skimage_psnr(a, other), rtol=0, atol=1e-6)
    assert (ssim(a, blurred) > ssim(a, b)).all()  # a blurred copy is closer than an unrelated image


def test_identical_and_constant_frames():
    a = _structured(3, 24, 24, seed=3)
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-12)
    assert np.isposinf(psnr(a, a)).all()
    grey, white = np.full((2, 16, 16, 3), 128, np.uint8), np.full((2, 16, 16, 3), 255, np.uint8)
    np.testing.assert_allclose(ssim(grey, white), _skimage_ssim(grey, white), atol=1e-9)
    np.testing.assert_allclose(psnr(grey, white), _skimage_psnr(grey, white), atol=1e-9)
    # closed forms: SSIM(all-0, all-1) = C1 / (1 + C1) with C1 = 0.01^2; PSNR(all-0, all-1) = 0 dB
    zeros, ones = np.zeros((1, 16, 16, 3), np.uint8), np.full((1, 16, 16, 3), 255, np.uint8)
    np.testing.assert_allclose(ssim(zeros, ones), 1e-4 / (1 + 1e-4), rtol=1e-12)
    np.testing.assert_allclose(psnr(zeros, ones), 0.0, atol=1e-12)


def test_torch_input_chunking_and_frame_metric_wrapper_agree():
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 256, (9, 20, 24, 3), dtype=np.uint8), rng.integers(0, 256, (9, 20, 24, 3), dtype=np.uint8)
    reference = ssim(a, b)
    np.testing.assert_array_equal(ssim(torch.from_numpy(a), torch.from_numpy(b)), reference)
    np.testing.assert_allclose(ssim(a, b, chunk=2), reference, atol=1e-15)
    per_frame = np.concatenate([ssim(a[i:i + 1], b[i:i + 1]) for i in range(len(a))])
    np.testing.assert_allclose(per_frame, reference, atol=1e-15)
    metric = load_frame_metric("ssim", batch_size=4)
    np.testing.assert_allclose(metric(a, b), reference, atol=1e-15)
    assert metric.info["verified"] is True and metric(a, b).dtype == np.float64
    np.testing.assert_array_equal(load_frame_metric("psnr", batch_size=2)(a, b), psnr(a, b))


def test_the_torch_gpu_path_matches_skimage_when_run_on_cpu():
    from loopnav_bench.metrics.pixel import _blur_matmul, _ssim_values, to_unit_nchw

    a, b = _structured(3, 30, 44, seed=5), _structured(3, 30, 44, seed=6)
    x, y = (to_unit_nchw(torch.from_numpy(f), "cpu", torch.float64) for f in (a, b))
    np.testing.assert_allclose(_ssim_values(x, y, _blur_matmul).numpy(), _skimage_ssim(a, b), rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_ssim_on_gpu_equals_cpu():
    a, b = _structured(40, 64, 64, seed=8), _structured(40, 64, 64, seed=9)
    np.testing.assert_allclose(ssim(a, b, device="cuda"), ssim(a, b), rtol=0, atol=1e-12)


def test_bad_inputs_are_refused_with_the_problem_named():
    a = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        ssim(a, np.zeros((2, 16, 18, 3), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        psnr(a.astype(np.float32), a)
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        ssim(a[..., :1], a[..., :1])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:, :10], a[:, :10])
    with pytest.raises(ValueError, match="unknown frame metric"):
        load_frame_metric("fid")


def test_resize_frames_is_identity_or_inter_area():
    frames = _structured(3, 36, 64, seed=4)
    assert resize_frames(frames, None) is frames and resize_frames(frames, (36, 64)) is frames
    small = resize_frames(frames, (18, 32))
    assert small.shape == (3, 18, 32, 3) and small.dtype == np.uint8 and RESIZE_FILTER == "cv2.INTER_AREA"
    # an exact 2x INTER_AREA downscale is the rounded mean of each 2x2 block
    blocks = frames.reshape(3, 18, 2, 32, 2, 3).astype(np.float64).mean(axis=(2, 4))
    assert np.abs(small.astype(np.float64) - blocks).max() <= 0.5 + 1e-9
    with pytest.raises(ValueError, match="positive"):
        resize_frames(frames, (0, 10))
