"""WorldMem (published/worldmem.py): exact to upstream on the shared golden fixtures, its pose and action mapping from
loopnav-v1, retrieval and masks, and the adapter end to end through `loopnav evaluate` with a tiny random
checkpoint in the official (converted) layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from published_fixtures import (
    check_adapter,
    evaluate_end_to_end,
    linked_copy,
    loopnav_shards,
    upstream_fixtures,
)
from safetensors.torch import load_file, save_file

from loopnav_bench.models import load_model
from published import worldmem
from published.oasis import ACTION_KEYS
from published.upstream_check import check_upstream


def test_check_upstream_passes_on_the_shared_fixtures():
    results = check_upstream("worldmem", upstream_fixtures("worldmem"))
    failed = [f"{r.name}: {r.error:.3g} > {r.tolerance:.3g}" for r in results if not r.passed]
    assert not failed, failed
    names = {r.name for r in results}
    assert {"dit_forward:output", "pose:plucker_360x640_sub40", "pose:fov_inside", "validation_rollout:pred_latents",
            "validation_rollout:decoded_pred_last_frame"} <= names
    # all 5 generated frames' retrievals, and the first and last sampling call of each
    assert len([n for n in names if n.endswith("_random_idx")]) == 5
    assert len([n for n in names if n.startswith("validation_rollout:call") and n.endswith("_out")]) == 10


def test_check_upstream_notices_a_wrong_memory_weight(tmp_path):
    """A change inside the memory block alone fails the forward and the rollout, not the pose maths."""
    folder = linked_copy(upstream_fixtures("worldmem"), tmp_path / "worldmem")
    state = load_file(str(folder / "diffusion_model.safetensors"))
    state["model.blocks.1.r_attn.to_out.bias"] = state["model.blocks.1.r_attn.to_out.bias"] + 1e-3
    (folder / "diffusion_model.safetensors").unlink()
    save_file(state, str(folder / "diffusion_model.safetensors"))
    failed = {r.name for r in worldmem.check_upstream(folder) if not r.passed}
    assert {"dit_forward:output", "validation_rollout:pred_latents"} <= failed
    assert not any(name.startswith("pose:") for name in failed)


def view_direction(wm_pose: np.ndarray) -> np.ndarray:
    """The camera's forward axis in loopnav's frame (x east, y north, z up), from WorldMem's c2w (Minecraft axes)."""
    forward = worldmem.euler_to_c2w(torch.from_numpy(wm_pose))[..., :3, 2].numpy()  # R · (0, 0, 1)
    return np.stack([forward[..., 0], -forward[..., 2], forward[..., 1]], axis=-1)


def test_poses_map_so_the_camera_looks_where_loopnav_says():
    rng = np.random.default_rng(0)
    poses = np.concatenate([rng.normal(size=(20, 3)) * 10, rng.uniform(-math.pi, math.pi, (20, 1)),
                            rng.uniform(-1.2, 1.2, (20, 1))], axis=1)
    mapped = worldmem.loopnav_to_worldmem_poses(poses, poses[0, :3])
    yaw, pitch = poses[:, 3], poses[:, 4]
    expected = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], axis=1)
    np.testing.assert_allclose(view_direction(mapped), expected, atol=1e-5)
    # positions: Minecraft (x, y up, z south) relative to the origin given
    d = poses[:, :3] - poses[0, :3]
    np.testing.assert_allclose(mapped[:, :3], np.stack([d[:, 0], d[:, 2], -d[:, 1]], axis=1), atol=1e-5)
    assert mapped[:, 3:].min() >= 0 and mapped[:, 3:].max() < 360


def test_actions_map_to_worldmems_own_key_order_and_camera_steps():
    actions = np.zeros((3, 9), np.float32)
    actions[0, [0, 2, 4, 5, 6]] = 1                     # forward, left, jump, sprint, sneak
    actions[1, 7] = math.radians(7.5)                   # turn left half a MineDojo step
    actions[2, 8] = math.radians(30)                    # look up two steps: clipped
    out = worldmem.loopnav_to_worldmem_actions(actions)
    assert {ACTION_KEYS[j] for j in np.flatnonzero(out[0])} == {"forward", "left"}  # WorldMem never saw the rest
    assert out[1, 16] == pytest.approx(-0.5) and out[1].sum() == pytest.approx(-0.5)  # index 16: yaw, right positive
    assert out[2, 15] == pytest.approx(-1.0)                                           # index 15: pitch, down positive


def test_retrieval_prefers_frames_that_saw_the_target_view():
    # frames 0..5 at the origin; 0-4 face away from the target's view (yaw 180), frame 5 faces the same way
    poses = torch.zeros(8, 1, 5)
    poses[:5, 0, 4] = 180.0
    frame_index = torch.arange(8)[:, None]
    points = worldmem.sphere_points(torch.Generator().manual_seed(0))
    picked = worldmem.retrieve_memory(6, 4, poses, frame_index, 1, points)
    assert picked.shape == (4, 1) and picked[0, 0] == 5
    assert len(set(picked[:, 0].tolist())) == 4  # a frame is picked once
    # fewer past frames than memory slots: all of them, then frame 0
    assert worldmem.retrieve_memory(2, 4, poses, frame_index, 1, points)[:, 0].tolist() == [0, 1, 0, 0]


def test_temporal_mask_is_causal_and_keeps_memory_to_itself():
    mask = worldmem.temporal_mask(5, 2, torch.device("cpu"))
    expected = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])
    assert torch.equal(mask, expected.bool())


# ---------------------------------------------------------------------------------------------------- the adapter


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    dit, vae = worldmem.build("tiny")
    folder = tmp_path_factory.mktemp("worldmem") / "worldmem-tiny"
    worldmem.save_official_worldmem(dit, vae, folder)
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return loopnav_shards(tmp_path_factory.mktemp("loopnav-raw"), tmp_path_factory.mktemp("loopnav") / "shards")


def test_the_checkpoint_folder_must_hold_both_files(tiny_checkpoint, tmp_path):
    (tmp_path / worldmem.DIFFUSION_FILE).symlink_to(tiny_checkpoint / worldmem.DIFFUSION_FILE)
    with pytest.raises(FileNotFoundError, match=f"no {worldmem.VAE_FILE}"):
        load_model("worldmem", checkpoint=str(tmp_path), size="tiny")


def test_rollouts_are_native_resolution_seeded_batch_independent_and_refuse_other_layouts(tiny_checkpoint, shards):
    model = load_model("worldmem", checkpoint=str(tiny_checkpoint), size="tiny", sampling_steps=2)
    check_adapter(model, shards, "vizdoom-v1")


def test_loopnav_evaluate_runs_worldmem_end_to_end(tiny_checkpoint, shards, tmp_path):
    text = evaluate_end_to_end("worldmem", tiny_checkpoint, shards, tmp_path / "results",
                               "size=tiny,sampling_steps=1,context=8")
    assert "worldmem" in text and worldmem.WorldMemModel.licence in text and "ssim" in text


def test_the_full_size_has_upstreams_key_layout():
    """worldmem builds (on the meta device) with the keys of the tiny fixture checkpoint, block for block, less the
    rebuilt schedule buffers, rotary tables and the unused temporal_pose_cond_mlp."""
    tiny = load_file(str(upstream_fixtures("worldmem") / "diffusion_model.safetensors"))
    kept = {k.removeprefix("model.") for k in tiny if k.startswith("model.")
            and "rotary_emb" not in k and "temporal_pose_cond_mlp" not in k}
    with torch.device("meta"):
        dit, _ = worldmem.build("worldmem")
    widen = {k.replace("blocks.0.", f"blocks.{n}.") for k in kept if k.startswith("blocks.0.") for n in range(16)}
    assert set(dit.state_dict()) == {k for k in kept if not k.startswith("blocks.")} | widen
    assert dit.state_dict()["blocks.3.r_attn.to_qkv.weight"].shape == (3072, 1024)
