"""`loopnav show` and `loopnav report` on real `evaluate` outputs of the tiny synthetic set, and the report in Chromium.

Two entries: copy-last, and `recall`, a plug-in that returns the context frame nearest in x and reports it through
`RolloutRequest.report_memory`, so the memory hook is exercised end to end.
"""

from __future__ import annotations

import html.parser
from pathlib import Path

import numpy as np
import pytest
from chromium import DESKTOP, PHONE, Browser, find_chromium, inspect_page
from conftest import SyntheticSource, make_trajectory
from PIL import Image
from results_fixtures import write_run
from typer.testing import CliRunner

from leaderboard.report import write_report
from leaderboard.results import group_runs, load_runs
from leaderboard.show import ShowError, select_ids, show
from leaderboard.table import build_leaderboard, render_html
from loopnav.cli import app
from loopnav_bench.evaluate import EvalConfig, EvaluationError, evaluate, read_prediction
from loopnav_bench.metrics import trajectory_mean
from loopnav_bench.models import WorldModel
from loopnav_bench.shards import prepare, read_trajectories

ENTRIES = ["copy-last", "recall"]
CELLS = {"ABA/5", "ABCA/5"}


class Recall(WorldModel):
    """For every target frame, the context frame nearest in x; it reports that frame (and an empty slot) as memory."""

    name, takes_checkpoint = "recall", False

    def __init__(self, bad: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.bad = bad

    def rollout(self, request):
        frames = []
        for step, pose in enumerate(request.target_poses):
            nearest = int(np.argmin(np.abs(request.context_poses[:, 0] - pose[0])))
            if self.bad == "future":
                nearest = len(request.context_frames) + step  # the frame being predicted: not allowed
            if self.bad != "partial" or step == 0:
                request.report_memory(step, [nearest, -1])
            frames.append(request.context_frames[min(nearest, len(request.context_frames) - 1)])
        return np.stack(frames)


class VariedSource(SyntheticSource):
    """The synthetic loops with lengths that differ by index, so that trajectories of a cell score differently."""

    def load(self, spec):
        task = "ABA" if spec["index"] % 2 == 0 else "ABCA"
        return make_trajectory(spec["index"], length=16 + 5 * spec["index"], task=task, split=spec["split"])


def _config(data: Path, out: Path, model: str) -> EvalConfig:
    return EvalConfig(data=data, output_dir=out, model=model, metrics=["ssim", "psnr"], batch_size=2)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """(data, results folder) with both entries evaluated on the 4 test trajectories."""
    root = tmp_path_factory.mktemp("show")
    data, results = root / "shards", root / "results"
    prepare(VariedSource(), data)
    evaluate(_config(data, results, "copy-last"))
    evaluate(_config(data, results, "recall"), model=Recall())
    return data, results


def _runs(results: Path):
    return load_runs(results)


def _prediction(results: Path, entry: str, trajectory_id: str):
    run = next(r for r in _runs(results) if r.model == entry)
    return read_prediction(results / entry / run.results["run_key"] / "predictions" / f"{trajectory_id}.npz")


def test_reported_memory_is_saved_with_the_prediction(evaluated):
    data, results = evaluated
    for traj in read_trajectories(data, "test"):
        frames, memory = _prediction(results, "recall", traj.id)
        context_x = traj.poses[:traj.offset, 0]
        nearest = [int(np.argmin(np.abs(context_x - x))) for x in traj.poses[traj.offset:, 0]]
        assert memory.tolist() == [[i, -1] for i in nearest]
        np.testing.assert_array_equal(frames, traj.frames[nearest])
        assert _prediction(results, "copy-last", traj.id)[1] is None  # a model that reports nothing


@pytest.mark.parametrize("bad, message", [("future", "not -1 or an earlier frame"), ("partial", "1 of")])
def test_a_bad_memory_report_names_the_model_and_trajectory(evaluated, tmp_path, bad, message):
    data, _ = evaluated
    with pytest.raises(EvaluationError, match=f"model 'recall': trajectory '.*test.*': .*{message}"):
        evaluate(_config(data, tmp_path / "out", "recall"), model=Recall(bad=bad))


def test_show_writes_every_format_with_every_frame(evaluated, tmp_path):
    import imageio_ffmpeg

    data, results = evaluated
    traj = next(t for t in read_trajectories(data, "test"))
    expected = 3 + len(traj) - traj.offset  # 3 context frames, then the whole return leg
    runs = _runs(results)
    written = {suffix: show(runs, ENTRIES, tmp_path / f"one{suffix}", ids=[traj.id], context=3)[0]
               for suffix in (".mp4", ".webp", ".gif", ".png")}
    reader = imageio_ffmpeg.read_frames(str(written[".mp4"]))
    meta = next(reader)
    assert meta["codec"] == "h264" and sum(1 for _ in reader) == expected
    for suffix in (".webp", ".gif"):
        with Image.open(written[suffix]) as image:
            assert image.n_frames == expected and image.size == tuple(meta["size"])
    with Image.open(written[".png"]) as strip:
        assert strip.width > strip.height  # return-leg frames across
    # the entry that reports memories gets a memory row: its frames are taller than those without one
    without = show(runs, ["copy-last"], tmp_path / "plain.webp", ids=[traj.id], context=3)[0]
    with Image.open(without) as image:
        assert image.size[1] < meta["size"][1]


def test_best_and_worst_are_ranked_by_the_mean_over_the_entries(evaluated, tmp_path):
    data, results = evaluated
    runs = [r for name in ENTRIES for r in _runs(results) if r.model == name]
    by_cell: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for row in run.rows:
            by_cell.setdefault(row["task"], {}).setdefault(row["id"], []).append(trajectory_mean(row, "ssim")[0])
    means = [{i: np.mean(v) for i, v in ids.items()} for _, ids in sorted(by_cell.items())]
    assert all(len(set(m.values())) == len(m) for m in means)  # no ties: the order is the scores'
    best, worst = [max(m, key=m.get) for m in means], [min(m, key=m.get) for m in means]
    assert select_ids(runs, best=1, metric="ssim") == best
    assert select_ids(runs, worst=1, metric="ssim") == worst
    written = show(_runs(results), ENTRIES, tmp_path / "best.png", best=1, metric="ssim")
    assert [p.name for p in written] == [f"best_{i}.png" for i in best]


def test_show_errors_are_one_clear_line(evaluated, tmp_path):
    data, results = evaluated
    runs = _runs(results)
    with pytest.raises(ShowError, match="'recal': no such entry.*Did you mean 'recall'"):
        show(runs, ["recal"], tmp_path / "x.mp4", best=1)
    with pytest.raises(ShowError, match="'nope': copy-last has no such trajectory"):
        show(runs, ["copy-last"], tmp_path / "x.mp4", ids=["nope"])
    with pytest.raises(ShowError, match="must end in .mp4"):
        show(runs, ["copy-last"], tmp_path / "x.avi", best=1)
    with pytest.raises(ShowError, match="exactly one of --id, --best N or --worst N"):
        show(runs, ["copy-last"], tmp_path / "x.mp4", best=1, worst=1)
    with pytest.raises(ShowError, match="--metric lpips: no trajectory has values"):  # not computed in these runs
        show(runs, ["copy-last"], tmp_path / "x.mp4", best=1, metric="lpips")
    other = tmp_path / "other"
    prepare(SyntheticSource(per_split=2), other)
    with pytest.raises(ShowError, match="manifest hash .* is not the one the runs were evaluated on"):
        show(runs, ["copy-last"], tmp_path / "x.mp4", best=1, data=other)
    result = CliRunner().invoke(app, ["show", str(results), "--entry", "recal", "--best", "1", "--out",
                                      str(tmp_path / "x.mp4")], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "Did you mean 'recall'" in result.output
    assert not list(tmp_path.glob("x*"))


class _Page(html.parser.HTMLParser):
    """The attributes of every tag, by tag name."""

    def __init__(self):
        super().__init__()
        self.tags: dict[str, list[dict[str, str]]] = {}

    def handle_starttag(self, tag, attrs):
        self.tags.setdefault(tag, []).append(dict(attrs))


@pytest.fixture(scope="module")
def report(evaluated, tmp_path_factory):
    data, results = evaluated
    out = tmp_path_factory.mktemp("report") / "site"
    return write_report(_runs(results), out, results, fps=8, context=2)


def test_report_is_one_self_contained_page(evaluated, report):
    _, results = evaluated
    text = report.read_text()
    page = _Page()
    page.feed(text)
    assert text.startswith("<!doctype html>") and '<meta charset="utf-8">' in text
    links = [a.get(key) for tag in ("img", "video", "script", "link", "a") for a in page.tags.get(tag, [])
             for key in ("src", "href") if a.get(key)]
    assert links and not [link for link in links if "//" in link]  # nothing fetched from anywhere
    media = [a["src"] for tag in ("img", "video") for a in page.tags[tag]]
    assert all((report.parent / src).is_file() for src in media)
    videos = page.tags["video"]
    assert {v["data-trajectory"] for v in videos} == {t.id for t in read_trajectories(evaluated[0], "test")}
    assert {a["data-cell"] for a in page.tags["div"] if "data-cell" in a} == CELLS
    for run in _runs(results):
        assert run.results["run_key"] in text and f">{run.model}</td>" in text


@pytest.mark.slow  # drives a browser
@pytest.mark.skipif(not find_chromium(),
                    reason="chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
def test_report_renders_and_plays_in_chromium(report, tmp_path):
    with Browser(find_chromium()) as browser:
        browser.open(report, *DESKTOP)
        state = inspect_page(browser)
        desktop = browser.screenshot(tmp_path / "desktop.png")
        # sorting: PSNR ABA, best first, within each range block
        order = browser.evaluate("""(() => {
            const th = Array.from(document.querySelectorAll("th")).find(h => h.textContent.startsWith("PSNR ↑ ABA"));
            th.click();
            return Array.from(th.closest("table").tBodies[0].rows).filter(r => !r.classList.contains("block"))
                .map(r => parseFloat(r.cells[th.cellIndex].dataset.value));
        })()""")
        browser.open(report, *PHONE)
        phone_width = inspect_page(browser)["scrollWidth"]
        phone = browser.screenshot(tmp_path / "phone.png")
    assert state["title"] == "LoopNav results"
    assert set(state["models"]) == set(ENTRIES)
    assert set(state["cells"]) == CELLS
    assert state["videos"] and all(v["readyState"] >= 2 and v["duration"] > 0 and v["currentTime"] > 0
                                   and v["error"] is None and v["width"] > 0 for v in state["videos"])
    assert {v["cell"] for v in state["videos"]} == CELLS
    assert state["images"] and all(image["width"] > 0 for image in state["images"])
    assert len(order) == 2 and order == sorted(order, reverse=True)
    assert phone_width <= PHONE[0]  # tables scroll inside their box; the page itself never scrolls sideways
    for path, size in ((desktop, DESKTOP), (phone, PHONE)):
        with Image.open(path) as image:
            assert image.size == size


def test_html_leaderboard_is_a_complete_page_that_escapes_labels(tmp_path):
    for i, model in enumerate(["worldpack[memory=off]", "a<b>&c"]):
        write_run(tmp_path, model, f"2026-01-0{i + 1}T00-00-00", 0.5 + i / 10, unavailable=("lpips",), seed=i)
    text = render_html(build_leaderboard(group_runs(load_runs(tmp_path))))
    assert text.startswith("<!doctype html>") and "<title>LoopNav leaderboard</title>" in text and "<style>" in text
    assert ">worldpack[memory=off]</td>" in text and ">a&lt;b&gt;&amp;c</td>" in text and "<b>&" not in text
    assert "LPIPS" not in text.split("<tbody>")[0]  # a column no entry has is left out; its footnote stays
    assert "lpips n/a" in text and "<code>loopnav weights download lpips</code>" in text
