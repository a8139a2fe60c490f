"""WorldPack math: retrieval scores and window, packing arithmetic and projection init, RoPE, EDM sampler, model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modelkit.adapter import collate
from modelkit.diffusion import EDM, EDMConfig
from modelkit.rope import TemporalRoPE
from worldpack.context import VARIANTS, build_example, cumulative_actions, relative_pose, select_context
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.packing import PackedPatchEmbed, effective_context, tokens_per_frame
from worldpack.retrieval import PAPER_PARAMS, RetrievalParams, retrieval_scores, retrieve

TEST_MODEL = {"hidden": 32, "depth": 2, "heads": 2}


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is faster, and far faster when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- retrieval


def test_retrieval_scores_match_hand_computed_values():
    current = np.array([0.0, 0.0, 0.0, 0.0, 0.0])  # at the origin, looking along +x
    past = np.array([
        [0.0, 3.0, 0.0, 0.0, 0.0],       # beside us, same way: s = 0, ℓ = 3, cos = 1
        [1.0, 0.0, 0.0, math.pi, 0.0],   # 1 block ahead, looking back: s = μ_s, ℓ = 0, cos = -1
        [0.01, 0.0, 5.0, 0.0, 0.0],      # 0.01 ahead (= σ_s), height ignored: s = 0.01, ℓ = 0, cos = 1
        [0.0, 0.0, 0.0, math.pi / 2, 0.0],  # looking sideways: cos = 0 (6e-17 in floating point), both terms vanish
        [0.5, 0.0, 0.0, 0.0, 0.0],       # 0.5 ahead, same way: e^(-0.25/2e-4) underflows
    ])
    expected = [math.exp(-9 / 200), 1.0, math.exp(-0.5), 0.0, 0.0]
    np.testing.assert_allclose(retrieval_scores(past, current), expected, rtol=1e-12, atol=1e-15)


def test_retrieval_scores_use_pitch_and_parameters():
    current = np.array([0.0, 0.0, 0.0, math.pi / 2, math.pi / 3])  # d = (0, 1/2, √3/2)
    past = np.array([[0.0, 2.0, 0.0, math.pi / 2, math.pi / 3]])   # s = 1, ℓ = √3, cos = 1
    got = retrieval_scores(past, current, sigma_s=1.0, w_c=2.0)
    np.testing.assert_allclose(got, [2.0 * math.exp(-0.5) * math.exp(-3 / 200)], rtol=1e-12)


def test_retrieval_units_scaling_is_a_change_of_units():
    rng = np.random.default_rng(0)
    poses_blocks = np.concatenate([rng.normal(0, 2, (50, 3)), rng.uniform(-math.pi, math.pi, (50, 1)),
                                   rng.uniform(-0.5, 0.5, (50, 1))], axis=1)
    poses_doom = poses_blocks.copy()
    poses_doom[:, :3] *= 32
    params = RetrievalParams(sigma_s=0.5)
    blocks = retrieval_scores(poses_blocks[:-1], poses_blocks[-1], **params.score_kwargs(1.0))
    doom = retrieval_scores(poses_doom[:-1], poses_doom[-1], **params.score_kwargs(32.0))
    assert blocks.max() > 0
    np.testing.assert_allclose(doom, blocks, rtol=1e-9)


def test_retrieval_ranks_frames_whose_scores_underflow():
    current = np.zeros(5)
    past = np.array([[0.5, 0, 0, 0, 0], [0.45, 0, 0, 0, 0], [0.6, 0, 0, 0, 0]] + [[0, 0, 0, 0, 0]] * 25, float)
    poses = np.concatenate([past, current[None]])
    # all three candidates score 0.0 in float64, yet the one nearest the current depth ranks first
    assert retrieval_scores(past[:3], current).max() == 0.0
    assert retrieve(poses[[0, 1, 2, -1]], 3, 2, RetrievalParams(exclusion=0)) == [1, 0]


def test_exclusion_window_keeps_the_last_20_frames_out():
    poses = np.zeros((40, 5))  # every frame at the current pose: all candidates score 1
    picked = retrieve(poses, current=30, count=8, params=PAPER_PARAMS)
    assert PAPER_PARAMS.exclusion == 20
    assert sorted(picked) == list(range(0, 8)) and max(picked) < 10
    assert retrieve(poses, current=30, count=50, params=PAPER_PARAMS) == list(range(10))  # frame 10 = 30 − 20 is out
    assert retrieve(poses, current=20, count=4, params=PAPER_PARAMS) == []


def test_select_context_fills_recent_then_retrieved_slots():
    poses = np.zeros((40, 5))
    poses[:, 0] = np.arange(40) * 0.3
    poses[3] = poses[39]  # a past visit to the target's exact pose
    layout = VARIANTS["retrieval-only"]
    slots = select_context(poses, current=39, last_seen=38, layout=layout, params=RetrievalParams(sigma_s=0.5),
                           units_per_block=1.0, split=30)
    assert slots[0] == 38 and slots[1] == 3 and len(slots) == 4
    early = select_context(poses, current=2, last_seen=1, layout=VARIANTS["base"], params=PAPER_PARAMS,
                           units_per_block=1.0, split=30)
    assert early.tolist() == [1, 0, -1, -1]


def test_action_conditioning_sums_the_controls_that_led_to_the_target():
    """Schema: actions[i] produced frames[i]; going from frame 4 to frame 7 took actions 5, 6 and 7."""
    T = 30
    poses = np.zeros((T, 5))
    poses[:, 0] = np.arange(T)
    actions = np.zeros((T, 2), np.float32)
    actions[:, 0] = 2.0 ** np.arange(T)  # each subset of steps has its own sum
    latents = torch.zeros(T, 4, 8, 8)
    example = build_example(latents, poses, cumulative_actions(actions), current=7, last_seen=4,
                            layout=VARIANTS["base"], params=PAPER_PARAMS, units_per_block=1.0, split=15)
    assert example["action"][0].item() == 2**5 + 2**6 + 2**7
    assert example["time_shift"].item() == 3


def test_relative_pose_is_in_the_origin_frame():
    origin = np.array([10.0, 0.0, 0.0, math.pi / 2, 0.0])  # looking along +y
    ahead = np.array([10.0, 64.0, 0.0, math.pi, 0.1])      # 2 blocks (of 32 units) ahead, turned left
    rel = relative_pose(origin, ahead, units_per_block=32)
    np.testing.assert_allclose(rel, [math.log1p(2.0), 0.0, 0.0, math.pi / 2, 0.1], atol=1e-6)


# ---------------------------------------------------------------------------------------------- packing


def test_packing_token_counts_and_effective_context():
    assert [tokens_per_frame((8, 8), k) for k in (2, 4, 8)] == [16, 4, 1]
    full = WorldPackConfig(latent_size=8, variant="full")
    assert full.layout.frames == 19 and len(full.layout.retrieved) == 8
    # on the cpu latent the top 4 memories keep 4 tokens each (copyable), the next 4 one
    assert [tokens_per_frame((8, 8), k) for k in full.kernels[len(full.layout.recent):]] == [4] * 4 + [1] * 4
    assert effective_context((8, 8), full.kernels, 2) == pytest.approx(1 + 2 / 4 + 8 / 16 + (4 * 4 + 4) / 16)
    assert effective_context((16, 16), full.kernels, 2) == 3.25  # any grid that divides by 8
    assert effective_context((8, 8), WorldPackConfig(variant="base").kernels, 2) == 4.0
    # the paper's layout (16 frames at 16×, 8 of them memories) on its 28×28 SD-VAE latent: 196 base tokens, 49 at
    # 4×, ⌈3.5⌉² = 16 at 16× (replicate padding); on ours it is 2.5 frames
    paper = [2, 4, 4] + [8] * 16
    assert [tokens_per_frame((28, 28), k) for k in (2, 4, 8)] == [196, 49, 16]
    assert effective_context((28, 28), paper, 2) == pytest.approx((196 + 2 * 49 + 16 * 16) / 196)
    assert effective_context((8, 8), paper, 2) == 2.5


def test_model_context_token_count_matches_the_layout():
    model = WorldPack(WorldPackConfig(latent_size=8, **TEST_MODEL))
    batch = collate([_example(model.config, current=30)])
    tokens, times, valid = model.context_tokens(batch)
    assert tokens.shape == (1, 16 + 2 * 4 + 8 * 1 + 4 * 4 + 4 * 1, 32) and times.shape == valid.shape == (1, 52)


def test_larger_kernels_map_a_constant_frame_to_the_base_token():
    torch.manual_seed(0)
    embed = PackedPatchEmbed(channels=4, hidden=16, base_kernel=2, levels=3, latent_hw=(8, 8))
    constant = torch.randn(1, 4, 1, 1).expand(1, 4, 8, 8)
    tokens = [embed.project(constant, k) for k in embed.kernels]
    assert [t.shape[1] for t in tokens] == [16, 4, 1]
    for t in tokens:
        torch.testing.assert_close(t, tokens[0][:, :1].expand_as(t))
    ramp = torch.arange(64.0).view(1, 1, 8, 8).expand(1, 4, 8, 8)  # not constant: rates differ
    assert not torch.allclose(embed.project(ramp, 8), embed.project(ramp, 2)[:, :1])


def test_odd_latent_grids_are_replicate_padded():
    embed = PackedPatchEmbed(channels=4, hidden=16, base_kernel=2, levels=3, latent_hw=(6, 6))
    assert embed(torch.randn(2, 3, 4, 6, 6), 8).shape == (2, 3 * 1, 16)
    assert embed(torch.randn(2, 1, 4, 6, 6), 4).shape == (2, 4, 16)


# ---------------------------------------------------------------------------------------------- RoPE


def test_rope_attention_depends_only_on_relative_time():
    torch.manual_seed(0)
    rope = TemporalRoPE(head_dim=16)
    q, k = torch.randn(1, 2, 5, 16), torch.randn(1, 2, 7, 16)
    q_pos, k_pos = torch.randn(1, 5) * 10, -torch.rand(1, 7) * 300

    def scores(shift: float) -> torch.Tensor:
        rq = rope.rotate(q, *rope.tables(q_pos + shift))
        rk = rope.rotate(k, *rope.tables(k_pos + shift))
        return rq @ rk.transpose(-1, -2)

    torch.testing.assert_close(scores(0.0), scores(123.5), rtol=1e-4, atol=1e-4)
    unrotated = q @ k.transpose(-1, -2)
    assert not torch.allclose(scores(0.0), unrotated, atol=1e-2)
    torch.testing.assert_close(rope.rotate(q, *rope.tables(torch.zeros(1, 5))), q)  # position 0 is the identity


# ---------------------------------------------------------------------------------------------- EDM


def test_karras_schedule_runs_from_sigma_max_to_zero():
    edm = EDM(EDMConfig(steps=5, sigma_min=0.002, sigma_max=5.0))
    sigmas = edm.sigmas()
    assert len(sigmas) == 6 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(5.0) and sigmas[-2].item() == pytest.approx(0.002)
    assert bool((sigmas[1:] < sigmas[:-1]).all())


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_sampler_reaches_the_data_under_the_ideal_denoiser(solver):
    """With one data point x0 the ideal denoiser is D = x0, i.e. F = (x0 − c_skip·x)/c_out: sampling must land on x0."""
    edm = EDM(EDMConfig(steps=3, solver=solver))
    x0 = torch.randn(2, 4, 8, 8)

    def ideal(x_in, c_noise, cond):
        sigma = (4 * c_noise).exp().view(-1, 1, 1, 1)
        c_in, c_skip, c_out, _ = edm._broadcast(sigma.flatten(), 4)
        return (x0 - c_skip * (x_in / c_in)) / c_out

    torch.testing.assert_close(edm.sample(ideal, torch.randn(2, 4, 8, 8), None), x0, rtol=1e-4, atol=1e-4)


def test_sampler_shapes_and_determinism_under_a_seed():
    torch.manual_seed(0)
    model = WorldPack(WorldPackConfig(latent_size=8, action_dim=9, **TEST_MODEL)).eval()
    for p in model.cdit.final.parameters():  # adaLN-Zero starts at a zero output: make the net non-trivial
        torch.nn.init.normal_(p, std=0.1)
    batch = collate([_example(model.config, current=t, action_dim=9) for t in (5, 25, 39)])

    def draw(seed: int) -> torch.Tensor:
        noise = torch.randn(model.noise_shape(3), generator=torch.Generator().manual_seed(seed))
        return model.sample(batch, noise)

    first, again, other = draw(1), draw(1), draw(2)
    assert first.shape == (3, 4, 8, 8) and torch.isfinite(first).all()
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


# ---------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_and_backpropagates(variant):
    torch.manual_seed(0)
    model = WorldPack(WorldPackConfig(latent_size=8, variant=variant, action_dim=2, **TEST_MODEL))
    batch = collate([_example(model.config, current=t, action_dim=2) for t in (3, 30)])
    batch["target"] = torch.randn(2, 4, 8, 8)
    loss = model.loss(batch)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert model.cdit.final.linear.weight.grad.abs().sum() > 0


def test_empty_slots_are_masked_out():
    torch.manual_seed(0)
    model = WorldPack(WorldPackConfig(latent_size=8, **TEST_MODEL)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    batch = collate([_example(model.config, current=4)])  # 4 past frames: most slots are empty
    assert not batch["context_valid"].all()
    x, c_noise = torch.randn(1, 4, 8, 8), torch.zeros(1)
    out = model.denoiser(x, c_noise, batch)
    changed = dict(batch, context=torch.where(batch["context_valid"][..., None, None, None], batch["context"],
                                              torch.randn_like(batch["context"])))
    torch.testing.assert_close(model.denoiser(x, c_noise, changed), out)
    moved = dict(batch, context=batch["context"] + 1)  # a valid slot does matter
    assert not torch.allclose(model.denoiser(x, c_noise, moved), out)


def _example(config: WorldPackConfig, current: int, action_dim: int = 4, length: int = 40) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(current)
    poses = np.zeros((length, 5))
    poses[:, 0] = np.arange(length) * 0.2
    poses[length // 2:, 3] = math.pi
    latents = torch.from_numpy(rng.normal(size=(length, config.latent_channels, 8, 8))).float()
    actions = rng.normal(size=(length, action_dim)).astype(np.float32)
    return build_example(latents, poses, cumulative_actions(actions), current, current - 1, config.layout,
                         RetrievalParams(sigma_s=0.5), 1.0, split=length // 2)
