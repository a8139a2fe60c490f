"""Reproduce the paper's comparisons on the embedded ViZDoom benchmark on one GPU, in resumable time-boxed steps.

    python scripts/reproduce_gpu.py --workdir runs/gpu --max-minutes 9     # repeat until it says "0 steps left"
    python scripts/reproduce_gpu.py --workdir runs/gpu --status            # what is done, what is left
    python scripts/reproduce_gpu.py --workdir runs/gpu --install-checkpoints
    python scripts/reproduce_gpu.py --dry-run-cpu                          # the whole pipeline, tiny, on a CPU

The pipeline (configs/reproduce.toml) is a fixed list of steps, each a `loopnav` or benchmark command run as a
subprocess: the training-throughput and the inference time and memory benchmarks (first: they need no data and are
quick); `loopnav prepare` of the `full` ViZDoom set and `loopnav validate`; the shared autoencoder; a short probe
chunk of every entry (WorldPack full, base, pack-only, retrieval-only, NWM, DIAMOND), so that each one's speed and
checkpoint sizes are known before any long training; then each entry trained with the same budget (steps x batch);
`loopnav evaluate` of each on the test split; `loopnav leaderboard` (markdown table with bootstrap CIs, per-frame
plots of the return leg's last frames).

Each invocation does what fits in --max-minutes and exits 0 saying how many steps are left; the next invocation
continues. Training runs in chunks: `loopnav train --resume --steps TARGET`, with TARGET sized from the run's measured
speed to end before the deadline (the first chunk of a run is a short probe). Prepare and evaluate resume by
themselves, so at the deadline they are interrupted (SIGINT, then SIGKILL) and rerun later. What is done is recorded
in <workdir>/state.json (written atomically); command output goes to <workdir>/logs/<step>.log.

After every training chunk, the checkpoint files that would ship (all but the optimizer state) are checked against
[checks] max_file_mb; WorldPack entries are also checked before anything runs, from their preset's parameter count.
`--install-checkpoints` then copies each entry's final EMA checkpoint to its `ships_to` folder in the repository.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol, TextIO

import tomllib
import torch

from loopnav_bench.fileio import atomic_path, read_json, sha256_json, write_json_atomic
from loopnav_bench.models import parse_model_args
from loopnav_bench.registry import MODELS, TRAINERS
from loopnav_bench.schema import ACTION_LAYOUTS
from modelkit import checkpoint as ckpt
from modelkit.autoencoder import preset_config
from modelkit.presets import get_preset
from worldpack.model import WorldPack, WorldPackConfig
from worldpack.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "reproduce.toml"
DRY_RUN_SECTION = "dry-run-cpu"
STATE_FILE = "state.json"
START_MIN_SECONDS = 60.0    # no step is started with less time left than this
MARGIN_SECONDS = 30.0       # a training chunk is sized to end this long before the deadline (saving, exiting)
KILL_GRACE_SECONDS = 20.0   # between SIGINT at the deadline and SIGKILL
SPEED_SAFETY = 0.9          # a chunk is sized for this fraction of the time its speed estimate allows
ACTION_DIM = len(ACTION_LAYOUTS["vizdoom-v1"])  # the action layout the entries are trained on
SHIPPED_BYTES_PER_WEIGHT = 2  # checkpoints ship as fp16 exports, like worldpack/checkpoints/fine-memory
MB = 1e6


class PipelineError(RuntimeError):
    """A step failed or a check did not pass; the message says which and where its log is."""


# ------------------------------------------------------------------------------------------------ configuration


def load_config(path: Path, dry_run: bool) -> dict[str, Any]:
    """The TOML config; with dry_run its [dry-run-cpu.*] tables replace the keys they name."""
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise PipelineError(f"{path}: cannot read the config: {err}") from err
    overrides = config.pop(DRY_RUN_SECTION, {})
    if dry_run:
        for section, values in overrides.items():
            config[section] = {**config.get(section, {}), **values}
    for section, keys in {"data": ("preset", "seed", "workers"),
                          "train": ("preset", "steps", "batch_size", "autoencoder_steps", "autoencoder_batch_size",
                                    "probe_steps", "device"),
                          "evaluate": ("split", "device", "batch_size"), "checks": ("max_file_mb",),
                          "bench": ("throughput", "inference")}.items():
        missing = [k for k in keys if k not in config.get(section, {})]
        if missing:
            raise PipelineError(f"{path}: [{section}] lacks {', '.join(missing)}")
    names = [entry.get("name") for entry in config.get("entry", [])]
    if not names or len(set(names)) != len(names) or None in names:
        raise PipelineError(f"{path}: needs [[entry]] tables, each with a unique name")
    for entry in config["entry"]:
        if missing := [k for k in ("model", "model_args", "autoencoder", "ships_to") if k not in entry]:
            raise PipelineError(f"{path}: entry {entry['name']!r} lacks {', '.join(missing)}")
    return config


def missing_entries(config: dict[str, Any]) -> list[str]:
    """Entries whose model has no trainer (`loopnav train`) or no registered WorldModel (`loopnav evaluate`)."""
    trainers, models = TRAINERS.names(), MODELS.names()
    return [e["name"] for e in config["entry"] if e["model"] not in trainers or e["model"] not in models]


def worldpack_weight_bytes(preset: str, variant: str) -> int:
    """Bytes of a WorldPack's shipped (fp16) weights at `preset`, counted on the meta device (nothing allocated)."""
    settings = get_preset(PRESETS, preset, "worldpack")
    with torch.device("meta"):
        model = WorldPack(WorldPackConfig(latent_channels=preset_config(settings.autoencoder).latent_channels,
                                          latent_size=preset_config(settings.autoencoder).latent_size,
                                          action_dim=ACTION_DIM, variant=variant, **settings.model))
    return SHIPPED_BYTES_PER_WEIGHT * sum(t.numel() for t in (*model.parameters(), *model.buffers()))


def preflight_sizes(config: dict[str, Any]) -> None:
    """Fail before any GPU time is spent when a WorldPack entry's weights file would exceed the size limit."""
    limit = config["checks"]["max_file_mb"] * MB
    too_big = []
    for entry in config["entry"]:
        if entry["model"] == "worldpack":
            variant = parse_model_args(entry["model_args"]).get("variant", "full")
            size = worldpack_weight_bytes(config["train"]["preset"], variant)
            if size > limit:
                too_big.append(f"{entry['name']}: {size / MB:.1f} MB "
                               f"({size // SHIPPED_BYTES_PER_WEIGHT:,} weights in fp16)")
    if too_big:
        raise PipelineError(f"the {config['train']['preset']!r} preset's EMA weights file would exceed "
                            f"[checks] max_file_mb = {config['checks']['max_file_mb']} MB: " + "; ".join(too_big))


# ------------------------------------------------------------------------------------------------ steps


@dataclass
class Step:
    """One command of the pipeline. Training steps (train_dir set) run in chunks up to `total` optimizer steps."""

    name: str
    argv: Callable[[int | None], list[str]]   # the chunk's target step (training) or None -> the command
    train_dir: Path | None = None
    total: int | None = None
    probe: int = 0
    stdout: Path | None = None                # where the command's stdout goes (default: the log)


def loopnav(*args: object) -> list[str]:
    return [sys.executable, "-m", "loopnav", *map(str, args)]


def benchmark(script: str, args: list[str], out: Path) -> list[str]:
    return [sys.executable, str(REPO / "benchmarks" / script), *args, "--out", str(out)]


def build_steps(config: dict[str, Any], workdir: Path, skip: list[str] = ()) -> list[Step]:
    data, train, evaluate = workdir / "data", config["train"], config["evaluate"]
    autoencoder = workdir / "train" / "autoencoder"

    def once(name: str, argv: list[str], stdout: Path | None = None) -> Step:
        return Step(name, lambda _: argv, stdout=stdout)

    def training(name: str, model: str, extra: list, batch_size: int, total: int, kind: str = "train") -> Step:
        run = workdir / "train" / name
        return Step(f"{kind}-{name}", lambda target: loopnav(
            "train", "--model", model, *extra, "--data", data, "--preset", train["preset"], "--device", train["device"],
            "--resume", "--steps", target, "--batch-size", batch_size, "--output-dir", run),
            train_dir=run, total=total, probe=train["probe_steps"])

    def entry_args(entry: dict[str, Any]) -> list:
        args = ",".join(filter(None, [entry["model_args"],
                                      f"autoencoder={autoencoder}" if entry["autoencoder"] else ""]))
        return ["--model-args", args] if args else []

    def evaluation(entry: dict[str, Any]) -> Step:
        model_args = evaluate.get("model_args", {}).get(entry["model"])
        optional = {"--limit": evaluate.get("limit"), "--model-args": model_args}
        return once(f"evaluate-{entry['name']}", loopnav(
            "evaluate", "--model", entry["model"], "--label", entry["name"],
            "--checkpoint", workdir / "train" / entry["name"],
            "--data", data,
            "--split", evaluate["split"], "--device", evaluate["device"], "--batch-size", evaluate["batch_size"],
            "--output-dir", workdir / "results" / entry["name"],
            *[part for flag, value in optional.items() if value is not None for part in (flag, value)]))

    entries = [e for e in config["entry"] if e["name"] not in skip]
    return [
        once("bench-train-throughput", benchmark("bench_train_throughput.py", config["bench"]["throughput"],
                                                 workdir / "bench" / "train_throughput.json")),
        once("bench-inference", benchmark("bench_worldpack.py", config["bench"]["inference"],
                                          workdir / "bench" / "inference.json")),
        once("prepare", loopnav("prepare", "--source", "vizdoom", "--preset", config["data"]["preset"], "--seed",
                                config["data"]["seed"], "--workers", config["data"]["workers"], "--out", data)),
        once("validate", loopnav("validate", data)),
        training("autoencoder", "autoencoder", [], train["autoencoder_batch_size"], train["autoencoder_steps"]),
        # every entry's first chunk before any long training: its speed and file sizes are known early
        *[training(e["name"], e["model"], entry_args(e), train["batch_size"], min(train["probe_steps"], train["steps"]),
                   "probe") for e in entries],
        *[training(e["name"], e["model"], entry_args(e), train["batch_size"], train["steps"]) for e in entries],
        *[evaluation(e) for e in entries],
        once("leaderboard", loopnav("leaderboard", "--results", workdir / "results", "--format", "markdown", "--plot",
                                    workdir / "plots"), stdout=workdir / "leaderboard.md"),
    ]


# ------------------------------------------------------------------------------------------------ running commands


@dataclass
class CommandResult:
    returncode: int
    seconds: float
    timed_out: bool = False


class Runner(Protocol):
    def __call__(self, argv: list[str], timeout: float, log: Path, stdout: Path | None) -> CommandResult: ...


def run_command(argv: list[str], timeout: float, log: Path, stdout: Path | None = None) -> CommandResult:
    """Run argv from the repository root, echoing its output to our stdout and appending it to `log`. At the
    timeout its process group gets SIGINT (a clean KeyboardInterrupt), then SIGKILL after a grace period.
    With `stdout`, the command's stdout goes to that file instead (replaced in one rename when the command ends)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "a", encoding="utf-8") as log_file:
        log_file.write(f"\n$ {shlex.join(argv)}\n")
        log_file.flush()
        if stdout is None:
            returncode, timed_out = _supervise(argv, timeout, log_file, None)
        else:
            with atomic_path(stdout) as tmp, open(tmp, "wb") as out_file:
                returncode, timed_out = _supervise(argv, timeout, log_file, out_file)
    return CommandResult(returncode, time.monotonic() - started, timed_out)


def _supervise(argv: list[str], timeout: float, log_file: TextIO, out_file: BinaryIO | None) -> tuple[int, bool]:
    """Run argv; stdout to out_file if given, everything else echoed and logged. Returns (exit status, timed out)."""
    process = subprocess.Popen(argv, cwd=REPO, stdout=out_file or subprocess.PIPE,
                               stderr=subprocess.PIPE if out_file else subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                               # a shell's background job ignores SIGINT, and children inherit that: restore it,
                               # or the clean stop at the deadline could never work
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    echo = threading.Thread(target=_echo, args=(process.stderr if out_file else process.stdout, log_file), daemon=True)
    echo.start()
    timed_out = False
    try:
        process.wait(timeout=max(timeout, 0.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop(process)
    echo.join()
    return process.returncode, timed_out


def _echo(stream: BinaryIO, log_file: TextIO) -> None:
    for line in iter(stream.readline, b""):
        text = line.decode("utf-8", "replace")
        sys.stdout.write(text)
        sys.stdout.flush()
        log_file.write(text)
    log_file.flush()


def _stop(process: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGINT, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


# ------------------------------------------------------------------------------------------------ planning


def trained_step(run_dir: Path) -> int:
    """The optimizer step of a training run's latest checkpoint (0 when it has none yet)."""
    if not (run_dir / ckpt.LATEST).exists():
        return 0
    return int(ckpt.read_config(ckpt.resolve(run_dir))["step"])


def estimate_speed(chunks: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(overhead seconds, seconds per step) of a training run from its finished chunks, or None before any.

    Each chunk is (steps trained, wall seconds), the wall time including start-up (imports, loading and encoding
    the data). Two chunks or more of different lengths give a least-squares line; one chunk gives the
    conservative estimate 'no overhead, all of its time per step', which can only make the next chunk short."""
    points = [(c["steps"], c["seconds"]) for c in chunks if c["steps"] > 0 and not c["timed_out"]
              and c["returncode"] == 0][-4:]
    if not points:
        return None
    if len({s for s, _ in points}) >= 2:
        n = len(points)
        mean_s, mean_t = sum(s for s, _ in points) / n, sum(t for _, t in points) / n
        slope = sum((s - mean_s) * (t - mean_t) for s, t in points) / sum((s - mean_s) ** 2 for s, _ in points)
        overhead = mean_t - slope * mean_s
        if slope > 0 and overhead >= 0:
            return overhead, slope
    steps, seconds = points[-1]
    return 0.0, seconds / steps


def next_target(current: int, total: int, chunks: list[dict[str, Any]], seconds: float, probe: int) -> int | None:
    """The --steps target of the next chunk of a run at `current` steps with `seconds` left. Before the run's speed
    is known, a probe of `probe` steps; after, as many steps as fit, or None when fewer than a probe's worth fit and
    the run would not finish (a chunk that short would be mostly start-up)."""
    speed = estimate_speed(chunks)
    if speed is None:
        return min(total, current + max(probe, 1))
    overhead, per_step = speed
    fits = math.floor(SPEED_SAFETY * (seconds - MARGIN_SECONDS - overhead) / per_step)
    if current + fits >= total:
        return total
    return current + fits if fits >= max(probe, 1) else None


# ------------------------------------------------------------------------------------------------ the pipeline


@dataclass
class Pipeline:
    steps: list[Step]
    workdir: Path
    config: dict[str, Any]
    runner: Runner = run_command
    clock: Callable[[], float] = time.monotonic
    say: Callable[[str], None] = print
    state: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        path = self.workdir / STATE_FILE
        key = sha256_json(self.config)
        self.state = read_json(path) if path.exists() else {"config_hash": key, "config": self.config, "steps": {}}
        if self.state["config_hash"] != key:
            raise PipelineError(f"{path}: this work directory was started with another config; use another --workdir "
                                "(or the config it was started with, recorded in that file)")

    def record(self, step: Step) -> dict[str, Any]:
        return self.state["steps"].setdefault(step.name, {"done": False, "seconds": 0.0, "chunks": []})

    def save(self) -> None:
        write_json_atomic(self.workdir / STATE_FILE, self.state)

    def left(self) -> list[Step]:
        return [s for s in self.steps if not self.record(s)["done"]]

    def run(self, seconds: float) -> list[Step]:
        """Run steps in order until all are done or `seconds` are spent; return those left."""
        deadline = self.clock() + seconds
        for step in self.left():
            record = self.record(step)
            while not record["done"]:
                remaining = deadline - self.clock()
                if remaining < START_MIN_SECONDS:
                    return self.left()
                if step.train_dir is None:
                    if self._run_once(step, None, remaining)["timed_out"]:
                        return self.left()
                    record["done"] = True
                    self.save()
                    continue
                current = trained_step(step.train_dir)
                if current >= step.total:
                    record["done"] = True
                    self.save()
                    break
                target = next_target(current, step.total, self.chunks(step.train_dir), remaining, step.probe)
                if target is None:
                    return self.left()
                chunk = self._run_once(step, target, remaining)
                reached = trained_step(step.train_dir)
                chunk["steps"] = reached - current
                check_checkpoint_sizes(step.train_dir, self.config["checks"]["max_file_mb"])
                self.save()
                if chunk["timed_out"]:
                    return self.left()
                if reached < target:
                    raise PipelineError(f"{step.name}: asked for step {target} but the run stopped at {reached}; "
                                        f"see {self.log(step)}")
                self.say(f"{step.name}: step {reached}/{step.total}")
        return []

    def chunks(self, train_dir: Path) -> list[dict[str, Any]]:
        """Every chunk run on one training run, by whichever step (probe or train) ran it, oldest first."""
        return [c for s in self.steps if s.train_dir == train_dir for c in self.record(s)["chunks"]]

    def log(self, step: Step) -> Path:
        return self.workdir / "logs" / f"{step.name}.log"

    def _run_once(self, step: Step, target: int | None, remaining: float) -> dict[str, Any]:
        argv = step.argv(target)
        self.say(f"── {step.name}: {shlex.join(map(str, argv))}")
        result = self.runner([str(a) for a in argv], remaining, self.log(step), step.stdout)
        record = self.record(step)
        chunk = {"target": target, "steps": 0, "seconds": round(result.seconds, 3), "returncode": result.returncode,
                 "timed_out": result.timed_out}
        record["chunks"].append(chunk)
        record["seconds"] += result.seconds
        self.save()
        if result.timed_out:
            self.say(f"{step.name}: stopped at the time limit after {result.seconds:.0f} s; it resumes on the next run")
        elif result.returncode != 0:
            raise PipelineError(f"{step.name} failed (exit {result.returncode}); see {self.log(step)}")
        return chunk


def export_checked(run_dir: Path, dest: Path, max_file_mb: float) -> None:
    """Export a run's inference files as shipped (fp16, no optimizer state; `modelkit.checkpoint.export`) into
    `dest`, and fail when any of them is over the size limit."""
    ckpt.export(run_dir, dest)
    too_big = [f"{p.name} {p.stat().st_size / MB:.1f} MB" for p in sorted(dest.iterdir())
               if p.stat().st_size > max_file_mb * MB]
    if too_big:
        raise PipelineError(f"{ckpt.resolve(run_dir)}: {', '.join(too_big)}: over the {max_file_mb} MB limit on a "
                            "shipped checkpoint file ([checks] max_file_mb); choose a smaller preset")


def check_checkpoint_sizes(run_dir: Path, max_file_mb: float) -> None:
    if (run_dir / ckpt.LATEST).exists():
        with tempfile.TemporaryDirectory() as tmp:
            export_checked(run_dir, Path(tmp), max_file_mb)


def install_checkpoints(config: dict[str, Any], workdir: Path, repo: Path = REPO) -> list[Path]:
    """Export each entry's final checkpoint (fp16 EMA weights, config, autoencoder; no optimizer state) to its
    ships_to folder, replacing what is there only once the new copy is complete."""
    installed = []
    for entry in config["entry"]:
        run = workdir / "train" / entry["name"]
        step = trained_step(run)
        if step < config["train"]["steps"]:
            raise PipelineError(f"{run}: trained {step} of {config['train']['steps']} steps; finish the pipeline first")
        target = repo / entry["ships_to"]
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            export_checked(run, staging, config["checks"]["max_file_mb"])
        except PipelineError:
            shutil.rmtree(staging)
            raise
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        installed.append(target)
    return installed


def describe(pipeline: Pipeline) -> str:
    lines = []
    for step in pipeline.steps:
        record = pipeline.record(step)
        progress = ""
        if step.train_dir is not None:
            progress = f" {min(trained_step(step.train_dir), step.total)}/{step.total} steps"
        status = "done" if record["done"] else ("started" if record["chunks"] else "to do")
        lines.append(f"  {step.name:<34} {status:<8}{progress}  ({record['seconds']:.0f} s so far)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="default: runs/gpu (runs/cpu-dry-run with --dry-run-cpu)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="time box of this invocation (default: 9; 60 with --dry-run-cpu, to finish in one go)")
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="the whole pipeline on a CPU: demo data, tiny preset, a few steps ([dry-run-cpu] tables)")
    parser.add_argument("--status", action="store_true", help="print what is done and what is left, run nothing")
    parser.add_argument("--install-checkpoints", action="store_true",
                        help="copy the finished entries' EMA checkpoints to their ships_to folders in the repository")
    args = parser.parse_args(argv)
    workdir = args.workdir or REPO / "runs" / ("cpu-dry-run" if args.dry_run_cpu else "gpu")
    try:
        config = load_config(args.config, args.dry_run_cpu)
        if args.install_checkpoints:
            if args.dry_run_cpu:
                raise PipelineError("--install-checkpoints ships GPU-trained checkpoints; not with --dry-run-cpu")
            for path in install_checkpoints(config, workdir):
                print(f"installed {path}")
            return 0
        skip = missing_entries(config)
        if skip and not args.dry_run_cpu:
            raise PipelineError(f"no trainer or no registered model for: {', '.join(skip)} "
                                f"(trainers: {', '.join(TRAINERS.names())})")
        for name in skip:
            print(f"dry run: skipping entry {name!r}: its model has no trainer or no registered WorldModel yet")
        pipeline = Pipeline(build_steps(config, workdir, skip), workdir, config)
        if not args.status:
            preflight_sizes(config)
            pipeline.run(60 * (args.max_minutes or (60.0 if args.dry_run_cpu else 9.0)))
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    left = pipeline.left()
    print(describe(pipeline))
    if left:
        print(f"{len(left)} steps left (next: {left[0].name}); run the same command again to continue")
    else:
        print(f"0 steps left: all done. Leaderboard: {workdir / 'leaderboard.md'}, plots: {workdir / 'plots'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
