"""The DIAMOND baseline: μ-law bins, multi-hot action mappings, conditioning, optimisation, checkpoints, rollouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import loss_after_steps, make_trajectory
from torch import nn

from baselines.diamond import (
    ACTION_MAPPINGS,
    CSGO_RECIPE,
    LOOPNAV_CAMERA,
    VIZDOOM_CAMERA,
    Diamond,
    DiamondConfig,
    DiamondModel,
    action_mapping,
    quantise,
    step_window,
)
from baselines.diamond_train import FrameBatches
from loopnav_bench.models import RolloutRequest
from loopnav_bench.schema import ACTION_LAYOUTS
from modelkit import checkpoint as ckpt
from modelkit.diffusion import EDM, EDMConfig
from modelkit.train_data import pixels_float, pixels_uint8

pytestmark = pytest.mark.usefixtures("torch_single_thread")
SMALL = DiamondConfig(image_size=16, channels=(8, 16), depths=(1, 1), attention=(False, True), cond_channels=16)


def test_mu_law_bins_are_symmetric_monotonic_and_finer_near_zero():
    assert LOOPNAV_CAMERA.count == 11  # LoopNav: maxval 0.1 rad, bin 0.02
    values = np.linspace(-0.3, 0.3, 601)
    bins = LOOPNAV_CAMERA(values)
    assert bins.min() == 0 and bins.max() == 10 and (np.diff(bins) >= 0).all()
    assert LOOPNAV_CAMERA(np.array([0.0]))[0] == 5
    assert np.array_equal(LOOPNAV_CAMERA(-values), 10 - bins)
    # μ-law: 0.006 rad reaches the bin next to zero; a linear quantiser needs half a bin, 0.01 rad
    assert LOOPNAV_CAMERA(np.array([0.006]))[0] == 6


def test_vizdoom_turns_and_looks_get_distinct_bins():
    degrees = np.radians([-10, -5, -2, 0, 2, 5, 10])  # the walker's turn steps
    assert len(set(VIZDOOM_CAMERA(degrees))) == 7
    assert len(set(LOOPNAV_CAMERA(degrees))) < 7  # why ViZDoom needs its own maxval
    looks = VIZDOOM_CAMERA(np.radians([-4, 0, 4]))
    assert len(set(looks)) == 3


def test_action_mappings_give_one_bin_per_camera_axis_and_key_bits():
    vizdoom = action_mapping("vizdoom-v1")
    actions = np.array([[12, 0, 0.175, 0], [-12, 3, -0.035, 0.07], [0, -3, 0, -0.07]], np.float32)
    hot = vizdoom(actions)
    assert hot.shape == (3, vizdoom.width) and vizdoom.width == 26
    assert set(np.unique(hot)) <= {0.0, 1.0}
    keys = hot[:, :4]  # forward, back, left, right
    assert keys.tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]]
    assert (hot[:, 4:15].sum(1) == 1).all() and (hot[:, 15:].sum(1) == 1).all()
    loopnav = action_mapping("loopnav-v1")
    assert loopnav.width == 7 + 11 + 11 and len(loopnav.names()) == loopnav.width
    row = np.zeros((1, len(ACTION_LAYOUTS["loopnav-v1"])), np.float32)
    row[0, ACTION_LAYOUTS["loopnav-v1"].index("jump")] = 1
    assert loopnav(row)[0, :7].tolist() == [0, 0, 0, 0, 1, 0, 0]
    assert set(ACTION_MAPPINGS) <= set(ACTION_LAYOUTS)
    with pytest.raises(ValueError, match="recon-v1"):
        action_mapping("recon-v1")


def test_frame_batches_use_the_actions_that_produced_frames_after_the_context():
    frames, actions = step_window(10, 4)
    assert frames.tolist() == [6, 7, 8, 9] and actions.tolist() == [7, 8, 9, 10]
    traj = make_trajectory(0, length=20, size=16, split="train")
    batch = FrameBatches([traj], SMALL)(np.random.default_rng(0), 6)
    assert batch["context"].shape == (6, 4, 3, 16, 16) and batch["target"].shape == (6, 3, 16, 16)
    assert batch["actions"].shape == (6, 4, SMALL.action_dim)
    assert batch["context"].min() >= -1 and batch["context"].max() <= 1


def test_frame_batches_equal_the_per_sample_loop_they_replace():
    """The vectorised gather draws from the Generator exactly as the per-sample loop did (kept here as reference)."""
    trajectories = [make_trajectory(i, length=n, size=16, split="train") for i, n in enumerate((3, 9, 20, 14))]
    frames = [pixels_uint8(t.frames, SMALL.image_size) for t in trajectories]
    actions = [torch.from_numpy(action_mapping(SMALL.action_layout)(t.actions)) for t in trajectories]
    weights = np.array([max(len(f) - SMALL.context, 0) for f in frames], np.float64)

    def reference(rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        context, action, target = [], [], []
        for i in rng.choice(len(frames), size=batch_size, p=weights / weights.sum()):
            t = int(rng.integers(SMALL.context, len(frames[i])))
            frame_index, action_index = (torch.from_numpy(a) for a in step_window(t, SMALL.context))
            context.append(frames[i][frame_index])
            action.append(actions[i][action_index])
            target.append(frames[i][t])
        return {"context": pixels_float(torch.stack(context)), "actions": torch.stack(action),
                "target": pixels_float(torch.stack(target))}

    batches = FrameBatches(trajectories, SMALL)
    for seed in range(4):
        got, expected = batches(np.random.default_rng(seed), 7), reference(np.random.default_rng(seed), 7)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(got[key], value), f"{key}, seed {seed}"


def randomised(config: DiamondConfig = SMALL) -> Diamond:
    """A model with every weight random: the zero-initialised output would hide the inputs' effect."""
    torch.manual_seed(0)
    model = Diamond(config)
    for parameter in model.parameters():
        nn.init.normal_(parameter, std=0.2)
    return model.eval()


def _batch(config: DiamondConfig = SMALL, size: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    s = config.image_size
    actions = torch.zeros(size, config.context, config.action_dim)
    actions[..., 0] = 1
    return {"context": torch.rand(size, config.context, 3, s, s) * 2 - 1, "actions": actions,
            "target": torch.rand(size, 3, s, s) * 2 - 1}


def test_output_shape_and_conditioning_on_actions_and_context():
    model = randomised()
    batch = _batch()
    x, c_noise = torch.randn(3, 3, 16, 16), torch.zeros(3)
    turned = batch["actions"].clone()
    turned[:, -1, 5] = 1
    with torch.no_grad():
        out = model.denoiser(x, c_noise, batch)
        assert out.shape == x.shape
        other_action = model.denoiser(x, c_noise, {**batch, "actions": turned})
        other_context = model.denoiser(x, c_noise, {**batch, "context": batch["context"].flip(1)})
        sampled = model.sample(batch, torch.randn(3, 3, 16, 16))
    assert not torch.allclose(out, other_action, atol=1e-4)
    assert not torch.allclose(out, other_context, atol=1e-4)
    assert torch.allclose(sampled, (sampled + 1).mul(127.5).round().div(127.5).sub(1))  # 8-bit values


def test_optimizer_steps_on_one_batch_lower_its_loss():
    torch.manual_seed(0)
    model = Diamond(SMALL)
    batch = _batch()
    before, after = loss_after_steps(model, batch, lr=2e-3)
    assert after < 0.8 * before


def test_rollout_rejects_another_action_layout(tmp_path):
    torch.manual_seed(0)
    ckpt.write_step(tmp_path, 0, {"model": "diamond", "config": SMALL.to_dict(), "step": 0},
                    {ckpt.WEIGHTS: Diamond(SMALL).state_dict()})
    request = RolloutRequest.from_trajectory(make_trajectory(0, length=14, size=16))
    request.meta["action_layout"] = "recon-v1"
    with pytest.raises(ValueError, match="recon-v1"):
        DiamondModel(checkpoint=str(tmp_path)).rollout(request)


CSGO = DiamondConfig(image_size=16, channels=(8, 16), depths=(1, 1), attention=(False, True), cond_channels=16,
                     **CSGO_RECIPE)


def test_csgo_recipe_noises_the_context_in_training_and_announces_its_level():
    model = randomised(CSGO)
    batch = _batch(CSGO)
    x, c_noise = torch.randn(3, 3, 16, 16), torch.zeros(3)
    seen = {}
    denoiser = model.denoiser

    def spy(x_in, c_noise, cond):
        seen.update(cond)
        return denoiser(x_in, c_noise, cond)

    model.denoiser = spy
    model.loss(batch)
    sigma = seen["context_sigma"]
    assert sigma.shape == (3,) and ((sigma >= 2e-3) & (sigma <= 20)).all()
    assert not torch.allclose(seen["context"], batch["context"])  # the context was noised
    with torch.no_grad():
        low, high = (denoiser(x, c_noise, {**batch, "context_sigma": torch.full((3,), s)}) for s in (2e-3, 1.0))
        model.sample(batch, torch.randn(3, 3, 16, 16))
    assert not torch.allclose(low, high, atol=1e-4)  # the network sees the announced level
    assert torch.equal(seen["context"], batch["context"])  # sampling keeps the context clean
    assert torch.equal(seen["context_sigma"], torch.full((3,), CSGO.edm.sigma_min))


def test_edm_clips_training_sigmas_and_counts_offset_noise_as_noise():
    torch.manual_seed(0)
    clipped = EDM(EDMConfig(p_mean=0.0, p_std=5.0, train_sigma_range=(0.01, 2.0))).training_sigmas(4096, "cpu")
    assert clipped.min() == pytest.approx(0.01) and clipped.max() == pytest.approx(2.0)
    sigma = torch.tensor([0.05, 1.0])
    offset = EDM(EDMConfig(offset_noise=0.3)).preconditioning(sigma)
    plain = EDM(EDMConfig()).preconditioning((sigma**2 + 0.09).sqrt())
    for a, b in zip(offset, plain):
        torch.testing.assert_close(a, b)
    noised = EDM(EDMConfig(offset_noise=0.3)).add_noise(torch.zeros(2000, 3, 4, 4), torch.zeros(2000))
    assert torch.equal(noised, noised[..., :1, :1].expand_as(noised))  # one constant per sample and channel
    assert noised[:, :, 0, 0].std().item() == pytest.approx(0.3, rel=0.1)


def test_sampler_projects_every_denoised_estimate():
    edm = EDM(EDMConfig(steps=3, solver="heun"))
    calls = []

    def project(d):
        calls.append(d)
        return quantise(d.clamp(-1, 1))

    out = edm.sample(lambda x_in, c_noise, cond: torch.ones_like(x_in), torch.randn(2, 3, 4, 4), None, project)
    assert len(calls) == 5  # 3 Heun steps: 2 evaluations each but the last
    assert torch.equal(out, quantise(out))
