"""Oasis-500M (published/oasis.py): exact to upstream on the shared golden fixtures, its action mapping and sampler
rules, and the adapter end to end through `loopnav evaluate` with a tiny random checkpoint in the official layout."""

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
from published import oasis
from published.upstream_check import check_upstream


def test_check_upstream_passes_on_the_shared_fixtures():
    results = check_upstream("oasis", upstream_fixtures("oasis"))
    failed = [f"{r.name}: {r.error:.3g} > {r.tolerance:.3g}" for r in results if not r.passed]
    assert not failed, failed
    names = {r.name for r in results}
    # every saved output is compared: the DiT, the VAE both ways, the actions and all 12 sampler calls
    assert {"dit_forward:output", "dit_forward:nocond_output", "vae:posterior_mean", "vae:decode_raw",
            "actions:one_hot_actions", "sampling:final_latents", "sampling:video_uint8"} <= names
    assert len([n for n in names if n.startswith("sampling:step") and n.endswith("_v")]) == 12


def test_check_upstream_notices_a_wrong_weight(tmp_path):
    """The check compares against the saved outputs, not against itself: one changed weight fails it."""
    folder = linked_copy(upstream_fixtures("oasis"), tmp_path / "oasis")
    state = load_file(str(folder / "dit_weights.safetensors"))
    state["final_layer.linear.bias"] = state["final_layer.linear.bias"] + 1e-3
    (folder / "dit_weights.safetensors").unlink()
    save_file(state, str(folder / "dit_weights.safetensors"))
    failed = {r.name for r in oasis.check_upstream(folder) if not r.passed}
    assert "dit_forward:output" in failed and "vae:decode_raw" not in failed


def test_noise_levels_truncate_and_the_window_slides():
    assert oasis.noise_levels(3) == [-1, 332, 665, 999]
    assert oasis.noise_levels(10)[:3] == [-1, 99, 199]
    assert [oasis.window_start(i, 4) for i in (2, 3, 4, 5)] == [0, 0, 1, 2]


def test_alphas_cumprod_is_the_float32_cumprod_of_float32_betas():
    ours = oasis.oasis_alphas_cumprod()
    float64 = torch.cumprod(1 - oasis.sigmoid_betas(), 0)
    assert ours.dtype == torch.float32 and ours.shape == (1000,)
    assert 0 < (ours.double() - float64).abs().max() < 1e-6  # the two differ, a little, as the fixture README says


def test_one_hot_actions_follows_the_key_order_and_camera_bins():
    action = {key: 0 for key in oasis.ACTION_KEYS if not key.startswith("camera")}
    row = oasis.one_hot_actions([{**action, "forward": 1, "camera": [80, 20]}])[0]
    assert row[oasis.ACTION_KEYS.index("forward")] == 1 and row.sum() == pytest.approx(1 + 1 - 0.5)
    assert row[15] == 1.0 and row[16] == -0.5
    with pytest.raises(KeyError):
        oasis.one_hot_actions([{"camera": [40, 40]}])
    with pytest.raises(ValueError, match="camera bin"):
        oasis.one_hot_actions([{**action, "camera": [90, 40]}])


def test_loopnav_actions_map_keys_and_camera_with_minecrafts_signs():
    actions = np.zeros((3, 9), np.float32)
    actions[0, 0] = actions[0, 3] = actions[0, 5] = 1          # forward, right, sprint
    actions[1, 7] = math.radians(10)                            # turn left (counter-clockwise) by 10°
    actions[2, 8] = math.radians(-45)                           # look down 45°: past VPT's ±20° span
    out = oasis.loopnav_to_oasis(actions)
    keys = oasis.ACTION_KEYS
    assert out.shape == (3, 25) and out.dtype == np.float32
    assert {keys[j] for j in np.flatnonzero(out[0])} == {"forward", "right", "sprint"}
    assert out[1, keys.index("cameraY")] == pytest.approx(-0.5)   # VPT yaw is positive turning right
    assert out[2, keys.index("cameraX")] == pytest.approx(1.0)    # VPT pitch is positive looking down; clipped


# ---------------------------------------------------------------------------------------------------- the adapter


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    dit, vae = oasis.build("tiny")
    folder = tmp_path_factory.mktemp("oasis") / "oasis-tiny"
    oasis.save_official(dit, vae, folder)
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return loopnav_shards(tmp_path_factory.mktemp("loopnav-raw"), tmp_path_factory.mktemp("loopnav") / "shards")


def test_the_checkpoint_folder_must_hold_both_official_files(tiny_checkpoint, tmp_path):
    (tmp_path / oasis.DIT_FILE).symlink_to(tiny_checkpoint / oasis.DIT_FILE)
    with pytest.raises(FileNotFoundError, match="no vit-l-20.safetensors"):
        load_model("oasis", checkpoint=str(tmp_path), size="tiny")
    tensors = load_file(str(tiny_checkpoint / oasis.DIT_FILE))
    tensors.pop("external_cond.weight")
    (tmp_path / oasis.DIT_FILE).unlink()
    save_file(tensors, str(tmp_path / oasis.DIT_FILE))
    (tmp_path / oasis.VAE_FILE).symlink_to(tiny_checkpoint / oasis.VAE_FILE)
    with pytest.raises(ValueError, match="does not fit the OasisDiT of this size.*external_cond.weight"):
        load_model("oasis", checkpoint=str(tmp_path), size="tiny")


def test_rollouts_are_native_resolution_seeded_batch_independent_and_refuse_other_layouts(tiny_checkpoint, shards):
    model = load_model("oasis", checkpoint=str(tiny_checkpoint), size="tiny", context=3, ddim_steps=2)
    check_adapter(model, shards, "recon-v1")


def test_loopnav_evaluate_runs_oasis_end_to_end(tiny_checkpoint, shards, tmp_path):
    text = evaluate_end_to_end("oasis", tiny_checkpoint, shards, tmp_path / "results",
                               "size=tiny,ddim_steps=1,context=4")
    assert "oasis" in text and oasis.OasisModel.licence in text and "ssim" in text


def test_the_full_size_has_upstreams_key_layout_and_shapes():
    """oasis-500m builds (without memory, on the meta device) with the keys the tiny fixture weights have, block for
    block, and upstream's DiT-S/2 and ViT-L/20 shapes."""
    fixtures = upstream_fixtures("oasis")
    with torch.device("meta"):
        dit, vae = oasis.build("oasis-500m")
    tiny_dit = {k for k in load_file(str(fixtures / "dit_weights.safetensors")) if "rotary_emb" not in k}
    widen = {k.replace("blocks.0.", f"blocks.{n}.") for k in tiny_dit if k.startswith("blocks.0.") for n in range(16)}
    assert set(dit.state_dict()) == {k for k in tiny_dit if not k.startswith("blocks.")} | widen
    assert dit.state_dict()["blocks.15.t_attn.to_qkv.weight"].shape == (3072, 1024)
    tiny_vae = set(load_file(str(fixtures / "vae_weights.safetensors")))
    assert {k for k in vae.state_dict() if not k.startswith(("encoder.", "decoder."))} == \
        {k for k in tiny_vae if not k.startswith(("encoder.", "decoder."))}
    assert len(vae.encoder) == 6 and len(vae.decoder) == 12 and vae.grid == (18, 32)
