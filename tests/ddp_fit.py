"""One step of modelkit.train.fit on a toy regression, alone or under `torchrun --nproc-per-node 2` (tests/test_ddp.py).

Rank r of R takes rows [r * B / R, (r + 1) * B / R) of a fixed batch of B rows, so one process (which takes all B)
and two ranks see the same examples; rank 0's rows pull the bias one way and rank 1's the other way, harder, so a
rank that does not average its gradients with the other's steps the wrong way (Adam's first step is about the sign).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_fit.py OUTPUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from modelkit.train import LoopConfig, fit

BATCH = 4
X = torch.linspace(0.5, 1.5, BATCH * 3).reshape(BATCH, 3)
Y = torch.tensor([[1.0], [1.0], [-3.0], [-3.0]])


class Rows:
    """A BatchSource: this rank's share of the fixed batch (draws nothing from the generator)."""

    def to(self, device):
        return self

    def __call__(self, rng, batch_size):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        return {"x": X[rows], "y": Y[rows]}


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(3, 1)

    def loss(self, batch):
        return ((self.layer(batch["x"]) - batch["y"]) ** 2).mean()


def train(output_dir: Path) -> Path:
    loop = LoopConfig(steps=1, batch_size=BATCH, lr=0.1, warmup=1, save_every=1)
    return fit(Regression(), Rows(), loop, output_dir, {"model": "regression", "config": {}}, device="cpu")


if __name__ == "__main__":
    train(Path(sys.argv[1]))
