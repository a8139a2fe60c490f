"""Fine-tuning a WorldPack from a trained one (`--model-args init=...`): what is copied, what starts from the base
kernel, what is refused, and what the checkpoint records."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_worldpack import one_thread  # noqa: F401  (autouse fixture: one intra-op thread)
from test_worldpack_train import FAST, _train, autoencoder, shards  # noqa: F401  (module fixtures)

from loopnav_bench.models import load_model
from loopnav_bench.train import TrainOptions, train
from modelkit import checkpoint as ckpt
from worldpack.context import VARIANTS
from worldpack.finetune import init_checkpoint, start_from
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.presets import PRESETS

pytestmark = pytest.mark.slow  # every test trains a base model, then fine-tunes or loads it


@pytest.fixture(scope="module")
def base_run(shards, autoencoder, tmp_path_factory) -> Path:  # noqa: F811
    return _train(shards, autoencoder, tmp_path_factory.mktemp("ft") / "base", steps=2, variant="base")


def _fresh(base_run: Path, seed: int = 0, **changes) -> WorldPack:
    """A model of the base run's sizes with another layout (and config changes), freshly initialised."""
    saved = ckpt.read_config(base_run)["config"]
    config = WorldPackConfig.from_dict({**saved, "variant": "full", "layout": asdict(VARIANTS["full"])})
    torch.manual_seed(seed)
    return WorldPack(replace(config, **changes))


def test_init_copies_every_shared_tensor_and_grows_packing_levels_from_the_base_kernel(base_run):
    trained = load_file(base_run / ckpt.WEIGHTS)
    model = _fresh(base_run, context_noise_max=0.2)  # a module the base lacks: keeps its fresh initialisation
    untouched = _fresh(base_run, context_noise_max=0.2).state_dict()
    record = start_from(model, base_run)
    state = model.state_dict()
    shared = [name for name in trained if name in state and trained[name].shape == state[name].shape]
    assert set(shared) == set(trained) - {"embed.level_embed"}  # every tensor of the base but the per-level one
    for name in shared:
        torch.testing.assert_close(state[name], trained[name], rtol=0, atol=0, msg=name)
    base_kernel, base_bias = trained["embed.proj.0.weight"], trained["embed.proj.0.bias"]
    for level, r in ((1, 2), (2, 4)):
        expected = base_kernel.repeat_interleave(r, dim=2).repeat_interleave(r, dim=3) / (r * r)
        torch.testing.assert_close(state[f"embed.proj.{level}.weight"], expected, rtol=0, atol=0)
        torch.testing.assert_close(state[f"embed.proj.{level}.bias"], base_bias, rtol=0, atol=0)
    level_embed = state["embed.level_embed"]
    assert trained["embed.level_embed"].shape[0] == 1 and level_embed.shape[0] == 3
    torch.testing.assert_close(level_embed[:1], trained["embed.level_embed"], rtol=0, atol=0)
    assert not level_embed[1:].any()  # new levels' rows keep their fresh (zero) initialisation
    fresh = [name for name in state if name.startswith("context_noise_embed.")]
    assert fresh and record["fresh"] == fresh and record["levels_from_base_kernel"] == [1, 2]
    for name in fresh:
        torch.testing.assert_close(state[name], untouched[name], rtol=0, atol=0)
    assert record["step"] == 2 and record["variant"] == "base"
    assert record["weights_sha256"] == ckpt.read_config(base_run)[ckpt.FILES][ckpt.WEIGHTS]


def test_a_tensor_of_another_shape_is_named_and_nothing_is_copied(base_run):
    model = _fresh(base_run, action_dim=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'action_embed.mlp.0.weight' has shape "
                                         r"\(96, 4\), this model's \(96, 3\)"):
        start_from(model, base_run)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_fine_tuned_run_records_its_init_trains_in_its_latent_space_and_resumes(shards, base_run, tmp_path):  # noqa: F811
    def fine_tune(steps: int, resume: bool = False, init: Path = base_run) -> Path:
        options = TrainOptions(data=shards, output_dir=tmp_path / "ft", steps=steps, resume=resume, **FAST,
                               model_args={"variant": "full", "init": str(init)})
        return train("worldpack", options)

    run = fine_tune(2)
    saved = ckpt.read_config(run)
    assert saved["init"]["path"] == str(base_run.resolve()) and saved["init"]["step"] == 2
    assert saved["config"]["variant"] == "full" and saved["step"] == 2
    assert not (tmp_path / "ft" / "autoencoder").exists()  # no autoencoder trained: the init's is used
    assert load_file(run / "autoencoder.safetensors").keys() == load_file(base_run / "autoencoder.safetensors").keys()
    for name, tensor in load_file(base_run / "autoencoder.safetensors").items():
        torch.testing.assert_close(load_file(run / "autoencoder.safetensors")[name], tensor, rtol=0, atol=0)
    resumed = fine_tune(4, resume=True)
    assert resumed.name == "step-0000004" and ckpt.read_config(resumed)["init"] == saved["init"]
    described = load_model("worldpack", checkpoint=str(resumed)).describe()  # results say what it was tuned from
    assert described["init"] == saved["init"] and described["trained_steps"] == 4
    other = _train(shards, Path(saved["init"]["path"]), tmp_path / "other-base", steps=1, variant="base")
    with pytest.raises(ValueError, match=r"init.path '.*' -> '.*other-base"):
        fine_tune(6, resume=True, init=other)


def test_another_latent_space_or_model_is_refused_in_one_line(shards, autoencoder, base_run, tmp_path):  # noqa: F811
    other_autoencoder = train("autoencoder", TrainOptions(data=shards, output_dir=tmp_path / "ae", steps=2, seed=1,
                                                          **FAST))
    with pytest.raises(ValueError, match=r"^--model-args autoencoder=.*: not the latent space of init .*step-0000002 "
                                         r"\(another autoencoder or other weights\); leave autoencoder= out"):
        _train(shards, other_autoencoder, tmp_path / "x", steps=1, init=str(base_run))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match=r"init=.*: .* holds a 'autoencoder' model, not a worldpack to fine-tune"):
        _train(shards, autoencoder, tmp_path / "y", steps=1, init=str(autoencoder))
    # heads and RoPE shape no tensor: a difference would copy every weight into a network that computes otherwise
    with pytest.raises(ValueError, match=r"^--model-args init=.*step-0000002: trained with rope_fraction=1.0, this run "
                                         r"has rope_fraction=0.5; its weights would compute something else"):
        _train(shards, autoencoder, tmp_path / "w", steps=1, init=str(base_run), rope_fraction=0.5)
    assert not (tmp_path / "w").exists()
    with pytest.raises(FileNotFoundError, match=r"--model-args init=nope: no such file or folder, nor a shipped "
                                                r"worldpack checkpoint \(shipped: base, "):
        _train(shards, autoencoder, tmp_path / "z", steps=1, init="nope")


def test_a_shipped_checkpoint_by_name_is_an_init(shards, tmp_path):  # noqa: F811
    """`init=base` resolves as `--checkpoint base` does; its fp16 weights start a `cpu`-preset fine-tune."""
    shipped = init_checkpoint("base", PRESETS["cpu"].model)
    assert shipped == Path(__file__).resolve().parents[1] / "worldpack" / "checkpoints" / "base"
    run = train("worldpack", TrainOptions(data=shards, output_dir=tmp_path / "run", preset="cpu", steps=1, **FAST,
                                          model_args={"variant": "fine-memory", "retrieval": "vizdoom",
                                                      "init": "base"}))
    record = ckpt.read_config(run)["init"]
    assert record["path"] == str(shipped) and record["step"] == ckpt.read_config(shipped)["step"]
    assert record["variant"] == "base" and record["levels_from_base_kernel"] == [1, 2]
    # the tensors the shipped weights lack start fresh, but for the new packing levels' projections (from the base
    # kernel): with the base shipped before the round-2 options, their level embedding and null key/values
    config = WorldPackConfig.from_dict(ckpt.read_config(run)["config"])
    assert config.reliability == "slot" and config.cross_bias_kv
    from_base = {f"embed.proj.{level}.{part}" for level in (1, 2) for part in ("weight", "bias")}
    lacking = WorldPack(config).state_dict().keys() - ckpt.load_tensors(shipped / ckpt.WEIGHTS).keys()
    assert from_base <= lacking and sorted(record["fresh"]) == sorted(lacking - from_base)
