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

from loopnav_bench.ablation import DEFAULT_KEEP_RECENT
from loopnav_bench.console import FitWidth, console, progress_bar
from loopnav_bench.distributed import DEFAULT_DEVICE

app = typer.Typer(
    name="loopnav",
    help="Measure whether a video world model keeps a place consistent when it comes back to it.",
    pretty_exceptions_show_locals=False,  # tracebacks must never print tokens or large arrays
    no_args_is_help=True,
    rich_markup_mode="rich",
)

DATA, EVAL, TRAIN = "Data", "Evaluation", "Training"


def _csv(text: Optional[str], cast=str) -> Optional[list]:
    return None if text is None else [cast(part.strip()) for part in text.split(",") if part.strip()]


def fail(message: str) -> None:
    """Print a clear error and exit non-zero (no traceback: the message names the file and the problem)."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


@app.command(rich_help_panel=DATA)
def prepare(
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for shards and manifest.json."),
    source: str = typer.Option("vizdoom", help="Data source: vizdoom (embedded, default), loopnav or recon."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="Local raw data directory (loopnav, recon)."),
    hub_repo: Optional[str] = typer.Option(None, help="Fetch LoopNav rows from this Hub dataset repo "
                                                      "(e.g. kevinLian/LoopNav)."),
    split: Optional[str] = typer.Option(None, help="Comma-separated splits to prepare (default: all)."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated tasks, e.g. ABA,ABCA."),
    ranges: Optional[str] = typer.Option(None, help="Comma-separated navigation ranges, e.g. 5,15,30,50."),
    limit: Optional[int] = typer.Option(None, help="At most N trajectories per split (for trying things out)."),
    context_frames: Optional[int] = typer.Option(None, help="RECON: frames of context before the split point."),
    split_file: Optional[Path] = typer.Option(None, help="recon: JSON {split: [names]} or NoMaD data_splits folder."),
    preset: Optional[str] = typer.Option(None, help="vizdoom: a named set (demo, full)."),
    per_cell: Optional[int] = typer.Option(None, help="vizdoom: trajectories per task, range and split."),
    size: Optional[int] = typer.Option(None, help="vizdoom: frame size in pixels (64 or 128)."),
    seed: Optional[int] = typer.Option(None, help="vizdoom: generation seed."),
    workers: int = typer.Option(1, help="Worker processes that load or generate trajectories."),
    overwrite: bool = typer.Option(False, help="Replace an existing set in --out prepared with other settings."),
) -> None:
    """Convert a data source into webdataset shards with poses, actions and a manifest."""
    from loopnav_bench.registry import UnknownNameError
    from loopnav_bench.shards import ShardError
    from loopnav_bench.shards import prepare as run_prepare
    from loopnav_bench.sources import source_class

    options = {"input": input, "hub_repo": hub_repo, "splits": _csv(split), "tasks": _csv(tasks),
               "ranges": _csv(ranges, int), "limit": limit, "context_frames": context_frames, "split_file": split_file,
               "preset": preset,
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
    console.print(f"[green]wrote[/] {out / 'manifest.json'}")


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
) -> None:
    """Show a shard set's manifest and one trajectory's summary."""
    from loopnav_bench.schema import TrajectoryError
    from loopnav_bench.shards import ShardError, load_manifest, read_trajectories

    try:
        manifest = load_manifest(path)
        traj = next((t for t in read_trajectories(path, split) if id is None or t.id == id), None)
    except (ShardError, TrajectoryError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    if traj is None:
        fail(f"{path}: no trajectory {id!r}" + (f" in split {split!r}" if split else ""))
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


_METRICS = typer.Option(None, help="Comma-separated metrics: frame metrics (ssim, psnr, lpips, dreamsim) and fvd. "
                                   "Default: all.")
_EVAL_SIZE = typer.Option(None, "--eval-size",
                          help="Score at N or HxW pixels (e.g. 64, 64x96); default: the data's native size.")
_FVD_MODE = typer.Option("default", "--fvd-mode", help="FVD settings: default or loopnav-v1.")
_FVD_COVARIANCE = typer.Option("population", "--fvd-covariance",
                               help="Default-mode FVD covariance: population (StyleGAN-V) or sample (np.cov, N-1).")
_DEVICE = typer.Option(DEFAULT_DEVICE, help="Torch device: auto (CUDA when there is one), cpu, cuda or cuda:N.")


@app.command(rich_help_panel=EVAL)
def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="A registered model (see `loopnav models`)."),
    data: Path = typer.Option(..., "--data", "-d", help="A directory written by `loopnav prepare`."),
    model_args: Optional[str] = typer.Option(None, "--model-args", "--model_args", "-a",
                                             help="k=v,k2=v2 for the model."),
    checkpoint: Optional[Path] = typer.Option(None, help="Model checkpoint file or folder (its sha256 keys the run)."),
    split: str = typer.Option("test", help="Comma-separated splits."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated tasks, e.g. ABA,ABCA (default: all)."),
    ranges: Optional[str] = typer.Option(None, help="Comma-separated ranges, e.g. 5,15 (default: all)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N selected trajectories (for trying things out)."),
    metrics: Optional[str] = _METRICS,
    eval_size: Optional[str] = _EVAL_SIZE,
    output_dir: Path = typer.Option(Path("results"), "--output-dir", "--output_path", "-o", help="Where results go."),
    device: str = _DEVICE,
    batch_size: int = typer.Option(8, "--batch-size", "--batch_size", help="Trajectories per model call."),
    seed: int = typer.Option(0, help="Run seed; each trajectory's rollout seed derives from it and the trajectory id."),
    fvd_mode: str = _FVD_MODE,
    fvd_covariance: str = _FVD_COVARIANCE,
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Reuse finished rows of a run with the same settings."),
    label: Optional[str] = typer.Option(None, help="Name of this entry on the leaderboard (default: the model name), "
                                                   "e.g. to tell variants or checkpoints of one model apart."),
    context_ablation: str = typer.Option("none", "--context-ablation",
                                         help="none, or swap: context frames older than the last --keep-recent come "
                                              "from a trajectory of another location (entry `<entry>+swap`)."),
    keep_recent: int = typer.Option(DEFAULT_KEEP_RECENT, "--keep-recent",
                                    help="Context frames the swap ablation leaves as they are."),
) -> None:
    """Roll a model out on the return legs, save its predictions, score them and write results (torchrun-ready)."""
    from loopnav_bench.evaluate import EvalConfig, parse_eval_size
    from loopnav_bench.evaluate import evaluate as run_evaluate
    from loopnav_bench.models import parse_model_args
    from loopnav_bench.registry import UnknownNameError

    try:
        config = EvalConfig(data=data, output_dir=output_dir, model=model, model_args=parse_model_args(model_args),
                            checkpoint=str(checkpoint) if checkpoint else None, split=_csv(split), tasks=_csv(tasks),
                            ranges=_csv(ranges, int), limit=limit, metrics=_csv(metrics),
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
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "--output_path", "-o", help="Default: the run's."),
    device: str = _DEVICE,
    batch_size: int = typer.Option(32, "--batch-size", "--batch_size", help="Frames per metric pass."),
    fvd_mode: str = _FVD_MODE,
    fvd_covariance: str = _FVD_COVARIANCE,
    resume: bool = typer.Option(False, "--resume/--no-resume", help="Keep rows already scored with the same settings."),
) -> None:
    """Re-score saved predictions without the model (other metrics, another evaluation size, new weights)."""
    from loopnav_bench.evaluate import parse_eval_size
    from loopnav_bench.evaluate import score as run_score

    try:
        with progress_bar() as progress:
            outcome = run_score(predictions, data=data, output_dir=output_dir, metrics=_csv(metrics),
                                eval_size=parse_eval_size(eval_size), fvd_mode=fvd_mode,
                                fvd_covariance=fvd_covariance, device=device,
                                metric_batch_size=batch_size, resume=resume, progress=progress)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    if outcome is not None:
        _print_results(outcome)


@app.command(rich_help_panel=EVAL)
def models() -> None:
    """List the registered world models (entry-point group loopnav.models), which of them `loopnav train` can train,
    the checkpoints each ships (`--checkpoint NAME`), and the package that registers each."""
    from loopnav_bench.registry import MODELS, TRAINERS

    trainable = set(TRAINERS.names())
    table = Table(title="world models")
    for column in ("name", "entry", "trains", "shipped checkpoints", "package"):
        table.add_column(column, overflow="fold")
    for name, entry in sorted(MODELS.entries().items()):
        table.add_row(name, entry.value, "yes" if name in trainable else "", ", ".join(_shipped(entry)),
                      entry.dist.name if entry.dist else "?")
    console.print(table)


def _shipped(entry) -> list[str]:
    """The checkpoints a model ships beside its module, found without importing it (so without torch)."""
    import importlib.util

    from loopnav_bench.models import SHIPPED_DIR, shipped_checkpoints

    spec = importlib.util.find_spec(entry.module)
    return list(shipped_checkpoints(Path(spec.origin).parent / SHIPPED_DIR, entry.name)) if spec and spec.origin else []


def _print_results(outcome) -> None:
    from loopnav_bench.metrics.weights import short_reason

    results = outcome.results
    names = [n for n, s in results["metrics"].items() if n != "fvd" and s["available"]]
    title = f"{results['model']}: {results['n_trajectories']['effective']} trajectories at {results['eval_size']}"

    def table(separator: str) -> Table:  # mean and stderr on one line, or on two where the terminal is narrow
        grid = Table(title=title)
        grid.add_column("cell", no_wrap=True)
        for column in ("n", "context", *names):
            grid.add_column(column, justify="right", no_wrap=True)
        for key, cell in results["results"].items():
            values = [f"{cell[n]['mean']:.4f}{separator}±{cell[n]['stderr']:.3f}" if cell.get(n) else "—"
                      for n in names]
            grid.add_row(key, str(cell["n"]), f"{cell['context_len_mean']:.0f}", *values)
        return grid

    console.print(FitWidth(table(""), table("\n")))
    for name, status in results["metrics"].items():
        if not status["available"]:
            console.print(f"[yellow]{name} n/a:[/] {short_reason(status.get('reason_code'), status['reason'])}")
    for split, fvd in results["fvd"].items():
        if fvd["value"] is not None:
            cells = ", ".join(f"{key} {cell['value']:.2f}" for key, cell in fvd["cells"].items()
                              if cell["value"] is not None)
            console.print(f"FVD ({split}, {fvd['mode']}): {fvd['value']:.2f} over {fvd['n_videos']} videos; "
                          f"per cell: {cells}")
    if outcome.resumed:
        console.print(f"resumed {outcome.resumed} of {results['n_trajectories']['effective']} trajectories from "
                      f"{outcome.results['run_dir']}")
    console.print(f"[green]wrote[/] {outcome.results_path} and {outcome.samples_path.name}")


leaderboard_app = typer.Typer(help="Rank evaluation results (tables, plots) and push them to the Hub.",
                              pretty_exceptions_show_locals=False)
app.add_typer(leaderboard_app, name="leaderboard", rich_help_panel=EVAL)
_RESULTS = typer.Option(None, "--results", "-r", help="Directory of `loopnav evaluate` outputs (searched recursively).")


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

    from leaderboard.memory import plot_revisit
    from leaderboard.plots import plot_leaderboard
    from leaderboard.results import ResultsError, group_runs, load_runs
    from leaderboard.table import FORMATS, available_metrics, build_leaderboard

    if results is None:
        fail("--results DIR is required (a directory written by `loopnav evaluate`)")
    if format not in FORMATS:
        fail(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    try:
        groups = group_runs(load_runs(results, skip=lambda message: console.print(f"[yellow]skipped:[/] {message}")))
        board = build_leaderboard(groups, _csv(metric), reference=reference)
        written = plot_leaderboard(groups, _csv(metric) or available_metrics(groups), plot) if plot else []
        for table in board.tables if plot else []:
            written += plot_revisit(table.revisit, table.group.key.title, plot / table.group.key.slug, board.bootstrap)
    except (ResultsError, FileNotFoundError) as err:
        fail(str(err))
    rendered = FORMATS[format](board)
    if format == "rich":
        Console().print(rendered)
    else:
        print(rendered, end="")
    for path in written:
        console.print(f"[green]wrote[/] {path}")


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
        groups = group_runs(load_runs(results, skip=lambda message: console.print(f"[yellow]skipped:[/] {message}")))
        comparisons = compare(groups, a, b, _csv(metric))
    except (ResultsError, FileNotFoundError) as err:
        fail(str(err))
    renderers[format](comparisons)


@leaderboard_app.command("paper")
def leaderboard_paper(
    results: Path = typer.Option(..., "--results", "-r", help="Directory of `loopnav evaluate` outputs."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for paper.md and its figures."),
    bench: Optional[Path] = typer.Option(None, "--bench",
                                         help="JSON of benchmarks/bench_worldpack.py --out, for Table 4."),
    frames: int = typer.Option(20, "--frames", min=1, help="Terminal frames of the return leg in Figure 4."),
) -> None:
    """The WorldPack paper's Tables 1-2 and 4, Figures 4-5 and a claims check, as markdown and PNGs."""
    from leaderboard.paper import write_paper
    from leaderboard.results import group_runs, load_runs

    try:
        groups = group_runs(load_runs(results, skip=lambda message: console.print(f"[yellow]skipped:[/] {message}")))
        written = write_paper(groups, out, bench, frames)
    except (ValueError, FileNotFoundError) as err:  # ResultsError, or a --bench file that is not JSON
        fail(str(err))
    for path in written:
        console.print(f"[green]wrote[/] {path}")


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
) -> None:
    """Upload results and per-trajectory rows to a Hub dataset repo in one commit, with a dataset card."""
    from leaderboard.hub import PushError, build_commit, push, run_files, write_tree
    from leaderboard.results import ResultsError, load_runs

    try:
        runs = load_runs(results)
        if dry_run is not None:
            written = write_tree(build_commit(run_files(runs, allow_partial), repo_id), dry_run)
            console.print(f"[green]dry run:[/] wrote {len(written)} files of the commit to {dry_run} "
                          "(nothing uploaded)")
            return
        info = push(runs, repo_id, private=private, create_pr=create_pr, allow_partial=allow_partial)
    except (ResultsError, PushError, FileNotFoundError) as err:
        fail(str(err))
    console.print(f"[green]pushed[/] {len(runs)} run(s) to {info.pr_url or info.commit_url}")


weights_app = typer.Typer(
    help="Locate, verify (sha256) and download the pretrained weights of LPIPS, DreamSim and FVD.",
    pretty_exceptions_show_locals=False, no_args_is_help=True)
app.add_typer(weights_app, name="weights", rich_help_panel=EVAL)
_WEIGHT_METRICS = typer.Argument(None, help="Metrics to include: lpips, dreamsim, fvd (default: all).")
_WEIGHTS_EXIT = {"verified": 0, "incomplete": 1, "unverifiable": 3}


@weights_app.command("list")
def weights_list() -> None:
    """Every weight file loopnav knows: where it goes, its upstream URL and how it is verified."""
    from loopnav_bench.metrics.weights import REGISTRY

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
    """Hash the weight files the metrics need. Exit 0: all present and verified; 1: something missing or
    mismatched; 3: all present but some have no upstream hash to check against."""
    from loopnav_bench.metrics.weights import ALLOW_UNVERIFIED_ENV, metric_names, overall, weights_status

    if unknown := sorted(set(metrics or []) - set(metric_names())):
        fail(f"unknown metric {unknown}; choose from {metric_names()}")
    rows = list(weights_status(metrics, all_variants).values())
    verdict = overall(rows)
    if as_json:
        print(json.dumps({"overall": verdict, "files": rows}, indent=2))
        raise typer.Exit(_WEIGHTS_EXIT[verdict])

    colours = {"verified": "green", "unverifiable": "yellow", "mismatch": "red", "missing": "red"}

    def table(with_paths: bool) -> Table:
        grid = Table(title="metric weights")
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
    metric: str = typer.Argument(..., help="lpips, dreamsim or fvd."),
    variant: Optional[str] = typer.Option(None, help="Metric variant, e.g. dreamsim: ensemble (default), dino_vitb16, "
                                                     "clip_vitb32, open_clip_vitb32."),
    force: bool = typer.Option(False, help="Download again even if the files are present."),
) -> None:
    """Fetch a metric's weight files from their upstream URLs (needs internet), then verify them."""
    from loopnav_bench.metrics.weights import WeightsDownloadError, download

    try:
        with progress_bar() as progress:
            rows = download(metric, variant, progress=progress, force=force)
    except (WeightsDownloadError, ValueError) as err:
        fail(str(err))
    for row in rows.values():
        console.print(f"{row['status']:>12}  {row['path']}")


@weights_app.command("path")
def weights_path(metrics: Optional[list[str]] = _WEIGHT_METRICS) -> None:
    """Print where each weight file belongs (one path per line), for placing files by hand."""
    from loopnav_bench.metrics.weights import REGISTRY

    for entry in REGISTRY:
        if not metrics or entry.metric in metrics:
            print(entry.path())


@app.command(rich_help_panel=TRAIN)
def train(
    model: str = typer.Option("worldpack", help="What to train: a model with a registered trainer (see `loopnav "
                                                "models`), or autoencoder (a latent space alone)."),
    data: Path = typer.Option(..., help="A directory written by `loopnav prepare`; its train split is used."),
    output_dir: Path = typer.Option(Path("runs/worldpack"), help="Checkpoints go here (step-N/ folders and `latest`)."),
    preset: str = typer.Option("tiny", help="Model size: tiny (CPU, minutes) or small (GPU)."),
    model_args: Optional[str] = typer.Option(None, "--model-args", "--model_args", "-a", help="k=v,k2=v2 for the "
                                             "model's trainer, e.g. variant=base (worldpack) or autoencoder=PATH."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default: the preset's)."),
    resume: bool = typer.Option(False, help="Continue the run in --output-dir from its latest checkpoint."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size, split over torchrun processes."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default: the preset's)."),
    seed: int = typer.Option(0, help="Seed of batches, noise and initialisation."),
    device: str = _DEVICE,
    save_every: int = typer.Option(500, help="Save a checkpoint every N steps."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads per process (default: the cores available, "
                                                     "split over torchrun's local ranks)."),
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
                               batch_size=batch_size, lr=lr, seed=seed, device=device, save_every=save_every,
                               threads=threads, model_args=parse_model_args(model_args))
        with progress_bar() as progress:
            final = run_train(model, options, progress)
    except (ShardError, TrajectoryError, FileNotFoundError, FileExistsError, ValueError, UnknownNameError) as err:
        fail(str(err))
    console.print(f"[green]checkpoint[/] {final}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
