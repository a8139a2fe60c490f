"""The contract every trained model's checkpoint adapter keeps (WorldPack, NWM, DIAMOND), on 2-step checkpoints
trained through the registry on synthetic shards: what the checkpoint records, seeded uint8 rollouts, exact reload,
fp16 export, `loopnav train` dispatch, and model args checked on both sides."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import check_rollout_contract, make_trajectory
from typer.testing import CliRunner

from loopnav.cli import app
from loopnav_bench.models import RolloutRequest, load_model
from loopnav_bench.shards import manifest_hash
from loopnav_bench.train import TrainOptions, train
from modelkit import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("torch_single_thread")
TRAINED = ("worldpack", "nwm", "diamond")
LATENT = {"worldpack", "nwm"}  # these reuse an autoencoder instead of training one


def _model_args(name: str, root) -> dict:
    return {"autoencoder": str(root / "ae")} if name in LATENT else {}


# DIAMOND's pixel-space rollouts take seconds: its tests of a trained checkpoint run in `make test`, not the inner loop
@pytest.fixture(scope="module", params=[pytest.param(n, marks=[pytest.mark.slow] if n == "diamond" else [])
                                        for n in TRAINED], ids=TRAINED)
def trained(request, latent_data):
    """(model name, its 2-step checkpoint folder), trained through `loopnav_bench.train.train`."""
    name = request.param
    options = TrainOptions(data=latent_data / "shards", output_dir=latent_data / name, steps=2, batch_size=4,
                           save_every=2, device="cpu", model_args=_model_args(name, latent_data))
    return name, train(name, options)


def test_checkpoint_records_model_step_and_training_data(trained, latent_data):
    name, step_dir = trained
    saved = ckpt.read_config(step_dir)
    assert saved["model"] == name and saved["step"] == 2 and saved["world_size"] == 1
    assert saved["data"]["manifest_hash"] == manifest_hash(latent_data / "shards") and saved["data"]["split"] == "train"


def test_rollouts_are_seeded_uint8_and_independent_of_the_batch(trained):
    name, step_dir = trained
    model = load_model(name, checkpoint=str(step_dir), sampler_steps=2)
    check_rollout_contract(model, size=model.describe()["image_size"])


def test_reload_and_export_keep_the_rollout(trained, tmp_path):
    name, step_dir = trained
    request = RolloutRequest.from_trajectory(make_trajectory(0, length=12, size=16), seed=5)
    frames = load_model(name, checkpoint=str(step_dir), sampler_steps=2).rollout(request)
    exact = ckpt.export(step_dir, tmp_path / "fp32", dtype=torch.float32)
    assert np.array_equal(load_model(name, checkpoint=str(exact), sampler_steps=2).rollout(request), frames)
    half = ckpt.export(step_dir, tmp_path / "fp16")
    assert not (half / ckpt.TRAIN_STATE).exists()
    assert (half / ckpt.WEIGHTS).stat().st_size < 0.6 * (step_dir / ckpt.WEIGHTS).stat().st_size
    halved = load_model(name, checkpoint=str(half), sampler_steps=2).rollout(request)
    gap = np.abs(halved.astype(np.int16) - frames.astype(np.int16))  # measured: at most 1 grey level, mean < 0.03
    assert halved.shape == frames.shape and gap.max() <= 2 and gap.mean() < 0.25


def test_loopnav_train_dispatches_by_name(trained, latent_data, tmp_path):
    name, _ = trained
    args = ",".join(f"{k}={v}" for k, v in _model_args(name, latent_data).items())
    result = CliRunner().invoke(app, ["train", "--model", name, "--data", str(latent_data / "shards"), "--output-dir",
                                      str(tmp_path), "--steps", "1", "--batch-size", "4", "--device", "cpu",
                                      *(["--model-args", args] if args else [])])
    assert result.exit_code == 0, result.output
    assert ckpt.read_config(ckpt.resolve(tmp_path))["model"] == name


def test_unknown_model_args_are_refused_by_trainer_and_adapter(trained, latent_data, tmp_path):
    name, step_dir = trained
    with pytest.raises(ValueError, match="guidance"):
        train(name, TrainOptions(data=latent_data / "shards", output_dir=tmp_path, steps=1, model_args={"guidance": 2}))
    assert not (tmp_path / ckpt.LATEST).exists()
    with pytest.raises(ValueError, match="sampler_steps"):
        load_model(name, checkpoint=str(step_dir), guidance=2)


def test_a_checkpoint_of_another_model_is_refused(trained):
    name, step_dir = trained
    other = next(n for n in TRAINED if n != name)
    with pytest.raises(ValueError, match=f"holds a {name!r} model, not {other}"):
        load_model(other, checkpoint=str(step_dir))


@pytest.mark.parametrize("name", TRAINED)
def test_the_shipped_default_comes_from_the_cpu_budget(name):
    """Without --checkpoint each model loads its shipped checkpoint: the `cpu` preset at its full 6,000 steps, counting
    those of the trunk a fine-tune started from (scripts/reproduce.py)."""
    saved = ckpt.read_config(load_model(name).step_dir)
    steps = saved["step"] + saved.get("init", {}).get("step", 0)
    assert (saved["model"], saved["preset"], steps) == (name, "cpu", 6000)
