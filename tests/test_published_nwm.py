"""NWM's official CDiT (published/nwm.py): exact to upstream's golden fixtures, and its pieces on their own."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from loopnav.cli import app
from published import nwm, upstream_check

ROOT = Path(__file__).resolve().parent.parent
# the shared fixtures live beside the repository (../shared); LOOPNAV_SHARED_DIR points elsewhere (a worktree)
SHARED = Path(os.environ.get("LOOPNAV_SHARED_DIR", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "upstream" / "nwm"
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "fixture.json").is_file(),
                                    reason=f"the upstream NWM fixtures are not at {FIXTURES} (../shared is absent)")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


@needs_fixtures
def test_check_upstream_passes_on_the_shared_fixtures():
    result = runner.invoke(app, ["models", "check-upstream", "nwm", str(FIXTURES)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {tuple(cell.strip() for cell in line.split("│")[1:3]) for line in result.output.splitlines()}
    for covered in (("cdit_forward", "output"), ("p_sample", "case0_log_variance"), ("sample_loop_250", "x_after_step"),
                    ("actions", "eval1_rollout1fps_y"), ("actions", "train12_goal_pos_before_minmax")):
        assert covered in rows
    assert "FAIL" not in result.output and "within their tolerance" in result.output


@needs_fixtures
def test_a_perturbed_fixture_fails_and_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "nwm"
    shutil.copytree(FIXTURES, copy, ignore=shutil.ignore_patterns("*.pth.tar"))
    (copy / "cdit_forward.safetensors").chmod(0o644)
    tensors = load_file(str(copy / "cdit_forward.safetensors"))
    tensors["output"][1, 5, 3, 2] += 3e-5  # three times the tolerance, on one element
    save_file(tensors, str(copy / "cdit_forward.safetensors"))
    results = {r.name: r for r in upstream_check.check_upstream("nwm", copy)}
    assert not results["cdit_forward.safetensors:output"].passed
    assert 2e-5 < results["cdit_forward.safetensors:output"].error < 4e-5
    assert all(r.passed for name, r in results.items() if not name.startswith("cdit_forward"))
    result = runner.invoke(app, ["models", "check-upstream", "nwm", str(copy)], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "FAIL" in result.output and "1 of" in result.output


def test_check_upstream_refuses_unknown_models_and_absent_modules(monkeypatch, tmp_path):
    (tmp_path / "fixture.json").write_text("{}")
    result = runner.invoke(app, ["models", "check-upstream", "nope", str(tmp_path)])
    assert result.exit_code == 2 and "known:" in result.output
    monkeypatch.setitem(upstream_check.CHECKERS, "ghost", "published.ghost_model_not_written")
    result = runner.invoke(app, ["models", "check-upstream", "ghost", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "not part of this loopnav" in result.output
    result = runner.invoke(app, ["models", "check-upstream", "nwm", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no fixture.json" in result.output


@needs_fixtures
def test_official_weights_give_their_size():
    from modelkit.checkpoint import load_tensors

    model = nwm.load_official(FIXTURES / "cdit_ema.safetensors", num_heads=4)
    assert model.size == nwm.SIZES["tiny"]
    state = load_tensors(FIXTURES / "cdit_ema.safetensors")
    with pytest.raises(ValueError, match="not a key of NWM's CDiT"):
        nwm.from_official({**state, "blocks.0.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="give num_heads"):
        nwm.size_from_state(state)


def test_respacing_strides_the_original_steps():
    diffusion = nwm.RespacedDDPM("250")
    steps = diffusion.timestep_map
    assert len(steps) == 250 and steps[0] == 0 and steps[-1] == 999
    assert set(np.diff(steps)) == {4, 5}  # the float stride 999/249 = 4.012, rounded
    assert len(nwm.space_timesteps(1000, "10,20")) == 30
    with pytest.raises(ValueError, match="cannot take"):
        nwm.space_timesteps(1000, "2000")
    # the respaced process keeps the original cumulative products at the kept steps
    base = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    assert np.allclose(diffusion.alphas_cumprod, base[steps], rtol=1e-12)


def test_the_last_step_adds_no_noise_and_others_do():
    diffusion = nwm.RespacedDDPM("250")
    x = torch.randn(2, 4, 4, 4)

    def network(x, t, **cond):  # eps 0 and v 0: the mean is x scaled, the variance halfway in log space
        return torch.zeros(len(x), 8, *x.shape[2:])

    noise = torch.ones_like(x)
    last = diffusion.p_sample(network, x, torch.tensor([0, 0]), noise)
    assert torch.equal(last["sample"], last["mean"])
    first = diffusion.p_sample(network, x, torch.tensor([249, 249]), noise)
    assert torch.allclose(first["sample"] - first["mean"], torch.exp(0.5 * first["log_variance"]))


def test_actions_of_a_straight_walk_along_y():
    steps = np.arange(12)
    position = np.stack([np.full(12, 3.0), 0.25 * steps], axis=1)  # 0.25 m per frame towards +y
    yaw = np.full(12, np.pi / 2)                                    # facing +y: the walk is straight ahead
    local = nwm.waypoints(position, yaw, curr_time=2, count=8, spacing=0.25)
    assert np.allclose(local, np.stack([np.arange(1, 9), np.zeros(8), np.zeros(8)], axis=1), atol=1e-12)
    delta = nwm.eval_deltas(position, yaw, 2, 8, 0.25)
    # the first delta carries the normalisation offset; the others are normalised steps of one spacing
    assert np.allclose(delta[0], [2 * 3.5 / 7.5 - 1, 0, 0], atol=1e-6)
    assert np.allclose(delta[1:], [[2 / 7.5, 0, 0]] * 7, atol=1e-6)
    assert np.allclose(delta.sum(0), nwm.normalise_xy(local[-1]), atol=1e-6)  # summing telescopes to waypoint k
    grouped, stride = nwm.rollout_actions(delta, rollout_fps=1)
    assert stride == 4 and np.allclose(grouped, [delta[:4].sum(0), delta[4:].sum(0)])
    y, rel_t, raw = nwm.training_goal(position, yaw, 5, np.array([-2, 3]), 0.25)
    assert np.allclose(raw[:, 0], [-2, 3]) and np.allclose(rel_t, [-2 / 128, 3 / 128])
    with pytest.raises(ValueError, match="outside a trajectory"):
        nwm.waypoints(position, yaw, 5, 8, 0.25)


def test_yaw_differences_wrap_at_the_seam():
    assert np.isclose(nwm.angle_difference(3.0, -3.0), 2 * np.pi - 6.0)
    assert np.isclose(nwm.angle_difference(-3.0, 3.0), 6.0 - 2 * np.pi)
    assert nwm.angle_difference(0.0, np.pi) == -np.pi  # [-π, π): +π maps to -π


# ---- the official weights behind `--model nwm` ----------------------------------------------------------------------

def official_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny random NWM release in the official layout: the CDiT's 'ema' tensors as safetensors (upstream key names)
    and a diffusers AutoencoderKL with the SD VAE's 8x downsampling, saved as the Hub repo is laid out."""
    pytest.importorskip("diffusers", reason="the SD VAE path needs diffusers (pip install 'loopnav[published]')")
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    network = nwm.build("tiny")
    for parameter in network.parameters():  # upstream zero-initialises adaLN and the output: nothing would move
        torch.nn.init.normal_(parameter, std=0.1)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(nwm.to_official(network.state_dict()), str(folder / "cdit_tiny_ema.safetensors"))
    nwm.build_vae("tiny").save_pretrained(str(folder / nwm.VAE_FOLDER), safe_serialization=True)
    return folder


def recon_request(seed: int = 0, context: int = 6, horizon: int = 3, layout: str = "recon-v1"):
    from loopnav_bench.models import RolloutRequest

    T = context + horizon
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(T, 48, 64, 3), dtype=np.uint8)
    yaw = 0.1 * np.arange(T)
    xy = np.cumsum(np.stack([np.cos(yaw), np.sin(yaw)], axis=1) * 0.25, axis=0)
    poses = np.concatenate([xy, np.zeros((T, 1)), yaw[:, None], np.zeros((T, 1))], axis=1)
    actions = np.zeros((T, 2), np.float32)
    return RolloutRequest(f"traj{seed}", frames[:context], poses[:context], actions[:context], poses[context:],
                          actions[context:], {"action_layout": layout, "fps": 4}, seed=seed)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return official_folder(tmp_path_factory.mktemp("nwm-official") / "release")


def test_model_nwm_loads_the_official_release_and_rolls_out(official):
    from loopnav_bench.models import load_model

    model = load_model("nwm", checkpoint=str(official), sampler_steps=3, num_heads=4)
    assert isinstance(model, nwm.OfficialNWMModel)
    described = model.describe()
    assert described["weights"] == "official" and described["licence"] == "CC-BY-NC-4.0"
    assert described["checkpoint"].endswith("cdit_tiny_ema.safetensors") and described["image_size"] == 64
    assert set(described["vae_sha256"]) == {"config.json", "diffusion_pytorch_model.safetensors"}
    request = recon_request(0)
    frames = model.rollout(request)
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8 and frames.std() > 0
    assert np.array_equal(frames, model.rollout(request))  # seeded from the request
    batched = model.rollout_batch([recon_request(1, horizon=2), request])
    assert np.array_equal(batched[1], frames) and batched[0].shape == (2, 64, 64, 3)  # batch-independent
    other_seed = recon_request(0)
    other_seed.seed = 5
    assert not np.array_equal(model.rollout(other_seed), frames)


def test_the_cpu_trained_nwm_is_still_the_default():
    from baselines.nwm import NWMModel
    from loopnav_bench.models import load_model

    model = load_model("nwm", sampler_steps=1)
    assert type(model) is NWMModel and model.describe()["weights"].startswith("loopnav")


def test_official_nwm_refuses_what_it_cannot_serve(official, tmp_path):
    from loopnav_bench.models import load_model

    model = load_model("nwm", checkpoint=str(official), sampler_steps=2, num_heads=4)
    with pytest.raises(ValueError, match="recon-v1.*not 'vizdoom-v1'"):
        model.rollout(recon_request(0, layout="vizdoom-v1"))
    pickled = tmp_path / "0100000.pth.tar"
    pickled.write_bytes(b"not read")
    with pytest.raises(ValueError, match="never unpickles.*loopnav weights convert nwm"):
        load_model("nwm", checkpoint=str(pickled))
    with pytest.raises(ValueError, match="--model-args solver: model 'nwm' takes sampler_steps, vae, num_heads"):
        load_model("nwm", checkpoint=str(official), solver="heun")
    (tmp_path / "loopnav.safetensors").write_bytes((official / "cdit_tiny_ema.safetensors").read_bytes()[:8] + b"x")
    with pytest.raises(ValueError, match="loopnav.safetensors: not a readable safetensors file"):
        load_model("nwm", checkpoint=str(tmp_path / "loopnav.safetensors"))
    from safetensors.torch import save_file

    save_file({"patch_embed.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors: not NWM's CDiT weights"):
        load_model("nwm", checkpoint=str(tmp_path / "other.safetensors"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="found no .safetensors"):
        load_model("nwm", checkpoint=str(tmp_path / "empty"))


def test_evaluate_end_to_end_on_recon_with_the_official_layout(official, tmp_path):
    import json

    from raw_fixtures import make_recon_root

    from loopnav_bench.shards import load_manifest, prepare
    from loopnav_bench.sources.recon import ReconSource

    make_recon_root(tmp_path / "raw", tmp_path / "marker")
    prepare(ReconSource(tmp_path / "raw", context_frames=21), tmp_path / "shards")
    splits = sorted(load_manifest(tmp_path / "shards")["splits"])
    out = tmp_path / "results"
    result = runner.invoke(app, ["evaluate", "--model", "nwm", "--checkpoint", str(official), "--data",
                                 str(tmp_path / "shards"), "--split", ",".join(splits), "-o", str(out),
                                 "--metrics", "ssim,psnr", "--eval-size", "16", "--limit", "2",
                                 "--model-args", "sampler_steps=2,num_heads=4"])
    assert result.exit_code == 0, result.output
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["model_describe"]["weights"] == "official"
    assert results["model_describe"]["licence"] == "CC-BY-NC-4.0"


@pytest.mark.slow  # runs a benchmark script
def test_the_benchmark_dry_runs_on_cpu(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_published.py"), "--device", "cpu",
                           "--models", "nwm,no-such-model-module", "--batches", "2", "--steps", "2", "--repeats", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped no-such-model-module: published.no-such-model-module is not part of this loopnav" in done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["size"], r["batch"], r["sampler_steps"]) for r in rows] == [("nwm", "tiny", 2, 2)]
    assert all(r["seconds_per_frame"] > 0 and r["parameters"] > 0 for r in rows)
