"""Every trainer resumes bit-exactly: 1 step, then 1 more with --resume (which needs the saved optimizer state, EMA
and raw weights), equal an uninterrupted 2-step run in every saved tensor and in the loss history. WorldPack's own
copy of this test is in test_worldpack_train.py."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from loopnav_bench.train import TrainOptions, train
from modelkit import checkpoint as ckpt

pytestmark = [pytest.mark.usefixtures("torch_single_thread"), pytest.mark.slow]  # every test trains twice


@pytest.mark.parametrize("trainer", ["autoencoder", "nwm", "diamond"])
def test_resume_reproduces_the_uninterrupted_run(trainer, latent_data, tmp_path):
    model_args = {"autoencoder": str(latent_data / "ae")} if trainer == "nwm" else {}

    def run(out, steps, resume=False):
        return train(trainer, TrainOptions(data=latent_data / "shards", output_dir=out, steps=steps, resume=resume,
                                           batch_size=4, save_every=1, device="cpu", model_args=model_args))

    straight = run(tmp_path / "straight", 2)
    run(tmp_path / "split", 1)
    resumed = run(tmp_path / "split", 2, resume=True)
    assert resumed.name == straight.name == "step-0000002"
    for name in (ckpt.WEIGHTS, ckpt.TRAIN_STATE):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{name}: {key}")
    assert any(k.startswith("opt.") for k in load_file(straight / ckpt.TRAIN_STATE))
    assert ckpt.read_config(straight)["losses"] == ckpt.read_config(resumed)["losses"]
