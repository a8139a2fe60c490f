"""Reproduce the results on the embedded ViZDoom benchmark with one resumable command.

    python scripts/reproduce.py --budget cpu                    # this machine: hours; rerun to continue if killed
    python scripts/reproduce.py --budget gpu --max-minutes 9    # one H200 with 16 cores, one 10-minute command
    python scripts/reproduce.py --budget cpu --status           # what is done and how long each step took
    python scripts/reproduce.py --budget cpu --install-checkpoints   # fp16 EMA exports into the ships_to folders

It generates the `full` ViZDoom set, trains the shared autoencoder, every [[trunk]] and every [[entry]] of
configs/reproduce.toml with one budget (a trunk steps - finetune_steps from scratch, an entry with `init` fine-tuned
from its trunk for finetune_steps, any other entry steps from scratch: each entry sees `steps` in all), evaluates the
entries and the floors on the test split, writes the leaderboard (markdown, json, plots), the paper's tables and figures
with Table 4's benchmark, and a bundle of at most [shared] max_files files of at most max_file_mb each
(WORKDIR/bundle: what a GPU machine sends back). Each step is a `loopnav` subprocess, up to `lanes` at once; each
resumes by itself (prepare, `train --resume`, evaluate), so a killed or time-boxed run continues where it stopped
when the same command is run again. WORKDIR/state.json (written
atomically) records what is done and every attempt's wall time; WORKDIR/logs/<step>.log holds each step's output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport, a dependency there (pyproject.toml)
    import tomli as tomllib

from loopnav_bench.ablation import ContextAblation
from loopnav_bench.fileio import read_json, write_json_atomic
from modelkit import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "reproduce.toml"
STATE_FILE = "state.json"
KILL_GRACE_SECONDS = 20.0  # between SIGINT at the deadline and SIGKILL
POLL_SECONDS = 0.2
MB = 1e6
SWAP = ContextAblation("swap")  # an entry with `swap = true` is evaluated twice: plain and as its twin <label>+swap
EXIT_FAILED, EXIT_CONFIG, EXIT_DEADLINE = 1, 2, 3


class ReproduceError(RuntimeError):
    """A bad config, a refused work directory or an unfinished run; the message is one line that says which."""


# ------------------------------------------------------------------------------------------------ configuration

REQUIRED = {"shared": ("seed", "split", "max_files", "max_file_mb", "floors"),
            "budget": ("lanes", "threads", "device", "data", "train", "evaluate"),
            "data": ("preset", "workers"), "train": ("preset", "steps", "autoencoder_steps", "save_every"),
            "evaluate": ("batch_size",),
            "entry": ("label", "model", "model_args", "autoencoder", "ships_to"),
            "trunk": ("label", "model", "model_args", "autoencoder")}
LISTS = ("entry", "trunk")  # the [[entry]] and [[trunk]] tables, the same for every budget


def load_config(path: Path, budget: str) -> dict[str, Any]:
    """[shared], the [[entry]] and [[trunk]] lists and the budget's table, checked: every problem is one line naming
    the key."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ReproduceError(f"{path}: cannot read the config: {err}") from None
    budgets = sorted(k for k in raw if k not in ("shared", *LISTS))
    if budget not in budgets:
        raise ReproduceError(f"{path}: no budget {budget!r}; choose one of {', '.join(budgets)}")
    config = {"budget": budget, "shared": raw.get("shared", {}), **{k: raw.get(k, []) for k in LISTS}, **raw[budget]}

    def need(table: dict, keys: tuple[str, ...], where: str) -> None:
        if missing := [k for k in keys if k not in table]:
            raise ReproduceError(f"{path}: {where} lacks {', '.join(missing)}")

    need(config["shared"], REQUIRED["shared"], "[shared]")
    need(config, REQUIRED["budget"], f"[{budget}]")
    for part in ("data", "train", "evaluate"):
        need(config[part], REQUIRED[part], f"[{budget}.{part}]")
    if not config["entry"]:
        raise ReproduceError(f"{path}: no [[entry]] tables")
    for kind in LISTS:
        for n, table in enumerate(config[kind]):
            need(table, REQUIRED[kind], f"[[{kind}]] number {n + 1}")
    if not_bool := [e["label"] for e in config["entry"] if not isinstance(e.get("swap", False), bool)]:
        raise ReproduceError(f"{path}: [[entry]] {not_bool[0]!r}: swap must be true or false")
    labels = [t["label"] for kind in LISTS for t in config[kind]] + list(config["shared"]["floors"])
    if duplicated := sorted({x for x in labels if labels.count(x) > 1}):
        raise ReproduceError(f"{path}: labels used twice: {', '.join(duplicated)}")
    if not (isinstance(config["lanes"], int) and config["lanes"] >= 1):
        raise ReproduceError(f"{path}: [{budget}] lanes must be a positive integer, not {config['lanes']!r}")
    check_inits(config, path)
    return config


def check_inits(config: dict[str, Any], path: Path) -> None:
    """An entry's `init` names a [[trunk]] of its model, both latent; every trunk is some entry's init and has none
    itself; and the budget splits `steps` into the trunk's and the fine-tune's (0 < finetune_steps < steps)."""
    entries, trunks = ({t["label"]: t for t in config[kind]} for kind in LISTS)
    inits = {e["label"]: e["init"] for e in config["entry"] if "init" in e}
    for label, init in inits.items():
        entry, where = entries[label], f"{path}: [[entry]] {label!r}: init = {init!r}"
        if init in entries:
            raise ReproduceError(f"{where} is an [[entry]]: an entry fine-tunes from a [[trunk]] only, so that each "
                                 "trains steps in all")
        if init not in trunks:
            raise ReproduceError(f"{where} is not the label of a [[trunk]] ({', '.join(trunks) or 'none'})")
        if not (entry["autoencoder"] and trunks[init]["autoencoder"]):
            raise ReproduceError(f"{where}: fine-tuning needs a latent trunk and entry (autoencoder = true), sharing "
                                 "the autoencoder's latent space")
        if trunks[init]["model"] != entry["model"]:
            raise ReproduceError(f"{where} trains {trunks[init]['model']!r}, not {entry['model']!r}")
    for label, trunk in trunks.items():
        if "init" in trunk:
            raise ReproduceError(f"{path}: [[trunk]] {label!r}: init = {trunk['init']!r}: a trunk trains from scratch")
        if label not in inits.values():
            raise ReproduceError(f"{path}: [[trunk]] {label!r}: no [[entry]] has init = {label!r}")
    if not trunks:
        return
    train, where = config["train"], f"{path}: [{config['budget']}.train]"
    if "finetune_steps" not in train:
        raise ReproduceError(f"{where} lacks finetune_steps (the steps of the entries with init: {', '.join(inits)})")
    if not (isinstance(train["finetune_steps"], int) and isinstance(train["steps"], int)
            and 0 < train["finetune_steps"] < train["steps"]):
        raise ReproduceError(f"{where} finetune_steps = {train['finetune_steps']!r} must be a positive integer below "
                             f"steps = {train['steps']!r} (a trunk trains the difference)")


def run_steps(config: dict[str, Any], table: dict[str, Any], trunk: bool = False) -> int:
    """A training run's steps, so that every entry sees [budget.train] steps in all: a trunk trains steps -
    finetune_steps from scratch, an entry with init finetune_steps from its trunk's checkpoint, any other entry
    steps from scratch."""
    train = config["train"]
    if trunk:
        return train["steps"] - train["finetune_steps"]
    return train["finetune_steps" if "init" in table else "steps"]


# ------------------------------------------------------------------------------------------------ steps


@dataclass
class Step:
    """One subprocess. A training step (run_dir set) counts as done once its checkpoint reaches `steps`, however it
    got there: runs trained by hand into the same layout are adopted, a fine-tune only if it started from its trunk's
    final checkpoint (init_run's)."""

    name: str
    argv: list[str]
    needs: tuple[str, ...] = ()
    stdout: Path | None = None   # the command's stdout goes here (its stderr to the log)
    run_dir: Path | None = None
    steps: int = 0
    init_run: Path | None = None


def swap_runs(entry: dict[str, Any]) -> tuple[bool, ...]:
    """The entry's evaluations: plain, and with `swap = true` its context-swap twin too (memory reliance)."""
    return (False, True) if entry.get("swap", False) else (False,)


def loopnav(*args: object) -> list[str]:
    return [sys.executable, "-m", "loopnav", *map(str, args)]


def options(table: dict[str, Any], flags: dict[str, str]) -> list[str]:
    """`--flag value` for each optional key present in a config table."""
    return [part for key, flag in flags.items() if key in table for part in (flag, str(table[key]))]


def build_steps(config: dict[str, Any], workdir: Path) -> list[Step]:
    data, train, evaluate = workdir / "data", config["train"], config["evaluate"]
    autoencoder, results, board = workdir / "autoencoder", workdir / "results", workdir / "leaderboard"
    common = ["--data", data, "--device", config["device"]]
    train_common = [*common, "--preset", train["preset"], "--threads", config["threads"], "--save-every",
                    train["save_every"], "--seed", config["shared"]["seed"], "--resume"]

    def training(name: str, model: str, run: Path, steps: int, extra: list, needs: tuple[str, ...],
                 init_run: Path | None = None) -> Step:
        return Step(name, loopnav("train", "--model", model, *train_common, "--output-dir", run, "--steps", steps,
                                  *extra), needs=("prepare", *needs), run_dir=run, steps=steps, init_run=init_run)

    def evaluation(label: str, model: str, checkpoint: list, needs: tuple[str, ...], swap: bool = False) -> Step:
        """The entry's evaluation; with swap, its context-swap twin `<label>+swap` (docs/memory.md)."""
        model_args = evaluate.get("model_args", {}).get(model)
        return Step(f"evaluate-{label}{SWAP.suffix if swap else ''}", loopnav(
            "evaluate", "--model", model, "--label", label, *checkpoint, *common, "--split", config["shared"]["split"],
            "-o", results, "--batch-size", evaluate["batch_size"], "--seed", config["shared"]["seed"],
            *options(evaluate, {"metrics": "--metrics", "limit": "--limit"}),
            *(["--context-ablation", SWAP.kind] if swap else []),
            *(["--model-args", model_args] if model_args else [])), needs=("prepare", *needs))

    def init_run(table: dict[str, Any]) -> Path | None:
        return workdir / "train" / table["init"] if "init" in table else None

    def run_args(table: dict[str, Any]) -> list:
        shared = f"autoencoder={autoencoder}" if table["autoencoder"] else ""
        init = f"init={init_run(table)}" if "init" in table else ""
        args = ",".join(filter(None, [table["model_args"], shared, init]))
        return ["--model-args", args] if args else []

    def run_needs(table: dict[str, Any]) -> tuple[str, ...]:
        return (*(("train-autoencoder",) if table["autoencoder"] else ()),
                *((f"train-{table['init']}",) if "init" in table else ()))

    def run_training(table: dict[str, Any], trunk: bool) -> Step:
        """A trunk's or an entry's training, in WORKDIR/train/<label>."""
        extra = [*run_args(table), *options(train, {"batch_size": "--batch-size"})]
        return training(f"train-{table['label']}", table["model"], workdir / "train" / table["label"],
                        run_steps(config, table, trunk), extra, run_needs(table), init_run(table))

    entries = config["entry"]
    evaluations = [
        *[evaluation(floor, floor, [], ()) for floor in config["shared"]["floors"]],
        *[evaluation(e["label"], e["model"], ["--checkpoint", workdir / "train" / e["label"]],
                     (f"train-{e['label']}",), swap) for e in entries for swap in swap_runs(e)],
    ]
    leaderboard = loopnav("leaderboard", "--results", results)
    return [
        Step("prepare", loopnav("prepare", "--source", "vizdoom", "--preset", config["data"]["preset"], "--seed",
                                config["shared"]["seed"], "--workers", config["data"]["workers"], "--out", data,
                                *options(config["data"], {"tasks": "--tasks", "ranges": "--ranges",
                                                          "limit": "--limit"}))),
        training("train-autoencoder", "autoencoder", autoencoder, train["autoencoder_steps"], [], ()),
        # the trunks first: the fine-tunes wait for them
        *[run_training(t, trunk=True) for t in config["trunk"]],
        *[run_training(e, trunk=False) for e in entries],
        *evaluations,
        Step("leaderboard", [*leaderboard, "--format", "markdown", "--plot", board / "plots"],
             needs=tuple(step.name for step in evaluations), stdout=board / "leaderboard.md"),
        Step("leaderboard-json", [*leaderboard, "--format", "json"], needs=("leaderboard",),
             stdout=board / "leaderboard.json"),
        # Table 4: time and peak memory per predicted frame, WorldPack full vs base, at the trained preset
        Step("bench-worldpack", [sys.executable, str(REPO / "benchmarks" / "bench_worldpack.py"), "--preset",
                                 train["preset"], "--device", config["device"], "--out", board / "bench_worldpack.json",
                                 *options(config.get("bench", {}), {"repeats": "--repeats"})]),
        Step("paper", loopnav("leaderboard", "paper", "--results", results, "--out", board / "paper", "--bench",
                              board / "bench_worldpack.json"), needs=("leaderboard", "bench-worldpack")),
    ]


def trained_step(run_dir: Path) -> int:
    """The optimizer step of a training run's latest checkpoint (0 when it has none yet)."""
    try:
        return int(ckpt.read_config(ckpt.resolve(run_dir))["step"])
    except FileNotFoundError:
        return 0


def started_from(run_dir: Path, init_run: Path) -> bool:
    """Whether a fine-tune's latest checkpoint records the weights of init_run's latest checkpoint as its start."""
    try:
        init = ckpt.read_config(ckpt.resolve(run_dir)).get("init") or {}
        return init.get("weights_sha256") == ckpt.read_config(ckpt.resolve(init_run))[ckpt.FILES][ckpt.WEIGHTS]
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------------------------ running


@dataclass
class Running:
    step: Step
    process: subprocess.Popen
    started: float
    files: list[Any]


class Pipeline:
    """Runs the steps whose needs are done, up to `lanes` at once, until all are done, one fails (its dependants are
    skipped, the rest go on) or the deadline passes (running steps get SIGINT, then SIGKILL; they resume next time)."""

    def __init__(self, config: dict[str, Any], workdir: Path):
        self.config, self.workdir = config, workdir
        self.steps = build_steps(config, workdir)
        self.path = workdir / STATE_FILE
        self.state = read_json(self.path) if self.path.exists() else {"budget": config["budget"], "config": config,
                                                                      "steps": {}, "invocations": []}
        if (self.state["budget"], self.state["config"]) != (config["budget"], json.loads(json.dumps(config))):
            raise ReproduceError(f"{self.path}: this work directory was started with budget "
                                 f"{self.state['budget']!r} and another config; use another --workdir")

    def record(self, step: Step) -> dict[str, Any]:
        return self.state["steps"].setdefault(step.name, {"done": False, "seconds": 0.0, "attempts": []})

    def done(self, step: Step) -> bool:
        record = self.record(step)
        if (not record["done"] and step.run_dir is not None and trained_step(step.run_dir) >= step.steps
                and (step.init_run is None or started_from(step.run_dir, step.init_run))):
            record["done"] = True   # adopted, or finished by a run whose state was lost
        return record["done"]

    def left(self) -> list[Step]:
        return [s for s in self.steps if not self.done(s)]

    def save(self) -> None:
        write_json_atomic(self.path, self.state)

    def log(self, step: Step) -> Path:
        return self.workdir / "logs" / f"{step.name}.log"

    def run(self, max_seconds: float | None = None) -> int:
        """Run what is left; return the exit status (0 all done, 1 a step failed, 3 stopped at the deadline)."""
        started = time.monotonic()
        deadline = started + max_seconds if max_seconds is not None else float("inf")
        invocation = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": 0.0, "outcome": "running"}
        self.state["invocations"].append(invocation)
        self.save()
        running: list[Running] = []
        failed: set[str] = set()
        status = 0
        try:
            while True:
                done = {s.name for s in self.steps if self.done(s)}
                busy = {r.step.name for r in running}
                blocked = {s.name for s in self.steps if s.name in failed or any(n in failed for n in s.needs)}
                failed |= blocked
                ready = [s for s in self.steps if s.name not in done | busy | failed and set(s.needs) <= done]
                while ready and len(running) < self.config["lanes"] and time.monotonic() < deadline:
                    with sigint_deferred():  # a Ctrl-C now lands once the step is in `running`, so stop() sees it
                        running.append(self.start(ready.pop(0)))
                if not running:
                    break
                if time.monotonic() >= deadline:
                    self.stop(running)
                    status = EXIT_DEADLINE
                    break
                time.sleep(POLL_SECONDS)
                for item in [r for r in running if r.process.poll() is not None]:
                    running.remove(item)
                    if not self.finish(item, interrupted=False):
                        failed.add(item.step.name)
        except KeyboardInterrupt:
            self.stop(running)
            status = EXIT_DEADLINE
        if status == 0 and self.left():
            status = EXIT_FAILED if failed else EXIT_DEADLINE
        invocation["seconds"] = round(time.monotonic() - started, 1)
        invocation["outcome"] = {0: "done", EXIT_FAILED: "failed", EXIT_DEADLINE: "stopped"}[status]
        self.save()
        return status

    def start(self, step: Step) -> Running:
        log = self.log(step)
        log.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log, "a", encoding="utf-8")
        log_file.write(f"\n$ {shlex.join(map(str, step.argv))}\n")
        log_file.flush()
        files = [log_file]
        out = log_file
        if step.stdout is not None:
            step.stdout.parent.mkdir(parents=True, exist_ok=True)
            out = open(step.stdout.with_name(step.stdout.name + ".partial"), "w", encoding="utf-8")
            files.append(out)
        threads = str(self.config["threads"])
        process = subprocess.Popen(
            [str(a) for a in step.argv], cwd=REPO, stdout=out, stderr=log_file, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
            # a shell's background job ignores SIGINT and children inherit that: restore it, or the clean stop at
            # the deadline could never work
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        print(f"start  {step.name}  (log: {log})", flush=True)
        return Running(step, process, time.monotonic(), files)

    def finish(self, item: Running, interrupted: bool) -> bool:
        """Record an ended attempt; True when the step is done."""
        for f in item.files:
            f.close()
        step, code, seconds = item.step, item.process.returncode, time.monotonic() - item.started
        ok = code == 0 and not interrupted
        if step.stdout is not None:
            partial = step.stdout.with_name(step.stdout.name + ".partial")
            if ok:
                partial.replace(step.stdout)
            else:
                partial.unlink()
        if ok and step.run_dir is not None and trained_step(step.run_dir) < step.steps:
            ok = False  # exited 0 without reaching its target: never count that as done
        record = self.record(step)
        record["attempts"].append({"seconds": round(seconds, 1), "returncode": code, "interrupted": interrupted})
        record["seconds"] = round(record["seconds"] + seconds, 1)
        record["done"] = ok
        self.save()
        verdict = "done" if ok else "stopped" if interrupted else f"FAILED (exit {code}; see {self.log(step)})"
        print(f"{verdict:<6} {step.name}  {seconds:.0f} s", flush=True)
        return ok

    def stop(self, running: list[Running]) -> None:
        """SIGINT every running step's process group (a clean KeyboardInterrupt), SIGKILL what is left after a
        grace period; each is recorded as interrupted and resumes on the next run."""
        for item in running:
            _signal(item.process, signal.SIGINT)
        grace_end = time.monotonic() + KILL_GRACE_SECONDS
        for item in running:
            try:
                item.process.wait(timeout=max(grace_end - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                _signal(item.process, signal.SIGKILL)
                item.process.wait()
            self.finish(item, interrupted=True)


def _signal(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def describe(pipeline: Pipeline) -> str:
    lines = [f"{'step':<34} {'status':<12} {'seconds':>8}  attempts"]
    for step in pipeline.steps:
        record = pipeline.record(step)
        status = "done" if pipeline.done(step) else "started" if record["attempts"] else "to do"
        if step.run_dir is not None and status != "done":
            status += f" {trained_step(step.run_dir)}/{step.steps}"
        lines.append(f"{step.name:<34} {status:<12} {record['seconds']:>8.0f}  {len(record['attempts'])}")
    total = sum(pipeline.record(s)["seconds"] for s in pipeline.steps)
    wall = sum(i["seconds"] for i in pipeline.state["invocations"])
    lines.append(f"{len(pipeline.left())} steps left; {total:.0f} s of step time, {wall:.0f} s wall time over "
                 f"{len(pipeline.state['invocations'])} invocations")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ outputs


def export_checked(run_dir: Path, dest: Path, max_file_mb: float) -> None:
    """Export a run's inference files as shipped (fp16, no optimizer state) into `dest`; fail over the size limit."""
    ckpt.export(run_dir, dest)
    if too_big := [f"{p.name} {p.stat().st_size / MB:.1f} MB" for p in sorted(dest.iterdir())
                   if p.stat().st_size > max_file_mb * MB]:
        raise ReproduceError(f"{ckpt.resolve(run_dir)}: {', '.join(too_big)} over the {max_file_mb} MB limit on a "
                             "shipped file ([shared] max_file_mb)")


def finished_runs(config: dict[str, Any], workdir: Path) -> list[tuple[dict[str, Any], Path]]:
    runs = [(entry, workdir / "train" / entry["label"]) for entry in config["entry"]]
    if unfinished := [f"{run} ({trained_step(run)}/{run_steps(config, entry)})" for entry, run in runs
                      if trained_step(run) < run_steps(config, entry)]:
        raise ReproduceError(f"unfinished training runs: {', '.join(unfinished)}; run the pipeline first")
    return runs


def install_checkpoints(config: dict[str, Any], workdir: Path, repo: Path = REPO) -> list[Path]:
    """Each entry's final EMA weights as fp16 exports (config, weights, its autoencoder) in its ships_to folder,
    replacing the folder only once the new copy is complete."""
    installed = []
    for entry, run in finished_runs(config, workdir):
        target = repo / entry["ships_to"]
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            export_checked(run, staging, config["shared"]["max_file_mb"])
        except ReproduceError:
            shutil.rmtree(staging)
            raise
        staging.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        installed.append(target)
    return installed


def write_bundle(config: dict[str, Any], workdir: Path) -> list[Path]:
    """WORKDIR/bundle: the leaderboard (md, json), state.json, results.tar.gz (results without predictions, plots,
    logs) and the checkpoints as fp16 exports at their ships_to paths in tars of at most max_file_mb (unpack in the
    repository root to install them); at most max_files files, or no new bundle. What a GPU machine sends back."""
    limit, final, bundle = config["shared"]["max_file_mb"] * MB, workdir / "bundle", workdir / ".bundle.partial"
    shutil.rmtree(bundle, ignore_errors=True)
    bundle.mkdir(parents=True)
    for name in ("leaderboard.md", "leaderboard.json"):
        shutil.copy(workdir / "leaderboard" / name, bundle / name)
    shutil.copy(workdir / STATE_FILE, bundle / STATE_FILE)
    with tarfile.open(bundle / "results.tar.gz", "w:gz") as tar:
        for folder in ("results", "leaderboard/plots", "leaderboard/paper", "logs"):
            if (workdir / folder).exists():
                tar.add(workdir / folder, arcname=folder, filter=lambda m: None if "/predictions" in m.name else m)
    with tempfile.TemporaryDirectory() as tmp:
        groups: list[list[Path]] = [[]]
        for entry, run in finished_runs(config, workdir):
            export_checked(run, Path(tmp) / entry["ships_to"], config["shared"]["max_file_mb"])
            files = sorted((Path(tmp) / entry["ships_to"]).iterdir())
            if sum(p.stat().st_size for p in [*groups[-1], *files]) > limit * 0.99:  # headroom for tar headers
                groups.append([])
            groups[-1].extend(files)
        for n, group in enumerate(groups, 1):
            with tarfile.open(bundle / f"checkpoints-{n}.tar", "w") as tar:
                for path in group:
                    tar.add(path, arcname=path.relative_to(tmp).as_posix())
    written = sorted(bundle.iterdir())
    problems = [f"{p.name} is {p.stat().st_size / MB:.1f} MB" for p in written if p.stat().st_size > limit]
    if len(written) > config["shared"]["max_files"]:
        problems.append(f"{len(written)} files")
    if problems:
        raise ReproduceError(f"{bundle}: {'; '.join(problems)}: over [shared] max_files = "
                             f"{config['shared']['max_files']} files of max_file_mb = "
                             f"{config['shared']['max_file_mb']} MB")
    shutil.rmtree(final, ignore_errors=True)
    bundle.rename(final)
    return [final / p.name for p in written]


# ------------------------------------------------------------------------------------------------ command line


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back for the block: one that arrived meanwhile raises KeyboardInterrupt right after it. (A handler
    that only takes note, not a blocked mask: a signal mask is per thread, and any other thread would take it.)"""
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", required=True, help="a table of the config: cpu, gpu or dry-run")
    parser.add_argument("--workdir", type=Path, help="default: runs/reproduce-<budget>")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--max-minutes", type=float, help="stop cleanly (SIGINT, then SIGKILL) after this long; "
                                                          "the same command continues later")
    parser.add_argument("--status", action="store_true", help="print what is done and what is left; run nothing")
    parser.add_argument("--install-checkpoints", action="store_true",
                        help="export each entry's final EMA weights as fp16 into its ships_to folder")
    args = parser.parse_args(argv)
    # a shell's background job starts with SIGINT ignored: take it back, so that Ctrl-C or `kill -INT` always stops
    # the steps cleanly
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = (args.workdir or REPO / "runs" / f"reproduce-{args.budget}").resolve()
    try:
        config = load_config(args.config, args.budget)
        if args.install_checkpoints:
            for path in install_checkpoints(config, workdir):
                print(f"installed {path}")
            return 0
        pipeline = Pipeline(config, workdir)
        if args.status:
            print(describe(pipeline))
            return 0
        workdir.mkdir(parents=True, exist_ok=True)
        status = pipeline.run(None if args.max_minutes is None else 60 * args.max_minutes)
        if status == 0:
            print(f"bundle: {', '.join(p.name for p in write_bundle(config, workdir))} in {workdir / 'bundle'}")
    except ReproduceError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    print(describe(pipeline))
    if status == EXIT_DEADLINE:
        print("stopped before the deadline; run the same command again to continue")
    return status


if __name__ == "__main__":
    sys.exit(main())
