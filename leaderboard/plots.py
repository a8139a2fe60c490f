"""Per-frame metric curves over the return leg, like WorldPack Figure 4.

Each trajectory's per-frame series is aligned at its END (x = 0 is the last frame, where the agent is back at A),
because loops of one range differ in length and the end is where memory matters. The curves are cut to the shortest
series in the cell, so every point averages the same trajectories; the band is the 95% percentile bootstrap over
trajectories (same resampling as the table). One PNG per (group, task, range) with one panel per metric and one line
per model; cells whose metric weights were unverified get a dagger in the legend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leaderboard.bootstrap import BootstrapSpec, mean_ci
from leaderboard.memory import RevisitCurve
from leaderboard.results import Group, Run, range_order
from leaderboard.table import DAGGER, SET_METRIC, Leaderboard, metric_direction
from loopnav_bench.fileio import OwnedFolder
from loopnav_bench.metrics import cap_values


def end_aligned(series: list[list[float]]) -> np.ndarray:
    """[n, L] array of the last L values of every series, L being the shortest length."""
    length = min(len(s) for s in series)
    return np.array([s[len(s) - length:] for s in series], dtype=np.float64)


def _curves(run: Run, split: str, task: str, range_: str, metric: str) -> np.ndarray | None:
    series = [r["metrics"][metric] for r in run.cell_rows(split, task, range_) if r["metrics"].get(metric)]
    if not series:
        return None
    return cap_values(metric, end_aligned(series))  # PSNR of identical frames is capped as in the table


def cell_figure(group: Group, task: str, range_: str, metrics: list[str], spec: BootstrapSpec = BootstrapSpec(),
                frames: int | None = None, colors: dict[str, str] | None = None) -> Figure | None:
    """One panel per metric, one line per run of `group`, over the return leg of one task and range (its last
    `frames` frames if given; `colors` by model, else by position); None when no run has any of `metrics` there."""
    split = group.key.split
    curves = {(run, m): _curves(run, split, task, range_, m) for run in group.runs for m in metrics}
    if frames is not None:
        curves = {key: None if values is None else values[:, -frames:] for key, values in curves.items()}
    shown = [m for m in metrics if any(curves[run, m] is not None for run in group.runs)]
    if not shown:
        return None
    columns = min(2, len(shown))
    rows = -(-len(shown) // columns)
    fig = Figure(figsize=(6.0 * columns, 4.0 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    any_unverified = False
    for ax, metric in zip(fig.subplots(rows, columns, squeeze=False).flat, shown):
        for i, run in enumerate(group.runs):  # a model keeps its colour in every panel
            color = (colors or {}).get(run.model, f"C{i}")
            values = curves[run, metric]
            if values is None:
                continue
            mean, low, high = mean_ci(values, spec)
            x = np.arange(1 - values.shape[1], 1)
            unverified = run.metric_info(metric).get("verified") is False
            any_unverified |= unverified
            label = f"{run.model}{f' {DAGGER}' if unverified else ''} (n={values.shape[0]})"
            ax.plot(x, mean, lw=1.8, color=color, label=label)
            ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)
        direction = {True: " (higher is better)", False: " (lower is better)", None: ""}[
            metric_direction(group.runs, metric)]
        ax.set(title=f"{metric.upper()}{direction}", xlabel="frames before the end of the return leg (0 = last)",
               ylabel=metric.upper())
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in fig.axes[len(shown):]:
        ax.set_visible(False)
    caption = f"mean over trajectories, band: {spec.text()}"
    if any_unverified:
        caption += f"\n{DAGGER} computed with unverified metric weights"
    fig.suptitle(f"{task}, range {range_} · {group.key.title}\n{caption}", fontsize="medium")
    return fig


def save_png(fig: Figure, folder: OwnedFolder, rel: str) -> Path:
    """Write `fig` to `folder/rel` atomically (a killed run never leaves half a PNG), never over a file loopnav did
    not write."""
    with folder.replace(rel) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return folder.root / rel


def plot_group(group: Group, metrics: list[str], folder: OwnedFolder, spec: BootstrapSpec = BootstrapSpec()
               ) -> list[Path]:
    """Write one PNG per task and range of `group` into `folder`; returns the paths written."""
    metrics = [m for m in metrics if m != SET_METRIC]
    cells = sorted({(c["task"], str(c["range"])) for run in group.runs for c in run.cells
                    if c["split"] == group.key.split}, key=lambda tr: (tr[0], range_order(tr[1])))
    written = []
    for task, range_ in cells:
        fig = cell_figure(group, task, range_, metrics, spec)
        if fig is not None:
            written.append(save_png(fig, folder, f"{group.key.slug}/{task}_range{range_}.png"))
    return written


def plot_leaderboard(groups: list[Group], metrics: list[str], out_dir: Path, board: Leaderboard | None = None
                     ) -> list[Path]:
    """Curves for every group, each in its own sub-folder of `out_dir` (groups are never drawn on one axis); with the
    board, each group's revisit curves beside them."""
    folder = OwnedFolder(out_dir, "loopnav leaderboard --plot")
    written = [path for group in groups for path in plot_group(group, metrics, folder)]
    for table in board.tables if board else []:
        written += plot_revisit(table.revisit, table.group.key.title, folder, table.group.key.slug, board.bootstrap)
    return written


def plot_revisit(curves: list[RevisitCurve], title: str, folder: OwnedFolder, rel_dir: str,
                 spec: BootstrapSpec = BootstrapSpec()) -> list[Path]:
    """One PNG per task (`memory.RevisitCurve`): PSNR per revisit-score bin (left) and the difference to the reference
    (right)."""
    written = []
    for curve in curves:
        fig = Figure(figsize=(12.0, 4.8), layout="constrained")
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2)
        x = np.arange(len(curve.frames))
        labels = [f"{lo:.1f}–{hi:.1f}\n{f} fr / {t} tr" for lo, hi, f, t in
                  zip(curve.edges, curve.edges[1:], curve.frames, curve.trajectories)]
        for ax, bands, ylabel in ((left, curve.psnr, "PSNR (dB)"),
                                  (right, curve.difference, f"PSNR − {curve.reference} (dB)")):
            for i, (model, band) in enumerate(bands.items()):
                mean, low, high = (np.array([np.nan if v is None else v for v in vals]) for vals in
                                   (band.mean, band.low, band.high))
                ax.plot(x, mean, marker="o", lw=1.6, color=f"C{i}", label=model)
                ax.fill_between(x, low, high, color=f"C{i}", alpha=0.15, lw=0)
            ax.set_xticks(x, labels, fontsize="small")
            ax.set(xlabel=f"revisit score: {curve.oracle} PSNR of the target frame (dB)", ylabel=ylabel)
            ax.grid(alpha=0.3)
            if bands:
                ax.legend(fontsize="small")
        right.axhline(0.0, color="black", lw=0.8)
        right.set_title("no reference entry" if curve.reference is None else f"paired difference to {curve.reference}")
        left.set_title("PSNR per revisit-score bin")
        fig.suptitle(f"{curve.task} · {title}\nbands: {spec.text()} (per bin: frames pooled, trajectories resampled)",
                     fontsize="medium")
        written.append(save_png(fig, folder, f"{rel_dir}/revisit_{curve.task}.png"))
    return written
