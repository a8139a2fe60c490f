"""The `loopnav` command line. Thin: parse options, call the library, print."""

from __future__ import annotations

import inspect as pyinspect
import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

from loopnav_bench.ablation import DEFAULT_KEEP_RECENT
from loopnav_bench.console import FitWidth, console, progress_bar
from loopnav_bench.distributed import DEFAULT_DEVICE

# failures that come from what the user gave (files, options, data, weights, the network), never from a bug
_EXPECTED = (OSError, ValueError, KeyError, FloatingPointError, RuntimeError)


class ErrorBoundary(TyperGroup):
    """The one place a failure becomes output, for every command: an expected one is one line naming the file, option
    or trajectory and exit 2; anything else keeps its traceback and asks for a bug report (exit 1)."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # typer's own: exits, usage errors
            raise
        except _EXPECTED as err:
            if isinstance(err, (RuntimeError, KeyError)) and not _ours(err):
                raise _bug() from err
            fail(_one_line(err))
        except Exception as err:
            raise _bug() from err


def _ours(err: BaseException) -> bool:
    """RuntimeError and KeyError are expected only as loopnav's own kinds (push, metric weights, unknown names)."""
    return type(err).__module__.split(".")[0] in ("loopnav", "loopnav_bench", "leaderboard", "modelkit")


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None:  # the OS's own errors name the path in `filename`
        return f"{err.filename}: {err.strerror or err}"
    if isinstance(err, KeyError) and err.args:  # str() of a KeyError is its repr
        return str(err.args[0])
    return str(err) or type(err).__name__


def _bug() -> typer.Exit:
    console.print_exception(show_locals=False)
    console.print("[bold red]internal error:[/] this is a bug in loopnav, not in what you gave it; please report it "
                  "with the traceback above and the command you ran")
    return typer.Exit(1)


app = typer.Typer(
    name="loopnav",
    cls=ErrorBoundary,
    help="Measure whether a video world model keeps a place consistent when it comes back to it.",
    pretty_exceptions_show_locals=False,  # tracebacks must never print tokens or large arrays
    no_args_is_help=True,
    rich_markup_mode="rich",
)

DATA, EVAL, TRAIN = "Data", "Evaluation", "Training"


def _print_version(value: bool) -> None:
    if value:
        from loopnav_bench import __version__

        typer.echo(f"loopnav {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print loopnav's version and exit.")) -> None:
    """Measure whether a video world model keeps a place consistent when it comes back to it."""


def _csv(text: Optional[str], option: str, cast=str) -> Optional[list]:
    """A comma-separated option as a list: each item cast (an int is at least 1), none twice; else one line naming
    the option."""
    if text is None:
        return None
    items = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            item = cast(part)
        except ValueError:
            raise ValueError(f"{option} {text!r}: {part!r} is not a {'whole number' if cast is int else cast.__name__}"
                             ) from None
        if cast is int and item < 1:
            raise ValueError(f"{option} {text!r}: {item} must be at least 1")
        if item in items:
            raise ValueError(f"{option} {text!r}: {part!r} is given twice")
        items.append(item)
    return items


def _count(default: Optional[int], *names: str, help: str):
    """A count, size or step option: a whole number of at least 1 (0 makes no sense), shown as N in --help."""
    return typer.Option(default, *names, min=1, metavar="N", help=help)


def _positive_finite(value: Optional[float]) -> Optional[float]:
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a finite number above 0")
    return value


def fail(message: str) -> None:
    """Print a clear error and exit non-zero (no traceback: the message names the file and the problem)."""
    # one line, however long the path it names (soft_wrap: the terminal folds it, rich inserts no newline); a message
    # names labels like x[k=4]: no markup
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(2)


def _wrote(what: object) -> None:
    console.print(Text.assemble(("wrote ", "green"), str(what)), soft_wrap=True)  # paths and labels are never markup


@app.command(rich_help_panel=DATA)
def prepare(
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for shards and manifest.json."),
    source: str = typer.Option("vizdoom", help="vizdoom (embedded), loopnav or recon."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="Local raw data directory (loopnav, recon)."),
    hub_repo: Optional[str] = typer.Option(None, help="LoopNav Hub repo, e.g. kevinLian/LoopNav."),
    split: Optional[str] = typer.Option(None, help="Comma-separated splits to prepare (default: all)."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated tasks, e.g. ABA,ABCA."),
    ranges: Optional[str] = typer.Option(None, help="Ranges, e.g. 5,15,30,50."),
    limit: Optional[int] = _count(None, help="At most N trajectories per split."),
    context_frames: Optional[int] = _count(None, help="RECON: frames of context before the split point."),
    split_file: Optional[Path] = typer.Option(None, help="recon: split JSON or NoMaD data_splits."),
    preset: Optional[str] = typer.Option(None, help="vizdoom: a named set (demo, full)."),
    per_cell: Optional[int] = _count(None, help="vizdoom: trajectories per task, range and split."),
    size: Optional[int] = _count(None, help="vizdoom: frame size in pixels (64 or 128)."),
    seed: Optional[int] = typer.Option(None, help="vizdoom: generation seed."),
    workers: int = _count(1, help="Worker processes."),
    overwrite: bool = typer.Option(False, help="Replace a set prepared with other settings."),
) -> None:
    """Convert a data source into webdataset shards with poses, actions and a manifest."""
    from loopnav_bench.registry import UnknownNameError
    from loopnav_bench.shards import ShardError
    from loopnav_bench.shards import prepare as run_prepare
    from loopnav_bench.sources import source_class

    options = {"input": input, "hub_repo": hub_repo, "splits": _csv(split, "--split"),
               "tasks": _csv(tasks, "--tasks"), "ranges": _csv(ranges, "--ranges", int), "limit": limit,
               "context_frames": context_frames, "split_file": split_file, "preset": preset,
               "per_cell": per_cell, "size": size, "seed": seed}
    given = {k: v for k, v in options.items() if v is not None}
    try:
        cls = source_class(source)
        accepted = pyinspect.signature(cls).parameters
        if extra := sorted(set(given) - set(accepted)):
            fail(f"--source {source} does not take {', '.join('--' + e.replace('_', '-') for e in extra)}")
        src = cls(**given)
        with progress_bar() as progress:
            manifest = run_prepare(src, out, workers=workers, overwrite=overwrite, progress=progress)
    except (ShardError, ValueError, FileNotFoundError, ConnectionError, UnknownNameError) as err:
        fail(str(err))
    _print_manifest(manifest)
    _wrote(out / "manifest.json")


@app.command(rich_help_panel=DATA)
def validate(path: Path = typer.Argument(..., help="A directory written by `loopnav prepare`.")) -> None:
    """Check a shard set against its manifest: counts, sha256 and schema of every trajectory."""
    from loopnav_bench.schema import TrajectoryError
    from loopnav_bench.shards import ShardError
    from loopnav_bench.shards import validate as run_validate

    try:
        with progress_bar() as progress:
            summary = run_validate(path, progress=progress)
    except (ShardError, TrajectoryError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    console.print(f"[green]valid:[/] {summary['n']} trajectories in {summary['shards']} shards {summary['splits']}")


@app.command(rich_help_panel=DATA)
def inspect(
    path: Path = typer.Argument(..., help="A directory written by `loopnav prepare`."),
    split: Optional[str] = typer.Option(None, help="Show a trajectory from this split."),
    id: Optional[str] = typer.Option(None, "--id", help="Show this trajectory (default: the first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest summary and trajectory as JSON."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="Also write the trajectory's frames as a PNG strip."),
) -> None:
    """Show a shard set's manifest and one trajectory's summary (and, with --frames, a contact strip)."""
    from loopnav_bench.schema import TrajectoryError
    from loopnav_bench.shards import ShardError, load_manifest, read_trajectories

    try:
        manifest = load_manifest(path)
        traj = next((t for t in read_trajectories(path, split) if id is None or t.id == id), None)
    except (ShardError, TrajectoryError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    if traj is None:
        fail(f"{path}: no trajectory {id!r}" + (f" in split {split!r}" if split else ""))
    if frames is not None:
        from loopnav_bench.strip import trajectory_strip, write_png

        if frames.suffix.lower() != ".png" or frames.is_dir():
            fail(f"--frames {frames}: give a .png file name")
        try:
            write_png(frames, trajectory_strip(traj))
        except OSError as err:
            fail(f"--frames {frames}: {err.strerror or err}")
        _wrote(frames)
    summary = {
        "id": traj.id, "frames": list(traj.frames.shape), "offset": traj.offset,
        "context": traj.offset, "target": len(traj) - traj.offset,
        "pose_start": traj.poses[0].round(3).tolist(), "pose_at_offset": traj.poses[traj.offset].round(3).tolist(),
        "pose_end": traj.poses[-1].round(3).tolist(),
        "action_layout": traj.meta["action_layout"], "actions": list(traj.actions.shape),
        "meta": {k: v for k, v in traj.meta.items() if k not in ("id",)},
    }
    if as_json:
        print(json.dumps({"manifest": {k: manifest[k] for k in ("source", "settings", "n", "created")},
                          "trajectory": summary}, indent=2))
        return
    _print_manifest(manifest)
    table = Table(title=f"trajectory {traj.id}", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in summary.items():
        if key != "id":
            table.add_row(key, json.dumps(value) if not isinstance(value, str) else value)
    console.print(table)


_LISTED = 5  # skipped or repaired inputs printed by name; the manifest lists all of them


def _print_manifest(manifest: dict) -> None:
    from loopnav_bench.shards import input_name

    table = Table(title=f"{manifest['source']}: {manifest['n']} trajectories")
    for column in ("split", "task", "range", "n"):
        table.add_column(column, justify="right" if column in ("range", "n") else "left")
    for split, info in manifest["splits"].items():
        for task, by_range in info["counts"].items():
            for rng, n in by_range.items():
                table.add_row(split, task, rng, str(n))
    console.print(table)
    for kind in ("skipped", "repaired"):
        info = manifest[kind]
        if info["n"]:
            console.print(f"{kind}: {info['n']} "
                          f"({', '.join(f'{n} {reason}' for reason, n in info['by_reason'].items())})")
            for item in info["items"][:_LISTED]:
                console.print(f"  {input_name(item['input'])}: {item['reason']}", markup=False, highlight=False)
            if info["n"] > _LISTED:
                console.print(f"  … and {info['n'] - _LISTED} more, listed in manifest.json")


_METRICS = typer.Option(None, help="Comma-separated of ssim, psnr, lpips, dreamsim, fvd (default: all).")
_EVAL_SIZE = typer.Option(None, "--eval-size",
                          help="Score at N or HxW pixels (default: native).")
_FVD_MODE = typer.Option("default", "--fvd-mode", help="default or loopnav-v1.")
_FVD_COVARIANCE = typer.Option("population", "--fvd-covariance",
                               help="population (StyleGAN-V) or sample (N-1).")
_DEVICE = typer.Option(DEFAULT_DEVICE, help="auto, cpu, cuda or cuda:N.")


@app.command(rich_help_panel=EVAL)
def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="See `loopnav models`."),
    data: Path = typer.Option(..., "--data", "-d", help="A `loopnav prepare` folder."),
    model_args: Optional[str] = typer.Option(None, "--model-args", "-a", help="k=v,k2=v2 for the model: numbers and "
                                             "true/false are parsed, a quoted value (k='2024') stays text."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint file, folder or shipped name."),
    split: str = typer.Option("test", help="Comma-separated splits."),
    tasks: Optional[str] = typer.Option(None, help="Tasks, e.g. ABA,ABCA (default: all)."),
    ranges: Optional[str] = typer.Option(None, help="Ranges, e.g. 5,15 (default: all)."),
    limit: Optional[int] = _count(None, help="Only the first N trajectories."),
    metrics: Optional[str] = _METRICS,
    eval_size: Optional[str] = _EVAL_SIZE,
    output_dir: Path = typer.Option(Path("results"), "--output-dir", "-o", help="Where results go."),
    device: str = _DEVICE,
    batch_size: int = _count(8, "--batch-size", help="Trajectories per model call."),
    seed: int = typer.Option(0, help="Run seed (each rollout's seed derives from it)."),
    fvd_mode: str = _FVD_MODE,
    fvd_covariance: str = _FVD_COVARIANCE,
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Keep finished rows of the same run."),
    label: Optional[str] = typer.Option(None, help="Leaderboard entry name (default: model and args)."),
    context_ablation: str = typer.Option("none", "--context-ablation",
                                         help="none, or swap: older context from another place (entry +swap)."),
    keep_recent: int = typer.Option(DEFAULT_KEEP_RECENT, "--keep-recent", metavar="K",
                                    help="Context frames the swap leaves as they are."),
) -> None:
    """Roll a model out on the return legs, save its predictions, score them and write results (torchrun-ready)."""
    from loopnav_bench.evaluate import EvalConfig, parse_eval_size
    from loopnav_bench.evaluate import evaluate as run_evaluate
    from loopnav_bench.models import parse_model_args
    from loopnav_bench.registry import UnknownNameError

    try:
        config = EvalConfig(data=data, output_dir=output_dir, model=model, model_args=parse_model_args(model_args),
                            checkpoint=str(checkpoint) if checkpoint else None, split=_csv(split, "--split"),
                            tasks=_csv(tasks, "--tasks"),
                            ranges=_csv(ranges, "--ranges", int), limit=limit, metrics=_csv(metrics, "--metrics"),
                            eval_size=parse_eval_size(eval_size), device=device, batch_size=batch_size, seed=seed,
                            fvd_mode=fvd_mode, fvd_covariance=fvd_covariance, resume=resume, label=label,
                            context_ablation=context_ablation, keep_recent=keep_recent)
        with progress_bar() as progress:
            outcome = run_evaluate(config, progress=progress)
    except (ValueError, FileNotFoundError, UnknownNameError) as err:
        fail(str(err))
    if outcome is not None:
        _print_results(outcome)


@app.command(rich_help_panel=EVAL)
def score(
    predictions: Path = typer.Option(..., "--predictions", "-p",
                                     help="A run folder of `loopnav evaluate` (<out>/<model>/run-<key>)."),
    data: Optional[Path] = typer.Option(None, "--data", "-d",
                                        help="The prepared set (default: the one the run recorded)."),
    metrics: Optional[str] = _METRICS,
    eval_size: Optional[str] = _EVAL_SIZE,
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Default: the run's."),
    device: str = _DEVICE,
    batch_size: int = _count(32, "--batch-size", help="Frames per metric pass."),
    fvd_mode: str = _FVD_MODE,
    fvd_covariance: str = _FVD_COVARIANCE,
    resume: bool = typer.Option(False, "--resume/--no-resume", help="Keep rows already scored with the same settings."),
) -> None:
    """Re-score saved predictions without the model (other metrics, another evaluation size, new weights)."""
    from loopnav_bench.evaluate import parse_eval_size
    from loopnav_bench.evaluate import score as run_score

    try:
        with progress_bar() as progress:
            outcome = run_score(predictions, data=data, output_dir=output_dir, metrics=_csv(metrics, "--metrics"),
                                eval_size=parse_eval_size(eval_size), fvd_mode=fvd_mode,
                                fvd_covariance=fvd_covariance, device=device,
                                metric_batch_size=batch_size, resume=resume, progress=progress)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    if outcome is not None:
        _print_results(outcome)


models_app = typer.Typer(help="List the registered world models; check published ones against upstream's outputs.",
                         pretty_exceptions_show_locals=False)
app.add_typer(models_app, name="models", rich_help_panel=EVAL)


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context) -> None:
    """List the registered models and their shipped checkpoints.

    What each model is, whether `loopnav train` trains it, its checkpoints
    (`--checkpoint NAME`; * the default) and the package of a plug-in."""
    if ctx.invoked_subcommand is not None:
        return
    from loopnav_bench.registry import MODELS, TRAINERS
    from published.licences import LICENCES

    trainable = set(TRAINERS.names())
    rows = []
    entries = sorted(MODELS.entries().items())
    for name, entry in entries:
        description, default, shipped = _model_facts(entry)
        checkpoints = ", ".join(f"{c}*" if c == default else c for c in shipped)
        package = entry.dist.name if entry.dist else "?"
        rows.append((name, description, "yes" if name in trainable else "", checkpoints, package))
    plugins = any(row[4] != "loopnav" for row in rows)
    table = Table(title=Text("world models", style="bold"), caption="* the default checkpoint")
    for column in ("name", "what it is", "trains", "checkpoints", *(["package"] if plugins else [])):
        table.add_column(column, no_wrap=column in ("name", "trains"), overflow="fold")
    for row in rows:
        table.add_row(*map(Text, row[:5 if plugins else 4]))
    console.print(table)
    for name in sorted({n.removesuffix("-official") for n, _ in entries} & set(LICENCES)):
        console.print(f"{name}: official weights under {LICENCES[name]}")


@models_app.command("check-upstream")
def models_check_upstream(
    model: str = typer.Argument(..., help="A published model: oasis, worldmem or nwm."),
    fixture_dir: Path = typer.Argument(..., help="A fixture folder in the layout of fixtures/upstream/<model>/."),
) -> None:
    """Replay a folder of upstream golden outputs through loopnav's own code and print the max error of each
    against its tolerance. Exit 0 when all are within it, 1 when any is not."""
    from published.upstream_check import CHECKERS, check_upstream

    if model not in CHECKERS:
        fail(f"no upstream check for model {model!r}; known: {', '.join(sorted(CHECKERS))}")
    if not (fixture_dir / "fixture.json").is_file():
        fail(f"{fixture_dir}: not a fixture folder (no fixture.json)")
    try:
        results = check_upstream(model, fixture_dir)
    except ModuleNotFoundError as err:
        if err.name != CHECKERS[model]:
            raise
        fail(f"model {model!r}: its upstream check ({CHECKERS[model]}) is not part of this loopnav yet")
    except (FileNotFoundError, KeyError, ValueError) as err:
        fail(f"{fixture_dir}: {err}")
    table = Table(title=f"{model} against upstream ({fixture_dir})")
    for column in ("file", "tensor", "max error", "tolerance", "kind", "result"):
        table.add_column(column, overflow="fold")
    for result in results:
        file, _, tensor = result.name.partition(":")
        table.add_row(file.removesuffix(".safetensors"), tensor, f"{result.error:.3g}", f"{result.tolerance:.3g}",
                      "relative" if result.relative else "absolute",
                      "[green]pass[/]" if result.passed else "[red]FAIL[/]")
    console.print(table)
    failed = [r.name for r in results if not r.passed]
    console.print(f"[red]{len(failed)} of {len(results)} outside their tolerance[/]" if failed
                  else f"[green]all {len(results)} within their tolerance[/]")
    raise typer.Exit(1 if failed else 0)


def _model_facts(entry) -> tuple[str, str | None, list[str]]:
    """(description, default checkpoint, shipped checkpoints) of a registered model, read from its source and folder
    without importing it (so without torch): its class's `description` (else its docstring's first line) and
    `default_checkpoint` assignments."""
    import ast
    import importlib.util

    from loopnav_bench.models import SHIPPED_DIR, shipped_checkpoints

    spec = importlib.util.find_spec(entry.module)
    if not spec or not spec.origin or not spec.origin.endswith(".py"):
        return "", None, []
    tree = ast.parse(Path(spec.origin).read_text())
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == entry.attr), None)
    facts: dict[str, object] = {}
    for node in cls.body if cls else []:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = (zip(target.elts, node.value.elts) if isinstance(target, ast.Tuple)
                         and isinstance(node.value, ast.Tuple) else [(target, node.value)])
                facts |= {t.id: v.value for t, v in pairs if isinstance(t, ast.Name) and isinstance(v, ast.Constant)}
    docstring = (ast.get_docstring(cls) or "").split("\n")[0] if cls else ""
    shipped = list(shipped_checkpoints(Path(spec.origin).parent / SHIPPED_DIR, entry.name))
    default = facts.get("default_checkpoint")
    return str(facts.get("description") or docstring), default if isinstance(default, str) else None, shipped


def _print_results(outcome) -> None:
    """The run's cells as the leaderboard shows them (one layout, one uncertainty convention, labels never markup)."""
    from leaderboard.results import group_runs, load_run
    from leaderboard.table import build_leaderboard, render_rich

    results = outcome.results
    console.print(Text(f"{results['model']}: {results['n_trajectories']['effective']} trajectories", style="bold"))
    console.print(render_rich(build_leaderboard(group_runs([load_run(outcome.results_path)]))))
    if outcome.resumed:
        console.print(f"resumed {outcome.resumed} of {results['n_trajectories']['effective']} trajectories from "
                      f"{outcome.results['run_dir']}", markup=False, highlight=False)
    _wrote(f"{outcome.results_path} and {outcome.samples_path.name}")


@app.command(rich_help_panel=EVAL)
def show(
    results: Path = typer.Argument(..., help="Directory of `loopnav evaluate` outputs."),
    entry: str = typer.Option(..., "--entry", "-e", help="Comma-separated entries, lined up left to right."),
    out: Path = typer.Option(..., "--out", "-o", help="FILE.mp4, .webp, .gif or .png (contact strip); "
                                                      "several trajectories: FILE_<id>.<ext>."),
    id: Optional[str] = typer.Option(None, "--id", help="Comma-separated trajectory ids."),
    best: Optional[int] = typer.Option(None, "--best", help="The N best trajectories of every cell."),
    worst: Optional[int] = typer.Option(None, "--worst", help="The N worst trajectories of every cell."),
    metric: Optional[str] = typer.Option(None, help="Rank --best/--worst by (default: the first frame metric)."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="The prepared set (default: the runs' own)."),
    fps: float = typer.Option(15.0, min=1.0, help="Video frames per second."),
    context: int = typer.Option(15, min=0, help="Context frames shown before the return leg."),
) -> None:
    """Draw rollouts: ground truth | each entry's prediction (| its retrieved memories), with per-frame scores."""
    from leaderboard.results import ResultsError, load_runs
    from leaderboard.show import show as run_show

    try:
        runs = load_runs(results, skip=_skipped)
        written = run_show(runs, _csv(entry, "--entry"), out, ids=_csv(id, "--id"), best=best, worst=worst,
                           metric=metric, data=data, fps=fps, context=context)
    except (ResultsError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    for path in written:
        console.print(f"[green]wrote[/] {path}", highlight=False)


@app.command(rich_help_panel=EVAL)
def report(
    results: Path = typer.Argument(..., help="Directory of `loopnav evaluate` outputs."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for index.html, its plots and videos."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Comma-separated metrics (default: all)."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="The prepared set (default: the runs' own)."),
    videos: int = typer.Option(3, min=0, max=3, help="Rollouts per cell: 3 best, median, worst; 0 none."),
) -> None:
    """Write a self-contained results page: data, ranked leaderboard, curves, rollout videos, provenance."""
    from leaderboard.report import write_report
    from leaderboard.results import ResultsError, load_runs

    try:
        runs = load_runs(results, skip=_skipped)
        with progress_bar() as progress:
            page = write_report(runs, out, results, _csv(metric, "--metric"), data=data, videos=videos,
                                progress=progress)
    except (ResultsError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    console.print(f"[green]wrote[/] {page} (open it in a browser; the folder is self-contained)", highlight=False)


leaderboard_app = typer.Typer(help="Rank evaluation results (tables, plots) and push them to the Hub.",
                              pretty_exceptions_show_locals=False)
app.add_typer(leaderboard_app, name="leaderboard", rich_help_panel=EVAL)
_RESULTS = typer.Option(None, "--results", "-r", help="Directory of `loopnav evaluate` outputs (searched recursively).")


def _skipped(message: str) -> None:
    console.print(Text.assemble(("skipped: ", "yellow"), message))  # the message names files and labels: no markup


@leaderboard_app.callback(invoke_without_command=True)
def leaderboard(
    ctx: typer.Context,
    results: Optional[Path] = _RESULTS,
    format: str = typer.Option("rich", "--format", "-f", help="rich, markdown, html, json or csv (to stdout)."),
    plot: Optional[Path] = typer.Option(None, "--plot",
                                        help="Also write per-frame curve PNGs here (one per task and range)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Comma-separated metrics to show (default: all)."),
    reference: Optional[str] = typer.Option(None, "--reference",
                                            help="Entry the revisit curves' paired differences are taken to "
                                                 "(default: the first base-like entry, else copy-last)."),
) -> None:
    """Show the leaderboard: range x model rows, metric x task columns, mean with a 95% bootstrap CI; memory reliance
    where an entry has its +swap twin; with --plot, also revisit curves where an oracle-copy run is present."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from leaderboard.plots import plot_leaderboard
    from leaderboard.results import ResultsError, group_runs, load_runs
    from leaderboard.table import FORMATS, available_metrics, build_leaderboard

    if results is None:
        fail("--results DIR is required (a directory written by `loopnav evaluate`)")
    if format not in FORMATS:
        fail(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    try:
        groups = group_runs(load_runs(results, skip=_skipped))
        board = build_leaderboard(groups, _csv(metric, "--metric"), reference=reference)
        metrics = _csv(metric, "--metric") or available_metrics(groups)
        written = plot_leaderboard(groups, metrics, plot, board) if plot else []
    except (ResultsError, FileNotFoundError) as err:
        fail(str(err))
    rendered = FORMATS[format](board)
    if format == "rich":
        Console().print(rendered)
    else:
        print(rendered, end="")
    for path in written:
        _wrote(path)


@leaderboard_app.command("compare")
def leaderboard_compare(
    a: str = typer.Argument(..., help="Entry A (a model name as the leaderboard shows it)."),
    b: str = typer.Argument(..., help="Entry B."),
    results: Path = typer.Option(..., "--results", "-r", help="Directory of `loopnav evaluate` outputs."),
    metric: str = typer.Option("psnr,ssim", "--metric", help="Comma-separated frame metrics."),
    format: str = typer.Option("rich", "--format", "-f", help="rich, markdown or json (to stdout)."),
) -> None:
    """Paired comparison A − B over the trajectories both evaluated: per task and range and pooled per task, the mean
    difference, its bootstrap 95% CI, a sign-flip permutation p-value and Holm-adjusted p-values."""
    from rich.console import Console

    from leaderboard.paired import (
        compare,
        comparison_records,
        render_comparison_markdown,
        render_comparison_rich,
    )
    from leaderboard.results import ResultsError, group_runs, load_runs

    renderers = {"rich": lambda c: Console().print(render_comparison_rich(c)),
                 "markdown": lambda c: print(render_comparison_markdown(c), end=""),
                 "json": lambda c: print(json.dumps(comparison_records(c), indent=2))}
    if format not in renderers:
        fail(f"--format {format!r}: choose one of {', '.join(renderers)}")
    try:
        groups = group_runs(load_runs(results, skip=_skipped))
        comparisons = compare(groups, a, b, _csv(metric, "--metric"))
    except (ResultsError, FileNotFoundError) as err:
        fail(str(err))
    renderers[format](comparisons)


@leaderboard_app.command("paper")
def leaderboard_paper(
    results: Path = typer.Option(..., "--results", "-r", help="Directory of `loopnav evaluate` outputs."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for paper.md and its figures."),
    bench: Optional[Path] = typer.Option(None, "--bench",
                                         help="JSON of benchmarks/bench_worldpack.py --out, for Table 4."),
    frames: int = _count(20, "--frames", help="Terminal frames of the return leg in Figure 4."),
) -> None:
    """The WorldPack paper's Tables 1-2 and 4, Figures 4-5 and a claims check, as markdown and PNGs."""
    from leaderboard.paper import write_paper
    from leaderboard.results import group_runs, load_runs

    try:
        groups = group_runs(load_runs(results, skip=_skipped))
        written = write_paper(groups, out, bench, frames)
    except (ValueError, FileNotFoundError) as err:  # ResultsError, or a --bench file that is not JSON
        fail(str(err))
    for path in written:
        _wrote(path)


@leaderboard_app.command("push")
def leaderboard_push(
    results: Path = typer.Option(..., "--results", "-r",
                                 help="Directory of `loopnav evaluate` outputs; every run is pushed."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub dataset repo, ORG/NAME (created if missing)."),
    dry_run: Optional[Path] = typer.Option(None, "--dry-run",
                                           help="Write the exact commit tree to this folder instead."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    create_pr: bool = typer.Option(False, "--create-pr", help="Open a pull request instead of committing to main."),
    allow_partial: bool = typer.Option(False, "--allow-partial",
                                       help="Also push runs that evaluated fewer trajectories than selected."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also push this `loopnav report` folder, as report/."),
) -> None:
    """Upload results and per-trajectory rows to a Hub dataset repo in one commit, with a dataset card."""
    from leaderboard.hub import PushError, build_commit, push, report_files, run_files, write_tree
    from leaderboard.results import ResultsError, load_runs

    try:
        runs = load_runs(results)
        extra = report_files(report) if report is not None else []
        if dry_run is not None:
            written = write_tree(build_commit([*run_files(runs, allow_partial), *extra], repo_id), dry_run)
            console.print(f"[green]dry run:[/] wrote {len(written)} files of the commit to {dry_run} "
                          "(nothing uploaded)")
            return
        info = push(runs, repo_id, private=private, create_pr=create_pr, allow_partial=allow_partial, extra=extra)
    except (ResultsError, PushError, FileNotFoundError) as err:
        fail(str(err))
    console.print(f"[green]pushed[/] {len(runs)} run(s) to {info.pr_url or info.commit_url}")


weights_app = typer.Typer(
    help="Locate, verify (sha256), download and convert the pretrained weights of the metrics (LPIPS, DreamSim, FVD) "
         "and of the published models (Oasis-500M, WorldMem, NWM).",
    pretty_exceptions_show_locals=False, no_args_is_help=True)
app.add_typer(weights_app, name="weights", rich_help_panel=EVAL)
_WEIGHT_METRICS = typer.Argument(None, help="What to include: lpips, dreamsim, fvd, oasis, worldmem, nwm "
                                            "(default: all).")
_WEIGHTS_EXIT = {"verified": 0, "incomplete": 1, "unverifiable": 3}


def _registry():
    """The weights registry with the published models' files in it (published/weights.py registers them)."""
    import published.weights  # noqa: F401
    from loopnav_bench.metrics import weights

    return weights


@weights_app.command("list")
def weights_list() -> None:
    """Every weight file loopnav knows: where it goes, its upstream URL and how it is verified."""
    REGISTRY = _registry().REGISTRY

    columns = ("file", "variants", "path", "check", "expected", "MiB", "url")
    rows = [(entry.id, ",".join(entry.variants), str(entry.path()), entry.check,
             entry.sha256 or entry.sha256_prefix or "not established",
             f"{entry.approx_mb or (entry.size or 0) / 2 ** 20:.3g}" if entry.approx_mb or entry.size else "?",
             entry.url + (f" [{entry.archive_member}]" if entry.archive_member else "")) for entry in REGISTRY]
    table = Table(title="metric weight files")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    # narrow terminals: one block per file, a field per line
    blocks = [_fields(row[0], zip(columns[1:], row[1:])) for row in rows]
    console.print(FitWidth(table, Group(Text("metric weight files", style="bold"), *blocks)))


def _fields(title: str, fields):
    """`title`, then one indented `name value` line per field; long values (paths, URLs) fold within their column."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, width=1)
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in fields:
        grid.add_row("", name, value)
    return Group(Text(title, overflow="fold"), grid)


@weights_app.command("check")
def weights_check(
    metrics: Optional[list[str]] = _WEIGHT_METRICS,
    all_variants: bool = typer.Option(False, "--all-variants", help="Also check non-default variants (DreamSim "
                                                                    "dino_vitb16, clip_vitb32, open_clip_vitb32)."),
    as_json: bool = typer.Option(False, "--json", help="Print the status rows as JSON."),
) -> None:
    """Hash the weight files the metrics need, or those of the published models named (oasis, worldmem, nwm).
    Exit 0: all present and verified; 1: something missing or mismatched; 3: all present but some have no upstream
    hash to check against."""
    from loopnav_bench.metrics.weights import ALLOW_UNVERIFIED_ENV, metric_names, overall, weights_status
    from published.weights import FILES

    _registry()
    if unknown := sorted(set(metrics or []) - set(metric_names())):
        fail(f"unknown metric or model {unknown}; choose from {metric_names()}")
    published = {f.metric for f in FILES}
    metrics = metrics or [name for name in metric_names() if name not in published]  # models only when named
    rows = list(weights_status(metrics, all_variants).values())
    verdict = overall(rows)
    if as_json:
        print(json.dumps({"overall": verdict, "files": rows}, indent=2))
        raise typer.Exit(_WEIGHTS_EXIT[verdict])

    colours = {"verified": "green", "unverifiable": "yellow", "mismatch": "red", "missing": "red"}

    def table(with_paths: bool) -> Table:
        grid = Table(title="weight files")
        grid.add_column("file", no_wrap=with_paths, overflow="fold")
        for column in ("status", "check", *(["path"] if with_paths else []), "sha256"):
            grid.add_column(column, no_wrap=True)
        for row in rows:
            grid.add_row(row["id"], f"[{colours[row['status']]}]{row['status']}[/]", row["check"],
                         *([row["path"]] if with_paths else []), (row["sha256"] or "")[:16])
        return grid

    # narrow terminals: the paths under the table, instead of a column folded into 5-line cells
    paths = [_fields(row["id"], [("path", row["path"])]) for row in rows]
    console.print(FitWidth(table(with_paths=True), Group(table(with_paths=False), *paths)))
    console.print({"verified": "[green]all weight files present and verified[/]",
                   "incomplete": "[red]some weight files are missing or fail their hash[/]: `loopnav weights download "
                                 "METRIC` (online) or place them at the paths above",
                   "unverifiable": f"[yellow]all present; some cannot be verified (no upstream sha256): they are used "
                                   f"only with {ALLOW_UNVERIFIED_ENV}=1 and results are marked unverified[/]"}[verdict])
    raise typer.Exit(_WEIGHTS_EXIT[verdict])


@weights_app.command("download")
def weights_download(
    metric: str = typer.Argument(..., help="lpips, dreamsim, fvd, or a published model: oasis, worldmem, nwm."),
    variant: Optional[str] = typer.Option(None, help="Metric variant, e.g. dreamsim: ensemble (default), dino_vitb16, "
                                                     "clip_vitb32, open_clip_vitb32."),
    force: bool = typer.Option(False, help="Download again even if the files are present."),
    file: Optional[str] = typer.Option(None, "--file", help="nwm: the checkpoint's name in the gated facebook/nwm "
                                                            "repo (upstream publishes no fixed name)."),
) -> None:
    """Fetch weight files from their upstream URLs or Hugging Face repos (needs internet; HF_TOKEN for gated ones),
    then verify them. Pickled checkpoints are then converted once with `loopnav weights convert`."""
    weights = _registry()
    try:
        with progress_bar() as progress:
            rows = weights.download(metric, variant, progress=progress, force=force, hub_file=file)
    except (weights.WeightsDownloadError, ValueError) as err:
        fail(str(err))
    for row in rows.values():
        console.print(f"{row['status']:>12}  {row['path']}")
    if any(row["status"] == "missing" for row in rows.values()):
        console.print(f"then convert the pickled checkpoints once: `loopnav weights convert {metric}`")


@weights_app.command("convert")
def weights_convert(
    model: str = typer.Argument(..., help="worldmem or nwm: the models whose checkpoints are pickled."),
    source: Optional[Path] = typer.Argument(None, help="A pickled checkpoint obtained elsewhere (default: the "
                                                       "downloaded one); only with a model of one checkpoint."),
) -> None:
    """Unpickle a downloaded checkpoint ONCE and write its tensors as safetensors, which is all evaluation reads.
    Unpickling can run code hidden in the file: torch's restricted loader (weights_only) is used, and a file that
    needs more is refused; still, only convert files from the source you meant."""
    from published.weights import CONVERT_KEYS

    weights = _registry()
    targets = [e for e in weights.REGISTRY if e.metric == model and e.converted_from]
    if not targets:
        fail(f"{model!r} has no pickled checkpoint to convert; models with one: "
             f"{', '.join(sorted({e.metric for e in weights.REGISTRY if e.converted_from}))}")
    if source is not None and len(targets) > 1:
        fail(f"{model} has {len(targets)} checkpoints ({', '.join(e.converted_from for e in targets)}): convert the "
             "downloaded ones (no SOURCE), or place a file where `loopnav weights path` says")
    for entry in targets:
        pickled = source or next(e for e in weights.REGISTRY if e.id == entry.converted_from).path()
        console.print(f"[yellow]warning:[/] unpickling {pickled} (torch.load, weights_only=True); only convert a "
                      "checkpoint from the source you meant")
        try:
            written = weights.convert(entry.id, source, CONVERT_KEYS[entry.converted_from])
        except (FileNotFoundError, ValueError) as err:
            fail(str(err))
        console.print(f"[green]wrote[/] {written}")


@weights_app.command("path")
def weights_path(metrics: Optional[list[str]] = _WEIGHT_METRICS) -> None:
    """Print where each weight file belongs (one path per line), for placing files by hand."""
    weights = _registry()
    REGISTRY, metric_names = weights.REGISTRY, weights.metric_names

    if unknown := sorted(set(metrics or []) - set(metric_names())):
        fail(f"unknown metric {unknown}; choose from {metric_names()}")
    for entry in REGISTRY:
        if not metrics or entry.metric in metrics:
            print(entry.path())


@app.command(rich_help_panel=TRAIN)
def train(
    model: str = typer.Option("worldpack", help="A model that trains (`loopnav models`) or autoencoder."),
    data: Path = typer.Option(..., help="A `loopnav prepare` folder (its train split)."),
    output_dir: Path = typer.Option(Path("runs/worldpack"), help="Checkpoints go here (step-N/ folders and `latest`)."),
    preset: str = typer.Option("tiny", help="Model size: tiny (CPU, minutes) or small (GPU)."),
    model_args: Optional[str] = typer.Option(None, "--model-args", "-a", help="k=v,... e.g. variant=base; a quoted "
                                             "value (k='2024') stays text."),
    steps: Optional[int] = _count(None, help="Optimizer steps (default: the preset's)."),
    resume: bool = typer.Option(False, rich_help_panel="Resuming", help="Continue from the latest checkpoint."),
    allow_changed_settings: bool = typer.Option(False, "--allow-changed-settings", rich_help_panel="Resuming",
                                                help="With --resume: go on with changed settings (recorded)."),
    batch_size: Optional[int] = _count(None, help="Global batch size, split over torchrun processes."),
    lr: Optional[float] = typer.Option(None, callback=_positive_finite, help="Peak learning rate (default: preset's)."),
    seed: int = typer.Option(0, help="Seed of batches, noise and initialisation."),
    device: str = _DEVICE,
    save_every: int = _count(500, help="Save a checkpoint every N steps."),
    threads: Optional[int] = _count(None, help="Torch threads per process (default: the cores)."),
) -> None:
    """Train a world model (run under `torchrun --nproc-per-node N` for data-parallel training)."""
    from loopnav_bench.models import parse_model_args
    from loopnav_bench.registry import UnknownNameError
    from loopnav_bench.schema import TrajectoryError
    from loopnav_bench.shards import ShardError
    from loopnav_bench.train import TrainOptions
    from loopnav_bench.train import train as run_train

    try:
        options = TrainOptions(data=data, output_dir=output_dir, preset=preset, steps=steps, resume=resume,
                               allow_changed_settings=allow_changed_settings,
                               batch_size=batch_size, lr=lr, seed=seed, device=device, save_every=save_every,
                               threads=threads, model_args=parse_model_args(model_args))
        with progress_bar() as progress:
            final = run_train(model, options, progress)
    except (ShardError, TrajectoryError, FileNotFoundError, FileExistsError, ValueError, UnknownNameError) as err:
        fail(str(err))
    console.print(Text.assemble(("checkpoint ", "green"), str(final)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
