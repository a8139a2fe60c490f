"""The WorldPack paper's tables and figures, from one results folder (`loopnav leaderboard paper`).

Every number comes from the leaderboard's own cells (`table.build_group_table`: per-trajectory means, percentile
bootstrap CIs, best per column, `n/a` with the recorded reason), so the paper and the leaderboard cannot disagree.
`paper.md` holds, per comparable group (data manifest, evaluation size, split):
- Tables 1-2: one table per task, entries x (range x metric), mean ± 95% CI half-width;
- Figure 4: per-frame PSNR and SSIM over the last frames of the ABCA return leg at ranges 30 and 50;
- Figure 5: PSNR and SSIM bars with CIs at ABA range 5 for the WorldPack ablations;
- a claims check: what the paper claims against these numbers, cell by cell and per task pooled over the ranges,
  each a paired test of the two entries over the same trajectories (leaderboard/paired.py), Holm-adjusted over every
  test the check makes;
- memory reliance: each entry against its `+swap` twin, where both were evaluated (leaderboard/memory.py);
and, once, Table 4 (time and peak memory per predicted frame) from `benchmarks/bench_worldpack.py --out`'s JSON.
Entries outside the paper's nine are left out; absent ones are named, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leaderboard.bootstrap import BootstrapSpec
from leaderboard.memory import memory_reliance, reliance_markdown
from leaderboard.paired import POOLED_RANGE, Paired, PairedSpec, compare_runs, diff_text, holm, p_text
from leaderboard.plots import cell_figure, save_png
from leaderboard.results import Group, ResultsError, range_order
from leaderboard.table import (
    DAGGER,
    SET_METRIC,
    Cell,
    GroupTable,
    arrow,
    build_group_table,
    cell_text,
    md_row,
    num_text,
)
from loopnav_bench.fileio import OwnedFolder, read_json

ENTRIES = ("worldpack", "worldpack-full", "worldpack-base", "worldpack-pack-only", "worldpack-retrieval-only", "nwm",
           "diamond", "copy-last", "nearest-pose")
TABLES = {"ABA": "Table 1 · ABA (spatial memory retrieval)", "ABCA": "Table 2 · ABCA (spatial reasoning)"}
PAPER_RANGES = ("5", "15", "30", "50")
METRICS = ("ssim", "psnr", "lpips", "dreamsim", SET_METRIC)
PAPER = "paper.md"
FIGURE4 = ("worldpack-full", "worldpack-pack-only", "worldpack-base", "worldpack")
FIGURE4_CELLS = "ABCA", ("30", "50")
FIGURE5 = ("worldpack-base", "worldpack-pack-only", "worldpack-retrieval-only", "worldpack-full", "worldpack")
FIGURE5_CELL = "ABA", "5"
CLAIMED = ("worldpack", "worldpack-full")
BASELINES = ("nwm", "diamond")
ABLATION = (("worldpack-full", "worldpack-pack-only"), ("worldpack-pack-only", "worldpack-base"),
            ("worldpack-full", "worldpack-retrieval-only"))
COLORS = {entry: f"C{i}" for i, entry in enumerate(ENTRIES)}  # an entry keeps its colour in every figure
VERDICTS = ("holds", "better, not significant", "does not hold")


@dataclass
class PaperGroup:
    """The cells of one comparable group, for the paper's entries only (so "best" is among them)."""

    table: GroupTable
    models: list[str]                               # paper entries present, in the paper's order
    absent: list[str]
    left_out: list[str]                             # entries of the group that the paper does not have
    ranges: list[str]
    cells: dict[tuple[str, str, str, str], Cell]    # (model, task, range, metric) -> cell

    @property
    def tasks(self) -> list[str]:
        return [t for t in TABLES if t in self.table.tasks]

    def cell(self, model: str, task: str, range_: str, metric: str) -> Cell | None:
        return self.cells.get((model, task, range_, metric))


def _fvd_cell(table: GroupTable, model: str, task: str, range_: str) -> Cell:
    """FVD of one task and range; a run with no per-cell value shows its split-level reason, or says so."""
    row = next(r for r in table.fvd if r.model == model)
    if (cell := row.cells.get(f"{task}/{range_}")) is not None:
        return cell
    if not row.cell.available:
        return row.cell
    return Cell(note=table.footnote(f"{SET_METRIC} n/a", model, "no value per task and range"))


def build_paper_group(group: Group, spec: BootstrapSpec = BootstrapSpec()) -> PaperGroup | None:
    """The paper's cells for `group`, or None if it holds none of the paper's entries."""
    runs = sorted((r for r in group.runs if r.model in ENTRIES), key=lambda r: ENTRIES.index(r.model))
    if not runs:
        return None
    table = build_group_table(Group(group.key, runs, [r for r in group.superseded if r.model in ENTRIES]),
                              list(METRICS), spec)
    models = [r.model for r in runs]
    ranges = sorted({row.range for row in table.rows}, key=range_order)
    rows = {(row.model, row.range): row for row in table.rows}
    cells = {}
    for model in models:
        for task in table.tasks:
            for range_ in ranges:
                row = rows.get((model, range_))
                for metric in METRICS:
                    if metric == SET_METRIC:
                        cells[model, task, range_, metric] = _fvd_cell(table, model, task, range_)
                    elif row is None:
                        cells[model, task, range_, metric] = Cell(
                            note=table.footnote(f"{task} range {range_}", model, "not evaluated"))
                    else:
                        cells[model, task, range_, metric] = row.cells[metric, task]
    return PaperGroup(table, models, [e for e in ENTRIES if e not in models],
                      sorted({r.model for r in group.runs} - set(ENTRIES)), ranges, cells)


# ---- tables ----------------------------------------------------------------------------------------------------

def cell_md(cell: Cell) -> str:
    """Mean [95% interval], as every loopnav table shows it (FVD is set-level: no interval); best in bold."""
    return f"**{cell_text(cell)}**" if cell.best else cell_text(cell)


def task_table(paper: PaperGroup, task: str) -> list[str]:
    """Rows: entries; columns: range x metric, as in the paper's Tables 1-2."""
    columns = [(r, m) for r in paper.ranges for m in METRICS]
    lines = [md_row(["entry", *(f"{r}: {m.upper()}{arrow(paper.table, m)}" for r, m in columns)]),
             md_row([":---", *("---:" for _ in columns)])]
    lines += [md_row([model, *(cell_md(paper.cells[model, task, r, m]) for r, m in columns)])
              for model in paper.models]
    return lines


def bench_table(path: Path | None) -> list[str]:
    """Table 4 from `benchmarks/bench_worldpack.py --out`: time and peak memory per predicted frame, full vs base."""
    if path is None or not Path(path).is_file():
        where = "no benchmark JSON given" if path is None else f"{path} does not exist"
        return [f"Table 4 omitted: {where} (write one with `benchmarks/bench_worldpack.py --out FILE`)."]
    bench = read_json(path)
    try:
        rows = {row["variant"]: row for row in bench["rows"]}
        ratios = bench["ratio_full_over_base"]
        lines = [f"Preset `{bench['preset']}` on {bench['device']}, batch {bench['batch']}, torch {bench['torch']}.",
                 "", md_row(["variant", "context tokens", "time per frame (ms)", "denoiser call (ms)",
                              "peak memory (MB)"]),
                 md_row([":---", "---:", "---:", "---:", "---:"])]
        lines += [md_row([name, str(row["context_tokens"]), f"{row['frame_ms']:.1f}", f"{row['denoiser_ms']:.2f}",
                           f"{row['peak_memory_mb']:.1f}"]) for name, row in rows.items()]
        spread = bench.get("ratio_range", {})  # interleaved rounds: the median ratio with its range

        def ratio(key: str) -> str:
            low_high = f" ({spread[key][0]:.2f}–{spread[key][1]:.2f})" if key in spread else ""
            return f"{ratios[key]:.2f}×{low_high}"

        keys = ("context_tokens", "frame_ms", "denoiser_ms", "peak_memory_mb")
        lines.append(md_row(["full / base", *map(ratio, keys)]))
        if "rounds" in bench:
            lines += ["", f"Medians of {bench['rounds']} interleaved rounds; the ratios' ranges over the rounds in "
                          "brackets."]
    except (KeyError, TypeError) as err:
        raise ResultsError(f"{path}: not a bench_worldpack.py output (missing {err})") from None
    return lines


# ---- claims ----------------------------------------------------------------------------------------------------

def verdict(comparison: Paired | None, alpha: float = PairedSpec.alpha) -> str:
    """Whether A beats B in a paired test: "holds" (A better with Holm-adjusted p < alpha), "better, not
    significant", "does not hold", or "n/a" (a number is missing)."""
    if comparison is None or comparison.higher_is_better is None:
        return "n/a"
    if comparison.better(alpha) == "A":
        return VERDICTS[0]
    ahead = comparison.mean > 0 if comparison.higher_is_better else comparison.mean < 0
    return VERDICTS[1] if ahead else VERDICTS[2]


Key = tuple[str, str, str, str, str]  # (a, b, metric, task, range)


def paired_claims(paper: PaperGroup, pairs: list[tuple[str, str]], metrics: list[str],
                  spec: PairedSpec) -> tuple[dict[Key, Paired], list[str]]:
    """The paired test of every (pair, metric, task, range) the claims look at (`claims` Holm-adjusts them as one
    family), and a note for each pair that cannot be paired (other trajectories, a metric missing)."""
    runs = {run.model: run for run in paper.table.group.runs}
    ranges = claim_ranges(paper)
    found: dict[Key, Paired] = {}
    notes = []
    for a, b in pairs:
        try:
            rows = compare_runs(runs[a], runs[b], paper.table.group.key.split, metrics, spec)
        except ResultsError as err:
            notes.append(f"- `{a}` vs `{b}`: not tested, {err}.")
            continue
        found.update({(a, b, r.metric, r.task, r.range): r for r in rows if r.range in ranges})
    return found, notes


def claim_ranges(paper: PaperGroup) -> list[str]:
    """The ranges a claim is checked at: each range, and the task pooled over them where there are several (with 8
    loops a cell no single cell can survive Holm over the check; 32 loops pooled can)."""
    return [*paper.ranges, *([POOLED_RANGE] if len(paper.ranges) > 1 else [])]


def _where(range_: str) -> str:
    return "pooled over ranges" if range_ == POOLED_RANGE else f"range {range_}"


def _compared(tests: dict[Key, Paired], a: str, b: str, task: str, range_: str, metric: str) -> tuple[str, str]:
    """(verdict, "mean_a vs mean_b, Δ [CI], p_holm") for one cell."""
    item = tests.get((a, b, metric, task, range_))
    if item is None:
        return verdict(None), "n/a"
    return verdict(item), (f"{num_text(item.a_mean)} vs {num_text(item.b_mean)}, Δ {diff_text(item.mean)} "
                           f"[{diff_text(item.ci_low)}, {diff_text(item.ci_high)}], p_holm {p_text(item.p_holm)}")


def _tally(verdicts: list[str]) -> str:
    counted = [v for v in verdicts if v in VERDICTS]
    return (f"{len(counted)} cells: " + ", ".join(f'"{v}" in {verdicts.count(v)}' for v in VERDICTS)
            if counted else "no cell has both numbers")


def claims(paper: PaperGroup, spec: PairedSpec = PairedSpec()) -> list[str]:
    """(a) WorldPack beats NWM and DIAMOND in PSNR and SSIM on every task and range; (b) PSNR ablation order."""
    present = [(a, b) for a in CLAIMED for b in BASELINES if a in paper.models and b in paper.models]
    ablation = [(a, b) for a, b in ABLATION if a in paper.models and b in paper.models]
    tests, untested = paired_claims(paper, present, ["psnr", "ssim"], spec)
    ablation_tests, ablation_untested = paired_claims(paper, ablation, ["psnr"], spec)
    tests.update(ablation_tests)
    for item, adjusted in zip(tests.values(), holm([r.p for r in tests.values()])):  # one family: the whole check
        item.p_holm = adjusted
    items, verdicts, pooled = [*untested], [], []
    for a in CLAIMED:
        for b in BASELINES:
            if missing := [m for m in (a, b) if m not in paper.models]:
                items.append(f"- `{a}` vs `{b}`: not checked, {' and '.join(missing)} absent.")
                continue
            for task in paper.tasks:
                for metric in ("psnr", "ssim"):
                    parts = []
                    for range_ in claim_ranges(paper):
                        result, means = _compared(tests, a, b, task, range_, metric)
                        (pooled if range_ == POOLED_RANGE else verdicts).append(result)
                        parts.append(f"{_where(range_)} {result} ({means})")
                    items.append(f"- `{a}` vs `{b}`, {task} {metric.upper()}: " + "; ".join(parts) + ".")
    summary = f"Summary: {_tally(verdicts)}" + (f"; pooled over ranges, {_tally(pooled)}" if pooled else "")
    lines = ["WorldPack (`worldpack`, `worldpack-full`) is better than `nwm` and `diamond` on every task and range, "
             f"in PSNR and SSIM. {summary}.", "", *items]
    lines += ["", "Ablation order in PSNR, full > pack-only > base and full > retrieval-only:", "", *ablation_untested]
    if missing := [m for pair in ABLATION for m in pair if m not in paper.models]:
        lines.append(f"- not checked where an entry is absent: {_present(list(dict.fromkeys(missing)))}.")
    for task in paper.tasks if ablation else ():
        for range_ in claim_ranges(paper):
            parts = [f"{a.removeprefix('worldpack-')} > {b.removeprefix('worldpack-')} {result} ({means})"
                     for a, b in ablation for result, means in [_compared(tests, a, b, task, range_, "psnr")]]
            lines.append(f"- {task} {_where(range_)}: " + "; ".join(parts) + ".")
    lines += ["", f"Each cell is a paired test of the two entries over the trajectories both evaluated ({spec.text()}; "
              f"Holm over every test of this check, pooled ones too). \"holds\": better with p_holm < {spec.alpha}; "
              f"\"{VERDICTS[1]}\": only the mean difference favours it; \"n/a\": a number is missing. "
              "(Earlier versions asked for disjoint per-entry intervals; a paired test uses that every entry ran on "
              "the same trajectories with the same seeds.)"]
    return lines


# ---- figures ---------------------------------------------------------------------------------------------------

def _subgroup(group: Group, entries: tuple[str, ...]) -> Group:
    return Group(group.key, sorted((r for r in group.runs if r.model in entries), key=lambda r: entries.index(r.model)))


def bar_figure(paper: PaperGroup, entries: tuple[str, ...], task: str, range_: str,
               spec: BootstrapSpec) -> Figure | None:
    """PSNR and SSIM bars with their 95% intervals, one bar per entry; None when no entry has a number there."""
    panels = {m: [(e, c) for e in entries if (c := paper.cell(e, task, range_, m)) is not None and c.available]
              for m in ("psnr", "ssim")}
    if not any(panels.values()):
        return None
    fig = Figure(figsize=(11.0, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (metric, bars) in zip(fig.subplots(1, 2).flat, panels.items()):
        means = [c.mean for _, c in bars]
        errors = [[c.mean - c.low for _, c in bars], [c.high - c.mean for _, c in bars]]  # asymmetric percentile CI
        ax.bar(range(len(bars)), means, yerr=errors, capsize=4, color=[COLORS[e] for e, _ in bars])
        ax.set_xticks(range(len(bars)), [e for e, _ in bars], rotation=20, ha="right")
        ax.set(title=f"{metric.upper()}{arrow(paper.table, metric)}", ylabel=metric.upper())
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{task}, range {range_} · {paper.table.group.key.title}\nbars: mean over trajectories, "
                 f"error bars: {spec.text()}", fontsize="medium")
    return fig


def _figure_lines(title: str, path: Path | None, out_dir: Path, caption: str) -> list[str]:
    if path is None:
        return [f"{title}: not drawn, {caption}.", ""]
    return [f"{title}: {caption}.", "", f"![{title}]({path.relative_to(out_dir).as_posix()})", ""]


# ---- the document ----------------------------------------------------------------------------------------------

def _present(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def group_section(group: Group, out: OwnedFolder, frames: int, spec: BootstrapSpec) -> tuple[list[str], list[Path]]:
    """The markdown of one group and the figures it wrote."""
    lines = [f"## {group.key.title}", ""]
    paper = build_paper_group(group, spec)
    if paper is None:
        others = _present([r.model for r in group.runs])
        return [*lines, f"None of the paper's entries in this group, only {others}.", ""], []
    if paper.absent:
        lines.append(f"Absent entries, skipped: {_present(paper.absent)}.  ")
    if paper.left_out:
        lines.append(f"Not in the paper, left out: {_present(paper.left_out)}.  ")
    if missing := [r for r in PAPER_RANGES if r not in paper.ranges]:
        lines.append(f"Ranges not in these results: {', '.join(missing)}.  ")
    lines.append("")
    for task, title in TABLES.items():
        lines += [f"### {title}", ""]
        lines += task_table(paper, task) if task in paper.tasks else [f"No {task} results in this group."]
        lines.append("")
    lines += [f"[{i}] {text}  " for i, text in enumerate(paper.table.footnotes, 1)]
    lines += [f"{note}  " for note in paper.table.notes]
    lines.append("")

    written = []
    (task, ranges), entries = FIGURE4_CELLS, FIGURE4
    shown = _subgroup(group, entries)
    lines += ["### Figure 4 · per-frame PSNR and SSIM at the end of the return leg", ""]
    for range_ in ranges:
        fig = cell_figure(shown, task, range_, ["psnr", "ssim"], spec, frames, COLORS) if shown.runs else None
        path = save_png(fig, out, f"{group.key.slug}/figure4_{task}_range{range_}.png") if fig is not None else None
        written += [path] if path else []
        drawn = _present([r.model for r in shown.runs]) or "none of " + _present(list(entries))
        lines += _figure_lines(f"Figure 4, {task} range {range_}", path, out.root,
                               f"last {frames} frames, {drawn}" if path else f"no per-frame PSNR or SSIM for {drawn}")
    (task, range_), entries = FIGURE5_CELL, FIGURE5
    fig = bar_figure(paper, entries, task, range_, spec)
    path = save_png(fig, out, f"{group.key.slug}/figure5_{task}_range{range_}.png") if fig is not None else None
    written += [path] if path else []
    drawn = [e for e in entries if e in paper.models]
    lines += ["### Figure 5 · ablations", ""]
    lines += _figure_lines(f"Figure 5, {task} range {range_}", path, out.root,
                           f"PSNR and SSIM of {_present(drawn)}" if path
                           else f"no PSNR or SSIM for {_present(drawn) or 'none of ' + _present(list(entries))}")
    lines += ["### Claims check", "", *claims(paper), ""]
    reliance, notes = memory_reliance(group, ["psnr", "ssim"], PairedSpec(bootstrap=spec))
    lines += ["### Memory reliance (context-swap ablation)", ""]
    lines += reliance_markdown(reliance)[1:] if reliance else [
        "No entry has its `+swap` twin (`loopnav evaluate ... --context-ablation swap`) in this group."]
    lines += [*(f"{note}  " for note in notes), ""]
    return lines, written


def write_paper(groups: list[Group], out_dir: Path, bench: Path | None = None, frames: int = 20,
                spec: BootstrapSpec = BootstrapSpec()) -> list[Path]:
    """Write `out_dir/paper.md` and its figures (one folder per group); returns paper.md first, then the PNGs."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    out = OwnedFolder(out_dir, "loopnav leaderboard paper")
    out.claim([PAPER])  # refused before any figure is drawn if a paper.md is there that loopnav did not write
    lines = ["# WorldPack paper: tables and figures", "",
             f"Cells: mean [{spec.text()}]. Best per column in bold; "
             f"{DAGGER}: unverified metric weights, never bold. FVD is set-level, without an interval.", ""]
    written = []
    for group in groups:
        section, figures = group_section(group, out, frames, spec)
        lines += section
        written += figures
    lines += ["## Table 4 · time and peak memory per predicted frame", "", *bench_table(bench), ""]
    return [out.write_bytes(PAPER, "\n".join(lines).encode()), *written]
