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
from leaderboard.results import Group, Run, range_order
from leaderboard.table import DAGGER, SET_METRIC, metric_direction
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


def plot_leaderboard(groups: list[Group], metrics: list[str], out_dir: Path) -> list[Path]:
    """Curves for every group, each in its own sub-folder of `out_dir` (groups are never drawn on one axis)."""
    folder = OwnedFolder(out_dir, "loopnav leaderboard --plot")
    return [path for group in groups for path in plot_group(group, metrics, folder)]
