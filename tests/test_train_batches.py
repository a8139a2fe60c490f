"""Batch sources on the training device: `to` moves their tensors once, batches then come out there, and `fit`
moves its source before the first step."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
from conftest import make_trajectory
from torch import nn

from baselines.diamond import DiamondConfig
from baselines.diamond_train import FrameBatches
from baselines.nwm import NWMConfig
from baselines.nwm_train import GoalBatches
from modelkit.train import LoopConfig, fit
from modelkit.train_data import DeviceBatches, EncodedTrajectory, ImageBatches
from worldpack.model import WorldPackConfig
from worldpack.retrieval import VIZDOOM_PARAMS
from worldpack.train import MemoryBatches

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _trajectories() -> list:
    return [make_trajectory(i, length=30 + 4 * i, size=16, split="train") for i in range(3)]


def _encoded() -> list[EncodedTrajectory]:
    """Latents whose value is 1000 × trajectory + frame index."""
    return [EncodedTrajectory(torch.arange(len(t), dtype=torch.float32)[:, None, None, None].expand(-1, 4, 4, 4)
                              + 1000 * i, t.poses * 32, t.actions, 32.0, t.offset)
            for i, t in enumerate(_trajectories())]


SOURCES: dict[str, Callable[[], DeviceBatches]] = {
    "autoencoder": lambda: ImageBatches(_trajectories(), 8),
    "worldpack": lambda: MemoryBatches(_encoded(), WorldPackConfig(
        latent_size=4, hidden=32, depth=1, heads=2, action_dim=4, retrieval=VIZDOOM_PARAMS, context_noise_max=0.5)),
    "nwm": lambda: GoalBatches(_encoded(), NWMConfig(latent_channels=4, latent_size=4, goal_offsets=(-2, 4))),
    "diamond": lambda: FrameBatches(_trajectories(), DiamondConfig(image_size=16, channels=(8, 16), depths=(1, 1),
                                                                   attention=(False, False), cond_channels=16)),
}


def _draw(source: DeviceBatches, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # WorldPack's context noise
    return source(np.random.default_rng(seed), 8)


@pytest.mark.parametrize("name", SOURCES)
def test_a_source_moved_to_the_cpu_gives_the_same_batches(name):
    source = SOURCES[name]()
    before = _draw(source)
    assert source.to("cpu") is source
    after = _draw(source)
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", SOURCES)
def test_batches_are_gathered_on_the_cuda_device(name):
    source = SOURCES[name]()
    on_cpu = _draw(source)
    on_cuda = _draw(source.to("cuda"))
    if hasattr(source, "frames"):  # pixels stay uint8 on the device
        assert source.frames.dtype == torch.uint8 and source.frames.device.type == "cuda"
    for key, value in on_cuda.items():
        assert value.device.type == "cuda", key
        if not (name == "worldpack" and key == "context"):  # its noise comes from CUDA's generator
            torch.testing.assert_close(value.cpu(), on_cpu[key], msg=key)


class _Recording(ImageBatches):
    def __init__(self, *args):
        super().__init__(*args)
        self.moves: list[torch.device] = []

    def to(self, device: torch.device | str) -> _Recording:
        self.moves.append(torch.device(device))
        return super().to(device)


class _Mean(nn.Module):
    def __init__(self):
        super().__init__()
        self.level = nn.Parameter(torch.zeros(()))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["images"].mean() - self.level) ** 2


def test_fit_moves_its_source_to_the_device_once(tmp_path):
    source = _Recording(_trajectories(), 8)
    fit(_Mean(), source, LoopConfig(steps=3, batch_size=2, lr=1e-2, save_every=3), tmp_path / "run", {"config": {}},
        device="cpu")
    assert source.moves == [torch.device("cpu")]
