"""HTML for people: one page skeleton (charset, viewport, CSS, sortable tables) and the leaderboard's sections.

`loopnav leaderboard --format html` and `loopnav report` both build on `page`, so the two look alike and the style has
one owner. Pages are self-contained: inline CSS and a few lines of inline JS, no fonts, scripts or styles fetched.

Tables: one `<tbody>` per navigation range, so sorting (click a metric header; again to reverse) ranks the entries
within each range, as the leaderboard does. A cell shows the mean, with its 95% CI under it; the best cell of a
column within a range is bold. Columns no entry has a value for are left out (their footnote says why).
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from typing import Any, Iterable

from leaderboard.memory import reliance_title
from leaderboard.paired import Comparison, headers, paired_columns
from leaderboard.table import Cell, GroupTable, Leaderboard, arrow, cell_text, num_text

CSS = """
:root { --ink: #1b1f24; --muted: #5d6670; --line: #d8dde3; --soft: #f4f6f8; --accent: #2b6cb0; --best: #e6f4ea; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 16px 48px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 20px 0 6px; }
p, li { max-width: 80ch; }
.sub, .note, footer { color: var(--muted); font-size: 0.88rem; }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--soft);
       padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
.scroll { overflow-x: auto; margin: 8px 0 4px; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: right; vertical-align: top; white-space: nowrap; }
th { background: var(--soft); font-weight: 600; }
th.label, td.label { text-align: left; }
th[data-sortable] { cursor: pointer; user-select: none; }
th[data-sortable]::after { content: " \\2195"; color: var(--muted); font-size: 0.8em; }
th[aria-sort=ascending]::after { content: " \\2191"; color: var(--ink); }
th[aria-sort=descending]::after { content: " \\2193"; color: var(--ink); }
tr.block th { text-align: left; background: #fff; border-left: 0; border-right: 0; padding-top: 10px;
              white-space: normal; }
tr.block th > span { position: sticky; left: 8px; display: inline-block; max-width: calc(100vw - 40px); }
td.best { background: var(--best); font-weight: 700; }
td.na { color: var(--muted); }
.phone { display: none; }
td.path { white-space: normal; overflow-wrap: anywhere; min-width: 16em; }
.ci { display: block; color: var(--muted); font-size: 0.8em; font-weight: 400; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
figure { margin: 10px 0 18px; }
figure img, figure video { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.85rem; margin-top: 2px; }
.cell { margin: 14px 0 26px; }
.videos, .plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 560px), 1fr));
                  gap: 12px; }
table.sortable td.label:first-child { position: sticky; left: 0; background: #fff; }
table.sortable th.label:first-child { position: sticky; left: 0; }
@media (max-width: 600px) { main { padding: 12px 10px 32px; } th, td { padding: 3px 5px; } body { font-size: 14px; }
                            .len { display: none; } .phone { display: inline; } }
"""

SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th[data-sortable]").forEach(function (th) {
    var column = th.cellIndex, higher = th.dataset.higher !== "false";
    th.tabIndex = 0;
    function sort() {
      var bestFirst = th.getAttribute("aria-sort") !== (higher ? "descending" : "ascending");
      var descending = higher === bestFirst;
      table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      table.querySelectorAll("tbody").forEach(function (body) {
        var rows = Array.prototype.filter.call(body.rows, function (row) { return !row.classList.contains("block"); });
        rows.sort(function (a, b) {
          var x = parseFloat(a.cells[column].dataset.value), y = parseFloat(b.cells[column].dataset.value);
          if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }
          return descending ? y - x : x - y;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
    });
  });
});
"""

def esc(text: Any) -> str:
    """Escaped text, with `backticked` spans as code (notes and reasons quote commands that way)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text)))


def now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def page(title: str, body: str, subtitle: str = "") -> str:
    """A complete, self-contained HTML document."""
    return (f"<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{html.escape(title)}</h1>\n" + (f"<p class=\"sub\">{esc(subtitle)}</p>\n" if subtitle else "")
            + f"{body}\n</main>\n<script>{SORT_JS}</script>\n</body>\n</html>\n")


def facts(pairs: Iterable[tuple[str, Any]]) -> str:
    """A definition list of (name, value); values are escaped."""
    return "<dl class=\"facts\">" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>"


def _td(cell: Cell) -> str:
    if not cell.available:
        return f"<td class=\"na\" title=\"{html.escape(cell.reason or '')}\">n/a<sup>{cell.note}</sup></td>"
    mean = html.escape(cell_text(cell, interval=False))
    ci = f"<span class=\"ci\">[{num_text(cell.low)}, {num_text(cell.high)}]</span>" if cell.low is not None else ""
    return f"<td class=\"{'best' if cell.best else ''}\" data-value=\"{cell.mean!r}\">{mean}{ci}</td>"


def shown_columns(table: GroupTable) -> list[tuple[str, str, str]]:
    """(metric, task, header) of the columns some entry has a value for."""
    return [(m, t, f"{m.upper()}{arrow(table, m)} {t}") for m in table.metrics for t in table.tasks
            if any(row.cells[m, t].available for row in table.rows)]


def _sortable_th(text: str, higher: bool | None) -> str:
    flag = "" if higher is None else f" data-sortable data-higher=\"{str(higher).lower()}\""
    return f"<th{flag}>{esc(text)}</th>"


def group_tables(table: GroupTable) -> str:
    """The ranked table of one group (range blocks, sortable), its FVD table, footnotes and notes."""
    columns = shown_columns(table)
    per_task = any(" / " in row.context_len + row.traj_len for row in table.rows)
    tasks = f" ({' / '.join(table.tasks)})" if per_task else ""  # the lengths differ by task: say which is which
    head = (f"<th class=\"label\">model</th><th class=\"len\">context{tasks}</th><th class=\"len\">traj len{tasks}</th>"
            + "".join(_sortable_th(h, table.higher_is_better.get(m)) for m, _, h in columns))
    out = [f"<div class=\"scroll\"><table class=\"sortable\">\n<thead><tr>{head}</tr></thead>"]
    for range_ in dict.fromkeys(row.range for row in table.rows):
        block = [r for r in table.rows if r.range == range_]
        lengths = {(r.context_len, r.traj_len) for r in block}
        shared = ""
        if len(lengths) == 1:  # every entry ran on the same trajectories: where the length columns hide, say it here
            context, traj = lengths.pop()
            shared = f"<span class=\"phone note\"> · context {esc(context)} · traj len {esc(traj)}{esc(tasks)}</span>"
        out.append(f"<tbody>\n<tr class=\"block\"><th colspan=\"{3 + len(columns)}\"><span>range {esc(range_)}"
                   f"{shared}</span></th></tr>")
        for row in block:
            out.append(f"<tr><td class=\"label\">{esc(row.label)}</td><td class=\"len\">{esc(row.context_len)}</td>"
                       f"<td class=\"len\">{esc(row.traj_len)}</td>"
                       + "".join(_td(row.cells[m, t]) for m, t, _ in columns) + "</tr>")
        out.append("</tbody>")
    out.append("</table></div>")
    if any(r.cell.available for r in table.fvd):
        higher = table.higher_is_better.get("fvd")
        headers = ["all", *(key.replace("/", " ") for key in table.fvd_cells)]
        out.append(f"<h3>FVD{esc(arrow(table, 'fvd'))} (set-level)</h3>")
        out.append("<div class=\"scroll\"><table class=\"sortable\">\n<thead><tr><th class=\"label\">model</th>"
                   + "".join(_sortable_th(h, higher) for h in headers) + "<th class=\"label\">mode</th></tr></thead>"
                   "\n<tbody>")
        out += [f"<tr><td class=\"label\">{esc(r.model)}</td>"
                + "".join(_td(c) for c in [r.cell, *(r.cells[k] for k in table.fvd_cells)])
                + f"<td class=\"label\">{esc(r.mode)}</td></tr>" for r in table.fvd]
        out.append("</tbody></table></div>")
    if table.footnotes:
        out.append("<ol class=\"note\">" + "".join(f"<li>{esc(t)}</li>" for t in table.footnotes) + "</ol>")
    out += [f"<p class=\"note\">{esc(note)}</p>" for note in table.notes]
    return "\n".join(out)


def reliance_section(comparisons: list[Comparison]) -> str:
    """Memory reliance (entry − entry+swap, paired over the same trajectories; memory.py): one table per entry."""
    out = []
    for c in comparisons:
        head = "".join(f"<th>{esc(h)}</th>" for h in headers(c.a.model, c.b.model))
        rows = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in
                                        paired_columns(r, c.spec.alpha, c.a.model, c.b.model)) + "</tr>\n"
                       for r in c.rows)
        out.append(f"<h3>Memory reliance · {esc(reliance_title(c))}</h3>\n<div class=\"scroll\"><table>\n"
                   f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody></table></div>")
    if comparisons:
        out.append(f"<p class=\"note\">Memory reliance: {esc(comparisons[0].spec.text())}.</p>")
    return "\n".join(out)


def leaderboard_body(board: Leaderboard, level: int = 2) -> str:
    """Every group's tables and extra sections, then the board's notes."""
    out = []
    for table in board.tables:
        out.append(f"<h{level}>{esc(table.group.key.title)}</h{level}>")
        out.append(group_tables(table))
        out.append(reliance_section(table.reliance))
    out += [f"<p class=\"note\"><i>{esc(note)}</i></p>" for note in board.notes]
    return "\n".join(part for part in out if part)


def render_html(board: Leaderboard) -> str:
    """`loopnav leaderboard --format html`: the leaderboard as a complete page."""
    models = sorted({run.model for table in board.tables for run in table.group.runs})
    return page("LoopNav leaderboard", leaderboard_body(board),
                f"{len(models)} entries · generated {now_text()} · `loopnav report` adds videos, curves and the data")
