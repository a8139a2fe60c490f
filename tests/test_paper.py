"""`loopnav leaderboard paper`: the WorldPack paper's tables, figures and claims check from one results folder.

The runs are synthetic (`results_fixtures`); a run's `quality` orders its scores, so each test can make an entry
better or worse and see the tables, the figures and the claims follow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from results_fixtures import write_run
from typer.testing import CliRunner

from leaderboard.bootstrap import mean_ci
from leaderboard.paired import Paired
from leaderboard.paper import ENTRIES, bench_table, build_paper_group, cell_md, claims, verdict, write_paper
from leaderboard.plots import cell_figure
from leaderboard.results import group_runs, load_runs
from loopnav.cli import app

RANGES = (5, 15, 30, 50)
QUALITY = {"worldpack": 0.80, "worldpack-full": 0.85, "worldpack-base": 0.55, "worldpack-pack-only": 0.70,
           "worldpack-retrieval-only": 0.65, "nwm": 0.50, "diamond": 0.45, "copy-last": 0.30, "nearest-pose": 0.35}


def write_entries(root: Path, quality: dict[str, float], ranges=RANGES, same_seed: bool = False, **kwargs) -> Path:
    """One run per entry; LPIPS unavailable everywhere, as without its weights."""
    for i, (model, q) in enumerate(quality.items()):
        write_run(root, model, f"2026-01-02T10-00-{i:02d}.000001", q, seed=0 if same_seed else i, ranges=ranges,
                  unavailable=("lpips",), **kwargs)
    return root


@pytest.fixture(scope="module")
def paper_dir(tmp_path_factory) -> Path:
    results = write_entries(tmp_path_factory.mktemp("paper") / "results", QUALITY)
    write_paper(group_runs(load_runs(results)), results.parent / "out", frames=12)
    return results.parent


def test_cells_are_the_bootstrap_means_of_the_rows_and_the_best_is_bold(paper_dir):
    (group,) = group_runs(load_runs(paper_dir / "results"))
    paper = build_paper_group(group)
    assert paper.models == list(ENTRIES) and paper.ranges == ["5", "15", "30", "50"]
    run = next(r for r in group.runs if r.model == "nwm")
    per_traj = [np.mean(r["metrics"]["psnr"]) for r in run.cell_rows("test", "ABCA", "30")]
    mean, low, high = map(float, mean_ci(np.array(per_traj)))
    cell = paper.cell("nwm", "ABCA", "30", "psnr")
    assert (cell.mean, cell.low, cell.high) == pytest.approx((mean, low, high))
    assert cell_md(cell) == f"{mean:.2f} [{low:.2f}, {high:.2f}]"  # the one convention: mean [95% CI]
    best = paper.cell("worldpack-full", "ABCA", "30", "psnr")
    assert best.best and not cell.best and cell_md(best).startswith("**")
    markdown = (paper_dir / "out" / "paper.md").read_text()
    table2 = markdown.split("### Table 2 · ABCA")[1]
    row = next(line for line in table2.splitlines() if line.startswith("| nwm |"))
    assert row.split(" | ")[1 + 5 * 2 + 1] == cell_md(cell)  # entry, then 5 metrics per range; range 30's PSNR
    assert "### Table 1 · ABA" in markdown
    assert "| entry | 5: SSIM ↑ | 5: PSNR ↑ | 5: LPIPS ↓ | 5: DREAMSIM ↓ | 5: FVD ↓ | 15: SSIM ↑" in markdown


def test_missing_metrics_read_na_with_the_recorded_reason(tmp_path):
    results = write_entries(tmp_path / "results", {"worldpack": 0.8, "nwm": 0.5}, ranges=(5,))
    write_run(results, "diamond", "2026-01-03T00-00-00.000001", 0.4, ranges=(5,), unavailable=("dreamsim", "fvd"))
    paper = build_paper_group(group_runs(load_runs(results))[0])
    footnotes = paper.table.footnotes
    lpips, dreamsim = paper.cell("worldpack", "ABA", "5", "lpips"), paper.cell("diamond", "ABA", "5", "dreamsim")
    assert cell_md(lpips) == f"n/a [{lpips.note}]" and cell_md(dreamsim) == f"n/a [{dreamsim.note}]"
    assert "weights download lpips" in footnotes[lpips.note - 1]
    assert footnotes[dreamsim.note - 1].startswith("dreamsim n/a for diamond:")
    assert not paper.cell("diamond", "ABCA", "5", "fvd").available
    assert paper.cell("worldpack", "ABCA", "5", "dreamsim").available


def test_verdict_wording():
    def tested(mean, p_holm, higher_is_better=True):
        return Paired("psnr", "ABA", "5", 8, mean, mean - 1, mean + 1, p_holm, 0.0, 0.0, p_holm, higher_is_better)

    assert verdict(tested(1.0, 0.01)) == "holds"
    assert verdict(tested(1.0, 0.2)) == "better, not significant"
    assert verdict(tested(-1.0, 0.01)) == "does not hold"
    assert verdict(tested(-1.0, 0.01, higher_is_better=False)) == "holds"  # lower is better
    assert verdict(None) == "n/a"


@pytest.mark.parametrize("worldpack, loops, wording", [(0.9, 8, "holds"), (0.52, 4, "better, not significant"),
                                                       (0.3, 8, "does not hold")])
def test_claims_follow_the_numbers(tmp_path, worldpack, loops, wording):
    # same seed: the same noise, so only `quality` separates the two entries. With 8 loops a cell a paired test can
    # reach p < 0.05 after Holm over the 4 cells (the smallest exact sign-flip p of 8 pairs is 2/256); with 4 it
    # cannot (2/16), however large the difference
    results = write_entries(tmp_path / "results", {"worldpack": worldpack, "nwm": 0.5}, ranges=(5,), same_seed=True,
                            n_per_cell=loops)
    lines = claims(build_paper_group(group_runs(load_runs(results))[0]))
    line = next(line for line in lines if line.startswith("- `worldpack` vs `nwm`, ABA PSNR:"))
    assert line.startswith(f"- `worldpack` vs `nwm`, ABA PSNR: range 5 {wording} (")
    assert "- `worldpack` vs `diamond`: not checked, diamond absent." in lines
    assert "- `worldpack-full` vs `nwm`: not checked, worldpack-full absent." in lines
    assert f'Summary: 4 cells: "holds" in {4 * (wording == "holds")},' in lines[0]


def test_a_claim_is_also_tested_pooled_over_the_ranges(tmp_path):
    # 4 loops a cell: no cell can be significant (smallest exact p 2/16), but the 16 loops of a task pooled can
    results = write_entries(tmp_path / "results", {"worldpack": 0.9, "nwm": 0.5}, ranges=(5, 15, 30, 50),
                            same_seed=True, n_per_cell=4)
    lines = claims(build_paper_group(group_runs(load_runs(results))[0]))
    line = next(line for line in lines if line.startswith("- `worldpack` vs `nwm`, ABA PSNR:"))
    assert line.count("better, not significant (") == 4 and "; pooled over ranges holds (" in line
    assert 'Summary: 16 cells: "holds" in 0, "better, not significant" in 16,' in lines[0]
    assert '; pooled over ranges, 4 cells: "holds" in 4,' in lines[0]


def test_ablation_order_is_checked_per_cell(tmp_path):
    quality = {"worldpack-full": 0.85, "worldpack-pack-only": 0.50, "worldpack-base": 0.60,
               "worldpack-retrieval-only": 0.65}
    results = write_entries(tmp_path / "r", quality, ranges=(5,), n_per_cell=8)
    lines = claims(build_paper_group(group_runs(load_runs(results))[0]))
    line = next(line for line in lines if line.startswith("- ABA range 5:"))
    assert "full > pack-only holds" in line and "pack-only > base does not hold" in line
    assert "full > retrieval-only holds" in line
    lines = claims(build_paper_group(group_runs(load_runs(write_entries(tmp_path / "s", {"worldpack-full": 0.8},
                                                                        ranges=(5,))))[0]))
    assert ("- not checked where an entry is absent: `worldpack-pack-only`, `worldpack-base`, "
            "`worldpack-retrieval-only`.") in lines


def test_figures_are_pngs_linked_from_the_markdown(paper_dir):
    out = paper_dir / "out"
    pngs = sorted(out.rglob("*.png"))
    assert [p.name for p in pngs] == ["figure4_ABCA_range30.png", "figure4_ABCA_range50.png", "figure5_ABA_range5.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    markdown = (out / "paper.md").read_text()
    assert all(f"]({p.relative_to(out).as_posix()})" in markdown for p in pngs)
    assert "Table 4 omitted: no benchmark JSON given" in markdown


def test_figure4_keeps_the_last_frames_aligned_at_the_end(paper_dir):
    (group,) = group_runs(load_runs(paper_dir / "results"))
    fig = cell_figure(group, "ABCA", "30", ["psnr"], frames=7)
    x = fig.axes[0].lines[0].get_xdata()
    assert list(x) == list(range(-6, 1))
    run = group.runs[0]
    last = np.mean([r["metrics"]["psnr"][-1] for r in run.cell_rows("test", "ABCA", "30")])
    assert fig.axes[0].lines[0].get_ydata()[-1] == pytest.approx(last)


def test_absent_entries_are_named_never_an_error(tmp_path):
    results = write_entries(tmp_path / "results", {"nwm": 0.5, "copy-last": 0.3, "my-model": 0.9}, ranges=(5, 15))
    write_run(results, "other", "2026-01-03T00-00-00.000001", 0.5, manifest="c" * 64)  # a group without paper entries
    written = write_paper(group_runs(load_runs(results)), tmp_path / "out")
    markdown = written[0].read_text()
    assert written == [tmp_path / "out" / "paper.md"]  # no WorldPack entry: no figure
    assert ("Absent entries, skipped: `worldpack`, `worldpack-full`, `worldpack-base`, `worldpack-pack-only`, "
            "`worldpack-retrieval-only`, `diamond`, `nearest-pose`.") in markdown
    assert "Not in the paper, left out: `my-model`." in markdown and "Ranges not in these results: 30, 50." in markdown
    assert "Figure 4, ABCA range 30: not drawn" in markdown and "Figure 5, ABA range 5: not drawn" in markdown
    assert "None of the paper's entries in this group, only `other`." in markdown
    assert "| my-model |" not in markdown


@pytest.mark.slow  # draws every figure of the paper
def test_cli_writes_the_paper_with_the_benchmark_table(paper_dir, tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({
        "preset": "small", "device": "cpu, 1 thread, process CPU time", "batch": 1, "torch": "2.13.0",
        "rows": [{"variant": v, "context_tokens": t, "frame_ms": f, "denoiser_ms": d, "peak_memory_mb": m}
                 for v, t, f, d, m in (("full", 160, 30.0, 10.0, 50.0), ("base", 256, 40.0, 13.0, 60.0))],
        "ratio_full_over_base": {"context_tokens": 0.625, "frame_ms": 0.75, "denoiser_ms": 10 / 13,
                                 "peak_memory_mb": 50 / 60}, "rounds": 5,
        "ratio_range": {"context_tokens": [0.625, 0.625], "frame_ms": [0.7, 0.81], "denoiser_ms": [0.7, 0.8],
                        "peak_memory_mb": [0.8, 0.9]}}))
    result = CliRunner().invoke(app, ["leaderboard", "paper", "-r", str(paper_dir / "results"), "-o",
                                      str(tmp_path / "out"), "--bench", str(bench), "--frames", "5"])
    assert result.exit_code == 0, result.output
    assert result.output.count("wrote") == 4
    markdown = (tmp_path / "out" / "paper.md").read_text()
    assert "| full | 160 | 30.0 | 10.00 | 50.0 |" in markdown
    assert "| full / base | 0.62× (0.62–0.62) | 0.75× (0.70–0.81) | 0.77× (0.70–0.80) | 0.83× (0.80–0.90) |" in markdown
    assert "Medians of 5 interleaved rounds" in markdown
    assert "last 5 frames" in markdown
    missing = tmp_path / "missing.json"
    assert bench_table(missing) == [f"Table 4 omitted: {missing} does not exist (write one with "
                                    "`benchmarks/bench_worldpack.py --out FILE`)."]
    bench.write_text("{}")
    result = CliRunner().invoke(app, ["leaderboard", "paper", "-r", str(paper_dir / "results"), "-o",
                                      str(tmp_path / "out"), "--bench", str(bench)])
    assert result.exit_code == 2 and "not a bench_worldpack.py output" in " ".join(result.output.split())


def test_paper_shows_memory_reliance_for_entries_with_a_swap_twin(tmp_path):
    results = write_entries(tmp_path / "results", {"worldpack": 0.8, "worldpack+swap": 0.6, "nwm": 0.5},
                            ranges=(5,), same_seed=True)
    (path, *_) = write_paper(group_runs(load_runs(results)), tmp_path / "out", frames=4)
    section = path.read_text().split("### Memory reliance (context-swap ablation)")[1]
    assert "worldpack − worldpack+swap" in section and "nwm −" not in section
    row = next(line for line in section.splitlines() if line.startswith("| PSNR ↑ | ABA | all |"))
    assert "+3.000 [+3.000, +3.000]" in row  # 0.2 quality is 3 dB on every trajectory (the same noise)
