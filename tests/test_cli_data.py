"""`loopnav prepare / validate / inspect` end to end, and their clear errors (exit code 2, the file named)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from raw_fixtures import make_loopnav_root, make_recon_root
from typer.testing import CliRunner

from loopnav.cli import app
from loopnav_bench.shards import shard_paths

runner = CliRunner()


def squeeze(text: str) -> str:
    """Text without whitespace: rich folds long lines (at spaces or inside paths) to the terminal width."""
    return "".join(text.split())


def run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result, squeeze(result.output)


def shows(message: str, output: str) -> bool:
    return squeeze(message) in output


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "data"
    return root, make_loopnav_root(root)


@pytest.fixture
def prepared(raw, tmp_path):
    out = tmp_path / "out"
    result, output = run("prepare", "--source", "loopnav", "--input", raw[0], "--out", out)
    assert result.exit_code == 0, output
    return out, output


def test_prepare_validate_inspect(raw, prepared):
    out, output = prepared
    assert shows("loopnav: 4 trajectories", output) and shows("skipped: 4", output) and shows("repaired: 2", output)
    assert (out / "manifest.json").exists()
    result, output = run("validate", out)
    assert result.exit_code == 0 and shows("valid: 4 trajectories in 3 shards", output)

    result = runner.invoke(app, ["inspect", str(out), "--split", "val", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["trajectory"]["id"] == "loopnav_ABA_plains_village_19_5_05-11_10-00-00"
    val = raw[1]["mismatch"]
    n = len(val["entries"]) - 2  # its video lost 2 frames
    assert shown["trajectory"]["frames"] == [n, 36, 64, 3] and shown["trajectory"]["offset"] == val["offset"]
    assert shown["trajectory"]["context"] + shown["trajectory"]["target"] == n
    assert shown["manifest"]["n"] == 4 and shown["manifest"]["settings"]["splits"] == ["train", "val", "test"]

    strip = out.parent / "strip.png"
    result, output = run("inspect", out, "--id", "loopnav_ABCA_plains_village_1_15_05-10_16-30-00", "--frames", strip)
    assert result.exit_code == 0 and shows("loopnav-v1", output) and shows("offset", output)
    image = cv2.imread(str(strip))  # two legs of 8 frames, each upscaled 2x and captioned
    assert image.shape[1] == 8 * 2 * 64 and image.shape[0] > 2 * 2 * 36
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 8  # frames, not only caption bars
    result, output = run("inspect", out, "--frames", out.parent / "strip.jpg")
    assert result.exit_code == 2 and shows("give a .png file name", output)


def test_prepare_filters_and_is_idempotent(raw, tmp_path):
    out = tmp_path / "out"
    args = ("prepare", "--source", "loopnav", "--input", raw[0], "--out", out, "--split", "train,val", "--tasks", "ABA",
            "--ranges", "5")
    result, output = run(*args)
    assert result.exit_code == 0, output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n"] == 2 and set(manifest["splits"]) == {"train", "val"}
    result, output = run(*args[:-4])  # other settings, same --out
    assert result.exit_code == 2 and shows("prepared with other settings; pass --overwrite", output)
    result, output = run(*args[:-4], "--overwrite")
    assert result.exit_code == 0 and json.loads((out / "manifest.json").read_text())["n"] == 3


def test_validate_reports_the_corrupted_and_the_missing_shard(prepared):
    out, _ = prepared
    shard = shard_paths(out, "train")[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    result, output = run("validate", out)
    assert result.exit_code == 2 and shows(f"{shard}: sha256", output) and shows("does not match the manifest", output)
    shard.unlink()
    result, output = run("validate", out)
    assert result.exit_code == 2 and shows(f"{shard}: listed in", output) and shows("but missing", output)


@pytest.mark.parametrize("args, message", [
    (("prepare", "--source", "loopnav", "--input", "{tmp}/nowhere", "--out", "{tmp}/o"),
     "{tmp}/nowhere: no such LoopNav data directory"),
    (("prepare", "--source", "recon", "--input", "{tmp}", "--tasks", "ABA", "--out", "{tmp}/o"),
     "--source recon does not take --tasks"),
    (("prepare", "--source", "recon", "--input", "{tmp}", "--out", "{tmp}/o"), "{tmp}: no RECON trajectories"),
    (("prepare", "--source", "loopnav", "--input", "{tmp}", "--out", "{tmp}/o"),
     "{tmp}/train.csv: no split file train.csv"),
    (("prepare", "--source", "loopnav", "--out", "{tmp}/o"), "needs exactly one of --input DIR or --hub-repo"),
    (("prepare", "--source", "doom", "--out", "{tmp}/o"), "unknown source 'doom'"),
    (("validate", "{tmp}"), "{tmp}/manifest.json: no manifest"),
    (("inspect", "{tmp}"), "{tmp}/manifest.json: no manifest"),
])
def test_cli_errors_exit_2_and_name_the_problem(tmp_path, args, message):
    result, output = run(*(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == 2, output
    assert shows(message.format(tmp=tmp_path), output)
    assert "Traceback" not in output


def test_bad_csv_header_names_the_file(raw, tmp_path):
    (tmp_path / "train.csv").write_text("a,b\n1,2\n")
    result, output = run("prepare", "--source", "loopnav", "--input", tmp_path, "--split", "train",
                         "--out", tmp_path / "o")
    assert result.exit_code == 2 and shows(f"{tmp_path / 'train.csv'}: header ['a', 'b'] "
                                           "lacks the LoopNav columns", output)


def test_inspect_unknown_id(prepared):
    out, _ = prepared
    result, output = run("inspect", out, "--id", "nope")
    assert result.exit_code == 2 and shows("no trajectory 'nope'", output)


@pytest.mark.slow  # starts loopnav in another interpreter
def test_hub_prepare_offline_fails_at_once(tmp_path):
    """HF_HUB_OFFLINE is read when huggingface_hub is imported, so this needs a fresh interpreter."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="300")
    result = subprocess.run([sys.executable, "-m", "loopnav", "prepare", "--source", "loopnav", "--hub-repo",
                             "kevinLian/LoopNav", "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "cannot fetch from the Hub dataset kevinLian/LoopNav: huggingface_hub is in offline mode" in result.stderr
    assert not (tmp_path / "o").exists()


def test_prepare_recon_with_a_split_file_and_context(tmp_path):
    make_recon_root(tmp_path / "recon", tmp_path / "pwned")
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"test": ["jackal_2019-08-02-16-23-30_0_r00", "jackal_2019-09-01-10-00-00_1_r00_0"]}))
    result, output = run("prepare", "--source", "recon", "--input", tmp_path / "recon", "--split-file", splits,
                         "--context-frames", "8", "--out", tmp_path / "o")
    assert result.exit_code == 0, output
    result = runner.invoke(app, ["inspect", str(tmp_path / "o"), "--json"])
    shown = json.loads(result.stdout)["trajectory"]
    assert shown["offset"] == 8 and shown["meta"]["task"] == "RECON" and shown["action_layout"] == "recon-v1"
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["n"] == 2 and list(manifest["splits"]) == ["test"] and not (tmp_path / "pwned").exists()


def test_prepare_names_skipped_inputs_and_fails_when_nothing_is_left(prepared, raw, tmp_path):
    _, output = prepared
    assert shows("skipped: 4 (", output)
    assert shows("loopnav_ABA_plains_village_20_5_05-12_09-99-99: missing file:", output)  # the input, its reason
    assert shows("test.csv:6: path escapes the data root", output)

    result, output = run("prepare", "--source", "loopnav", "--input", raw[0], "--out", tmp_path / "none",
                         "--split", "test", "--tasks", "ABCA")
    assert result.exit_code == 2 and shows("nothing prepared: all 2 inputs were skipped", output)
    assert not (tmp_path / "none" / "manifest.json").exists()

    (tmp_path / "a-file").write_text("mine")
    result, output = run("prepare", "--source", "loopnav", "--input", raw[0], "--out", tmp_path / "a-file")
    assert result.exit_code == 2 and shows("is a file, not a folder", output)
    assert (tmp_path / "a-file").read_text() == "mine"


@pytest.mark.parametrize("width", [80, 200])
def test_every_table_fits_the_terminal_width(raw, tmp_path, width):
    """At 80 columns (and in a pipe, which rich treats as 80) and at 200, nothing is cut and no label collapses;
    a `wrote PATH` line stays one line whatever its length (a path folded by a newline can't be copied)."""
    def check(*args: str):
        result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(width)})
        lines = result.output.splitlines()
        assert max(len(line) for line in lines if not line.startswith("wrote /")) <= width, result.output
        assert not [line for line in lines if "…" in line and "0:00:" not in line], result.output  # bars may elide
        return result

    out = tmp_path / "out"
    assert check("prepare", "--source", "loopnav", "--input", raw[0], "--out", out).exit_code == 0
    assert check("inspect", out).exit_code == 0
    result = check("evaluate", "--model", "copy-last", "--data", out, "--split", "train", "-o", tmp_path / "results",
                   "--metrics", "ssim,psnr,lpips")
    assert result.exit_code == 0 and " test" not in result.output
    assert "split train" in result.output and any("copy-last" in line for line in result.output.splitlines())
    assert check("leaderboard", "--results", tmp_path / "results").exit_code == 0
    result = check("weights", "check", "lpips", "fvd")
    assert "lpips/alexnet" in result.output and "fvd/i3d" in result.output
    assert check("weights", "list").exit_code == 0


def test_version_is_the_packages_one():
    from importlib.metadata import version

    from loopnav_bench import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"loopnav {__version__}"
    assert version("loopnav") == __version__  # pyproject.toml reads it from loopnav_bench, its one owner
