"""The `loopnav` command line. Thin: parse options, call the library, print."""

from __future__ import annotations

import inspect as pyinspect
import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from loopnav_bench.console import console, progress_bar

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
    hub_repo: Optional[str] = typer.Option(None, help="Fetch LoopNav rows from this Hub dataset repo (e.g. kevinLian/LoopNav)."),
    split: Optional[str] = typer.Option(None, help="Comma-separated splits to prepare (default: all)."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated tasks, e.g. ABA,ABCA."),
    ranges: Optional[str] = typer.Option(None, help="Comma-separated navigation ranges, e.g. 5,15,30,50."),
    limit: Optional[int] = typer.Option(None, help="At most N trajectories per split (for trying things out)."),
    context_frames: Optional[int] = typer.Option(None, help="RECON: frames of context before the split point."),
    preset: Optional[str] = typer.Option(None, help="vizdoom: a named set (demo, full)."),
    per_cell: Optional[int] = typer.Option(None, help="vizdoom: trajectories per task, range and split."),
    size: Optional[int] = typer.Option(None, help="vizdoom: frame size in pixels (64 or 128)."),
    seed: Optional[int] = typer.Option(None, help="vizdoom: generation seed."),
    workers: int = typer.Option(1, help="Worker processes that load or generate trajectories."),
    overwrite: bool = typer.Option(False, help="Replace an existing set in --out prepared with other settings."),
) -> None:
    """Convert a data source into webdataset shards with poses, actions and a manifest."""
    from loopnav_bench.shards import ShardError, prepare as run_prepare
    from loopnav_bench.sources import source_class

    options = {"input": input, "hub_repo": hub_repo, "splits": _csv(split), "tasks": _csv(tasks),
               "ranges": _csv(ranges, int), "limit": limit, "context_frames": context_frames, "preset": preset,
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
    except (ShardError, ValueError, FileNotFoundError, ConnectionError) as err:
        fail(str(err))
    _print_manifest(manifest)
    console.print(f"[green]wrote[/] {out / 'manifest.json'}")


@app.command(rich_help_panel=DATA)
def validate(path: Path = typer.Argument(..., help="A directory written by `loopnav prepare`.")) -> None:
    """Check a shard set against its manifest: counts, sha256 and schema of every trajectory."""
    from loopnav_bench.schema import TrajectoryError
    from loopnav_bench.shards import ShardError, validate as run_validate

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
        print(json.dumps({"manifest": {k: manifest[k] for k in ("source", "settings", "n", "created")}, "trajectory": summary}, indent=2))
        return
    _print_manifest(manifest)
    table = Table(title=f"trajectory {traj.id}", show_header=False)
    for key, value in summary.items():
        if key != "id":
            table.add_row(key, json.dumps(value) if not isinstance(value, str) else value)
    console.print(table)


def _print_manifest(manifest: dict) -> None:
    table = Table(title=f"{manifest['source']}: {manifest['n']} trajectories")
    for column in ("split", "task", "range", "n"):
        table.add_column(column, justify="right" if column in ("range", "n") else "left")
    for split, info in manifest["splits"].items():
        for task, by_range in info["counts"].items():
            for rng, n in by_range.items():
                table.add_row(split, task, rng, str(n))
    console.print(table)
    for kind in ("skipped", "repaired"):
        if manifest[kind]["n"]:
            console.print(f"{kind}: {manifest[kind]['n']} {manifest[kind]['by_reason']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
