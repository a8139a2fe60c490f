"""`loopnav leaderboard`: loading and grouping results, bootstrap intervals, the table in every format, and plots.

The runs are synthetic (`results_fixtures`): written in exactly the `loopnav evaluate` output contract.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from results_fixtures import MANIFEST, OTHER_MANIFEST, results_tree, write_run
from typer.testing import CliRunner

from leaderboard.bootstrap import BootstrapSpec, mean_ci
from leaderboard.results import ResultsError, group_runs, load_runs
from leaderboard.table import (
    build_leaderboard,
    num_text,
    render_csv,
    render_html,
    render_json,
    render_markdown,
    to_records,
)
from loopnav.cli import app


@pytest.fixture
def results_dir(tmp_path) -> Path:
    return results_tree(tmp_path / "results")


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_trajectories():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 10), rng.normal(1.0, 1.0, 400)
    mean, low, high = mean_ci(small)
    assert low < mean < high and mean == pytest.approx(small.mean())
    _, low_l, high_l = mean_ci(large)
    assert high_l - low_l < (high - low) / 3  # width ~ 1/sqrt(n)
    # vectorised over columns: each column equals the 1-D result with the same seed
    both = np.stack([small, 2 * small], axis=1)
    _, low2, high2 = mean_ci(both)
    assert low2[0] == pytest.approx(low) and high2[1] == pytest.approx(2 * high)
    assert mean_ci(small, BootstrapSpec(seed=0))[1] == mean_ci(small, BootstrapSpec(seed=0))[1]


def test_groups_split_manifests_and_newest_run_wins(results_dir):
    groups = group_runs(load_runs(results_dir))
    assert [g.key.manifest_hash for g in groups] == [MANIFEST, OTHER_MANIFEST]
    main = groups[0]
    assert [(r.model, r.timestamp[:10]) for r in main.runs] == [("alpha", "2026-01-02"), ("beta", "2026-01-02")]
    assert [r.timestamp[:10] for r in main.superseded] == ["2026-01-01"]
    assert [r.model for r in groups[1].runs] == ["gamma"]


def test_table_cells_best_unverified_and_na(results_dir):
    board = build_leaderboard(group_runs(load_runs(results_dir)))
    main, other = board.tables
    rows = {(r.range, r.model): r for r in main.rows}
    assert [r.range for r in main.rows] == ["5", "5", "15", "15"]  # numeric range order
    alpha, beta = rows["5", "alpha"], rows["5", "beta"]
    # the cell mean is the results file's mean (per frame -> per trajectory -> over trajectories)
    stored = json.loads(alpha.run.results_path.read_text())["results"]["test/ABA/5"]["ssim"]["mean"]
    assert alpha.cells["ssim", "ABA"].mean == pytest.approx(stored, abs=1e-6)
    assert alpha.cells["ssim", "ABA"].low < stored < alpha.cells["ssim", "ABA"].high
    # beta scores better on everything; its LPIPS is unverified, so alpha's LPIPS is the best verified one
    assert beta.cells["ssim", "ABA"].best and not alpha.cells["ssim", "ABA"].best
    assert beta.cells["lpips", "ABA"].mean < alpha.cells["lpips", "ABA"].mean
    assert not beta.cells["lpips", "ABA"].verified and not beta.cells["lpips", "ABA"].best
    assert alpha.cells["lpips", "ABA"].best
    # dreamsim unavailable for alpha: n/a with the reason in a footnote, and beta wins by default
    assert not alpha.cells["dreamsim", "ABCA"].available
    assert "loopnav weights download dreamsim" in main.footnotes[alpha.cells["dreamsim", "ABCA"].note - 1]
    assert beta.cells["dreamsim", "ABCA"].best
    assert any("†" in note and "beta (lpips" in note for note in main.notes)
    assert any("alpha 2026-01-01" in note for note in main.provenance)  # the superseded run is named
    # FVD: set-level, lower is better, beta wins
    assert [(r.model, r.cell.best) for r in main.fvd] == [("alpha", False), ("beta", True)]
    assert main.fvd_cells == ["ABA/5", "ABA/15", "ABCA/5", "ABCA/15"]  # numeric range order within each task
    alpha_fvd, beta_fvd = main.fvd
    assert beta_fvd.cells["ABA/15"].best and not alpha_fvd.cells["ABA/15"].best
    assert alpha_fvd.cells["ABCA/15"].best and alpha_fvd.cells["ABCA/15"].mean == pytest.approx(70.0)
    assert alpha_fvd.cells["ABA/5"].n == 4
    assert [r.model for r in other.rows] == ["gamma", "gamma"]
    assert any("not ranked against each other" in note for note in board.notes)


def test_formats_carry_the_same_numbers(results_dir):
    board = build_leaderboard(group_runs(load_runs(results_dir)), metrics=["ssim", "lpips"])
    records = to_records(board)
    assert records["bootstrap"]["resamples"] == 1000 and "percentile bootstrap" in records["bootstrap"]["method"]
    first = records["groups"][0]["rows"][0]
    assert set(first["cells"]) == {"ssim", "lpips"}
    assert json.loads(render_json(board)) == json.loads(json.dumps(records, default=str))

    lines = list(csv.DictReader(io.StringIO(render_csv(board))))
    assert len(lines) == (4 + 2) * 2 * 2  # 6 rows (4 + gamma's 2) x 2 metrics x 2 tasks; FVD not selected
    beta_lpips = next(row for row in lines if row["model"] == "beta" and row["metric"] == "lpips"
                      and row["range"] == "5" and row["task"] == "ABA")
    assert beta_lpips["verified"] == "False" and beta_lpips["best"] == "False"

    markdown = render_markdown(board)
    assert markdown.count("### split test") == 2
    assert "†" in markdown and "**" in markdown and "| ---: |" in markdown
    html = render_html(board)
    assert html.startswith("<!doctype html>") and html.count('<table class="sortable">') == 2
    assert 'class="best"' in html and "†" in html


def test_samples_that_do_not_match_results_are_an_error(results_dir):
    samples = next(results_dir.glob("beta/*/samples_*.jsonl"))
    lines = samples.read_text().splitlines()
    samples.write_text("\n".join(lines[1:]) + "\n")  # drop one trajectory
    with pytest.raises(ResultsError, match="n=4"):
        build_leaderboard(group_runs(load_runs(results_dir)))
    row = json.loads(lines[0])
    row["metrics"]["ssim"] = [v / 2 for v in row["metrics"]["ssim"]]  # same count, other numbers
    samples.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    with pytest.raises(ResultsError, match="rows give ssim mean .* for test/ABA/5, but results_"):
        build_leaderboard(group_runs(load_runs(results_dir)))


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(ResultsError, match="no results_"):
        load_runs(tmp_path)
    path = write_run(tmp_path, "alpha", "2026-01-01T00-00-00", 0.5)
    path.with_name("samples_2026-01-01T00-00-00.jsonl").unlink()
    with pytest.raises(ResultsError, match="samples_2026-01-01T00-00-00.jsonl are missing"):
        load_runs(tmp_path)
    path.write_text(json.dumps({"model": {"name": "x"}}))
    with pytest.raises(ResultsError, match=f"{path}: missing key 'data.manifest_hash'"):
        load_runs(tmp_path)


@pytest.mark.slow  # draws every plot
def test_plots_align_series_at_the_end(results_dir, tmp_path):
    from leaderboard.plots import end_aligned, plot_leaderboard

    aligned = end_aligned([[1, 2, 3, 4], [9, 8]])
    assert aligned.tolist() == [[3, 4], [9, 8]]
    written = plot_leaderboard(group_runs(load_runs(results_dir)), ["lpips", "ssim"], tmp_path / "plots")
    # 2 groups x 2 tasks x 2 ranges, each group in its own folder
    assert len(written) == 8 and len({p.parent for p in written}) == 2
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_every_format_shows_fvd_per_cell(results_dir):
    board = build_leaderboard(group_runs(load_runs(results_dir)), metrics=["fvd"])
    lines = [line for line in csv.DictReader(io.StringIO(render_csv(board))) if line["metric"] == "fvd"]
    alpha = {(line["task"], line["range"]): float(line["mean"]) for line in lines if line["model"] == "alpha"}
    assert alpha == pytest.approx({("all", "all"): 400 / 0.7,
                                   ("ABA", "5"): 300 / 0.7 + 5, ("ABA", "15"): 300 / 0.7 + 15,
                                   ("ABCA", "5"): 300 / 0.7 + 5, ("ABCA", "15"): 70.0})
    record = to_records(board)["groups"][0]["fvd"][0]
    assert record["cells"]["ABCA/15"]["best"] is True and record["cells"]["ABA/5"]["best"] is False
    markdown = render_markdown(board)
    assert "| model | all | ABA 5 | ABA 15 | ABCA 5 | ABCA 15 | mode |" in markdown and "**70.00**" in markdown
    assert ">ABCA 15</th>" in render_html(board)


def test_cli_leaderboard_formats_and_errors(results_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["leaderboard", "--results", str(results_dir), "--format", "json", "--metric", "ssim"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["groups"][0]["rows"][0]["cells"].keys() == {"ssim"}
    result = runner.invoke(app, ["leaderboard", "--results", str(results_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "LoopNav leaderboard" in result.stdout and "n/a [1]" in result.stdout
    result = runner.invoke(app, ["leaderboard", "--results", str(results_dir), "--metric", "sssim"])
    assert result.exit_code == 2 and "unknown metric(s) sssim" in " ".join(result.output.split())
    result = runner.invoke(app, ["leaderboard", "--results", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "missing: no such directory" in " ".join(result.output.split())


def test_infinite_psnr_frames_are_capped_like_evaluate(tmp_path):
    from loopnav_bench.metrics.aggregate import aggregate

    path = write_run(tmp_path, "alpha", "2026-01-02T10-00-00", 0.7, n_per_cell=3)
    samples = path.with_name("samples_2026-01-02T10-00-00.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    rows[0]["metrics"]["psnr"][0] = float("inf")  # an identical frame
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = json.loads(path.read_text())
    doc["results"] = aggregate(rows, ["ssim", "psnr", "lpips", "dreamsim"])
    for key, cell in doc["results"].items():
        cell.update(context_len_mean=20.0, length_mean=40.0)
    path.write_text(json.dumps(doc))
    board = build_leaderboard(group_runs(load_runs(tmp_path)), metrics=["psnr"])
    cell = board.tables[0].rows[0].cells["psnr", rows[0]["task"]]
    assert np.isfinite(cell.high) and cell.mean == pytest.approx(doc["results"]["test/ABA/5"]["psnr"]["mean"])


LONG_REASON = ("lpips (alex) needs weight files that are not here:\n  lpips/alexnet: missing "
               "/root/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth; get it with `loopnav weights download "
               "lpips` on a machine with internet, or place https://download.pytorch.org/models/alexnet.pth there")


@pytest.fixture
def demo_like(tmp_path) -> Path:
    """Five entries, as `make demo` writes them: LPIPS missing its weights for all, with the full multi-line reason."""
    root = tmp_path / "results"
    for i, model in enumerate(("copy-last", "diamond", "nearest-pose", "nwm", "worldpack-long-label")):
        path = write_run(root, model, f"2026-01-02T10-00-0{i}.000001", 0.5 + i / 10, seed=i, unavailable=("lpips",))
        doc = json.loads(path.read_text())
        doc["metrics"]["lpips"].update(reason=LONG_REASON, reason_code="weights-missing")
        path.write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize("width", [80, 200])
def test_terminal_leaderboard_fits_its_width_and_names_every_row(demo_like, width):
    result = CliRunner().invoke(app, ["leaderboard", "--results", str(demo_like)], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= width and "…" not in result.stdout  # nothing cut, no header truncated
    table_rows = [line for line in lines if line.startswith("│")]
    for model in ("copy-last", "diamond", "nearest-pose", "nwm", "worldpack-long-label"):
        assert any(f" {model} " in row for row in table_rows), model
    assert "[1] lpips n/a: weights missing; see `loopnav weights check`" in lines  # one short line for the metric
    assert "alexnet-owt" not in result.stdout and "LPIPS" not in result.stdout  # no path, no column of n/a
    side_by_side = any("SSIM ↑ ABA" in line and "PSNR ↑ ABA" in line for line in lines)
    assert side_by_side == (width == 200)  # a wide terminal gets one wide table, 80 columns one table per metric


def test_csv_and_json_keep_the_reason_short_and_full(demo_like):
    board = build_leaderboard(group_runs(load_runs(demo_like)))
    lines = list(csv.DictReader(io.StringIO(render_csv(board))))
    lpips = [line for line in lines if line["metric"] == "lpips"]
    assert lpips and {line["reason_code"] for line in lpips} == {"weights-missing"}
    assert max(len(value) for line in lines for value in line.values()) < 80
    cell = to_records(board)["groups"][0]["rows"][0]["cells"]["lpips"]["ABA"]
    assert cell["reason"] == LONG_REASON and cell["note"] == "lpips n/a: weights missing; see `loopnav weights check`"


@pytest.fixture
def bracket_labels(tmp_path) -> Path:
    """Entries whose labels look like rich markup, FVD with per-cell values, one metric missing for everyone."""
    root = tmp_path / "results"
    for i, model in enumerate(("copy-last", "blurry-memory[k=4]", "blurry-memory[kk=4]", "worldpack[memory=off]")):
        write_run(root, model, f"2026-01-02T10-00-0{i}.000001", 0.4 + i / 10, seed=i, unavailable=("dreamsim",),
                  ranges=(5, 15, 30, 50))
    return root


def _numbers_of(records: dict) -> set[str]:
    """Every number the json format holds for the table (cells, intervals, lengths), as the terminal writes it."""
    found = set()
    for group in records["groups"]:
        cells = [c for row in group["rows"] for by_task in row["cells"].values() for c in by_task.values()]
        cells += [c for fvd in group["fvd"] for c in (fvd, *fvd["cells"].values())]
        found |= {num_text(c[k]) for c in cells if c["available"] for k in ("mean", "ci_low", "ci_high")
                  if c[k] is not None}
        found |= {v for row in group["rows"] for text in (row["context_len"], row["traj_len"])
                  for v in text.split(" / ")}
    return found


@pytest.mark.parametrize("width", [40, 60, 80, 200])
def test_no_number_is_ever_cut_at_any_width(bracket_labels, width):
    runner = CliRunner()
    args = ["leaderboard", "--results", str(bracket_labels)]
    records = json.loads(runner.invoke(app, [*args, "--format", "json"]).stdout)
    result = runner.invoke(app, args, env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= width and "…" not in result.stdout
    tokens = {token.strip("[],") for token in result.stdout.split()}
    assert not _numbers_of(records) - tokens  # every number in full, none cropped or dropped
    for label in ("blurry-memory[k=4]", "blurry-memory[kk=4]", "worldpack[memory=off]"):
        assert label in result.stdout  # never read as markup
    assert "mean [95% CI]" in " ".join(result.stdout.split()) and "aaaaaaaa" not in result.stdout  # named; no hash
    assert "2026-01-02" not in result.stdout  # run timestamps stay in the json format
    assert any("2026-01-02" in note for note in records["groups"][0]["provenance"])
    assert ("┃ range" in result.stdout) == (width >= 60)  # tables while they fit, then a list


def test_rows_are_ranked_within_each_range_by_the_first_metric(bracket_labels):
    for metric, best_first in (("ssim", True), ("lpips", False)):
        board = build_leaderboard(group_runs(load_runs(bracket_labels)), metrics=[metric, "psnr"])
        table = board.tables[0]
        for range_ in ("5", "50"):
            rows = [row for row in table.rows if row.range == range_]
            means = [np.mean([row.cells[metric, t].mean for t in table.tasks]) for row in rows]
            assert means == sorted(means, reverse=best_first) and len(rows) == 4
    assert table.rows[0].context_len.count(" / ") == 1  # one value per task, under "context ABA / ABCA"
    assert "| range | model | context ABA / ABCA | traj len ABA / ABCA |" in render_markdown(board)
