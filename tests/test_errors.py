"""Bad input gives one clear line naming the file, trajectory or argument, a non-zero exit, and nothing lost."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import make_trajectory
from test_leaderboard import write_run
from typer.testing import CliRunner

from loopnav.cli import app
from loopnav_bench.evaluate import EvalConfig, EvaluationError, evaluate, parse_eval_size
from loopnav_bench.models import load_model
from loopnav_bench.schema import TrajectoryError
from loopnav_bench.shards import ShardError, decode_sample, encode_sample, load_manifest

runner = CliRunner()


def squeeze(text: str) -> str:
    """Text without whitespace: rich folds long lines (at spaces or inside paths) to the terminal width."""
    return "".join(text.split())


def invoke(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, squeeze(result.output)


@pytest.mark.parametrize("value", ["abc", -1, 0, 2.5])
def test_sampler_steps_are_checked_before_any_weights_load(value, monkeypatch):
    import modelkit.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "resolve", lambda path: pytest.fail("the checkpoint was opened before the check"))
    with pytest.raises(ValueError, match=f"--model-args sampler_steps={value!r}"):
        load_model("worldpack", sampler_steps=value)
    with pytest.raises(ValueError, match="--model-args solver='rk4'"):
        load_model("nwm", solver="rk4")


def test_cli_model_args_and_checkpoint_errors_name_the_argument(tiny_shards, tmp_path):
    out = tmp_path / "out"
    code, shown = invoke("evaluate", "--model", "worldpack", "--data", tiny_shards, "-o", out, "--model-args",
                         "sampler_steps=abc")
    assert code == 2 and squeeze("--model-args sampler_steps='abc': a whole number of at least 1") in shown
    code, shown = invoke("evaluate", "--model", "copy-last", "--data", tiny_shards, "-o", out, "--model-args", "k=1")
    assert code == 2 and squeeze("--model-args k: model 'copy-last' takes no model args") in shown
    code, shown = invoke("evaluate", "--model", "copy-last", "--data", tiny_shards, "-o", out, "--checkpoint",
                         tmp_path)
    assert code == 2 and squeeze(f"--checkpoint {tmp_path}: model 'copy-last' has no weights to load") in shown
    assert not out.exists()


def test_a_garbage_weights_file_is_named(tmp_path):
    from worldpack.world_model import WorldPackModel

    checkpoint = tmp_path / "tiny"
    shutil.copytree(WorldPackModel.shipped_dir / WorldPackModel.default_checkpoint, checkpoint)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match=f"{weights}: sha256 .* differs from .*config.json records"):
        load_model("worldpack", checkpoint=str(checkpoint))
    # a config that records no hashes (written by hand, say): the file itself is named as unreadable
    config = json.loads((checkpoint / "config.json").read_text())
    del config["files"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{weights}: not a readable safetensors file"):
        load_model("worldpack", checkpoint=str(checkpoint))


@pytest.mark.parametrize("manifest", [[1, 2], {"schema_version": "1.0", "source": "x"},
                                      "splits-not-a-dict", "shard-without-sha256"])
def test_a_manifest_of_the_wrong_shape_is_named(tiny_shards, manifest):
    path = tiny_shards / "manifest.json"
    good = json.loads(path.read_text())
    if manifest == "splits-not-a-dict":
        manifest = {**good, "splits": []}
    elif manifest == "shard-without-sha256":
        manifest = json.loads(path.read_text())
        del manifest["splits"]["test"]["shards"][0]["sha256"]
    elif isinstance(manifest, dict):
        manifest["schema_version"] = good["schema_version"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=f"{path}: "):
        load_manifest(tiny_shards)
    code, shown = invoke("validate", tiny_shards)
    assert code == 2 and squeeze(str(path)) in shown


def test_a_damaged_member_names_shard_and_trajectory():
    sample = {"__key__": "traj_7", **encode_sample(make_trajectory(7))}
    sample["poses.npy"] = sample["poses.npy"][:20]  # a truncated .npy
    with pytest.raises(TrajectoryError, match=r"^test/x-000000.tar: sample 'traj_7': "):
        decode_sample(sample, where="test/x-000000.tar")
    sample = {"__key__": "traj_7", **encode_sample(make_trajectory(7)), "meta.json": b"{not json"}
    with pytest.raises(TrajectoryError, match="sample 'traj_7'"):
        decode_sample(sample, where="shard.tar")


def test_evaluation_arguments_are_checked_before_anything_runs(tiny_shards, tmp_path):
    with pytest.raises(EvaluationError, match="--eval-size '99999x99999': at most 2048 pixels a side"):
        parse_eval_size("99999x99999")
    assert parse_eval_size("2048x64") == (2048, 64)
    with pytest.raises(EvaluationError, match="--metrics names no metric"):
        evaluate(EvalConfig(data=tiny_shards, output_dir=tmp_path / "out", model="copy-last", metrics=[]))
    code, shown = invoke("evaluate", "--model", "copy-last", "--data", tiny_shards, "-o", tmp_path / "out",
                         "--metrics", ",")
    assert code == 2 and squeeze("--metrics names no metric") in shown
    assert not list((tmp_path / "out").rglob("results_*.json"))


def test_a_corrupt_results_file_is_skipped_with_a_warning_naming_it(tmp_path):
    good = write_run(tmp_path, "alpha", "2026-01-02T10-00-00.000001", 0.7)
    bad = write_run(tmp_path, "beta", "2026-01-02T11-00-00.000001", 0.9)
    bad.write_text(bad.read_text()[:100])  # cut short by a full disk
    result = runner.invoke(app, ["leaderboard", "--results", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert squeeze(f"skipped: {bad}: not valid JSON") in squeeze(result.output)
    assert "alpha" in result.stdout and "beta" not in result.stdout
    assert good.exists() and bad.exists()  # nothing deleted
    assert np.isfinite(json.loads(good.read_text())["results"]["test/ABA/5"]["ssim"]["mean"])


def test_an_error_is_one_line_however_long_the_path_it_names(tmp_path):
    missing = tmp_path / ("a-long-folder-name-" * 8) / "missing"
    result = runner.invoke(app, ["leaderboard", "--results", str(missing)], env={"COLUMNS": "80"})
    assert result.exit_code == 2
    assert result.output.rstrip("\n").splitlines() == [f"error: {missing}: no such directory"]
