"""scripts/reproduce.py: the gpu pipeline end to end on a CPU (`--budget dry-run`), killed and resumed, its status,
bundle and installed checkpoints, and config errors as one line."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from modelkit import checkpoint as ckpt

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce.py"


@pytest.fixture(scope="module")
def rp():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def command(*args: object) -> list[str]:
    return [sys.executable, str(SCRIPT), *map(str, args)]


def call(rp, capsys, *args: object) -> tuple[int, str, str]:
    """The script's main() in this process (no interpreter start-up): exit code, stdout, stderr."""
    capsys.readouterr()
    code = rp.main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The dry run, interrupted (SIGINT, as at a deadline or Ctrl-C) while the autoencoder trains, then rerun."""
    workdir = tmp_path_factory.mktemp("reproduce") / "work"
    first = subprocess.Popen(command("--budget", "dry-run", "--workdir", workdir), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    started = time.monotonic()
    while not (workdir / "logs" / "train-autoencoder.log").exists():
        assert first.poll() is None and time.monotonic() - started < 300, first.communicate()[0]
        time.sleep(0.1)
    first.send_signal(signal.SIGINT)
    first_out = first.communicate(timeout=120)[0]
    interrupted = (workdir / "state.json").read_text()
    second = run("--budget", "dry-run", "--workdir", workdir)
    return workdir, first.returncode, first_out, interrupted, second


@pytest.mark.slow  # the dry run: about 45 s
def test_a_killed_run_resumes_where_it_stopped(rp, dry_run):
    workdir, code, out, interrupted, second = dry_run
    assert code == rp.EXIT_DEADLINE and "run the same command again" in out
    steps = rp.read_json(workdir / "state.json")["steps"]
    before = json.loads(interrupted)["steps"]
    assert before["prepare"]["done"] and not before["train-autoencoder"]["done"]
    assert before["train-autoencoder"]["attempts"][-1]["interrupted"]
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(steps["prepare"]["attempts"]) == 1                   # not run again
    assert steps["train-autoencoder"]["done"] and len(steps["train-autoencoder"]["attempts"]) == 2
    assert all(record["done"] for record in steps.values())
    invocations = rp.read_json(workdir / "state.json")["invocations"]
    assert [i["outcome"] for i in invocations] == ["stopped", "done"] and all(i["seconds"] > 0 for i in invocations)


@pytest.mark.slow  # the dry run: about 45 s
def test_the_dry_run_is_the_gpu_pipeline(rp, dry_run, tmp_path):
    workdir = dry_run[0]
    gpu, dry = rp.load_config(rp.DEFAULT_CONFIG, "gpu"), rp.load_config(rp.DEFAULT_CONFIG, "dry-run")
    assert [s.name for s in rp.build_steps(gpu, tmp_path)] == [s.name for s in rp.build_steps(dry, tmp_path)]
    assert gpu["entry"] == dry["entry"] and gpu["trunk"] == dry["trunk"] and gpu["shared"] == dry["shared"]
    labels = [e["label"] for e in gpu["entry"]]
    assert sorted(labels) == ["diamond", "nwm", "worldpack", "worldpack-base", "worldpack-full",
                              "worldpack-pack-only", "worldpack-retrieval-only"]
    trunk = workdir / "train" / "worldpack-trunk"
    assert rp.trained_step(trunk) == dry["train"]["steps"] - dry["train"]["finetune_steps"] == 1
    assert rp.read_json(workdir / "state.json")["steps"]["train-worldpack-trunk"]["done"]
    for entry in dry["entry"]:
        assert rp.trained_step(workdir / "train" / entry["label"]) == rp.run_steps(dry, entry)
    fine_tuned = [e["label"] for e in dry["entry"] if "init" in e]
    assert sorted(fine_tuned) == sorted(label for label in labels if label.startswith("worldpack"))
    for label in fine_tuned:  # each fine-tune started from the trunk's trained run
        init = ckpt.read_config(ckpt.resolve(workdir / "train" / label))["init"]
        assert init["path"] == str(ckpt.resolve(trunk)) and init["step"] == rp.trained_step(trunk)
    assert "init" not in ckpt.read_config(ckpt.resolve(trunk))
    groups = rp.read_json(workdir / "leaderboard" / "leaderboard.json")["groups"]
    swapped = [e["label"] for e in dry["entry"] if e.get("swap")]
    assert sorted(swapped) == sorted(fine_tuned)   # every WorldPack entry has its context-swap twin
    assert {run["model"] for group in groups for run in group["runs"]} == {
        *labels, *(f"{label}+swap" for label in swapped), "copy-last", "nearest-pose"}
    swap_args = next(s.argv for s in rp.build_steps(dry, workdir) if s.name == "evaluate-worldpack+swap")
    assert swap_args[swap_args.index("--context-ablation") + 1] == "swap"
    assert sorted(pair["entry"] for group in groups for pair in group["memory_reliance"]) == sorted(swapped)
    assert "| range | model |" in (workdir / "leaderboard" / "leaderboard.md").read_text()
    assert list((workdir / "leaderboard" / "plots").rglob("*.png"))
    paper = (workdir / "leaderboard" / "paper" / "paper.md").read_text()
    assert "Memory reliance" in paper and "worldpack-full+swap" in paper
    assert "Table 4" in paper and "worldpack-full" in paper and list((workdir / "leaderboard" / "paper").rglob("*.png"))


@pytest.mark.slow  # the dry run: about 45 s
def test_the_bundle_fits_the_file_limits(rp, dry_run):
    workdir = dry_run[0]
    config = rp.load_config(rp.DEFAULT_CONFIG, "dry-run")
    bundle = sorted(p.name for p in (workdir / "bundle").iterdir())
    assert len(bundle) <= config["shared"]["max_files"]
    assert all((workdir / "bundle" / name).stat().st_size <= config["shared"]["max_file_mb"] * rp.MB for name in bundle)
    assert {"leaderboard.md", "leaderboard.json", "state.json", "results.tar.gz"} <= set(bundle)
    members = [m for name in bundle if name.startswith("checkpoints-")
               for m in tarfile.open(workdir / "bundle" / name).getnames()]
    assert {e["ships_to"] + "/model.safetensors" for e in config["entry"]} <= set(members)
    assert len([m for m in members if m.endswith("/model.safetensors")]) == len(config["entry"])  # no trunk
    with tarfile.open(workdir / "bundle" / "results.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("logs/") for n in names) and not any("/predictions" in n for n in names)
    with pytest.raises(rp.ReproduceError, match=rf": {len(bundle)} files: over \[shared\] max_files = 3 files"):
        rp.write_bundle(config | {"shared": {**config["shared"], "max_files": 3}}, workdir)
    assert sorted(p.name for p in (workdir / "bundle").iterdir()) == bundle    # the previous bundle stays


@pytest.mark.slow  # the dry run: about 45 s
def test_status_reports_without_running_and_adopts_trained_runs(rp, dry_run, tmp_path, capsys):
    workdir = dry_run[0]
    code, out, _ = call(rp, capsys, "--budget", "dry-run", "--workdir", workdir, "--status")
    assert code == 0 and "0 steps left" in out and "train-diamond" in out
    fresh = tmp_path / "fresh"
    # runs trained by hand into the same layout count as done; nothing else does
    (fresh / "train").mkdir(parents=True)
    os.symlink(workdir / "train" / "nwm", fresh / "train" / "nwm")
    steps = len(rp.build_steps(rp.load_config(rp.DEFAULT_CONFIG, "dry-run"), fresh))
    code, out, _ = call(rp, capsys, "--budget", "dry-run", "--workdir", fresh, "--status")
    assert code == 0 and f"{steps - 1} steps left" in out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("train-nwm ")] == ["done"]
    # a fine-tune counts only beside the trunk it started from (its checkpoint records the trunk's weights' sha256)
    os.symlink(workdir / "train" / "worldpack", fresh / "train" / "worldpack")
    code, out, _ = call(rp, capsys, "--budget", "dry-run", "--workdir", fresh, "--status")
    assert code == 0 and f"{steps - 1} steps left" in out
    os.symlink(workdir / "train" / "worldpack-trunk", fresh / "train" / "worldpack-trunk")
    code, out, _ = call(rp, capsys, "--budget", "dry-run", "--workdir", fresh, "--status")
    assert code == 0 and f"{steps - 3} steps left" in out


def test_status_of_a_fresh_workdir_runs_nothing(rp, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    code, out, _ = call(rp, capsys, "--budget", "dry-run", "--workdir", fresh, "--status")
    steps = len(rp.build_steps(rp.load_config(rp.DEFAULT_CONFIG, "dry-run"), fresh))
    assert code == 0 and f"{steps} steps left" in out and not fresh.exists()


@pytest.mark.slow  # the dry run: about 45 s
def test_install_writes_fp16_exports_to_ships_to(rp, dry_run, tmp_path):
    config = rp.load_config(rp.DEFAULT_CONFIG, "dry-run")
    with pytest.raises(rp.ReproduceError, match="unfinished training runs"):
        rp.install_checkpoints(config, tmp_path / "nothing", tmp_path)
    installed = rp.install_checkpoints(config, dry_run[0], tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in installed] == [e["ships_to"] for e in config["entry"]]
    for entry, path in zip(config["entry"], installed):
        expected = {ckpt.CONFIG, ckpt.WEIGHTS} | ({"autoencoder.safetensors"} if entry["autoencoder"] else set())
        assert {p.name for p in path.iterdir()} == expected
        for name in expected - {ckpt.CONFIG}:
            dtypes = {t.dtype for t in ckpt.load_tensors(path / name).values() if t.is_floating_point()}
            assert dtypes == {torch.float16}
        assert not list(path.parent.glob(f".{path.name}.*"))        # no staging folder left behind


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace("steps = 6000\n", "", 1), r"\[cpu.train\] lacks steps"),
    (lambda text: text.replace('label = "nwm"', 'label = "diamond"'), "labels used twice: diamond"),
    (lambda text: text.replace("lanes = 3", "lanes = 0", 1), r"\[cpu\] lanes must be a positive integer"),
    (lambda text: text + "[cpu\n", "cannot read the config"),
    (lambda text: text.replace('init = "worldpack-trunk"', 'init = "worldpack-trnk"', 1),
     r"\[\[entry\]\] 'worldpack': init = 'worldpack-trnk' is not the label of a \[\[trunk\]\] \(worldpack-trunk\)$"),
    (lambda text: text.replace('init = "worldpack-trunk"', 'init = "worldpack-base"', 1),
     r"'worldpack': init = 'worldpack-base' is an \[\[entry\]\]: an entry fine-tunes from a \[\[trunk\]\] only"),
    (lambda text: text.replace('label = "worldpack-trunk"', 'label = "nwm"'), "labels used twice: nwm$"),
    (lambda text: text.replace('model_args = "variant=base,retrieval=vizdoom,drop_recent_return_rate=0.3"\n', "", 1),
     r"\[\[trunk\]\] number 1 lacks model_args$"),
    (lambda text: text.replace('model = "worldpack"', 'model = "nwm"', 1),  # the trunk's, listed first
     r"'worldpack': init = 'worldpack-trunk' trains 'nwm', not 'worldpack'$"),
    (lambda text: text.replace("autoencoder = true\n\n# listed first", "autoencoder = false\n\n# listed first"),
     r"'worldpack': init = 'worldpack-trunk': fine-tuning needs a latent trunk and entry \(autoencoder = true\)"),
    (lambda text: text.replace('autoencoder = false', 'autoencoder = false\ninit = "worldpack-trunk"', 1),
     r"'diamond': init = 'worldpack-trunk': fine-tuning needs a latent trunk and entry"),
    (lambda text: text.replace('label = "worldpack-trunk"', 'label = "worldpack-trunk"\ninit = "worldpack-trunk"'),
     r"\[\[trunk\]\] 'worldpack-trunk': init = 'worldpack-trunk': a trunk trains from scratch$"),
    (lambda text: text + '[[trunk]]\nlabel = "spare"\nmodel = "nwm"\nmodel_args = ""\nautoencoder = true\n',
     r"\[\[trunk\]\] 'spare': no \[\[entry\]\] has init = 'spare'$"),
    (lambda text: text.replace("finetune_steps = 3000\n", "", 1),
     r"\[cpu.train\] lacks finetune_steps \(the steps of the entries with init: worldpack, worldpack-full"),
    (lambda text: text.replace("finetune_steps = 3000\n", "finetune_steps = 6000\n", 1),
     r"\[cpu.train\] finetune_steps = 6000 must be a positive integer below steps = 6000 \(a trunk trains the"),
    (lambda text: text.replace("finetune_steps = 3000\n", "finetune_steps = 0\n", 1),
     r"\[cpu.train\] finetune_steps = 0 must be a positive integer below steps = 6000"),
    (lambda text: text.replace("\nswap = true", '\nswap = "yes"', 1),
     r"\[\[entry\]\] 'worldpack': swap must be true or false$"),
])
def test_config_errors_are_one_line(rp, tmp_path, capsys, edit, message):
    path = tmp_path / "reproduce.toml"
    path.write_text(edit(rp.DEFAULT_CONFIG.read_text()))
    code, out, err = call(rp, capsys, "--budget", "cpu", "--config", path, "--workdir", tmp_path / "w", "--status")
    assert code == rp.EXIT_CONFIG and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and re.search(message, lines[0])
    code, _, err = call(rp, capsys, "--budget", "tpu", "--workdir", tmp_path / "w")
    assert code == rp.EXIT_CONFIG and "no budget 'tpu'; choose one of cpu, dry-run, gpu" in err


@pytest.mark.parametrize("budget", ["cpu", "gpu", "dry-run"])
def test_every_entry_trains_steps_in_all_through_the_shared_trunk(rp, tmp_path, budget):
    config = rp.load_config(rp.DEFAULT_CONFIG, budget)
    assert [t["label"] for t in config["trunk"]] == ["worldpack-trunk"]
    assert {e["label"]: e.get("init") for e in config["entry"]} == {
        "diamond": None, "nwm": None, "worldpack": "worldpack-trunk", "worldpack-full": "worldpack-trunk",
        "worldpack-base": "worldpack-trunk", "worldpack-pack-only": "worldpack-trunk",
        "worldpack-retrieval-only": "worldpack-trunk"}
    if budget != "dry-run":
        assert (config["train"]["steps"], config["train"]["finetune_steps"]) == (6000, 3000)

    def trained(step) -> tuple[int, list[str]]:
        """What the command line says: its --steps and its --model-args init= (the checked Step fields aside)."""
        model_args = step.argv[step.argv.index("--model-args") + 1].split(",") if "--model-args" in step.argv else []
        assert int(step.argv[step.argv.index("--steps") + 1]) == step.steps
        return step.steps, [arg for arg in model_args if arg.startswith("init=")]

    steps = {s.name: s for s in rp.build_steps(config, tmp_path)}
    trunk = steps["train-worldpack-trunk"]
    assert trained(trunk) == (config["train"]["steps"] - config["train"]["finetune_steps"], [])
    assert "train-autoencoder" in trunk.needs
    for entry in config["entry"]:
        step = steps[f"train-{entry['label']}"]
        total, inits = trained(step)
        if "init" in entry:
            assert inits == [f"init={tmp_path / 'train' / 'worldpack-trunk'}"] and trunk.name in step.needs
            total += trunk.steps
        else:
            assert inits == [] and trunk.name not in step.needs
        assert total == config["train"]["steps"], entry["label"]
    # a trunk is trained, never evaluated
    assert "evaluate-worldpack-trunk" not in steps and trunk.name not in steps["leaderboard"].needs


def test_a_ctrl_c_while_a_step_starts_lands_once_the_step_is_tracked(rp):
    """Without this, a SIGINT between a step's log and `running.append` left its process untracked (and unstopped)."""
    tracked, handler = [], signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with rp.sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            tracked.append("step")  # still runs: the signal waits for the block's end
    assert tracked == ["step"] and signal.getsignal(signal.SIGINT) is handler
