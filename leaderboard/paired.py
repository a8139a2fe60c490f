"""Paired comparisons of two entries, trajectory by trajectory: `leaderboard compare`, memory reliance, paper claims.

Every entry is evaluated on the same trajectories with the same per-trajectory seeds, so two entries A and B are
compared on each trajectory i both evaluated (matched by id): d_i = s_A(i) − s_B(i), where s is the trajectory's mean
per-frame score (`metrics.trajectory_mean`, the number the leaderboard's cells average). For each (task, range) cell
and pooled per task over its ranges (every trajectory of the task one unit):
- `mean`: the mean of d_i over the n trajectories;
- `ci_low`, `ci_high`: the percentile-bootstrap 95% interval of that mean, resampling trajectories (the pairs stay
  together), `bootstrap.mean_ci` with its seed;
- `p`: two-sided sign-flip permutation test of "A and B score alike": under it each d_i is as likely −d_i, so p is the
  share of sign vectors whose |mean| reaches the observed one: all 2^n of them when n <= EXACT_MAX_N, else
  `permutations` random ones drawn from the seed, p = (1 + hits) / (1 + permutations);
- `p_holm`: Holm's step-down adjustment over every p-value reported together (all cells, pooled rows and metrics of
  one comparison), which holds the family-wise error rate at alpha under any dependence between them.
Direction: A is better when the mean is > 0 for a higher-is-better metric, < 0 otherwise; `better` names A or B only
where p_holm < alpha.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from leaderboard.bootstrap import BootstrapSpec, mean_ci
from leaderboard.results import Group, GroupKey, ResultsError, Run, range_order
from loopnav_bench.metrics import trajectory_mean

EXACT_MAX_N = 16  # 2^16 sign vectors: exact and still fast
POOLED_RANGE = "all"


@dataclass(frozen=True)
class PairedSpec:
    bootstrap: BootstrapSpec = BootstrapSpec()
    permutations: int = 10_000
    alpha: float = 0.05

    def describe(self) -> dict[str, Any]:
        return {"difference": "A − B per trajectory (matched by id), mean over trajectories",
                "interval": self.bootstrap.describe(),
                "test": f"two-sided sign-flip permutation test: exact for n <= {EXACT_MAX_N}, else "
                        f"{self.permutations} random sign vectors (seed {self.bootstrap.seed})",
                "adjustment": "Holm step-down over every p-value reported together", "alpha": self.alpha}

    def text(self) -> str:
        return (f"paired difference A − B over trajectories both evaluated; {self.bootstrap.text()}; p: two-sided "
                f"sign-flip permutation test (exact for n <= {EXACT_MAX_N}, else {self.permutations} random sign "
                f"vectors, seed {self.bootstrap.seed}); p_holm: Holm-adjusted over all rows shown")


@dataclass
class Paired:
    """One paired comparison: a (task, range) cell or a task pooled over ranges (range "all")."""

    metric: str
    task: str
    range: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    p: float
    a_mean: float
    b_mean: float
    p_holm: float | None = None
    higher_is_better: bool | None = None

    def better(self, alpha: float = PairedSpec.alpha) -> str | None:
        """"A" or "B" where the Holm-adjusted p is below alpha and the direction is known, else None."""
        if self.p_holm is None or self.p_holm >= alpha or self.higher_is_better is None or self.mean == 0:
            return None
        return "A" if (self.mean > 0) == self.higher_is_better else "B"

    def record(self, alpha: float = PairedSpec.alpha) -> dict[str, Any]:
        return {**asdict(self), "better": self.better(alpha)}


def sign_flip_p(differences: np.ndarray, permutations: int = PairedSpec.permutations, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of mean(differences) = 0 (see the module docstring)."""
    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    if n == 0:
        raise ValueError("no paired trajectories")
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))  # equal means must count as reached despite rounding
    if n <= EXACT_MAX_N:
        signs = 1.0 - 2.0 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ d / n) >= observed - tolerance))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(permutations, n))
    hits = int(np.sum(np.abs(signs @ d / n) >= observed - tolerance))
    return (1 + hits) / (1 + permutations)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the k-th smallest (k = 1..m) becomes
    max over j <= k of min(1, (m − j + 1) · p_(j))."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def paired(metric: str, task: str, range_: str, a: np.ndarray, b: np.ndarray, spec: PairedSpec,
           higher_is_better: bool | None) -> Paired:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mean, low, high = mean_ci(d, spec.bootstrap)
    return Paired(metric, task, range_, len(d), float(mean), float(low), float(high),
                  sign_flip_p(d, spec.permutations, spec.bootstrap.seed), float(np.mean(a)), float(np.mean(b)),
                  higher_is_better=higher_is_better)


def scores(run: Run, split: str, metric: str) -> dict[str, tuple[str, str, float]]:
    """Trajectory id -> (task, range, mean per-frame score) over the run's rows of `split`."""
    if run.metric_info(metric).get("available") is False:
        raise ResultsError(f"{run.results_path}: {metric} is not available for {run.model} "
                           f"({run.metric_info(metric).get('reason')})")
    out = {}
    for row in run.rows:
        if row["split"] == split:
            if row["metrics"].get(metric) is None:
                raise ResultsError(f"{run.samples_path}: trajectory {row['id']!r} has no {metric}")
            out[row["id"]] = (row["task"], str(row["range"]), trajectory_mean(row, metric)[0])
    return out


def _check_same_trajectories(a: Run, b: Run, ids_a: set[str], ids_b: set[str], split: str) -> None:
    if ids_a == ids_b:
        return
    only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
    raise ResultsError(f"{a.model} and {b.model} were evaluated on different trajectories of split {split}: "
                       f"{len(only_a)} only in {a.results_path}{f' (e.g. {only_a[0]!r})' if only_a else ''}, "
                       f"{len(only_b)} only in {b.results_path}{f' (e.g. {only_b[0]!r})' if only_b else ''}")


def compare_runs(a: Run, b: Run, split: str, metrics: list[str], spec: PairedSpec = PairedSpec()) -> list[Paired]:
    """Every (task, range) cell and every task pooled over ranges, for each metric; Holm-adjusted over all of them."""
    results: list[Paired] = []
    for metric in metrics:
        flags = {a.higher_is_better(metric), b.higher_is_better(metric)} - {None}
        if len(flags) > 1:
            raise ResultsError(f"{a.results_path} and {b.results_path} disagree on whether higher {metric} is better")
        direction = flags.pop() if flags else None
        score_a, score_b = scores(a, split, metric), scores(b, split, metric)
        _check_same_trajectories(a, b, set(score_a), set(score_b), split)
        ids = sorted(score_a)
        tasks = sorted({score_a[i][0] for i in ids})
        for task in tasks:
            in_task = [i for i in ids if score_a[i][0] == task]
            ranges = sorted({score_a[i][1] for i in in_task}, key=range_order)
            for range_ in [*ranges, POOLED_RANGE]:
                chosen = [i for i in in_task if range_ == POOLED_RANGE or score_a[i][1] == range_]
                results.append(paired(metric, task, range_, np.array([score_a[i][2] for i in chosen]),
                                      np.array([score_b[i][2] for i in chosen]), spec, direction))
    for item, adjusted in zip(results, holm([r.p for r in results])):
        item.p_holm = adjusted
    return results


@dataclass
class Comparison:
    key: GroupKey
    a: Run
    b: Run
    rows: list[Paired]
    spec: PairedSpec


def _describe_key(key: GroupKey) -> str:
    return f"split {key.split}, data manifest {key.manifest_hash[:12]}…, eval size {key.size_text}"


def find_pairs(groups: list[Group], a: str, b: str) -> list[tuple[GroupKey, Run, Run]]:
    """The (group, run of A, run of B) of every group holding both entries; an error that says why when none does."""
    where = {name: {g.key: run for g in groups for run in g.runs if run.model == name} for name in (a, b)}
    entries = sorted({run.model for g in groups for run in g.runs})
    for name in (a, b):
        if not where[name]:
            raise ResultsError(f"no results for entry {name!r}; the results have: {', '.join(entries)}")
    pairs = [(key, run, where[b][key]) for key, run in where[a].items() if key in where[b]]
    if not pairs:
        key_a, key_b = next(iter(where[a])), next(iter(where[b]))
        differ = [what for what, x, y in (("split", key_a.split, key_b.split),
                                          ("data manifest", key_a.manifest_hash, key_b.manifest_hash),
                                          ("eval size", key_a.size_text, key_b.size_text)) if x != y]
        raise ResultsError(f"{a} and {b} cannot be paired: their {' and '.join(differ)} differ ({a}: "
                           f"{_describe_key(key_a)}; {b}: {_describe_key(key_b)})")
    return pairs


def compare(groups: list[Group], a: str, b: str, metrics: list[str],
            spec: PairedSpec = PairedSpec()) -> list[Comparison]:
    return [Comparison(key, run_a, run_b, compare_runs(run_a, run_b, key.split, metrics, spec), spec)
            for key, run_a, run_b in find_pairs(groups, a, b)]


# ---- rendering -------------------------------------------------------------------------------------------------

def diff_text(x: float) -> str:
    """A signed difference with about four significant digits."""
    return f"{x:+.2f}" if abs(x) >= 10 else f"{x:+.3f}"


def p_text(p: float | None) -> str:
    return "–" if p is None else f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def paired_columns(row: Paired, alpha: float, a: str = "A", b: str = "B") -> list[str]:
    """metric, task, range, n, mean A, mean B, A − B [CI], p, p_holm, better: one row of any paired table."""
    arrow = {True: " ↑", False: " ↓", None: ""}[row.higher_is_better]
    better = {"A": a, "B": b, None: "–"}[row.better(alpha)]
    return [f"{row.metric.upper()}{arrow}", row.task, row.range, str(row.n), f"{row.a_mean:.4g}", f"{row.b_mean:.4g}",
            f"{diff_text(row.mean)} [{diff_text(row.ci_low)}, {diff_text(row.ci_high)}]", p_text(row.p),
            p_text(row.p_holm), better]


def headers(a: str = "A", b: str = "B") -> list[str]:
    return ["metric", "task", "range", "n", a, b, f"{a} − {b} [95% CI]", "p", "p_holm", "better"]


def comparison_records(comparisons: list[Comparison]) -> dict[str, Any]:
    spec = comparisons[0].spec if comparisons else PairedSpec()
    return {"statistics": spec.describe(), "comparisons": [
        {"a": c.a.model, "b": c.b.model, "split": c.key.split, "manifest_hash": c.key.manifest_hash,
         "eval_size": c.key.eval_size, "a_results_file": str(c.a.results_path),
         "b_results_file": str(c.b.results_path), "rows": [r.record(c.spec.alpha) for r in c.rows]}
        for c in comparisons]}


def render_comparison_markdown(comparisons: list[Comparison]) -> str:
    from leaderboard.table import md_row  # the table's escaping, one owner

    lines = []
    for c in comparisons:
        lines += [f"### {c.a.model} vs {c.b.model} · {c.key.title}", "", md_row(headers(c.a.model, c.b.model)),
                  md_row([":---", ":---", "---:", *("---:" for _ in range(6)), ":---"])]
        lines += [md_row(paired_columns(r, c.spec.alpha, c.a.model, c.b.model)) for r in c.rows]
        lines += ["", f"*{c.spec.text()}; better: the entry ahead where p_holm < {c.spec.alpha}.*", ""]
    return "\n".join(lines) + "\n"


def render_comparison_rich(comparisons: list[Comparison], title: str | None = None):
    """One table per metric; the difference over its interval in one two-line cell, so 80 columns hold it."""
    from rich import box
    from rich.console import Group as RichGroup
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    for c in comparisons:
        parts.append(Text(title or f"A = {c.a.model}, B = {c.b.model} · {c.key.title}", style="bold"))
        if title:
            parts.append(Text(f"A = {c.a.model}, B = {c.b.model}"))
        for metric in dict.fromkeys(r.metric for r in c.rows):
            rows = [r for r in c.rows if r.metric == metric]
            grid = Table(title=paired_columns(rows[0], c.spec.alpha)[0], box=box.SIMPLE_HEAD)
            for header in ("task", "range", "n", "A", "B", "A − B\n[95% CI]", "p", "p_holm", "better"):
                grid.add_column(header, justify="left" if header in ("task", "better") else "right", no_wrap=True)
            for r in rows:
                _, task, range_, n, mean_a, mean_b, diff, p, p_holm, better = paired_columns(r, c.spec.alpha)
                grid.add_row(task, range_, n, mean_a, mean_b, diff.replace(" [", "\n["), p, p_holm, better,
                             style="bold" if r.range == POOLED_RANGE else "", end_section=r.range == POOLED_RANGE)
            parts.append(grid)
        parts += [Text(f"{c.spec.text()}; better: the entry ahead where p_holm < {c.spec.alpha}.", style="dim"),
                  Text("")]
    return RichGroup(*parts)
