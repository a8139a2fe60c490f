"""Each shipped WorldPack variant reads every context slot its layout claims (recent and retrieved): changing the
latent in any one slot changes the network's output. A variant that dropped its memories, or a packing level, would
still train and backpropagate (test_worldpack), but not pass this."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loopnav_bench.models import load_model
from modelkit.adapter import collate
from worldpack.context import VARIANTS, build_example, cumulative_actions

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def loop_example(config, length: int = 60, current: int = 55) -> dict[str, torch.Tensor]:
    """A return leg that passes the frames of the outbound leg again, so every retrieved slot is filled."""
    rng = np.random.default_rng(0)
    half = length // 2
    poses = np.zeros((length, 5))
    poses[:, 0] = np.concatenate([np.linspace(0, 6, half), np.linspace(6, 0, length - half)])
    poses[half:, 3] = np.pi
    latents = torch.from_numpy(rng.normal(size=(length, config.latent_channels, config.latent_size,
                                                config.latent_size))).float()
    actions = rng.normal(size=(length, config.action_dim)).astype(np.float32)
    example = build_example(latents, poses, cumulative_actions(actions), current, current - 1, config.layout,
                            config.retrieval, 1.0, split=half)
    return collate([example])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_claimed_context_slot_changes_the_output(variant):
    network = load_model("worldpack", checkpoint=variant)
    model, config = network.model, network.config
    # the layout the checkpoint stores, which need not be VARIANTS[variant] today: editing VARIANTS leaves it as is
    stored = network.saved["config"]["layout"]
    assert config.variant == variant and {k: list(v) for k, v in network.describe()["layout"].items()} == stored
    assert network.describe()["context_frames"] == len(stored["recent"]) + len(stored["retrieved"])
    batch = loop_example(config)
    assert batch["context_valid"].all() and batch["context"].shape[1] == config.layout.frames
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(model.noise_shape(1), generator=generator)
    c_noise = torch.full((1,), 0.25)
    with torch.no_grad():
        out = model.denoiser(x, c_noise, batch)
        for slot in range(config.layout.frames):
            context = batch["context"].clone()
            context[:, slot] += torch.randn(context[:, slot].shape, generator=generator)
            moved = model.denoiser(x, c_noise, {**batch, "context": context})
            kind = "recent" if slot < len(config.layout.recent) else "retrieved"
            assert (moved - out).abs().max() > 1e-4, f"{variant}: {kind} slot {slot} does not change the output"
