"""Two-rank DDP training (gloo, CPU) takes the same step as one process on the same examples (tests/ddp_fit.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_fit import Regression, train

from modelkit import checkpoint as ckpt

SCRIPT = Path(__file__).resolve().parent / "ddp_fit.py"


def raw_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in ckpt.load_tensors(step_dir / ckpt.TRAIN_STATE).items() if k.startswith("raw.")}


@pytest.mark.slow  # torchrun
def test_two_ranks_take_the_step_of_one_process(tmp_path):
    one = raw_weights(train(tmp_path / "one"))
    start = {f"raw.{k}": v for k, v in Regression().state_dict().items()}
    assert all(not torch.equal(one[k], start[k]) for k in start)  # the step moved every weight
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(SCRIPT),
               str(tmp_path / "two")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    step_dir = ckpt.resolve(tmp_path / "two")
    assert ckpt.read_config(step_dir)["world_size"] == 2
    two = raw_weights(step_dir)
    for key in start:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-6, msg=f"{key} differs from one process")
