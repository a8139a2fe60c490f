"""WorldPack training: checkpoints, exact resume, DDP on gloo, the CLI, and the WorldModel adapter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_trajectory
from safetensors.torch import load_file
from test_worldpack import one_thread  # noqa: F401  (autouse fixture: one intra-op thread)
from typer.testing import CliRunner

from loopnav.cli import app
from loopnav_bench.models import RolloutRequest, load_model
from loopnav_bench.registry import UnknownNameError
from loopnav_bench.train import TrainOptions, train
from modelkit import checkpoint as ckpt

FAST = {"batch_size": 4, "save_every": 2}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from conftest import SyntheticSource

    from loopnav_bench.shards import prepare

    out = tmp_path_factory.mktemp("wp") / "shards"
    prepare(SyntheticSource(), out)
    return out


@pytest.fixture(scope="module")
def autoencoder(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wp") / "ae"
    return train("autoencoder", TrainOptions(data=shards, output_dir=out, steps=2, **FAST))


def _train(shards: Path, autoencoder: Path, out: Path, steps: int, resume: bool = False, **model_args) -> Path:
    options = TrainOptions(data=shards, output_dir=out, steps=steps, resume=resume, **FAST,
                           model_args={"autoencoder": str(autoencoder), **model_args})
    return train("worldpack", options)


@pytest.mark.slow  # trains twice
def test_resume_reproduces_the_uninterrupted_run(shards, autoencoder, tmp_path):
    straight = _train(shards, autoencoder, tmp_path / "straight", steps=4)
    _train(shards, autoencoder, tmp_path / "split", steps=2)
    resumed = _train(shards, autoencoder, tmp_path / "split", steps=4, resume=True)
    assert resumed.name == straight.name == "step-0000004"
    for name in (ckpt.WEIGHTS, ckpt.TRAIN_STATE):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys() and any(k.startswith("opt.") for k in load_file(straight / ckpt.TRAIN_STATE))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    config_a, config_b = ckpt.read_config(straight), ckpt.read_config(resumed)
    assert config_a["losses"] == config_b["losses"] and len(config_a["losses"]) == 2
    assert config_a["step"] == 4 and config_a["data"]["manifest_hash"]
    assert not list((tmp_path / "split").glob("step-0000002"))  # older steps are pruned


def test_existing_run_needs_resume_and_unknown_trainers_are_named(shards, autoencoder, tmp_path):
    _train(shards, autoencoder, tmp_path / "run", steps=1)
    with pytest.raises(FileExistsError, match="--resume"):
        _train(shards, autoencoder, tmp_path / "run", steps=2)
    with pytest.raises(ValueError, match=r"config.variant .full. -> .base.*same --data, --preset, --model-args"):
        _train(shards, autoencoder, tmp_path / "run", steps=2, resume=True, variant="base")
    with pytest.raises(ValueError, match="no model arg 'varaint'. Did you mean variant"):
        _train(shards, autoencoder, tmp_path / "other", steps=1, varaint="base")
    with pytest.raises(UnknownNameError, match="Did you mean: worldpack"):
        train("worldpak", TrainOptions(data=shards, output_dir=tmp_path / "x"))
    with pytest.raises(ValueError, match="retrieval='doom': choose one of paper, vizdoom"):
        _train(shards, autoencoder, tmp_path / "third", steps=1, retrieval="doom")


def test_checkpoint_stores_its_layout_and_retrieval_not_their_names(shards, autoencoder, tmp_path, monkeypatch):
    """Editing VARIANTS or RETRIEVAL_PRESETS later must not change what a saved checkpoint means."""
    from worldpack import context
    from worldpack.model import WorldPackConfig
    from worldpack.retrieval import VIZDOOM_PARAMS

    run = _train(shards, autoencoder, tmp_path / "run", steps=1, variant="retrieval-only", retrieval="vizdoom")
    saved = ckpt.read_config(run)["config"]
    assert saved["layout"] == {"recent": [0], "retrieved": [0, 0, 0]}
    assert saved["retrieval"] == VIZDOOM_PARAMS.to_dict()
    monkeypatch.setitem(context.VARIANTS, "retrieval-only", context.ContextLayout(recent=(0, 1), retrieved=()))
    assert WorldPackConfig.from_dict(saved).layout == context.ContextLayout(recent=(0,), retrieved=(0, 0, 0))
    with pytest.raises(ValueError, match="records no context layout"):
        WorldPackConfig.from_dict({k: v for k, v in saved.items() if k != "layout"})


def test_every_option_on_trains_a_finite_loss_and_a_checkpoint_that_rolls_out(shards, autoencoder, tmp_path):
    run = _train(shards, autoencoder, tmp_path / "run", steps=2, variant="full", drop_recent_return_rate=0.5,
                 reliability="slot", context_noise_max=0.3, generated_level=0.15, cross_bias_kv=True,
                 rope_fraction=0.5, sampler_sigma_rate=0.5)
    saved = ckpt.read_config(run)
    config = saved["config"]
    assert (config["reliability"], config["context_noise_max"], config["generated_level"], config["cross_bias_kv"],
            config["rope_fraction"], config["edm"]["schedule_rate"]) == ("slot", 0.3, 0.15, True, 0.5, 0.5)
    assert saved["recipe"]["drop_recent_return_rate"] == 0.5
    assert saved["preset"] == "tiny" and all(np.isfinite(loss) for _, loss in saved["losses"])
    model = load_model("worldpack", checkpoint=str(run), sampler_steps=2)
    assert model.model.context_level_embed is not None and model.describe()["generated_level"] == 0.15
    request = RolloutRequest.from_trajectory(make_trajectory(0, length=30, size=16), seed=3)
    frames = model.rollout(request)
    assert frames.shape == (request.horizon, 32, 32, 3) and frames.dtype == np.uint8


@pytest.mark.slow  # trains both stages
def test_cli_trains_both_stages_and_the_model_rolls_out(shards, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--model", "worldpack", "--data", str(shards), "--output-dir", str(out),
                                      "--steps", "2", "--batch-size", "4",
                                      "--model-args", "variant=retrieval-only,autoencoder_steps=2"])
    assert result.exit_code == 0, result.output
    assert (out / "autoencoder" / ckpt.LATEST).exists() and (out / ckpt.LATEST).exists()
    config = ckpt.read_config(ckpt.resolve(out))
    assert config["config"]["variant"] == "retrieval-only" and config["autoencoder"]["kind"] == "ours"

    model = load_model("worldpack", checkpoint=str(out), sampler_steps=2)
    request = RolloutRequest.from_trajectory(make_trajectory(0, length=24, size=16), seed=3)
    frames = model.rollout(request)
    assert frames.shape == (request.horizon, 32, 32, 3) and frames.dtype == np.uint8
    other = RolloutRequest.from_trajectory(make_trajectory(1, length=20, size=16), seed=4)
    together = model.rollout_batch([request, other])
    assert np.array_equal(together[0], frames)  # batching does not change a trajectory's frames, not even by a level
    assert together[1].shape[0] == other.horizon
    assert model.describe()["variant"] == "retrieval-only" and model.describe()["trained_steps"] == 2

    bad = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "missing" in bad.output


def test_exported_checkpoint_is_half_size_and_rejects_another_action_layout(shards, autoencoder, tmp_path):
    run = _train(shards, autoencoder, tmp_path / "run", steps=1)
    shipped = ckpt.export(run, tmp_path / "shipped")
    assert not (shipped / ckpt.TRAIN_STATE).exists()
    assert (shipped / ckpt.WEIGHTS).stat().st_size < 0.6 * (run / ckpt.WEIGHTS).stat().st_size
    model = load_model("worldpack", checkpoint=str(shipped), sampler_steps=2)
    traj = make_trajectory(0, length=12, size=16)
    request = RolloutRequest.from_trajectory(traj)
    assert model.rollout(request).shape == (request.horizon, 32, 32, 3)
    request.context_actions = request.context_actions[:, :2]
    with pytest.raises(ValueError, match="2 components"):
        model.rollout(request)


@pytest.mark.slow  # torchrun
def test_ddp_on_two_gloo_processes(shards, autoencoder, tmp_path):
    out = tmp_path / "ddp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
               "-m", "loopnav", "train", "--data", str(shards), "--output-dir", str(out),
               "--model-args", f"autoencoder={autoencoder}", "--steps", "2", "--batch-size", "4", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    config = json.loads((ckpt.resolve(out) / ckpt.CONFIG).read_text())
    assert config["world_size"] == 2 and config["step"] == 2 and np.isfinite(config["losses"][-1][1])


def test_autoencoder_stage_scales_latents_and_round_trips_shapes(autoencoder):
    from modelkit.autoencoder import load_autoencoder

    codec, spec = load_autoencoder(autoencoder)
    assert spec["kind"] == "ours" and float(codec.latent_std) != 1.0  # the running std moved during training
    frames = make_trajectory(0, length=6, size=16).frames
    latents = codec.encode(frames)
    assert latents.shape == (6, 4, 8, 8)
    decoded = codec.decode(latents)
    assert decoded.shape == (6, 32, 32, 3) and decoded.dtype == np.uint8


def test_a_diffusers_vae_folder_needs_diffusers(tmp_path, monkeypatch):
    from modelkit.autoencoder import load_autoencoder

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as where the optional package is not installed

    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ImportError, match="diffusers"):
        load_autoencoder(tmp_path)
