"""Paired comparisons (leaderboard/paired.py): `leaderboard compare`, memory reliance, oracle rows, revisit curves.

The numbers are checked against a direct computation from the samples files of a hand-made results folder."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from results_fixtures import OTHER_MANIFEST, write_run
from typer.testing import CliRunner

from leaderboard.paired import holm, sign_flip_p
from leaderboard.results import group_runs, load_runs
from leaderboard.table import FORMATS, build_leaderboard, to_records
from loopnav.cli import app

TS = "2026-01-02T10-00-{:02d}.000001"


def _rows(root: Path, model: str) -> dict[str, dict]:
    (path,) = (root / model).rglob("samples_*.jsonl")
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


def _direct(root: Path, a: str, b: str, metric: str, task: str, range_: str) -> dict:
    """Mean difference, bootstrap CI and exact sign-flip p, computed here from the rows."""
    rows_a, rows_b = _rows(root, a), _rows(root, b)
    ids = sorted(i for i, r in rows_a.items() if r["task"] == task and range_ in ("all", str(r["range"])))
    d = np.array([np.mean(rows_a[i]["metrics"][metric]) - np.mean(rows_b[i]["metrics"][metric]) for i in ids])
    n = len(d)
    counts = np.random.default_rng(0).multinomial(n, [1 / n] * n, size=1000)
    low, high = np.percentile(counts @ d / n, [2.5, 97.5])
    flips = [abs(np.dot(signs, d)) / n >= abs(d.mean()) - 1e-12 for signs in itertools.product((1, -1), repeat=n)]
    return {"n": n, "mean": d.mean(), "ci_low": low, "ci_high": high, "p": np.mean(flips)}


def _compare(root: Path, *args: str) -> dict:
    result = CliRunner().invoke(app, ["leaderboard", "compare", *args, "--results", str(root), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_holm_and_sign_flip_against_hand_computed_values():
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.5]) == [1.0, 1.0]
    assert sign_flip_p(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 / 8)  # only all + and all − reach mean 2
    assert sign_flip_p(np.zeros(5)) == 1.0  # identical entries: nothing to detect
    big = sign_flip_p(np.ones(40), permutations=2000, seed=1)  # Monte Carlo: no flip reaches, p = 1 / (1 + B)
    assert big == pytest.approx(1 / 2001)


def test_compare_json_matches_a_direct_computation(tmp_path):
    write_run(tmp_path, "alpha", TS.format(1), 0.70, seed=2, n_per_cell=6)
    write_run(tmp_path, "beta", TS.format(2), 0.72, seed=3, n_per_cell=6)
    (comparison,) = _compare(tmp_path, "alpha", "beta", "--metric", "psnr,ssim")["comparisons"]
    assert (comparison["a"], comparison["b"], comparison["split"]) == ("alpha", "beta", "test")
    rows = comparison["rows"]
    assert [(r["metric"], r["task"], r["range"]) for r in rows] == [
        (m, t, r) for m in ("psnr", "ssim") for t in ("ABA", "ABCA") for r in ("5", "15", "all")]
    for row in rows:
        expected = _direct(tmp_path, "alpha", "beta", row["metric"], row["task"], row["range"])
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (row["metric"], row["task"], key)
    p = np.array([r["p"] for r in rows])
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1, (len(p) - np.arange(len(p))) * p[order]))
    assert [r["p_holm"] for r in rows] == pytest.approx(list(adjusted[np.argsort(order)]))
    for row in rows:  # beta is the better one where the test says so; never alpha
        assert row["better"] in (None, "B") and (row["better"] is None) == (row["p_holm"] >= 0.05)


def test_compare_refuses_what_cannot_be_paired(tmp_path):
    write_run(tmp_path, "alpha", TS.format(1), 0.7)
    write_run(tmp_path, "other-data", TS.format(2), 0.7, manifest=OTHER_MANIFEST)
    write_run(tmp_path, "other-size", TS.format(3), 0.7, eval_size=(64, 64))
    write_run(tmp_path, "fewer", TS.format(4), 0.7, n_per_cell=3)
    runner = CliRunner()
    for other, message in (("other-data", "data manifest differ"), ("other-size", "eval size differ"),
                           ("fewer", "different trajectories"), ("nobody", "no results for entry 'nobody'")):
        result = runner.invoke(app, ["leaderboard", "compare", "alpha", other, "--results", str(tmp_path)])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_memory_reliance_pairs_an_entry_with_its_swap_twin_in_every_format(tmp_path):
    write_run(tmp_path, "alpha", TS.format(1), 0.70, seed=2)
    write_run(tmp_path, "alpha+swap", TS.format(2), 0.70, seed=2)  # the same rows: no reliance at all
    write_run(tmp_path, "beta", TS.format(3), 0.90, seed=3)
    write_run(tmp_path, "beta+swap", TS.format(4), 0.60, seed=3)  # loses 0.3 quality = 4.5 dB without its memory
    board = build_leaderboard(group_runs(load_runs(tmp_path)), ["psnr", "ssim"])
    (group,) = to_records(board)["groups"]
    reliance = {r["entry"]: r for r in group["memory_reliance"]}
    assert set(reliance) == {"alpha", "beta"} and reliance["beta"]["swapped"] == "beta+swap"
    assert all(row["mean"] == 0 and row["p"] == 1 for row in reliance["alpha"]["rows"])
    pooled = next(r for r in reliance["beta"]["rows"] if (r["metric"], r["task"], r["range"]) == ("psnr", "ABA", "all"))
    assert pooled["mean"] == pytest.approx(4.5) and pooled["ci_low"] > 0 and pooled["n"] == 8
    for name in ("markdown", "html"):
        text = FORMATS[name](board)
        assert "Memory reliance · beta − beta+swap" in text and "Memory reliance · alpha − alpha+swap" in text, name
    csv_rows = [r for r in csv.DictReader(io.StringIO(FORMATS["csv"](board))) if r["section"] == "memory reliance"]
    assert {r["model"] for r in csv_rows} == {"alpha − alpha+swap", "beta − beta+swap"}
    pooled_csv = next(r for r in csv_rows if (r["model"], r["metric"], r["task"], r["range"]) ==
                      ("beta − beta+swap", "psnr", "ABA", "all"))
    assert float(pooled_csv["mean"]) == pytest.approx(4.5) and float(pooled_csv["p_holm"]) == pooled["p_holm"]
    from rich.console import Console

    console = Console(width=100, record=True)
    console.print(FORMATS["rich"](board))
    assert "Memory reliance · beta − beta+swap" in console.export_text()


def test_an_oracle_row_is_shown_last_and_never_bold(tmp_path):
    write_run(tmp_path, "alpha", TS.format(1), 0.70, seed=2)
    write_run(tmp_path, "oracle-copy", TS.format(2), 0.99, seed=3, oracle=True)
    board = build_leaderboard(group_runs(load_runs(tmp_path)), ["psnr"])
    (group,) = to_records(board)["groups"]
    block = [row for row in group["rows"] if row["range"] == "5"]
    assert [(row["model"], row["oracle"]) for row in block] == [("alpha", False), ("oracle-copy", True)]
    assert block[0]["cells"]["psnr"]["ABA"]["best"] and not block[1]["cells"]["psnr"]["ABA"]["best"]
    assert "| oracle-copy (oracle) |" in FORMATS["markdown"](board)
    assert any("oracle" in note and "never ranked" in note for note in group["notes"])


def test_revisit_curve_bins_every_target_frame_by_the_oracle_psnr(tmp_path):
    write_run(tmp_path, "oracle-copy", TS.format(1), 0.80, seed=1, oracle=True)
    write_run(tmp_path, "copy-last", TS.format(2), 0.50, seed=2)
    write_run(tmp_path, "gamma", TS.format(3), 0.70, seed=3)
    (group,) = to_records(build_leaderboard(group_runs(load_runs(tmp_path)), ["psnr"]))["groups"]
    curve = next(c for c in group["revisit"] if c["task"] == "ABA")
    oracle_rows = [r for r in _rows(tmp_path, "oracle-copy").values() if r["task"] == "ABA"]
    assert sum(curve["frames"]) == sum(r["target_len"] for r in oracle_rows)
    assert curve["reference"] == "copy-last" and set(curve["psnr"]) == {"copy-last", "gamma"}
    assert set(curve["difference_to_reference"]) == {"gamma"}
    # the bin means are the frame means of the frames in the bin, computed here
    scores = np.concatenate([r["metrics"]["psnr"] for r in oracle_rows])
    gamma = _rows(tmp_path, "gamma")
    values = np.concatenate([gamma[r["id"]]["metrics"]["psnr"] for r in oracle_rows])
    edges = curve["bin_edges"]
    for b, mean in enumerate(curve["psnr"]["gamma"]["mean"]):
        inside = (scores >= edges[b]) & ((scores < edges[b + 1]) if b < len(edges) - 2 else (scores <= edges[b + 1]))
        assert mean == pytest.approx(values[inside].mean())
    out = tmp_path / "plots"
    result = CliRunner().invoke(app, ["leaderboard", "--results", str(tmp_path), "--plot", str(out), "--reference",
                                      "gamma", "--format", "json", "--metric", "psnr"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.rglob("revisit_*.png")) == ["revisit_ABA.png", "revisit_ABCA.png"]
    bad = CliRunner().invoke(app, ["leaderboard", "--results", str(tmp_path), "--reference", "nobody"])
    assert bad.exit_code == 2 and "--reference 'nobody'" in bad.output
