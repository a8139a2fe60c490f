"""`loopnav report`: one self-contained results page to open from disk or share.

    DIR/index.html                         the page (inline CSS and JS; no server, no network)
    DIR/plots/<group>/<task>_range<r>.png  the per-frame curves `loopnav leaderboard --plot` draws
    DIR/videos/<group>/<task>_<range>_<pick>.mp4   ground truth | every entry, H.264 (leaderboard.show)

The page: what data the numbers come from, the ranked leaderboard (leaderboard.html, sortable, with CIs and any
extra sections the leaderboard's JSON carries), the curves, and for every task x range cell the rollouts of its best,
median and worst trajectory (ranked by the first metric, averaged over the entries) with every entry beside the
ground truth; provenance (versions, commits, run keys, dates) at the foot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable
from urllib.parse import quote

from leaderboard.html import esc, facts, leaderboard_body, now_text, page
from leaderboard.plots import plot_leaderboard
from leaderboard.results import Group, Run, group_runs, range_order
from leaderboard.show import load_scenes, ranked_across, write_scene
from leaderboard.table import SET_METRIC, available_metrics, build_leaderboard
from loopnav_bench import __version__
from loopnav_bench.fileio import atomic_path

INDEX = "index.html"
PICKS = ("best", "median", "worst")


def _link(path: Path, root: Path) -> str:
    return quote(path.relative_to(root).as_posix())


def _cells(group: Group) -> list[tuple[str, str]]:
    """(task, range) of every cell of the group, in the leaderboard's order."""
    found = {(c["task"], str(c["range"])) for run in group.runs for c in run.cells if c["split"] == group.key.split}
    return sorted(found, key=lambda tr: (tr[0], range_order(tr[1])))


def data_section(group: Group) -> str:
    """Where the numbers come from: source and its settings, split, manifest, counts per cell, evaluation size."""
    data = group.runs[0].results["data"]
    settings = data.get("source_settings") or {}
    rows = group.runs[0].rows
    counts = {(task, range_): sum(1 for r in rows if r["split"] == group.key.split and r["task"] == task
                                  and str(r["range"]) == range_) for task, range_ in _cells(group)}
    tasks = sorted({task for task, _ in counts})
    ranges = sorted({range_ for _, range_ in counts}, key=range_order)
    table = ("<div class=\"scroll\"><table><thead><tr><th class=\"label\">trajectories</th>"
             + "".join(f"<th>range {esc(r)}</th>" for r in ranges) + "</tr></thead><tbody>"
             + "".join(f"<tr><td class=\"label\">{esc(t)}</td>"
                       + "".join(f"<td>{counts.get((t, r), 0)}</td>" for r in ranges) + "</tr>" for t in tasks)
             + "</tbody></table></div>")
    shown = {k: v for k, v in settings.items() if k in ("preset", "size", "seed", "frame_skip", "simulator",
                                                        "units_per_block", "context_frames")}
    return facts([("source", data.get("source", "?")),
                  ("source settings", ", ".join(f"{k}={v}" for k, v in shown.items()) or "—"),
                  ("split", group.key.split),
                  ("manifest", f"{group.key.manifest_hash[:16]}… (prepared {data.get('prepared', '?')})"),
                  ("trajectories", f"{sum(counts.values())} in {len(counts)} cells (task x range)"),
                  ("evaluation size", group.key.size_text),
                  ("entries", ", ".join(run.model for run in group.runs))]) + table


def curves_section(paths: list[Path], root: Path) -> str:
    """The plots, two to a row where there is room (each names its task and range in its title)."""
    return ("<div class=\"plots\">" + "".join(f"<figure><img src=\"{_link(p, root)}\" alt=\"{esc(p.stem)}\">"
                                              "</figure>" for p in paths) + "</div>")


def _score_text(runs: list[Run], trajectory_id: str, metric: str) -> str:
    from loopnav_bench.metrics import trajectory_mean

    parts = []
    for run in runs:
        row = next((r for r in run.rows if r["id"] == trajectory_id), None)
        if row is not None and row["metrics"].get(metric):
            parts.append(f"{run.model} {trajectory_mean(row, metric)[0]:.3g}")
    return f"{metric.upper()}: " + ", ".join(parts)


def rollout_picks(group: Group, metric: str, per_cell: int) -> list[tuple[str, str, str, str]]:
    """(task, range, pick, trajectory id) of `per_cell` of the best, median and worst trajectory of every cell (1: the
    median; 2: best and worst), ranked by `metric` averaged over the group's entries; a trajectory is picked once."""
    wanted = {1: ("median",), 2: ("best", "worst")}.get(per_cell, PICKS)
    out = []
    for task, range_ in _cells(group):
        order = ranked_across(group.runs, group.key.split, task, range_, metric)
        if not order:
            continue
        chosen = dict(zip(PICKS, (order[0], order[(len(order) - 1) // 2], order[-1])))
        seen: set[str] = set()
        for pick in (p for p in PICKS if p in wanted):
            if chosen[pick] not in seen:
                seen.add(chosen[pick])
                out.append((task, range_, pick, chosen[pick]))
    return out


def videos_section(group: Group, metric: str, root: Path, per_cell: int, data: Path | None, fps: float,
                   context: int, progress: Callable[..., None] | None) -> str:
    picks = rollout_picks(group, metric, per_cell)
    if not picks:
        return ""
    scenes = load_scenes(group.runs, list(dict.fromkeys(p[3] for p in picks)), data)
    written: dict[str, Path] = {}
    for done, scene in enumerate(scenes):
        task, range_, pick, _ = next(p for p in picks if p[3] == scene.traj.id)
        path = root / "videos" / group.key.slug / f"{task}_{range_}_{pick}.mp4"
        written[scene.traj.id] = write_scene(scene, path, fps, context)
        if progress:
            progress("report → videos", done + 1, len(picks))
    out = []
    for task, range_ in _cells(group):
        figures = [f"<figure><video src=\"{_link(written[i], root)}\" controls muted loop playsinline "
                   f"preload=\"metadata\" data-trajectory=\"{esc(i)}\"></video><figcaption><b>{esc(pick)}</b> · "
                   f"<code>{esc(i)}</code><br>{esc(_score_text(group.runs, i, metric))}</figcaption></figure>"
                   for t, r, pick, i in picks if (t, r) == (task, range_)]
        if figures:
            out.append(f"<div class=\"cell\" data-cell=\"{esc(task)}/{esc(range_)}\"><h3>{esc(task)}, range "
                       f"{esc(range_)}</h3><div class=\"videos\">{''.join(figures)}</div></div>")
    return "\n".join(out)


def provenance_section(groups: list[Group], results_dir: Path) -> str:
    runs = list(dict.fromkeys(run for group in groups for run in (*group.runs, *group.superseded)))
    head = ("entry", "date", "loopnav", "commit", "run key", "score key", "checkpoint", "results file")
    rows = []
    for run in runs:
        r = run.results
        commit = (r.get("git_hash") or "")[:10] + (" (dirty)" if r.get("git_dirty") else "")
        try:
            where = run.results_path.relative_to(results_dir).as_posix()
        except ValueError:
            where = str(run.results_path)
        values = (run.model, r.get("date", run.timestamp), r.get("loopnav_version", "?"), commit or "?",
                  r.get("run_key", "?"), r.get("score_key", "?"), (r.get("model_describe") or {}).get("checkpoint"),
                  where)
        rows.append("<tr>" + "".join(f"<td class=\"label{' path' if i >= len(values) - 2 else ''}\">"
                                     f"{esc(v if v is not None else '—')}</td>" for i, v in enumerate(values))
                    + "</tr>")
    return ("<div class=\"scroll\"><table><thead><tr>"
            + "".join(f"<th class=\"label\">{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def write_report(runs: list[Run], out: Path, results_dir: Path, metrics: list[str] | None = None,
                 data: Path | None = None, videos: int = 3, fps: float = 15.0, context: int = 8,
                 progress: Callable[..., None] | None = None) -> Path:
    """Write DIR/index.html with its plots and videos; returns the page's path. `videos`: rollouts per cell (best,
    median, worst: 0 to 3)."""
    if not 0 <= videos <= len(PICKS):
        raise ValueError(f"--videos {videos}: choose 0 to {len(PICKS)} (best, median, worst)")
    out = Path(out)
    groups = group_runs(runs)
    board = build_leaderboard(groups, metrics)
    shown = metrics or available_metrics(groups)
    frame_metrics = [m for m in shown if m != SET_METRIC]
    plots = plot_leaderboard(groups, frame_metrics, out / "plots", board)
    body: list[str] = []
    nav = ["<a href=\"#data\">Data</a>", "<a href=\"#leaderboard\">Leaderboard</a>", "<a href=\"#curves\">Curves</a>",
           *(["<a href=\"#rollouts\">Rollouts</a>"] if videos else []), "<a href=\"#provenance\">Provenance</a>"]
    body.append("<nav>" + "".join(nav) + "</nav>")
    body.append("<h2 id=\"data\">Data</h2>")
    body += [(f"<h3>{esc(g.key.title)}</h3>" if len(groups) > 1 else "") + data_section(g) for g in groups]
    body.append("<h2 id=\"leaderboard\">Leaderboard</h2>")
    body.append(leaderboard_body(board, level=3))
    body.append("<h2 id=\"curves\">Per-frame curves</h2>")
    body.append("<p class=\"note\">Each trajectory's series is aligned at the end of its return leg (0 = back at "
                "the start); the band is the 95% bootstrap interval over trajectories.</p>")
    body.append(curves_section(plots, out))
    if videos:
        body.append("<h2 id=\"rollouts\">Rollouts</h2>")
        for group, table in zip(groups, board.tables):
            metric = table.metrics[0] if table.metrics else None
            if metric is None:
                continue
            body.append(f"<p class=\"note\">{esc(group.key.title)}: per cell the best, median and worst trajectory "
                        f"by {metric.upper()} averaged over the entries; ground truth on the left, then every entry. "
                        f"Grey frame: context the model was given; blue: the return leg it predicted.</p>")
            body.append(videos_section(group, metric, out, videos, data, fps, context, progress))
    body.append("<h2 id=\"provenance\">Provenance</h2>")
    body.append(provenance_section(groups, Path(results_dir)))
    entries = sorted({run.model for group in groups for run in group.runs})
    n = sum(len(g.runs[0].rows) for g in groups)
    subtitle = (f"{len(entries)} entries on {n} trajectories · generated {now_text()} with loopnav {__version__} · "
                f"`loopnav report {results_dir}`")
    path = out / INDEX
    with atomic_path(path) as tmp:
        tmp.write_text(page("LoopNav results", "\n".join(body), subtitle), encoding="utf-8")
    return path
