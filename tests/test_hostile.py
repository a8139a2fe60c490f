"""Hostile and careless input, one test per case: each asserts the exit code, that the message names the culprit
(file, option, trajectory or tensor) and that no file the user had is lost. docs/reliability.md maps the promises to
these tests."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import SyntheticSource
from results_fixtures import write_run
from typer.testing import CliRunner

from loopnav.cli import app
from loopnav_bench.fileio import OWNED, ForeignFileError, OwnedFolder, sha256_file
from loopnav_bench.shards import MANIFEST, ShardError, listed_shards, prepare, read_trajectories
from modelkit import checkpoint as ckpt

runner = CliRunner()


def squeeze(text: str) -> str:
    """Text without whitespace: rich folds long lines (at spaces or inside paths) to the terminal width."""
    return "".join(text.split())


def run(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert not isinstance(result.exception, AssertionError), result.output
    return result.exit_code, squeeze(result.output)


def shows(text, output: str) -> bool:
    return squeeze(str(text)) in output


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` and its bytes: what must still be there, unchanged, after a refused command."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(output: str) -> bool:
    """One `error:` line and no traceback (squeezed output: no whitespace)."""
    return output.count("error:") == 1 and "Traceback" not in output


@pytest.fixture
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    write_run(root, "alpha", "2026-01-01T09-00-00.000001", 0.7)
    write_run(root, "beta", "2026-01-01T09-00-00.000002", 0.5)
    return root


def rewrite_shard(root: Path, split: str, drop_key: str | None = None, drop_field: str | None = None) -> Path:
    """Remove a sample (or one field of it) from a shard and rewrite the manifest's sha256 and size to match, as a
    careless repair would: only the keys the manifest lists still tell the truth."""
    path, _ = listed_shards(root, split)[0]
    members = []
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, field = member.name.partition(".")
            if key == drop_key and (drop_field is None or field == drop_field):
                continue
            members.append((member, tar.extractfile(member).read()))
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
    manifest = json.loads((root / MANIFEST).read_text())
    for shard in manifest["splits"][split]["shards"]:
        if (root / shard["path"]).resolve() == path:
            shard["sha256"], shard["bytes"] = sha256_file(path), path.stat().st_size
    (root / MANIFEST).write_text(json.dumps(manifest))
    return path


def first_key(root: Path, split: str) -> str:
    return listed_shards(root, split)[0][1]["keys"][0]


# ------------------------------------------------------------------------------------------ 1. nothing is lost


def test_one_rule_for_every_writer_refuses_a_folder_it_did_not_write(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.md").write_text("mine")
    with pytest.raises(ForeignFileError, match="notes.md: in .*user, which loopnav x did not write"):
        OwnedFolder(user, "loopnav x")
    with pytest.raises(ForeignFileError, match="notes.md: is a file, not a folder"):
        OwnedFolder(user / "notes.md", "loopnav x")
    mine = OwnedFolder(tmp_path / "new", "loopnav x")
    mine.write_bytes("a/report.md", b"1")
    (tmp_path / "new" / "b.md").write_text("the user's, added later")
    with pytest.raises(ForeignFileError, match="b.md: exists but was not written by loopnav x"):
        OwnedFolder(tmp_path / "new", "loopnav x").write_bytes("b.md", b"2")
    again = OwnedFolder(tmp_path / "new", "loopnav x")
    again.write_bytes("a/report.md", b"3")  # its own file: replaced
    again.remove("b.md")  # not its own: left alone
    assert (tmp_path / "new" / "a" / "report.md").read_bytes() == b"3"
    assert (tmp_path / "new" / "b.md").read_text() == "the user's, added later"
    assert (user / "notes.md").read_text() == "mine"


def test_checkpoints_prune_only_the_step_folders_train_wrote(tmp_path):
    out = tmp_path / "run"
    weights = {ckpt.WEIGHTS: {"w": torch.ones(2)}}
    ckpt.write_step(out, 1, {"step": 1}, weights)
    for name in ("step-by-step-notes", "step-0000000"):  # the user's, beside the run
        (out / name).mkdir()
        (out / name / "keep.txt").write_text("mine")
    ckpt.write_step(out, 2, {"step": 2}, weights)
    assert not (out / "step-0000001").exists() and (out / "step-0000002" / ckpt.CONFIG).exists()
    assert all((out / name / "keep.txt").read_text() == "mine" for name in ("step-by-step-notes", "step-0000000"))


def test_train_refuses_an_output_dir_holding_the_users_files(tiny_shards, tmp_path):
    out = tmp_path / "work"
    (out / "step-by-step-notes").mkdir(parents=True)
    (out / "step-by-step-notes" / "todo.md").write_text("mine")
    before = snapshot(out)
    code, output = run("train", "--model", "autoencoder", "--data", tiny_shards, "--output-dir", out, "--steps", 1,
                       "--threads", 1)
    assert code == 2 and one_error_line(output)
    assert shows(f"{out / 'step-by-step-notes'}: in {out}, which loopnav train did not write", output)
    assert snapshot(out) == before


def test_push_dry_run_never_overwrites_a_readme_it_did_not_write(results, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my own notes")
    code, output = run("leaderboard", "push", "--results", results, "--repo-id", "org/name", "--dry-run", out)
    assert code == 2 and one_error_line(output) and shows(out / "README.md", output)
    assert snapshot(out) == {"README.md": b"my own notes"}
    fresh = tmp_path / "fresh"  # a folder of its own: written, and written again
    for _ in range(2):
        code, output = run("leaderboard", "push", "--results", results, "--repo-id", "org/name", "--dry-run", fresh)
        assert code == 0, output
    assert (fresh / "README.md").exists() and (fresh / OWNED).exists()


def test_paper_and_plot_never_overwrite_a_file_they_did_not_write(results, tmp_path):
    out = tmp_path / "paper"
    out.mkdir()
    (out / "paper.md").write_text("my draft")
    code, output = run("leaderboard", "paper", "--results", results, "--out", out)
    assert code == 2 and one_error_line(output) and shows(out / "paper.md", output)
    assert snapshot(out) == {"paper.md": b"my draft"}
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "holiday.png").write_bytes(b"\x89PNG mine")
    code, output = run("leaderboard", "--results", results, "--plot", plots)
    assert code == 2 and one_error_line(output) and shows(plots / "holiday.png", output)
    assert snapshot(plots) == {"holiday.png": b"\x89PNG mine"}


@pytest.mark.parametrize("command", ["evaluate", "prepare", "plot", "paper", "dry-run"])
def test_an_output_path_that_is_a_file_or_under_one_is_one_line(command, tiny_shards, results, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    for target in (blocker, blocker / "under"):
        args = {"evaluate": ["evaluate", "-m", "copy-last", "-d", tiny_shards, "--metrics", "ssim", "-o", target],
                "prepare": ["prepare", "--source", "vizdoom", "--out", target],
                "plot": ["leaderboard", "--results", results, "--plot", target],
                "paper": ["leaderboard", "paper", "--results", results, "--out", target],
                "dry-run": ["leaderboard", "push", "--results", results, "--repo-id", "o/n", "--dry-run", target]}
        code, output = run(*args[command])
        assert code == 2 and one_error_line(output) and shows(blocker, output), output
    assert blocker.read_text() == "mine"


# ------------------------------------------------------------------------------------------ 2. counts are facts


@pytest.mark.parametrize("damage", ["lost-sample", "lost-meta"])
def test_evaluate_and_readers_refuse_a_shard_short_of_a_listed_sample(damage, tiny_shards, tmp_path):
    key = first_key(tiny_shards, "test")
    shard = rewrite_shard(tiny_shards, "test", key, "meta.json" if damage == "lost-meta" else None)
    out = tmp_path / "out"
    code, output = run("evaluate", "-m", "copy-last", "-d", tiny_shards, "--metrics", "ssim", "-o", out)
    assert code == 2 and one_error_line(output) and shows(f"{shard}: sample '{key}', listed in manifest.json", output)
    assert not out.exists()
    with pytest.raises(ShardError if damage == "lost-sample" else ValueError, match=f"'{key}'"):
        list(read_trajectories(tiny_shards, "test"))


def test_validate_recomputes_every_count_it_prints(tiny_shards):
    manifest = json.loads((tiny_shards / MANIFEST).read_text())
    path = tiny_shards / MANIFEST
    for edit, where in ((lambda m: m["splits"]["test"].update(n=5), "splits.test.n says 5"),
                        (lambda m: m["splits"]["test"]["counts"]["ABA"].update({"5": 9}), "splits.test.counts")):
        edited = json.loads(json.dumps(manifest))
        edit(edited)
        path.write_text(json.dumps(edited))
        code, output = run("validate", tiny_shards)
        assert code == 2 and one_error_line(output) and shows(f"{path}: {where}", output)
    path.write_text(json.dumps(manifest))
    code, output = run("validate", tiny_shards)
    assert code == 0 and shows("valid: 8 trajectories", output)


def test_validate_refuses_an_unlisted_shard_and_the_card_never_globs_it(tiny_shards):
    import yaml

    stray = tiny_shards / "test" / "extra-000000.tar"
    stray.write_bytes(listed_shards(tiny_shards, "test")[0][0].read_bytes())
    code, output = run("validate", tiny_shards)
    assert code == 2 and one_error_line(output) and shows(f"{stray}: a shard", output)
    card = yaml.safe_load((tiny_shards / "README.md").read_text().split("---")[1])
    paths = [p for files in card["configs"][0]["data_files"] for p in files["path"]]
    assert paths and "*" not in "".join(paths) and "test/extra-000000.tar" not in paths


def test_validate_refuses_a_shard_path_outside_the_root(tiny_shards, tmp_path):
    manifest = json.loads((tiny_shards / MANIFEST).read_text())
    outside = tmp_path / "elsewhere.tar"
    outside.write_bytes(b"")
    manifest["splits"]["test"]["shards"][0]["path"] = "../elsewhere.tar"
    (tiny_shards / MANIFEST).write_text(json.dumps(manifest))
    code, output = run("validate", tiny_shards)
    assert code == 2 and one_error_line(output) and shows("shard path '../elsewhere.tar' escapes the data root", output)


def test_a_shard_that_is_a_symlink_to_itself_is_one_line(tiny_shards):
    shard = listed_shards(tiny_shards, "test")[0][0]
    shard.unlink()
    shard.symlink_to(shard.name)
    for args in (("validate", tiny_shards), ("inspect", tiny_shards, "--split", "test")):
        code, output = run(*args)
        assert code == 2 and one_error_line(output) and shows(shard.name, output)


# ------------------------------------------------------------------------------------------ 3. a run's record


def _train(shards: Path, out: Path, *extra) -> tuple[int, str]:
    return run("train", "--model", "autoencoder", "--data", shards, "--output-dir", out, "--threads", 1,
               "--batch-size", 4, "--save-every", 1, *extra)


def test_resume_refuses_changed_settings_unless_allowed_and_then_records_them(tiny_shards, tmp_path):
    out = tmp_path / "run"
    assert _train(tiny_shards, out, "--steps", 1)[0] == 0
    before = snapshot(out)
    code, output = _train(tiny_shards, out, "--steps", 2, "--resume", "--seed", 7, "--lr", 0.5)
    assert code == 2 and one_error_line(output)
    assert shows("train.seed 0 -> 7", output) and shows("train.lr", output) and shows("--allow-changed-settings",
                                                                                       output)
    assert snapshot(out) == before
    code, output = _train(tiny_shards, out, "--steps", 2, "--resume", "--seed", 7, "--allow-changed-settings")
    assert code == 0, output
    config = ckpt.read_config(ckpt.resolve(out))
    assert config["train"]["seed"] == 7 and config["setting_changes"] == [
        {"from_step": 1, "changed": {"train.seed": [0, 7]}}]


def test_resume_with_nothing_to_resume_says_so(tiny_shards, tmp_path):
    code, output = _train(tiny_shards, tmp_path / "new", "--steps", 1, "--resume")
    assert code == 0 and shows(f"no run in {tmp_path / 'new'} to resume; starting a new one", output)


def test_a_damaged_checkpoint_file_is_refused_by_its_sha256(tmp_path):
    step = ckpt.write_step(tmp_path / "run", 1, {"step": 1}, {ckpt.TRAIN_STATE: {"w": torch.ones(4)}})
    data = bytearray((step / ckpt.TRAIN_STATE).read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in a weight: still a readable file
    (step / ckpt.TRAIN_STATE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{step / ckpt.TRAIN_STATE}: sha256 .* differs from .*config.json"):
        ckpt.load_tensors(step / ckpt.TRAIN_STATE)


def test_non_finite_weights_are_refused_at_load_by_tensor_name(tiny_shards, tmp_path):
    import shutil

    from safetensors.torch import save_file

    from worldpack.world_model import WorldPackModel

    checkpoint = tmp_path / "nan"
    shutil.copytree(WorldPackModel.shipped_dir / WorldPackModel.default_checkpoint, checkpoint)
    weights = ckpt.load_tensors(checkpoint / ckpt.WEIGHTS)
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(checkpoint / ckpt.WEIGHTS))
    config = json.loads((checkpoint / ckpt.CONFIG).read_text())
    config.pop(ckpt.FILES, None)  # as a hand-made checkpoint would be: no hashes to check
    (checkpoint / ckpt.CONFIG).write_text(json.dumps(config))
    out = tmp_path / "out"
    code, output = run("evaluate", "-m", "worldpack", "-d", tiny_shards, "--checkpoint", checkpoint,
                       "--metrics", "ssim", "-o", out)
    assert code == 2 and one_error_line(output)
    assert shows(f"{checkpoint / ckpt.WEIGHTS}: tensor '{name}' holds non-finite values", output)
    assert not out.exists()


def test_latest_never_leads_out_of_the_output_folder(tmp_path):
    other = ckpt.write_step(tmp_path / "other", 300, {"step": 300}, {ckpt.WEIGHTS: {"w": torch.ones(1)}})
    run_dir = tmp_path / "run"
    ckpt.write_step(run_dir, 1, {"step": 1}, {ckpt.WEIGHTS: {"w": torch.ones(1)}})
    (run_dir / ckpt.LATEST).write_text(f"../other/{other.name}")
    with pytest.raises(ValueError, match=f"{run_dir / ckpt.LATEST}: names '../other/step-0000300', not a step folder"):
        ckpt.resolve(run_dir)


# ------------------------------------------------------------------------------------------ 4. numbers at entry


@pytest.mark.parametrize("args, option", [
    (["train", "--steps", "0"], "--steps"), (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--threads", "0"], "--threads"), (["train", "--save-every", "0"], "--save-every"),
    (["train", "--lr", "0"], "--lr"), (["train", "--lr", "nan"], "--lr"),
    (["prepare", "--workers", "0"], "--workers"), (["prepare", "--workers", "-3"], "--workers"),
    (["prepare", "--size", "0"], "--size"), (["prepare", "--limit", "0"], "--limit"),
    (["evaluate", "-m", "copy-last", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "-m", "copy-last", "--limit", "0"], "--limit"),
])
def test_counts_sizes_steps_and_rates_are_checked_where_they_enter(args, option, tiny_shards, tmp_path):
    target = {"train": ["--data", tiny_shards, "--output-dir", tmp_path / "o"], "prepare": ["--out", tmp_path / "o"],
              "evaluate": ["--data", tiny_shards, "-o", tmp_path / "o"]}[args[0]]
    code, output = run(*args, *target)
    assert code == 2 and shows(f"'{option}'", output) and "Traceback" not in output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, culprit", [
    (["--tasks", "ABA,ABA"], "--tasks 'ABA,ABA': 'ABA' is given twice"),
    (["--ranges", "5,5"], "--ranges '5,5': '5' is given twice"),
    (["--ranges", "abc"], "--ranges 'abc': 'abc' is not a whole number"),
    (["--ranges", "0"], "--ranges '0': 0 must be at least 1"),
])
def test_list_options_refuse_duplicates_and_non_numbers(args, culprit, tiny_shards, tmp_path):
    for command in (["prepare", "--out", tmp_path / "o"], ["evaluate", "-m", "copy-last", "-d", tiny_shards,
                                                           "-o", tmp_path / "o"]):
        code, output = run(*command, *args)
        assert code == 2 and one_error_line(output) and shows(culprit, output)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ 6. one boundary


@pytest.mark.parametrize("arg, culprit", [("checkpoint=x", "--model-args checkpoint: set by the harness"),
                                          ("device=cpu", "--model-args device: set by the harness"),
                                          ("seed=3", "--model-args seed: set by the harness"),
                                          ("sampler_steps=nan", "--model-args 'sampler_steps=nan': not a finite")])
def test_model_args_the_harness_owns_or_non_finite_are_named(arg, culprit, tiny_shards, tmp_path):
    code, output = run("evaluate", "-m", "worldpack", "-d", tiny_shards, "-o", tmp_path / "o", "--model-args", arg)
    assert code == 2 and one_error_line(output) and shows(culprit, output)


def test_a_label_too_long_for_a_file_name_is_one_line_before_anything_is_written(tiny_shards, tmp_path):
    code, output = run("evaluate", "-m", "copy-last", "-d", tiny_shards, "--metrics", "ssim", "-o", tmp_path / "o",
                       "--label", "x" * 300)
    assert code == 2 and one_error_line(output) and shows("--label " + "x" * 40 + "...: 300 bytes", output)
    assert not (tmp_path / "o").exists()
    code, _ = run("evaluate", "-m", "copy-last", "-d", tiny_shards, "--metrics", "ssim", "-o", tmp_path / "o",
                  "--label", "x" * 200)  # the longest allowed
    assert code == 0 and (tmp_path / "o" / ("x" * 200)).is_dir()


def test_a_damaged_shard_leaves_no_record_claiming_a_run(tiny_shards, tmp_path):
    shard = listed_shards(tiny_shards, "test")[0][0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    out = tmp_path / "out"
    code, output = run("evaluate", "-m", "copy-last", "-d", tiny_shards, "--metrics", "ssim", "-o", out)
    assert code == 2 and one_error_line(output) and shows(f"{shard}: sha256", output)
    assert not out.exists()  # no run.json, score.json or .failed marker


def test_score_names_a_damaged_run_record(tiny_shards, tmp_path):
    out = tmp_path / "out"
    assert run("evaluate", "-m", "copy-last", "-d", tiny_shards, "--metrics", "ssim", "-o", out)[0] == 0
    [record] = out.glob("copy-last/run-*/run.json")
    for damage in ('{"run_settings": 3}', "[1, 2]", "\x00\xff binary"):
        record.write_text(damage)
        code, output = run("score", "-p", record.parent, "--metrics", "ssim")
        assert code == 2 and one_error_line(output) and shows(record, output)


def test_the_leaderboard_skips_a_bad_results_file_by_name(results):
    nan_samples = next((results / "alpha").rglob("samples_*.jsonl"))
    rows = [json.loads(line) for line in nan_samples.read_text().splitlines()]
    rows[0]["metrics"]["ssim"][0] = float("nan")
    nan_samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    wrong = next((results / "beta").rglob("results_*.json"))
    doc = json.loads(wrong.read_text())
    binary = wrong.with_name("results_2026-01-03T00-00-00.000000.json")
    binary.write_bytes(b"\x89\x00\xff\xfe")
    write_run(results, "gamma", "2026-01-02T09-00-00.000003", 0.6)
    doc["n_trajectories"] = "many"
    wrong.write_text(json.dumps(doc))
    code, output = run("leaderboard", "--results", results, "--format", "csv")
    assert code == 0, output
    assert shows(f"skipped: {nan_samples}:1: metric 'ssim'", output)
    assert shows(f"skipped: {wrong}: 'n_trajectories' is a str", output)
    assert shows(f"skipped: {binary}: not valid JSON", output)
    assert "gamma" in output and "alpha," not in output


def test_weights_path_names_an_unknown_metric():
    code, output = run("weights", "path", "bogus")
    assert code == 2 and one_error_line(output) and shows("unknown metric ['bogus']", output)


def test_an_unexpected_exception_keeps_its_traceback_and_asks_for_a_bug_report(tiny_shards, monkeypatch):
    import loopnav_bench.shards as shards

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(shards, "validate", broken)
    code, output = run("validate", tiny_shards)
    assert code == 1 and shows("TypeError: a bug", output) and shows("this is a bug in loopnav", output)
    assert "Traceback" in output


def test_prepare_refuses_a_folder_it_did_not_write_before_generating_anything(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("mine")
    with pytest.raises(ForeignFileError, match="README.md: in"):
        prepare(SyntheticSource(), out)
    assert snapshot(out) == {"README.md": b"mine"}


def test_sample_meta_that_is_not_json_names_shard_and_sample(tiny_shards, tmp_path):
    path, shard = listed_shards(tiny_shards, "test")[0]
    key = shard["keys"][0]
    members = []
    with tarfile.open(path) as tar:
        for member in tar:
            data = tar.extractfile(member).read()
            if member.name == f"{key}.meta.json":
                data = b"{not json"
                member.size = len(data)
            members.append((member, data))
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
    manifest = json.loads((tiny_shards / MANIFEST).read_text())
    manifest["splits"]["test"]["shards"][0]["sha256"] = sha256_file(path)
    (tiny_shards / MANIFEST).write_text(json.dumps(manifest))
    code, output = run("evaluate", "-m", "copy-last", "-d", tiny_shards, "--metrics", "ssim", "-o", tmp_path / "o")
    assert code == 2 and one_error_line(output) and shows(f"{path}: sample '{key}': meta.json is not valid", output)


def test_an_unknown_model_arg_lists_every_arg_the_model_takes(tiny_shards, tmp_path):
    code, output = run("evaluate", "-m", "worldpack", "-d", tiny_shards, "-o", tmp_path / "o", "--model-args",
                       "memroy=off")
    assert code == 2 and one_error_line(output)
    assert shows("--model-args memroy: model 'worldpack' takes memory, generated_level, sampler_steps, solver",
                 output)


# ------------------------------------------------------------------------------------------ 7. processes


_ORPHANS = """
import multiprocessing, shutil, subprocess, sys, time
from loopnav_bench.processes import Reaper, die_with_parent

if __name__ == "__main__":
    sleep = shutil.which("sleep")
    reaper = Reaper(sys.argv[1], sleep)
    engine = subprocess.Popen([sleep, "600"])  # stands in for a program forked by a library, as ViZDoom's engine
    reaper.watch(engine.pid)
    pool = multiprocessing.get_context("spawn").Pool(1, initializer=die_with_parent)
    worker = pool.apply(__import__("os").getpid)
    print(engine.pid, worker, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Running (not gone, nor a zombie waiting for whoever adopted it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # kills a process tree
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc and prctl")
def test_a_killed_command_leaves_no_worker_engine_or_scratch_folder(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    scratch = tmp_path / "loopnav-scratch"
    scratch.mkdir()
    (scratch / "engine.ini").write_text("")
    script = tmp_path / "orphans.py"
    script.write_text(_ORPHANS)
    parent = subprocess.Popen([sys.executable, str(script), str(scratch)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    engine, worker = map(int, parent.stdout.readline().split())
    assert _alive(engine) and _alive(worker)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline and (_alive(engine) or _alive(worker) or scratch.exists()):
        time.sleep(0.2)
    assert not _alive(engine) and not _alive(worker) and not scratch.exists()
