"""scripts/reproduce_gpu.py: chunk planning, time boxing, resume from the state file, size checks, installing.

The pipeline runs here on a fake command runner and a fake clock: training commands write real checkpoints
(modelkit.checkpoint format, tiny tensors) up to their --steps target and advance the clock as a run with start-up
overhead and a fixed step time would; a command that would pass its timeout is cut there, as the real runner does.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from modelkit import checkpoint as ckpt

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_gpu.py"


@pytest.fixture(scope="module")
def rg():
    spec = importlib.util.spec_from_file_location("reproduce_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def chunk(steps, seconds, timed_out=False, returncode=0):
    return {"steps": steps, "seconds": seconds, "timed_out": timed_out, "returncode": returncode}


def test_speed_estimate_recovers_overhead_and_step_time(rg):
    assert rg.estimate_speed([]) is None
    overhead, per_step = rg.estimate_speed([chunk(100, 60 + 100 * 0.5), chunk(900, 60 + 900 * 0.5)])
    assert overhead == pytest.approx(60) and per_step == pytest.approx(0.5)
    # one chunk: all of its time is taken as step time, which can only overestimate it
    assert rg.estimate_speed([chunk(100, 110)]) == (0.0, pytest.approx(1.1))
    # interrupted or failed chunks say nothing about speed
    assert rg.estimate_speed([chunk(100, 110), chunk(5, 540, timed_out=True), chunk(3, 9, returncode=1)]) == \
        (0.0, pytest.approx(1.1))


def test_next_target_probes_then_fills_the_time_left(rg):
    assert rg.next_target(0, 1000, [], 500, probe=50) == 50
    assert rg.next_target(990, 1000, [], 500, probe=50) == 1000
    chunks = [chunk(100, 60 + 50), chunk(400, 60 + 200)]           # 60 s overhead, 0.5 s per step
    target = rg.next_target(500, 10**6, chunks, 540, probe=50)
    fits = (target - 500) * 0.5 + 60
    assert 0.8 * (540 - rg.MARGIN_SECONDS) < fits <= 540 - rg.MARGIN_SECONDS
    assert rg.next_target(500, 600, chunks, 540, probe=50) == 600
    assert rg.next_target(500, 10**6, chunks, rg.MARGIN_SECONDS + 60, probe=50) is None
    # a chunk of fewer than `probe` steps would be mostly start-up: wait for the next time box, unless it finishes
    assert rg.next_target(500, 10**6, chunks, rg.MARGIN_SECONDS + 60 + 30 / 0.9, probe=100) is None
    assert rg.next_target(500, 540, chunks, rg.MARGIN_SECONDS + 60 + 30 / 0.9, probe=100) == 540


class FakeMachine:
    """Runs the pipeline's commands instantly, advancing a fake clock by what they would take."""

    def __init__(self, overhead=40.0, per_step=0.25, other_seconds=30.0, fail=None, weights=16, heavy=None):
        self.now, self.overhead, self.per_step, self.other = 0.0, overhead, per_step, other_seconds
        self.fail, self.weights, self.heavy, self.commands = fail, weights, heavy, []

    def clock(self):
        return self.now

    def __call__(self, argv, timeout, log, stdout):
        self.commands.append(argv)
        log.parent.mkdir(parents=True, exist_ok=True)
        if self.fail and self.fail in argv:
            return self._spend(1.0, timeout, returncode=3)
        if "train" not in argv:
            if stdout is not None:
                stdout.write_text("| table |\n")
            return self._spend(self.other, timeout)
        run, target = Path(argv[argv.index("--output-dir") + 1]), int(argv[argv.index("--steps") + 1])
        assert "--resume" in argv
        step = self.step(run)
        fits = max(0, int((timeout - self.overhead) / self.per_step))
        reached = min(target, step + fits)
        if reached > step:
            size = self.weights * (1000 if argv[argv.index("--model") + 1] == self.heavy else 1)
            files = {ckpt.WEIGHTS: {"w": torch.zeros(size, dtype=torch.uint8)},
                     ckpt.TRAIN_STATE: {"raw.w": torch.zeros(4 * self.weights, dtype=torch.uint8)}}
            ckpt.write_step(run, reached, {"model": "fake", "step": reached}, files)
        return self._spend(self.overhead + (target - step) * self.per_step, timeout)

    @staticmethod
    def step(run):
        return ckpt.read_config(ckpt.resolve(run))["step"] if (run / ckpt.LATEST).exists() else 0

    def _spend(self, seconds, timeout, returncode=0):
        timed_out = seconds > timeout
        self.now += min(seconds, timeout)
        return FakeResult(returncode if not timed_out else -2, min(seconds, timeout), timed_out)


class FakeResult:
    def __init__(self, returncode, seconds, timed_out):
        self.returncode, self.seconds, self.timed_out = returncode, seconds, timed_out


@pytest.fixture
def config(rg):
    return rg.load_config(rg.DEFAULT_CONFIG, dry_run=True) | {
        "train": {"preset": "tiny", "steps": 3000, "batch_size": 4, "autoencoder_steps": 1000,
                  "autoencoder_batch_size": 8, "probe_steps": 50, "device": "cpu"}}


def pipeline(rg, config, workdir, machine):
    return rg.Pipeline(rg.build_steps(config, workdir), workdir, config, runner=machine, clock=machine.clock,
                       say=lambda _: None)


def test_time_boxed_runs_resume_until_everything_is_done(rg, config, tmp_path):
    machine = FakeMachine()
    names = [s.name for s in rg.build_steps(config, tmp_path)]
    assert names[:5] == ["bench-train-throughput", "bench-inference", "prepare", "validate", "train-autoencoder"]
    assert names[-1] == "leaderboard" and len(names) == 5 + 3 * len(config["entry"]) + 1
    assert names.index("probe-diamond") < names.index("train-worldpack-full")
    invocations = 0
    while True:
        invocations += 1
        started = machine.now
        left = pipeline(rg, config, tmp_path, machine).run(540)   # a fresh process each time: state from disk
        assert machine.now - started <= 540
        if not left:
            break
        assert invocations < 40
    state = rg.read_json(tmp_path / rg.STATE_FILE)
    assert all(record["done"] for record in state["steps"].values()) and len(state["steps"]) == len(names)
    for entry in config["entry"]:
        assert FakeMachine.step(tmp_path / "train" / entry["name"]) == 3000
    assert (tmp_path / "leaderboard.md").read_text() == "| table |\n"
    # 7 runs x (3000 steps x 0.25 s + overheads) fill about 540 s per invocation, with no chunk cut at the deadline
    train_chunks = [c for name, r in state["steps"].items() if name.startswith(("train-", "probe-"))
                    for c in r["chunks"]]
    assert not any(c["timed_out"] for c in train_chunks)
    assert invocations <= 1 + (6 * 3000 + 1000) * 0.25 / 540 * 1.6
    # every entry trains from the shared autoencoder with the same steps and batch
    trains = [argv for argv in machine.commands if "train" in argv and argv[argv.index("--model") + 1] != "autoencoder"]
    assert {argv[argv.index("--batch-size") + 1] for argv in trains} == {"4"}
    latent = {e["model"] for e in config["entry"] if e["autoencoder"]}
    shared = f"autoencoder={tmp_path / 'train' / 'autoencoder'}"
    model_args = {argv[argv.index("--model") + 1]:
                  argv[argv.index("--model-args") + 1] if "--model-args" in argv else ""
                  for argv in trains}
    assert all(shared in args.split(",") for model, args in model_args.items() if model in latent)
    assert not any("autoencoder=" in args for model, args in model_args.items() if model not in latent)


def test_an_interrupted_step_is_run_again(rg, config, tmp_path):
    machine = FakeMachine(other_seconds=400)
    assert pipeline(rg, config, tmp_path, machine).run(700)[0].name == "bench-inference"  # one done, one cut
    state = rg.read_json(tmp_path / rg.STATE_FILE)
    assert state["steps"]["bench-train-throughput"]["done"]
    assert state["steps"]["bench-inference"]["chunks"][0]["timed_out"] and not state["steps"]["bench-inference"]["done"]
    pipeline(rg, config, tmp_path, machine).run(1000)
    assert rg.read_json(tmp_path / rg.STATE_FILE)["steps"]["bench-inference"]["done"]
    assert sum(any("bench_worldpack" in a for a in argv) for argv in machine.commands) == 2


def test_a_failing_command_stops_the_run_naming_its_log(rg, config, tmp_path):
    with pytest.raises(rg.PipelineError, match=r"validate failed \(exit 3\); see .*logs/validate.log"):
        pipeline(rg, config, tmp_path, FakeMachine(fail="validate")).run(600)


def test_a_work_directory_keeps_its_config(rg, config, tmp_path):
    pipeline(rg, config, tmp_path, FakeMachine()).run(100)
    changed = config | {"train": {**config["train"], "steps": 10}}
    with pytest.raises(rg.PipelineError, match="another config"):
        pipeline(rg, changed, tmp_path, FakeMachine())


def test_checkpoints_over_the_size_limit_stop_the_run(rg, config, tmp_path):
    config = config | {"checks": {"max_file_mb": 1e-5}}             # 10 bytes
    with pytest.raises(rg.PipelineError, match=r"model.safetensors .* over the 1e-05 MB limit"):
        pipeline(rg, config, tmp_path, FakeMachine(weights=64)).run(600)


def test_every_entry_is_probed_before_long_training(rg, config, tmp_path):
    config = config | {"checks": {"max_file_mb": 1e-3}}             # 1000 bytes: only diamond's fake weights exceed
    machine = FakeMachine(heavy="diamond")
    with pytest.raises(rg.PipelineError, match=r"diamond/step-0000050: model.safetensors"):
        while pipeline(rg, config, tmp_path, machine).run(540):
            pass
    targets = [int(argv[argv.index("--steps") + 1]) for argv in machine.commands if "train" in argv]
    assert targets[-7:] == [1000] + [50] * 6                         # the autoencoder, then one probe per entry


def test_preflight_measures_worldpack_weights(rg, config):
    size = rg.worldpack_weight_bytes("tiny", "full")
    assert size > 2e6  # about a million weights, shipped in fp16
    rg.preflight_sizes(config | {"checks": {"max_file_mb": size / rg.MB * 1.01}})
    with pytest.raises(rg.PipelineError, match=r"worldpack-full: .* MB .* weights in fp16"):
        rg.preflight_sizes(config | {"checks": {"max_file_mb": size / rg.MB * 0.99}})


def test_install_exports_final_ema_checkpoints_only(rg, config, tmp_path):
    workdir, repo = tmp_path / "work", tmp_path / "repo"
    with pytest.raises(rg.PipelineError, match="finish the pipeline first"):
        rg.install_checkpoints(config, workdir, repo)
    machine = FakeMachine(per_step=0.01)
    while pipeline(rg, config, workdir, machine).run(540):
        pass
    installed = rg.install_checkpoints(config, workdir, repo)
    assert [p.relative_to(repo).as_posix() for p in installed] == [e["ships_to"] for e in config["entry"]]
    for path in installed:
        assert sorted(p.name for p in path.iterdir()) == [ckpt.CONFIG, ckpt.WEIGHTS]
        assert ckpt.read_config(path)["step"] == 3000
        assert {str(t.dtype) for t in ckpt.load_tensors(path / ckpt.WEIGHTS).values() if t.is_floating_point()} \
            <= {"torch.float16"}                                        # shipped as fp16 exports
        assert not list(path.parent.glob(f".{path.name}.*"))          # no staging folder left behind


def test_dry_run_tables_override_the_gpu_settings(rg):
    gpu, dry = rg.load_config(rg.DEFAULT_CONFIG, dry_run=False), rg.load_config(rg.DEFAULT_CONFIG, dry_run=True)
    assert (gpu["train"]["preset"], dry["train"]["preset"]) == ("small", "tiny")
    assert dry["train"]["steps"] < gpu["train"]["steps"] and dry["data"]["preset"] == "demo"
    assert dry["evaluate"]["split"] == gpu["evaluate"]["split"] and dry["entry"] == gpu["entry"]
    assert {e["model"] for e in gpu["entry"]} >= {"worldpack", "nwm", "diamond"}


def test_bad_config_is_named(rg, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[data]\npreset = 'full'\n")
    with pytest.raises(rg.PipelineError, match=r"bad.toml: \[data\] lacks seed, workers"):
        rg.load_config(path, dry_run=False)


def test_run_command_echoes_logs_captures_and_stops_at_the_timeout(rg, tmp_path, capsys):
    log, out = tmp_path / "logs" / "x.log", tmp_path / "table.md"
    done = rg.run_command([sys.executable, "-c", "import sys; print('table'); print('note', file=sys.stderr)"],
                          30, log, out)
    assert (done.returncode, done.timed_out) == (0, False)
    assert out.read_text() == "table\n" and "note" in log.read_text() and "note" in capsys.readouterr().out
    slow = rg.run_command([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                          1.5, log, None)
    assert slow.timed_out and slow.seconds < 20 and "started" in log.read_text()
