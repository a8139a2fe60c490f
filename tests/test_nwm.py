"""The NWM baseline: NWM's goal action, training items, conditioning, one optimisation, checkpoints and rollouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import loss_after_steps
from torch import nn

from baselines.nwm import NWM, NWMConfig, goal_action
from baselines.nwm_train import GoalBatches
from modelkit.cdit import TIME_SCALE, Attention
from modelkit.rope import TemporalRoPE
from modelkit.train_data import EncodedTrajectory

pytestmark = pytest.mark.usefixtures("torch_single_thread")
SMALL = NWMConfig(latent_channels=4, latent_size=4, patch=2, hidden=32, depth=1, heads=2)


def randomised(config: NWMConfig = SMALL) -> NWM:
    """A model with every weight random: adaLN-Zero makes a fresh one ignore its inputs."""
    torch.manual_seed(0)
    model = NWM(config)
    for parameter in model.parameters():
        nn.init.normal_(parameter, std=0.2)
    return model.eval()


def encoded_ramp(length: int = 30, base: int = 0) -> EncodedTrajectory:
    """Latents whose value is `base` + their frame index, walking 8 units per frame along +x."""
    latents = base + torch.arange(length, dtype=torch.float32)[:, None, None, None].expand(length, 4, 4, 4)
    poses = np.zeros((length, 5))
    poses[:, 0] = 8.0 * np.arange(length)
    return EncodedTrajectory(latents, poses, np.zeros((length, 4), np.float32), units_per_block=32.0)


def test_goal_action_is_the_goal_pose_in_the_current_frame():
    spacing, units = 0.25, 32.0
    facing_north = np.array([0.0, 0.0, 0.0, np.pi / 2, 0.0])
    two_steps_ahead = np.array([0.0, 2 * spacing * units, 5.0, np.pi, 0.3])  # height and pitch are not NWM's
    dx, dy, dyaw = goal_action(facing_north, two_steps_ahead, units, spacing)
    assert dx == pytest.approx(2 * (2 + 2.5) / 7.5 - 1)  # NWM's min-max to [-1, 1]: x in [-2.5, 5] spacings
    assert dy == pytest.approx(0.0, abs=1e-6)            # y in [-4, 4]: no sideways offset is the middle
    assert dyaw == pytest.approx(np.pi / 2)
    to_the_left = np.array([-spacing * units, 0.0, 0.0, -3.0, 0.0])
    _, dy_left, dyaw_wrapped = goal_action(facing_north, to_the_left, units, spacing)
    assert dy_left == pytest.approx(0.25)
    assert -np.pi < dyaw_wrapped <= np.pi


def test_goal_batches_pair_a_context_ending_at_current_with_goals_in_range():
    config = NWMConfig(latent_channels=4, latent_size=4, goal_offsets=(1, 4), goals_per_context=4,
                       waypoint_spacing=0.25)
    batch = GoalBatches([encoded_ramp()], config)(np.random.default_rng(0), 16)
    assert batch["context"].shape == (16, 4, 4, 4, 4) and batch["target"].shape == (16, 4, 4, 4)
    current = batch["context"][:, -1, 0, 0, 0]
    offsets = torch.round(batch["rel_t"] * TIME_SCALE)
    assert torch.equal(batch["context"][:, 0, 0, 0, 0], current - 3)
    assert ((offsets >= 1) & (offsets <= 4)).all()
    assert torch.equal(batch["target"][:, 0, 0, 0], current + offsets)
    # walking straight ahead one spacing per frame: dx is the offset, in NWM's normalisation
    assert torch.allclose(batch["action"][:, 0], 2 * (offsets + 2.5) / 7.5 - 1, atol=1e-5)
    assert (batch["target"][:, 0, 0, 0] < 30).all()


def test_goal_batches_stay_inside_each_trajectory_and_follow_the_seed():
    """Several trajectories in one latent tensor: windows and goals (before or after the current frame) never cross a
    trajectory's ends, and a trajectory too short for the context is never drawn."""
    config = NWMConfig(latent_channels=4, latent_size=4, goal_offsets=(-3, 4), goals_per_context=4,
                       waypoint_spacing=0.25)
    lengths = (3, 6, 30)
    batches = GoalBatches([encoded_ramp(n, base=1000 * i) for i, n in enumerate(lengths)], config)
    batch = batches(np.random.default_rng(0), 256)
    last = batch["context"][:, -1, 0, 0, 0]
    trajectory, current = last.div(1000, rounding_mode="floor"), last % 1000
    offsets = torch.round(batch["rel_t"] * TIME_SCALE)
    assert set(trajectory.tolist()) == {1, 2} and (current >= 3).all()
    assert torch.equal(batch["context"][..., 0, 0, 0], batch["context"][:, -1:, 0, 0, 0] + torch.arange(-3, 1))
    assert ((offsets >= -3) & (offsets <= 4)).all() and set(offsets.tolist()) == set(range(-3, 5))
    assert torch.equal(batch["target"][:, 0, 0, 0], batch["context"][:, -1, 0, 0, 0] + offsets)
    length = torch.tensor(lengths, dtype=torch.float32)[trajectory.long()]
    assert ((current + offsets >= 0) & (current + offsets < length)).all()
    assert torch.allclose(batch["action"][:, 0], 2 * (offsets + 2.5) / 7.5 - 1, atol=1e-5)
    again = batches(np.random.default_rng(0), 256)
    assert all(torch.equal(again[key], value) for key, value in batch.items())


def _batch(model: NWM, size: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    c, s, k = model.config.latent_channels, model.config.latent_size, model.config.context
    return {"context": torch.randn(size, k, c, s, s), "target": torch.randn(size, c, s, s),
            "action": torch.randn(size, 3), "rel_t": torch.full((size,), 1 / TIME_SCALE)}


def test_output_shape_and_conditioning_on_actions_and_context():
    model = randomised()
    batch = _batch(model)
    x, c_noise = torch.randn(4, 4, 4, 4), torch.zeros(4)
    with torch.no_grad():
        out = model.denoiser(x, c_noise, batch)
        assert out.shape == x.shape
        other_action = model.denoiser(x, c_noise, {**batch, "action": batch["action"] + 1})
        other_context = model.denoiser(x, c_noise, {**batch, "context": batch["context"].flip(1)})
    assert not torch.allclose(out, other_action, atol=1e-4)
    assert not torch.allclose(out, other_context, atol=1e-4)  # slot order matters: positions are per slot


def test_optimizer_steps_on_one_batch_lower_its_loss():
    torch.manual_seed(0)
    model = NWM(SMALL)
    batch = _batch(model)
    before, after = loss_after_steps(model, batch, lr=1e-3)
    assert after < 0.8 * before


def test_cross_attention_bias_matches_torch_multihead_attention_with_add_bias_kv():
    """NWM's cross-attention is nn.MultiheadAttention(add_bias_kv=True); at time 0 RoPE is the identity."""
    torch.manual_seed(0)
    ours = Attention(8, 2, bias_kv=True)
    nn.init.normal_(ours.bias_kv)
    theirs = nn.MultiheadAttention(8, 2, add_bias_kv=True, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.kv.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.kv.bias]))
        theirs.bias_k.copy_(ours.bias_kv[0])
        theirs.bias_v.copy_(ours.bias_kv[1])
        theirs.out_proj.weight.copy_(ours.out.weight)
        theirs.out_proj.bias.copy_(ours.out.bias)
    x, context = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    rope = TemporalRoPE(4).tables(torch.zeros(2, 3)), TemporalRoPE(4).tables(torch.zeros(2, 5))
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    with torch.no_grad():
        expected, _ = theirs(x, context, context, key_padding_mask=~mask)
        torch.testing.assert_close(ours(x, context, *rope, mask), expected)
        plain = Attention(8, 2)  # the same weights without the bias slot
        plain.load_state_dict({k: v for k, v in ours.state_dict().items() if k != "bias_kv"})
        assert not torch.allclose(plain(x, context, *rope, mask), expected)
    assert all(block.cross_attn.bias_kv is not None and block.self_attn.bias_kv is None
               for block in NWM(SMALL).cdit.blocks)


def test_goal_offset_zero_is_drawn_when_the_range_includes_it():
    config = NWMConfig(latent_channels=4, latent_size=4, goal_offsets=(0, 2), goals_per_context=4)
    batch = GoalBatches([encoded_ramp()], config)(np.random.default_rng(0), 64)
    offsets = torch.round(batch["rel_t"] * TIME_SCALE)
    assert set(offsets.tolist()) == {0.0, 1.0, 2.0}
    current = batch["context"][:, -1, 0, 0, 0]
    assert torch.equal(batch["target"][offsets == 0][:, 0, 0, 0], current[offsets == 0])
