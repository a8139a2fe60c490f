"""WorldPack's options, each off by default: per-slot reliability levels (training corruption and rollout
announcement from one builder), the return-leg drop rate, training σ on the sampler's schedule, a null key/value in
cross-attention and partial RoPE; and configs without them (every checkpoint shipped before them) load unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_trajectory
from test_worldpack_memory import SMALL, loops
from torch import nn

from loopnav_bench.models import RolloutRequest, load_model
from loopnav_bench.schema import units_per_block
from modelkit import checkpoint as ckpt
from modelkit.adapter import collate
from modelkit.autoencoder import Autoencoder, AutoencoderConfig
from modelkit.cdit import Attention
from modelkit.diffusion import EDM, EDMConfig
from modelkit.rope import TemporalRoPE
from worldpack.context import build_example, cumulative_actions, select_context
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.presets import PRESETS
from worldpack.train import MemoryBatches, NetworkArgs, Recipe

pytestmark = pytest.mark.usefixtures("torch_single_thread")
SLOT = {**SMALL, "reliability": "slot", "context_noise_max": 0.5}
# the `full` checkpoint's config as shipped before the round-2 options existed (the checkpoints were retrained since)
CONFIG_BEFORE = Path(__file__).resolve().parent / "golden" / "worldpack-config-before-round-2.json"


# ---------------------------------------------------------------------------------------------- config


def test_new_fields_round_trip_and_an_old_config_loads_with_the_old_behaviour():
    config = WorldPackConfig(variant="full", generated_level=0.2, cross_bias_kv=True, rope_fraction=0.5,
                             edm=EDMConfig(schedule_rate=0.25), **SLOT)
    again = WorldPackConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.rope_dims == 8
    old = json.loads(CONFIG_BEFORE.read_text())  # written before these fields existed
    assert not {"reliability", "generated_level", "cross_bias_kv", "rope_fraction"} & old.keys()
    assert "schedule_rate" not in old["edm"]
    loaded = WorldPackConfig.from_dict(old)
    assert (loaded.reliability, loaded.generated_level, loaded.cross_bias_kv, loaded.rope_fraction,
            loaded.edm.schedule_rate) == ("example", 0.0, False, 1.0, 0.0)
    model = WorldPack(loaded)
    assert model.context_level_embed is None and model.context_noise_embed is not None
    assert model.cdit.rope.dims == 96 // 4 and model.cdit.blocks[0].cross_attn.bias_kv is None


@pytest.mark.parametrize("change, message", [
    ({"reliability": "token"}, "reliability='token': choose example or slot"),
    ({"reliability": "slot", "context_noise_max": 0.0}, "needs context_noise_max > 0"),
    ({"generated_level": -0.1}, "cannot be negative"),
    ({"rope_fraction": 0.01}, "rope_fraction=0.01"),
    ({"rope_fraction": 1.5}, "rope_fraction=1.5"),
])
def test_bad_options_are_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        WorldPackConfig(**{**SMALL, **change})


def test_unset_network_args_keep_the_presets_values():
    preset = PRESETS["cpu"].model
    assert NetworkArgs().network_config(preset) == preset
    chosen = NetworkArgs(reliability="example", rope_fraction=0.75, sampler_sigma_rate=0.1).network_config(preset)
    assert chosen["reliability"] == "example" and chosen["rope_fraction"] == 0.75
    assert chosen["edm"] == replace(preset["edm"], schedule_rate=0.1)
    assert chosen["context_noise_max"] == preset["context_noise_max"]


# ---------------------------------------------------------------------------------------------- reliability


def _corrupted(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, S] whether each slot was corrupted: the loops' latents are constant per frame (their frame index)."""
    context = batch["context"].flatten(2)
    return (context != context[..., :1]).any(-1)


def test_slot_reliability_corrupts_exactly_the_generated_slots_at_their_announced_level():
    encoded, config = loops(), WorldPackConfig(variant="full", **SLOT)
    recent = len(config.layout.recent)
    batch = MemoryBatches(encoded, config, Recipe(drop_recent_rate=0.0))(np.random.default_rng(0), 128)
    corrupted, level = _corrupted(batch), batch["context_level"]
    assert torch.equal(corrupted, level > 0)  # the announced slots and no others
    assert not corrupted[:, recent:].any() and corrupted[:, :recent].any()  # memories stay clean real frames
    assert not corrupted[:, :recent].all()  # outbound targets' recent frames are real
    # each slot's frame index (+ 1000 per trajectory): its mean, off by well under 0.5 where noised (std ≤ 0.5 / 8)
    frames = batch["context"].flatten(2).mean(-1).round()
    frame, trajectory = frames % 1000, (frames // 1000).long()
    after_offset = frame >= torch.tensor([e.offset for e in encoded])[trajectory]
    valid = batch["context_valid"]
    assert torch.equal(corrupted[valid], after_offset[valid])  # corrupted: exactly the frames a rollout generates
    assert valid[:, recent:].any() and not after_offset[:, recent:][valid[:, recent:]].any()  # real memories
    per_example = level.max(1).values
    assert ((level == 0) | (level == per_example[:, None])).all()  # one level per example
    assert 0 < per_example.max() <= 0.5 and per_example[per_example > 0].std() > 0
    slot_std = batch["context"].flatten(2)[corrupted].std(-1)  # of a constant frame plus the noise
    assert torch.corrcoef(torch.stack([slot_std, level[corrupted]]))[0, 1] > 0.9  # the level is the noise's std
    assert not batch["context_noise"].any()  # nothing is announced per example


def test_example_reliability_still_noises_every_slot_at_one_level():
    config = WorldPackConfig(variant="full", **{**SLOT, "reliability": "example"})
    batch = MemoryBatches(loops(), config)(np.random.default_rng(0), 32)
    assert _corrupted(batch).all() and not batch["context_level"].any()
    assert (batch["context_noise"] > 0).all()


@pytest.mark.parametrize("rate, return_rate", [(0.0, 1.0), (1.0, 0.0)])
def test_the_return_leg_drop_rate_applies_to_return_leg_targets_only(rate, return_rate):
    encoded, config = loops(), WorldPackConfig(variant="full", **SMALL)
    recent = len(config.layout.recent)
    recipe = Recipe(return_leg_rate=0.5, drop_recent_rate=rate, drop_recent_return_rate=return_rate)
    batch = MemoryBatches(encoded, config, recipe)(np.random.default_rng(0), 256)
    target = batch["target"][:, 0, 0, 0]
    offsets = torch.tensor([e.offset for e in encoded])[(target // 1000).long()]
    on_return = (target % 1000) >= offsets
    has_memory = batch["context_valid"][:, recent:].any(1)
    hidden = ~batch["context_valid"][:, :recent].any(1)
    assert on_return.any() and (~on_return & has_memory).any()
    assert torch.equal(hidden & has_memory, (on_return if return_rate else ~on_return) & has_memory)


def test_an_unset_return_leg_drop_rate_draws_the_batches_it_drew_before():
    encoded, config = loops(), WorldPackConfig(variant="full", **SMALL)
    default = MemoryBatches(encoded, config, Recipe(drop_recent_rate=0.3))(np.random.default_rng(5), 64)
    same = MemoryBatches(encoded, config, Recipe(drop_recent_rate=0.3, drop_recent_return_rate=0.3))(
        np.random.default_rng(5), 64)
    for key in default:
        assert torch.equal(default[key], same[key]), key


def _random_model(config: WorldPackConfig, seed: int = 0) -> WorldPack:
    torch.manual_seed(seed)
    model = WorldPack(config).eval()
    for parameter in model.parameters():
        nn.init.normal_(parameter, std=0.2)
    return model


def _loop_batch(config: WorldPackConfig, level: float) -> dict[str, torch.Tensor]:
    traj = make_trajectory(0, length=60, size=8)
    latents = torch.randn(len(traj), config.latent_channels, config.latent_size, config.latent_size,
                          generator=torch.Generator().manual_seed(0))
    example = build_example(latents, traj.poses * 32, cumulative_actions(traj.actions), 55, 54, config.layout,
                            config.retrieval, 32.0, split=traj.offset, level=level)
    return collate([example])


def test_per_slot_levels_change_the_output_and_a_fresh_model_ignores_them():
    config = WorldPackConfig(variant="full", **SLOT)
    x, c_noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1)), torch.full((1,), 0.3)
    clean, generated = _loop_batch(config, 0.0), _loop_batch(config, 0.3)
    assert not clean["context_level"].any() and generated["context_level"][0, 0] == pytest.approx(0.3)
    with torch.no_grad():
        fresh = WorldPack(config).eval()
        torch.testing.assert_close(fresh.denoiser(x, c_noise, generated), fresh.denoiser(x, c_noise, clean),
                                   rtol=0, atol=0)
        trained = _random_model(config)
        out = trained.denoiser(x, c_noise, clean)
        assert (trained.denoiser(x, c_noise, generated) - out).abs().max() > 1e-3
        one_slot = dict(clean, context_level=clean["context_level"].clone())
        one_slot["context_level"][0, 3] = 0.3  # a single slot's tokens
        assert (trained.denoiser(x, c_noise, one_slot) - out).abs().max() > 1e-4


@pytest.fixture(scope="module")
def slot_checkpoint(tmp_path_factory):
    """A `full` WorldPack trained with reliability=slot (random weights) and a 16 px autoencoder."""
    return _checkpoint(tmp_path_factory.mktemp("slot"), WorldPackConfig(variant="full", generated_level=0.2, **SLOT))


def _checkpoint(root: Path, config: WorldPackConfig) -> Path:
    ae = AutoencoderConfig(image_size=16, channels=(8, 16), latent_channels=4)
    ckpt.write_step(root, 0, {"model": "worldpack", "config": config.to_dict(), "step": 0, "data": {},
                              "autoencoder": {"kind": "ours", "config": ae.to_dict()}},
                    {ckpt.WEIGHTS: _random_model(config).state_dict(),
                     "autoencoder.safetensors": Autoencoder(ae).state_dict()})
    return root


def _announced(model, traj) -> list[np.ndarray]:
    """The context_level rows the rollout of `traj` (alone in its batch) gives the network, one per step."""
    seen, sample = [], model.model.sample

    def spy(batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        seen.append(batch["context_level"][0].numpy().copy())
        return sample(batch, noise)

    model.model.sample = spy
    model.rollout(RolloutRequest.from_trajectory(traj, seed=1))
    return seen


@pytest.mark.parametrize("override", [None, 0.4])
def test_a_rollout_announces_its_generated_recent_frames_and_nothing_else(slot_checkpoint, override):
    traj = make_trajectory(0, length=70, size=16)
    args = {} if override is None else {"generated_level": override}
    model = load_model("worldpack", checkpoint=str(slot_checkpoint), sampler_steps=1, **args)
    level = 0.2 if override is None else override
    assert model.describe()["generated_level"] == level
    layout, recent = model.config.layout, len(model.config.layout.recent)
    for t, announced in zip(range(traj.offset, len(traj)), _announced(model, traj), strict=True):
        slots = select_context(traj.poses, t, t - 1, layout, model.config.retrieval, units_per_block(traj.meta),
                               split=traj.offset)
        generated = slots >= traj.offset
        assert not generated[recent:].any()  # memories: real frames
        np.testing.assert_array_equal(announced, np.where(generated, np.float32(level), 0), err_msg=f"frame {t}")
    assert announced[:recent].all()  # by the end every recent slot holds a generated frame


def test_generated_level_needs_a_slot_checkpoint(slot_checkpoint, tmp_path):
    per_example = _checkpoint(tmp_path, WorldPackConfig(variant="full", **SMALL))
    with pytest.raises(ValueError, match="reliability='example', which announces no level per slot"):
        load_model("worldpack", checkpoint=str(per_example), generated_level=0.1)
    with pytest.raises(ValueError, match="generated_level=-1"):
        load_model("worldpack", checkpoint=str(slot_checkpoint), generated_level=-1)


# ---------------------------------------------------------------------------------------------- EDM schedule


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_training_sigmas_put_the_requested_share_on_the_samplers_values(rate):
    edm = EDM(EDMConfig(steps=2, schedule_rate=rate))
    schedule = edm.sigmas()[:-1]
    assert schedule.tolist() == pytest.approx([5.0, 0.002])
    torch.manual_seed(0)
    sigma = edm.training_sigmas(40_000, "cpu")
    on = sigma[:, None] == schedule[None]
    assert on.any(1).float().mean().item() == pytest.approx(rate, abs=0.01)
    assert on.float().mean(0).tolist() == pytest.approx([rate / 2] * 2, abs=0.01)  # uniform over the schedule
    if rate == 0:  # the default draws exactly what it drew before the option
        torch.manual_seed(0)
        torch.testing.assert_close(sigma, (torch.randn(40_000) * 1.2 - 0.4).exp(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="schedule_rate 1.5"):
        EDM(EDMConfig(schedule_rate=1.5))


# ---------------------------------------------------------------------------------------------- attention


def test_null_key_value_lets_an_all_masked_context_attend_to_it():
    torch.manual_seed(0)
    attention = Attention(16, heads=2, bias_kv=True)
    nn.init.normal_(attention.bias_kv)
    x, y = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    none = torch.zeros(2, 7, dtype=torch.bool)
    rope = TemporalRoPE(8).tables(torch.zeros(2, 5)), TemporalRoPE(8).tables(torch.zeros(2, 7))
    out = attention(x, y, *rope, key_mask=none)
    assert torch.isfinite(out).all()
    # its only key: every query takes exactly the null value
    torch.testing.assert_close(out, attention.out(attention.bias_kv[1].expand(2, 5, 16)))
    plain = Attention(16, heads=2)
    plain.load_state_dict({k: v for k, v in attention.state_dict().items() if k != "bias_kv"})
    torch.testing.assert_close(plain(x, y, *rope, key_mask=none), attention.out.bias.expand(2, 5, 16))


def test_worldpack_passes_cross_bias_kv_and_rope_fraction_to_its_blocks():
    model = WorldPack(WorldPackConfig(cross_bias_kv=True, rope_fraction=0.5, **SMALL))
    assert all(block.cross_attn.bias_kv is not None and block.self_attn.bias_kv is None
               for block in model.cdit.blocks)
    assert model.cdit.rope.dims == 8 and model.cdit.rope.head_dim == 16


def test_partial_rope_leaves_the_other_dimensions_and_keeps_scores_shift_invariant():
    torch.manual_seed(0)
    rope = TemporalRoPE(head_dim=16, dims=8)
    q, k = torch.randn(1, 2, 5, 16), torch.randn(1, 2, 7, 16)
    q_pos, k_pos = torch.randn(1, 5) * 10, -torch.rand(1, 7) * 300
    rotated = rope.rotate(q, *rope.tables(q_pos))
    assert torch.equal(rotated[..., 8:], q[..., 8:]) and not torch.allclose(rotated[..., :8], q[..., :8])

    def scores(shift: float) -> torch.Tensor:
        return rope.rotate(q, *rope.tables(q_pos + shift)) @ rope.rotate(k, *rope.tables(k_pos + shift)).mT

    torch.testing.assert_close(scores(0.0), scores(123.5), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="even number"):
        TemporalRoPE(16, dims=5)


def test_whole_head_rope_is_todays_rotation_exactly():
    torch.manual_seed(0)
    x, positions = torch.randn(2, 3, 6, 16), torch.randn(2, 6) * 50
    whole, default = TemporalRoPE(16, dims=16), TemporalRoPE(16)
    for a, b in zip(whole.tables(positions), default.tables(positions)):
        assert torch.equal(a, b)
    cos, sin = default.tables(positions)
    # the rotation as written before partial RoPE: rotate-half over the whole head
    first, second = x.chunk(2, dim=-1)
    assert torch.equal(whole.rotate(x, cos, sin), x * cos + torch.cat([-second, first], dim=-1) * sin)
