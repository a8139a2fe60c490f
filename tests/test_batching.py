"""Rollouts do not depend on batching, also when a batch needs several fixed-shape network calls (LANES rows each):
nine trajectories of different lengths in one `rollout_batch`, in another order, and one at a time, give the same
frames, for every model that batches its network calls."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_trajectory

from loopnav_bench.models import RolloutRequest, load_model
from modelkit.adapter import LANES

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.mark.parametrize("name", ["worldpack", "nwm", "diamond"])
def test_several_network_chunks_give_each_trajectory_its_own_frames(name):
    requests = [RolloutRequest.from_trajectory(make_trajectory(i, length=8 + (i % 4), size=32), seed=i)
                for i in range(2 * LANES + 1)]  # three chunks at the start, the last one padded; fewer later
    model = load_model(name, sampler_steps=1)
    together = model.rollout_batch(requests)
    order = np.random.default_rng(0).permutation(len(requests))
    shuffled = model.rollout_batch([requests[i] for i in order])
    for request, frames, position in zip(requests, together, np.argsort(order)):
        assert np.array_equal(frames, shuffled[position]), request.id
    for i in (0, LANES, 2 * LANES):  # the first row of each chunk, alone
        assert np.array_equal(together[i], model.rollout(requests[i])), requests[i].id
