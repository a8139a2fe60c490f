"""WorldPack's memory: the vectorised training batches match the rollout's examples, the recipe's rates, real memories
before generated ones, the fine-memory layout's budget, memory=off, shipped checkpoints by name, the latent cache and
the memory probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SyntheticSource, make_trajectory
from torch import nn

from loopnav_bench.models import RolloutRequest, load_model
from loopnav_bench.shards import prepare, read_trajectories
from loopnav_bench.train import TrainOptions
from modelkit import checkpoint as ckpt
from modelkit.autoencoder import Autoencoder, AutoencoderConfig
from modelkit.train_data import EncodedTrajectory
from worldpack.context import VARIANTS, build_example, cumulative_actions
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.packing import effective_context
from worldpack.retrieval import VIZDOOM_PARAMS, retrieve
from worldpack.train import MemoryBatches, Recipe

pytestmark = pytest.mark.usefixtures("torch_single_thread")
SMALL = {"latent_size": 4, "hidden": 32, "depth": 1, "heads": 2, "action_dim": 4, "retrieval": VIZDOOM_PARAMS}


def loops(count: int = 3, length: int = 60) -> list[EncodedTrajectory]:
    """Synthetic ABA loops as latents: each frame's latent is its index, so gathers can be checked by value."""
    out = []
    for i in range(count):
        traj = make_trajectory(i, length=length + 2 * i, size=8)
        latents = torch.arange(len(traj), dtype=torch.float32)[:, None, None, None].expand(-1, 4, 4, 4) + 1000 * i
        out.append(EncodedTrajectory(latents.clone(), traj.poses * 32, traj.actions, 32.0, traj.offset))
    return out


@pytest.mark.parametrize("variant", ["full", "fine-memory", "base"])
def test_vectorised_examples_equal_the_rollouts(variant):
    encoded, config = loops(), WorldPackConfig(variant=variant, **SMALL)
    batches = MemoryBatches(encoded, config)
    rng = np.random.default_rng(0)
    announced = 0
    for _ in range(40):
        n = int(rng.integers(len(encoded)))
        e, start = encoded[n], int(batches.starts[n])
        current = int(rng.integers(1, len(e.latents)))
        last_seen = current - int(rng.integers(1, min(config.max_time_shift, current) + 1))
        # exactly what a rollout builds: the memory pool of a trajectory split at its offset, and generated frames
        # (at or after it) announced at a reliability level
        expected = build_example(e.latents, e.poses, cumulative_actions(e.actions), current, last_seen, config.layout,
                                 config.retrieval, e.units_per_block, split=e.offset, level=0.25)
        got = batches.example(np.array([start + current]), np.array([start + last_seen]), np.array([0.25]))
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(got[key][0], value, msg=f"{variant} {key} at {current}/{last_seen}")
        announced += int((expected["context_level"] > 0).sum())
    assert announced > 0


def test_recipe_rates_steer_targets_shifts_dropped_slots_and_context_noise():
    encoded = loops()
    config = WorldPackConfig(variant="full", context_noise_max=0.5, **SMALL)
    recent = len(config.layout.recent)
    batch = MemoryBatches(encoded, config, Recipe(return_leg_rate=1.0, shift_one_rate=1.0, drop_recent_rate=1.0))(
        np.random.default_rng(0), 64)
    local = batch["target"][:, 0, 0, 0].numpy() % 1000  # the latent's value is its frame index
    assert (local >= min(e.offset for e in encoded)).all()  # every target on a return leg
    assert (batch["time_shift"] == 1).all()
    has_memory = batch["context_valid"][:, recent:].any(1)
    assert has_memory.any() and not batch["context_valid"][has_memory, :recent].any()  # recent slots hidden
    sigma = batch["context_noise"]
    assert (sigma >= 0).all() and (sigma <= 0.5).all() and sigma.std() > 0
    clean = MemoryBatches(encoded, config, Recipe(return_leg_rate=0.0, shift_one_rate=0.0, drop_recent_rate=0.0))(
        np.random.default_rng(0), 256)
    local = clean["target"][:, 0, 0, 0] % 1000
    assert (clean["time_shift"][local >= config.max_time_shift] > 1).all()  # shifts are cut at the first frame only
    assert (local < min(e.offset for e in encoded)).any()  # outbound targets too
    assert clean["context_valid"][:, 0].all()  # the most recent frame always exists at a shift of 2 or more


def test_retrieval_ranks_real_memories_before_generated_ones():
    poses = np.zeros((60, 5))  # out along +x and back, always facing +x; frames from 30 on count as generated
    poses[:30, 0] = np.arange(30) + 0.5
    poses[30:, 0] = 29 - np.arange(30)
    poses[59, 0] = 22.0
    best = retrieve(poses, 59, 3, VIZDOOM_PARAMS, 1.0)
    assert any(i >= 30 for i in best)  # a generated frame would win on score alone
    real_first = retrieve(poses, 59, 3, VIZDOOM_PARAMS, 1.0, prefer_before=30)
    assert len(real_first) == 3 and all(i < 30 for i in real_first)
    assert retrieve(poses, 59, 3, VIZDOOM_PARAMS, 1.0, prefer_before=60) == best


def test_fine_memory_is_the_papers_layout_with_copyable_memories_within_the_base_budget():
    fine, full = VARIANTS["fine-memory"], VARIANTS["full"]
    assert fine.frames == full.frames == 19 and fine.recent == full.recent
    assert fine.retrieved[:3] == (0, 1, 1)
    kernels = lambda layout: [2 * 2**level for level in layout.levels]  # noqa: E731
    for size in (8, 16):
        assert (effective_context((size, size), kernels(full), 2)
                < effective_context((size, size), kernels(fine), 2) <= 4)


@pytest.fixture(scope="module")
def memory_checkpoint(tmp_path_factory):
    """A fine-memory WorldPack with random weights (so that its context matters) and a 16 px autoencoder."""
    root = tmp_path_factory.mktemp("memory")
    config = WorldPackConfig(variant="fine-memory", **{**SMALL, "latent_size": 4})
    torch.manual_seed(0)
    model = WorldPack(config)
    for parameter in model.parameters():
        nn.init.normal_(parameter, std=0.2)
    ae = AutoencoderConfig(image_size=16, channels=(8, 16), latent_channels=4)
    ckpt.write_step(root, 0, {"model": "worldpack", "config": config.to_dict(), "step": 0, "data": {},
                              "autoencoder": {"kind": "ours", "config": ae.to_dict()}},
                    {ckpt.WEIGHTS: model.state_dict(), "autoencoder.safetensors": Autoencoder(ae).state_dict()})
    return root


def test_memory_off_empties_the_retrieved_slots_and_changes_the_rollout(memory_checkpoint):
    request = RolloutRequest.from_trajectory(make_trajectory(0, length=70, size=16), seed=1)
    on = load_model("worldpack", checkpoint=str(memory_checkpoint), sampler_steps=1)
    off = load_model("worldpack", checkpoint=str(memory_checkpoint), sampler_steps=1, memory="off")
    assert off.model_args["memory"] == "off" and off.describe()["memory"] == "off"
    assert not np.array_equal(on.rollout(request), off.rollout(request))
    with pytest.raises(ValueError, match="memory='maybe'"):
        load_model("worldpack", checkpoint=str(memory_checkpoint), memory="maybe")


def test_rollout_reports_the_frames_it_retrieved(memory_checkpoint):
    """Through RolloutRequest.report_memory, one row per predicted frame: its retrieved slots, as select_context
    picks them (real context frames first); memory=off reports every slot empty."""
    from loopnav_bench.schema import units_per_block
    from worldpack.context import select_context

    traj = make_trajectory(0, length=70, size=16)
    model = load_model("worldpack", checkpoint=str(memory_checkpoint), sampler_steps=1)
    request = RolloutRequest.from_trajectory(traj, seed=1)
    model.rollout(request)
    memory = request.reported_memory()
    layout = model.config.layout
    expected = [select_context(traj.poses, t, t - 1, layout, model.config.retrieval, units_per_block(traj.meta),
                               split=traj.offset)[len(layout.recent):] for t in range(traj.offset, len(traj))]
    assert memory.shape == (request.horizon, len(layout.retrieved)) and (memory >= 0).any()
    np.testing.assert_array_equal(memory, np.array(expected))
    off = RolloutRequest.from_trajectory(traj, seed=1)
    load_model("worldpack", checkpoint=str(memory_checkpoint), sampler_steps=1, memory="off").rollout(off)
    assert (off.reported_memory() == -1).all()


def test_shipped_checkpoints_load_by_name():
    from worldpack.world_model import WorldPackModel

    by_name = load_model("worldpack", checkpoint=WorldPackModel.default_checkpoint)
    assert by_name.step_dir == load_model("worldpack").step_dir
    for name in ("full", "pack-only", "retrieval-only", "base"):  # the ablations, by name
        assert load_model("worldpack", checkpoint=name).describe()["variant"] == name
    with pytest.raises(FileNotFoundError, match="shipped: base, fine-memory, full, pack-only, retrieval-only"):
        load_model("worldpack", checkpoint="no-such-checkpoint")


def test_a_second_training_reuses_the_cached_latents(tmp_path, monkeypatch):
    import modelkit.train_autoencoder as stage

    prepare(SyntheticSource(), tmp_path / "shards")
    config = AutoencoderConfig(image_size=16, channels=(8, 16), latent_channels=4)
    ckpt.write_step(tmp_path / "ae", 0, {"model": "autoencoder", "config": config.to_dict()},
                    {ckpt.WEIGHTS: Autoencoder(config).state_dict()})
    calls = []
    real = stage.encode_trajectories
    monkeypatch.setattr(stage, "encode_trajectories", lambda *a, **k: calls.append(1) or real(*a, **k))
    options = TrainOptions(data=tmp_path / "shards", output_dir=tmp_path / "run", device="cpu")
    args = stage.LatentArgs(autoencoder=str(tmp_path / "ae"))
    first = stage.latent_data(options, "tiny", args)
    second = stage.latent_data(options, "tiny", args)
    assert calls == [1]
    for a, b in zip(first.encoded, second.encoded):
        assert torch.equal(a.latents, b.latents) and a.offset == b.offset


def test_return_leg_memories_come_from_the_outbound_leg_as_in_a_rollout():
    """A rollout has real frames only before the offset, so a training target on the return leg must draw its
    memories there too, although return-leg frames just outside the exclusion window score higher."""
    traj = make_trajectory(0, length=120, size=8)  # out facing +x, back facing -x
    poses = traj.poses.copy()
    poses[:, :3] *= 32  # ViZDoom units
    e = EncodedTrajectory(torch.zeros(len(traj), 4, 4, 4), poses, traj.actions, 32.0, traj.offset)
    config = WorldPackConfig(variant="fine-memory", **SMALL)
    memories = MemoryBatches([e], config).memories
    returning = np.arange(e.offset + config.retrieval.exclusion + 5, len(e.latents))
    unsplit = [retrieve(e.poses, int(t), len(config.layout.retrieved), config.retrieval, 32.0) for t in returning]
    assert any(max(found) >= e.offset for found in unsplit if found)  # without the rule, the return leg wins
    chosen = memories[returning]
    assert (chosen[chosen >= 0] < e.offset).all() and (chosen >= 0).any()


def test_probe_reports_all_three_conditions(tiny_shards):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "probe_memory.py"
    spec = importlib.util.spec_from_file_location("probe_memory", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table = script.summary(script.probe(tiny_shards, "test", None, frames=4, batch=4, seed=0))
    alone = script.summary(script.probe(tiny_shards, "test", None, frames=4, batch=4, seed=0, recent_hidden=True))
    assert set(table) == set(alone) == {"ABA", "ABCA"}
    for row, memory_alone in zip(table.values(), alone.values()):
        assert row["frames"] == 4 and all(np.isfinite(row[c]["psnr"]) for c in script.CONDITIONS)
        assert row["on"]["minus_on"] == 0.0
        assert memory_alone["on"]["psnr"] != row["on"]["psnr"]  # hiding the recent frames changes the prediction
    ranges = sorted({t.meta["range"] for t in read_trajectories(tiny_shards, split="test")})
    by_range = script.summary(script.probe(tiny_shards, "test", None, frames=2, batch=4, seed=0, by_range=True))
    assert list(by_range) == [f"{task} {r}" for task in ("ABA", "ABCA") for r in ranges]
    assert all(row["frames"] == 2 for row in by_range.values())
