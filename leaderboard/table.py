"""The leaderboard table, laid out like WorldPack Tables 1-2, and its renderers (rich, markdown, html, json, csv).

Rows are navigation range x model (with the trajectories' mean context and trajectory lengths); columns are
metric x task (ABA, ABCA). A cell is the mean over trajectories of each trajectory's mean per-frame score, with a
percentile-bootstrap 95% interval drawn from the per-trajectory rows. Within each range block the best cell of each
column is bold, judged with the metric's `higher_is_better`; cells computed with unverified metric weights carry a
dagger and are never marked best. FVD is set-level (one number per split, and one per task x range cell as LoopNav
reports it), so it gets its own small table. An oracle entry (one that saw the target frames, e.g. oracle-copy) is
shown last in its range block and never marked best. Below the tables: memory reliance (each entry against its
`+swap` twin) and the revisit curves' binned values (leaderboard/memory.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from rich.console import Group as RichGroup
from rich.table import Table
from rich.text import Text

from leaderboard.bootstrap import BootstrapSpec, mean_ci
from leaderboard.memory import (
    memory_reliance,
    reliance_markdown,
    reliance_records,
    reliance_rich,
    revisit_curves,
)
from leaderboard.paired import Comparison, PairedSpec
from leaderboard.results import Group, ResultsError, Run, range_order
from loopnav_bench.console import FitWidth
from loopnav_bench.metrics import FRAME_METRICS, trajectory_mean
from loopnav_bench.metrics.weights import short_reason

METRIC_ORDER = FRAME_METRICS  # per-frame metrics, in the papers' order
SET_METRIC = "fvd"
DAGGER = "†"


@dataclass
class Cell:
    mean: float | None = None
    low: float | None = None
    high: float | None = None
    n: int = 0
    verified: bool = True
    note: int | None = None  # footnote number explaining an "n/a"
    best: bool = False
    reason: str | None = None       # why "n/a", in full (paths, URLs)
    reason_code: str | None = None  # the same in one word, for CSV

    @property
    def available(self) -> bool:
        return self.mean is not None


@dataclass
class Row:
    range: str
    model: str
    run: Run
    lengths: dict[str, tuple[str, str]]  # task -> (mean context length, mean trajectory length), as text
    cells: dict[tuple[str, str], Cell]  # (metric, task) -> cell

    @property
    def context_len(self) -> str:
        """One value per task, joined by ' / ' (`lengths_header` names the tasks)."""
        return " / ".join(context for context, _ in self.lengths.values())

    @property
    def traj_len(self) -> str:
        return " / ".join(traj for _, traj in self.lengths.values())

    @property
    def label(self) -> str:
        """The entry as the tables show it: an oracle says so, since it is never ranked."""
        return f"{self.model} (oracle)" if self.run.oracle else self.model


@dataclass
class FvdRow:
    run: Run
    cell: Cell  # the whole split
    mode: str
    cells: dict[str, Cell] = field(default_factory=dict)  # "ABA/5" -> that cell's FVD

    @property
    def model(self) -> str:
        return self.run.model


@dataclass
class GroupTable:
    group: Group
    metrics: list[str]
    tasks: list[str]
    higher_is_better: dict[str, bool | None]
    rows: list[Row] = field(default_factory=list)
    fvd: list[FvdRow] = field(default_factory=list)
    fvd_cells: list[str] = field(default_factory=list)  # "task/range" keys of the per-cell FVD columns
    notes: list[str] = field(default_factory=list)
    provenance: list[str] = field(default_factory=list)  # which run files and timestamps; not in the terminal view
    reliance: list[Comparison] = field(default_factory=list)  # entry − entry+swap, paired (memory.py)
    revisit: list[Any] = field(default_factory=list)          # memory.RevisitCurve per task
    _footnotes: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (what, reason) -> models

    def footnote(self, what: str, model: str, reason: str) -> int:
        """Number of the footnote saying `what` for `model` (models with the same reason share one footnote)."""
        models = self._footnotes.setdefault((what, " ".join(reason.split())), [])
        if model not in models:
            models.append(model)
        return list(self._footnotes).index((what, " ".join(reason.split()))) + 1

    @property
    def footnotes(self) -> list[str]:
        """One short line each; models are named only when the note does not hold for every model of the table."""
        everyone = {run.model for run in self.group.runs}
        return [f"{what}: {reason}" if set(models) == everyone else f"{what} for {', '.join(models)}: {reason}"
                for (what, reason), models in self._footnotes.items()]


@dataclass
class Leaderboard:
    tables: list[GroupTable]
    bootstrap: BootstrapSpec
    notes: list[str]


def available_metrics(groups: list[Group]) -> list[str]:
    """Every metric any run reports (FVD included), papers' order first."""
    names = {name for g in groups for run in g.runs for name in run.results["metrics"]}
    return [m for m in (*METRIC_ORDER, SET_METRIC) if m in names] + sorted(names - {*METRIC_ORDER, SET_METRIC})


def _summary(run: Run, split: str, task: str, range_: str) -> dict | None:
    return next((c for c in run.cells
                 if c["split"] == split and c["task"] == task and str(c["range"]) == range_), None)


def _length(summary: dict | None, key: str) -> str:
    return "–" if summary is None or summary.get(key) is None else f"{summary[key]:.4g}"


def _rank_key(row: Row, metric: str, tasks: list[str], higher_is_better: bool | None) -> tuple:
    """Best first by `metric`'s mean over the tasks the row has; rows without it last, then by name."""
    means = [c.mean for t in tasks if (c := row.cells[metric, t]).available and math.isfinite(c.mean)]
    if not means or higher_is_better is None:
        return (1, 0.0, row.model)
    mean = float(np.mean(means))
    return (0, -mean if higher_is_better else mean, row.model)


def _unavailable(table: GroupTable, run: Run, metric: str, reason: str | None = None) -> Cell:
    """An "n/a" cell: a short footnote for the table, the full reason and a one-word code for JSON and CSV."""
    info = run.metric_info(metric)
    reason = info.get("reason") or reason or "not computed"
    code = info.get("reason_code") or ("unavailable" if info.get("available") is False else "not-computed")
    return Cell(note=table.footnote(f"{metric} n/a", run.model, short_reason(info.get("reason_code"), reason)),
                reason=reason, reason_code=code)


def _metric_cell(table: GroupTable, run: Run, task: str, range_: str, metric: str, spec: BootstrapSpec) -> Cell:
    split, info = table.group.key.split, run.metric_info(metric)
    summary = _summary(run, split, task, range_)
    if summary is None:
        return Cell(note=table.footnote(f"{task} range {range_}", run.model, "not evaluated"),
                    reason="not evaluated", reason_code="not-evaluated")
    if info.get("available") is False or summary.get(metric) is None:
        return _unavailable(table, run, metric)
    # the same per-trajectory mean `loopnav evaluate` aggregates (PSNR of identical frames capped, as LoopNav does)
    per_traj = [trajectory_mean(r, metric)[0] for r in run.cell_rows(split, task, range_)
                if r["metrics"].get(metric) is not None]
    expected = summary[metric].get("n")
    if expected is not None and expected != len(per_traj):
        raise ResultsError(f"{run.samples_path}: {len(per_traj)} rows with {metric} for {split}/{task}/{range_}, "
                           f"but {run.results_path.name} says n={expected} (files from different runs?)")
    if not per_traj:
        return _unavailable(table, run, metric, "no per-trajectory rows")
    mean, low, high = mean_ci(np.array(per_traj), spec)
    stored = summary[metric].get("mean")
    if stored is not None and not math.isclose(mean, stored, rel_tol=1e-6, abs_tol=1e-9):
        raise ResultsError(f"{run.samples_path}: rows give {metric} mean {mean:.6g} for {split}/{task}/{range_}, "
                           f"but {run.results_path.name} says {stored:.6g} (files from different runs?)")
    return Cell(float(mean), float(low), float(high), len(per_traj), verified=info.get("verified") is not False)


def _mark_best(cells: list[Cell], higher_is_better: bool | None) -> None:
    """Bold the best verified, finite cell(s); ties all count. Unknown direction: no winner."""
    ranked = [c for c in cells if c.available and c.verified and math.isfinite(c.mean)]
    if higher_is_better is None or not ranked:
        return
    best = (max if higher_is_better else min)(c.mean for c in ranked)
    for c in ranked:
        c.best = c.mean == best


def _split_fvd(run: Run, split: str) -> dict:
    return (run.results.get("fvd") or {}).get(split) or {}


def _fvd_cell(table: GroupTable, run: Run, value: dict | None) -> Cell:
    info = run.metric_info(SET_METRIC)
    if info.get("available") is False or not value or value.get("value") is None:
        return _unavailable(table, run, SET_METRIC, (value or {}).get("reason"))
    return Cell(float(value["value"]), verified=info.get("verified") is not False, n=int(value.get("n_videos") or 0))


def _fvd_row(table: GroupTable, run: Run) -> FvdRow:
    value = _split_fvd(run, table.group.key.split)
    cells = {key: _fvd_cell(table, run, value.get("cells", {}).get(key)) for key in table.fvd_cells}
    return FvdRow(run, _fvd_cell(table, run, value), str(value.get("mode", "")), cells)


def metric_direction(runs: list[Run], metric: str) -> bool | None:
    """Whether higher is better for `metric`, as the runs record it (None if they do not say)."""
    flags = {run.higher_is_better(metric) for run in runs} - {None}
    if len(flags) > 1:
        raise ResultsError(f"runs disagree on whether higher {metric} is better: "
                           + ", ".join(str(r.results_path) for r in runs))
    return flags.pop() if flags else None


def build_group_table(group: Group, metrics: list[str], spec: BootstrapSpec) -> GroupTable:
    split = group.key.split
    per_frame = [m for m in metrics if m != SET_METRIC]
    cells_seen = [c for run in group.runs for c in run.cells if c["split"] == split]
    tasks = sorted({c["task"] for c in cells_seen})
    ranges = sorted({str(c["range"]) for c in cells_seen}, key=range_order)
    table = GroupTable(group, per_frame, tasks, {m: metric_direction(group.runs, m) for m in metrics})
    for range_ in ranges:
        block = []
        for run in group.runs:
            summaries = [_summary(run, split, t, range_) for t in tasks]
            if not any(summaries):
                continue
            cells = {(m, t): _metric_cell(table, run, t, range_, m, spec) for m in per_frame for t in tasks}
            lengths = {t: (_length(s, "context_len_mean"), _length(s, "length_mean")) for t, s in zip(tasks, summaries)}
            block.append(Row(range_, run.model, run, lengths, cells))
        for m in per_frame:
            for t in tasks:
                _mark_best([row.cells[m, t] for row in block if not row.run.oracle], table.higher_is_better[m])
        if per_frame:  # ranked by the first metric; an oracle is never ranked: last in its block
            block.sort(key=lambda row: (row.run.oracle,
                                        *_rank_key(row, per_frame[0], tasks, table.higher_is_better[per_frame[0]])))
        table.rows.extend(block)
    if SET_METRIC in metrics:
        keys = {key for run in group.runs for key in _split_fvd(run, split).get("cells", {})}
        table.fvd_cells = sorted(keys, key=lambda k: (k.split("/")[0], range_order(k.split("/")[1])))
        table.fvd = [_fvd_row(table, run) for run in group.runs]
        ranked = [r for r in table.fvd if not r.run.oracle]
        for column in [[r.cell for r in ranked], *([r.cells[k] for r in ranked] for k in table.fvd_cells)]:
            _mark_best(column, table.higher_is_better[SET_METRIC])
    _add_notes(table)
    return table


def _unverified_reason(run: Run, metric: str) -> str:
    info = run.metric_info(metric).get("info")
    if isinstance(info, dict):
        info = info.get("unverified_reason")
    return str(info) if info else "weights not verified"


def _add_notes(table: GroupTable) -> None:
    group, notes = table.group, table.notes
    flagged = [(row.run, m) for row in table.rows for (m, _), cell in row.cells.items()
               if cell.available and not cell.verified]
    flagged += [(r.run, SET_METRIC) for r in table.fvd if r.cell.available and not r.cell.verified]
    flagged += [(r.run, SET_METRIC) for r in table.fvd for c in r.cells.values() if c.available and not c.verified]
    unverified = sorted({f"{run.model} ({m}: {_unverified_reason(run, m)})" for run, m in flagged})
    if unverified:
        notes.append(f"{DAGGER} computed with unverified metric weights, so never ranked as best: "
                     + "; ".join(unverified))
    if fvd_shown(table):
        notes.append(f"FVD is set-level: one number per model over all trajectories of split {group.key.split} "
                     "(\"all\") and one per task and range, so it has no interval.")
    if table.metrics:
        notes.append(f"Rows within each range ranked by {table.metrics[0].upper()} "
                     f"(mean over {', '.join(table.tasks)}).")
    used = ", ".join(f"{run.model} {run.timestamp}" for run in group.runs)
    table.provenance.append(f"Newest run per model used: {used}.")
    if group.superseded:
        table.provenance.append("Older runs not shown: "
                                + ", ".join(f"{r.model} {r.timestamp}" for r in group.superseded) + ".")
    for run in group.runs:
        counts = run.n_trajectories
        if not run.complete:
            notes.append(f"{run.model}: partial run, {counts['effective']} of {counts['original']} trajectories.")


def add_memory_sections(table: GroupTable, reference: str | None, spec: BootstrapSpec) -> None:
    """Memory reliance (entries with a +swap twin) and revisit curves (groups with an oracle-copy run)."""
    table.reliance, notes = memory_reliance(table.group, table.metrics, PairedSpec(bootstrap=spec))
    table.revisit, revisit_notes = revisit_curves(table.group, reference, spec)
    table.notes += notes + (revisit_notes if table.revisit or reference else [])
    if oracles := [run.model for run in table.group.runs if run.oracle]:
        table.notes.append(f"{', '.join(oracles)}: oracle, saw the target frames; a ceiling, never ranked.")


def build_leaderboard(groups: list[Group], metrics: list[str] | None = None,
                      spec: BootstrapSpec = BootstrapSpec(), reference: str | None = None) -> Leaderboard:
    known = available_metrics(groups)
    if metrics:
        if unknown := [m for m in metrics if m not in known]:
            raise ResultsError(f"unknown metric(s) {', '.join(unknown)}; the results have: {', '.join(known)}")
    tables = [build_group_table(g, metrics or known, spec) for g in groups]
    for table in tables:
        add_memory_sections(table, reference, spec)
    notes = [f"Cells: mean [{spec.text()}]. Best per column within each range in bold."]
    if len(tables) > 1:
        notes.append(f"{len(tables)} separate tables: results on different data manifests, evaluation sizes or splits "
                     "are not ranked against each other.")
    return Leaderboard(tables, spec, notes)


# ---- rendering -------------------------------------------------------------------------------------------------

def num_text(x: float) -> str:
    """About four significant digits: enough to rank, short enough for a cell."""
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.2f}" if abs(x) >= 10 else f"{x:.3f}"


def cell_text(cell: Cell, interval: bool = True) -> str:
    if not cell.available:
        return f"n/a [{cell.note}]"
    text = num_text(cell.mean)
    if interval and cell.low is not None:
        text += f" [{num_text(cell.low)}, {num_text(cell.high)}]"
    return text + ("" if cell.verified else DAGGER)


def arrow(table: GroupTable, metric: str) -> str:
    return {True: " ↑", False: " ↓", None: ""}[table.higher_is_better.get(metric)]


def _columns(table: GroupTable) -> list[tuple[str, str, str]]:
    """(metric, task, header) for every metric column."""
    return [(m, t, f"{m.upper()}{arrow(table, m)} {t}") for m in table.metrics for t in table.tasks]


def shown_columns(table: GroupTable) -> list[tuple[str, str, str]]:
    """The metric columns worth a reader's width: those some model has a number in (the footnotes say why not)."""
    return [c for c in _columns(table) if any(row.cells[c[0], c[1]].available for row in table.rows)]


def fvd_shown(table: GroupTable) -> bool:
    return any(c.available for r in table.fvd for c in _fvd_cells(table, r))


def _fvd_title(table: GroupTable) -> str:
    return f"FVD{arrow(table, SET_METRIC)} (set-level)"


def _fvd_headers(table: GroupTable) -> list[str]:
    return ["all", *(key.replace("/", " ") for key in table.fvd_cells)]


def _fvd_cells(table: GroupTable, row: FvdRow) -> list[Cell]:
    return [row.cell, *(row.cells[key] for key in table.fvd_cells)]


def ci_header(spec: BootstrapSpec) -> str:
    """The one uncertainty convention, named in every header: the mean and its percentile-bootstrap interval."""
    return f"mean [{spec.confidence:.0%} CI]"


def lengths_header(table: GroupTable, what: str) -> str:
    """`context ABA / ABCA`: names the tasks whose values `Row.context_len` joins."""
    return f"{what} {' / '.join(table.tasks)}"


def group_title(table: GroupTable, board: Leaderboard) -> str:
    """What the terminal shows of a group's key: the data path, not its hash, unless only the hash tells two apart."""
    key, path = table.group.key, table.group.runs[0].results["data"].get("path", "?")
    same = [t for t in board.tables if t.group.key.split == key.split and t.group.key.eval_size == key.eval_size
            and t.group.runs[0].results["data"].get("path", "?") == path]
    data = f"data {path}" + (f" (manifest {key.manifest_hash[:12]})" if len(same) > 1 else "")
    return f"split {key.split} · {data} · eval size {key.size_text}"


def _rich_cell(cell: Cell, lines: int = 2) -> Text:
    """Mean on the first line, interval on the second (or both on one line), so wide tables stay legible."""
    if not cell.available:
        return Text(cell_text(cell), style="dim")
    text = cell_text(cell, interval=False)
    if cell.low is not None:
        text += ("\n" if lines == 2 else " ") + f"[{num_text(cell.low)}, {num_text(cell.high)}]"
    return Text(text, style="bold green" if cell.best else "yellow" if not cell.verified else "")


def _label_column(grid: Table, header: str, values: list[str], justify: str = "right") -> None:
    """A column of row labels: as wide as its longest value and never wrapped, so no row loses its name."""
    grid.add_column(header, justify=justify, no_wrap=True, min_width=max(map(len, [*header.split("\n"), *values])))


def _rich_table(table: GroupTable, columns: list[tuple[str, str, str]], title: str, lengths: bool) -> Table:
    """Rows range x model with `columns` of cells, and (`lengths`) the context and trajectory lengths in columns of
    their own. Labels are Text, never read as markup."""
    grid = Table(title=Text(title, style="bold") if title else None)
    _label_column(grid, "range", [row.range for row in table.rows])
    _label_column(grid, "model", [row.label for row in table.rows], justify="left")
    if lengths:
        _label_column(grid, lengths_header(table, "context"), [row.context_len for row in table.rows])
        _label_column(grid, lengths_header(table, "traj len"), [row.traj_len for row in table.rows])
    for _, _, header in columns:
        grid.add_column(header, justify="right", no_wrap=True)
    previous = None
    for row in table.rows:
        if previous is not None and row.range != previous:
            grid.add_section()
        grid.add_row(Text(row.range if row.range != previous else ""), Text(row.label),
                     *(map(Text, (row.context_len, row.traj_len)) if lengths else ()),
                     *(_rich_cell(row.cells[m, t]) for m, t, _ in columns))
        previous = row.range
    return grid


def _range_lengths(table: GroupTable) -> list[tuple[str, str | None, str, str]]:
    """(range, model or None, context, traj len): one line per range where its models agree (the same loops)."""
    found = []
    for range_ in dict.fromkeys(row.range for row in table.rows):
        rows = [row for row in table.rows if row.range == range_]
        if len({(row.context_len, row.traj_len) for row in rows}) == 1:
            found.append((range_, None, rows[0].context_len, rows[0].traj_len))
        else:
            found += [(range_, row.model, row.context_len, row.traj_len) for row in rows]
    return found


def _lengths_table(table: GroupTable) -> Table:
    """The mean context and trajectory lengths, once per range, for the layouts whose tables leave them out."""
    lines = _range_lengths(table)
    tasks = " / ".join(table.tasks)
    grid = Table(title=Text("mean lengths in frames", style="bold"))
    _label_column(grid, "range", [r for r, *_ in lines])
    if any(model for _, model, _, _ in lines):
        _label_column(grid, "model", [model or "" for _, model, _, _ in lines], justify="left")
    _label_column(grid, f"context\n{tasks}", [c for *_, c, _ in lines])
    _label_column(grid, f"traj len\n{tasks}", [t for *_, t in lines])
    for range_, model, context, traj in lines:
        grid.add_row(Text(range_), *([Text(model or "")] if len(grid.columns) == 4 else []), Text(context), Text(traj))
    return grid


def _rich_list(table: GroupTable, columns: list[tuple[str, str, str]]) -> RichGroup:
    """The narrowest layout: one line per value, wrapped between words only, so no number is ever cut."""
    lines = []
    lengths = {(r, m): (c, t) for r, m, c, t in _range_lengths(table)}
    previous = None
    for row in table.rows:
        if row.range != previous:
            lines.append(Text(f"range {row.range}", style="bold"))
            if (row.range, None) in lengths:
                lines += [Text(f"  {lengths_header(table, 'context')}  {row.context_len}"),
                          Text(f"  {lengths_header(table, 'traj len')}  {row.traj_len}")]
            previous = row.range
        lines.append(Text(f"  {row.model}", style="bold"))
        if (row.range, None) not in lengths:
            lines += [Text(f"    {lengths_header(table, 'context')}  {row.context_len}"),
                      Text(f"    {lengths_header(table, 'traj len')}  {row.traj_len}")]
        lines += [Text.assemble(f"    {header}  ", _rich_cell(row.cells[m, t], lines=1)) for m, t, header in columns]
    return RichGroup(*lines)


def _rich_fvd(table: GroupTable) -> FitWidth:
    title, headers = _fvd_title(table), _fvd_headers(table)
    grid = Table(title=Text(title, style="bold"))
    _label_column(grid, "model", [r.model for r in table.fvd], justify="left")
    for header in headers:
        grid.add_column(header, justify="right", no_wrap=True)
    _label_column(grid, "mode", [r.mode for r in table.fvd], justify="left")
    for r in table.fvd:
        grid.add_row(Text(r.model), *(_rich_cell(c) for c in _fvd_cells(table, r)), Text(r.mode))
    lines = [Text(title, style="bold")]
    for r in table.fvd:
        lines.append(Text.assemble("  ", (r.model, "bold"), f"  mode {r.mode}"))
        lines += [Text.assemble(f"    {h}  ", _rich_cell(c, lines=1)) for h, c in zip(headers, _fvd_cells(table, r))]
    return FitWidth(grid, RichGroup(*lines))


def render_rich(board: Leaderboard) -> RichGroup:
    """The widest layout that fits the terminal, and never a cut number: every metric side by side, else one table
    per metric, else one per metric and task, else a vertical list. Metrics that no model has are left out of the
    tables; their footnote says why. Run files and timestamps stay in the json format."""
    parts: list[Any] = []
    for table in board.tables:
        ci = ci_header(board.bootstrap)
        title = f"LoopNav leaderboard · {group_title(table, board)} · {ci}"
        columns = shown_columns(table)
        metrics = list(dict.fromkeys(m for m, _, _ in columns))
        per_metric = [_rich_table(table, [(m, t, t) for m_, t, _ in columns if m_ == m],
                                  f"{m.upper()}{arrow(table, m)} · {ci}", lengths=False) for m in metrics]
        per_cell = [_rich_table(table, [(m, t, t)], f"{m.upper()}{arrow(table, m)} {t} · {ci}", lengths=False)
                    for m, t, _ in columns]
        parts.append(Text(title, style="bold"))  # wraps between words; a layout is chosen by its tables' width
        parts.append(FitWidth(_rich_table(table, columns, "", lengths=True),
                              RichGroup(_lengths_table(table), *per_metric),
                              RichGroup(_lengths_table(table), *per_cell),
                              _rich_list(table, columns)))
        if fvd_shown(table):
            parts.append(_rich_fvd(table))
        parts.extend(reliance_rich(table.reliance))
        parts.extend(Text(f"[{i}] {text}", style="dim") for i, text in enumerate(table.footnotes, 1))
        parts.extend(Text(note, style="dim") for note in table.notes)
        parts.append(Text(""))
    parts.extend(Text(note, style="italic") for note in board.notes)
    return RichGroup(*parts)


def md_row(values: list[str]) -> str:
    return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"


def render_markdown(board: Leaderboard) -> str:
    lines: list[str] = []
    for table in board.tables:
        columns = shown_columns(table)
        lines += [f"### {table.group.key.title}", "",
                  md_row(["range", "model", lengths_header(table, "context"), lengths_header(table, "traj len"),
                          *(h for _, _, h in columns)]),
                  md_row(["---:", ":---", "---:", "---:", *("---:" for _ in columns)])]
        for row in table.rows:
            cells = [(f"**{cell_text(c)}**" if c.best else cell_text(c))
                     for c in (row.cells[m, t] for m, t, _ in columns)]
            lines.append(md_row([row.range, row.label, row.context_len, row.traj_len, *cells]))
        if fvd_shown(table):
            headers = _fvd_headers(table)
            lines += ["", f"{_fvd_title(table)}:", "", md_row(["model", *headers, "mode"]),
                      md_row([":---", *("---:" for _ in headers), ":---"])]
            lines += [md_row([r.model,
                               *(f"**{cell_text(c)}**" if c.best else cell_text(c) for c in _fvd_cells(table, r)),
                               r.mode]) for r in table.fvd]
        lines += reliance_markdown(table.reliance)
        lines.append("")
        lines += [f"[{i}] {text}  " for i, text in enumerate(table.footnotes, 1)]
        lines += [f"{note}  " for note in (*table.notes, *table.provenance)]
        lines.append("")
    lines += [f"*{note}*  " for note in board.notes]
    return "\n".join(lines) + "\n"


def render_html(board: Leaderboard) -> str:
    """A complete, styled page; leaderboard.html owns the page skeleton it shares with `loopnav report`."""
    from leaderboard.html import render_html as page

    return page(board)


def _cell_record(cell: Cell, table: GroupTable) -> dict[str, Any]:
    return {"mean": cell.mean, "ci_low": cell.low, "ci_high": cell.high, "n": cell.n, "available": cell.available,
            "verified": cell.verified, "best": cell.best,
            "note": table.footnotes[cell.note - 1] if cell.note else None,
            "reason": cell.reason, "reason_code": cell.reason_code}


def to_records(board: Leaderboard) -> dict[str, Any]:
    """The whole leaderboard as plain data (the json format)."""
    groups = []
    for table in board.tables:
        key = table.group.key
        groups.append({
            "split": key.split, "manifest_hash": key.manifest_hash, "eval_size": key.eval_size, "title": key.title,
            "higher_is_better": table.higher_is_better,
            "runs": [{"model": r.model, "timestamp": r.timestamp, "results_file": str(r.results_path),
                      "n_trajectories": r.n_trajectories} for r in table.group.runs],
            "superseded": [{"model": r.model, "timestamp": r.timestamp, "results_file": str(r.results_path)}
                           for r in table.group.superseded],
            "rows": [{"range": row.range, "model": row.model, "oracle": row.run.oracle,
                      "context_len": row.context_len, "traj_len": row.traj_len,
                      "cells": {m: {t: _cell_record(row.cells[m, t], table) for t in table.tasks}
                                for m in table.metrics}}
                     for row in table.rows],
            "fvd": [{"model": r.model, "mode": r.mode, **_cell_record(r.cell, table),
                     "cells": {key: _cell_record(cell, table) for key, cell in r.cells.items()}} for r in table.fvd],
            "memory_reliance": reliance_records(table.reliance),
            "revisit": [curve.record() for curve in table.revisit],
            "footnotes": table.footnotes, "notes": table.notes, "provenance": table.provenance})
    return {"bootstrap": board.bootstrap.describe(), "groups": groups, "notes": board.notes}


def render_json(board: Leaderboard) -> str:
    return json.dumps(to_records(board), indent=2, default=str) + "\n"


CSV_FIELDS = ("split", "manifest_hash", "eval_size", "range", "model", "task", "metric", "mean", "ci_low", "ci_high",
              "n", "best", "verified", "available", "reason_code",  # the full reasons are in the json format
              "section", "p_holm")  # section: leaderboard, or memory reliance (model "X − X+swap", mean its difference)


def render_csv(board: Leaderboard) -> str:
    """One line per (group, range, model, task, metric); the split's FVD line has range and task "all"."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for group in to_records(board)["groups"]:
        common = {"split": group["split"], "manifest_hash": group["manifest_hash"],
                  "eval_size": "native" if group["eval_size"] is None else "x".join(map(str, group["eval_size"])),
                  "section": "leaderboard"}
        for row in group["rows"]:
            for metric, by_task in row["cells"].items():
                for task, cell in by_task.items():
                    writer.writerow({**common, "range": row["range"], "model": row["model"], "task": task,
                                     "metric": metric, **{k: cell[k] for k in CSV_FIELDS if k in cell}})
        for fvd in group["fvd"]:
            writer.writerow({**common, "range": "all", "model": fvd["model"], "task": "all", "metric": SET_METRIC,
                             **{k: fvd[k] for k in CSV_FIELDS if k in fvd}})
            for key, cell in fvd["cells"].items():
                task, range_ = key.split("/")
                writer.writerow({**common, "range": range_, "model": fvd["model"], "task": task, "metric": SET_METRIC,
                                 **{k: cell[k] for k in CSV_FIELDS if k in cell}})
        for pair in group["memory_reliance"]:
            for item in pair["rows"]:
                writer.writerow({**common, "section": "memory reliance", "model": f"{pair['a']} − {pair['b']}",
                                 **{k: item[k] for k in CSV_FIELDS if k in item}})
    return buffer.getvalue()


FORMATS: dict[str, Callable[[Leaderboard], Any]] = {
    "rich": render_rich, "markdown": render_markdown, "html": render_html, "json": render_json, "csv": render_csv}
