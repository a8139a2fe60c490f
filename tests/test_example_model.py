"""The README's plug-in, examples/my_model, installed by pip as a user would and evaluated through `loopnav`.

pip installs it into a folder of its own (`--target`), which the tests put on sys.path: a real build and install
(wheel, dist-info, entry point), without touching the environment the tests run in.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopnav.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_model"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    target, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("src") / "my_model"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))  # setuptools writes there
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--no-index", "--target", str(target), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    assert list(target.glob("loopnav_my_model-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def loopnav(site, monkeypatch):
    """Run `loopnav ARGS...` with the example installed; returns (exit code, everything it printed)."""
    monkeypatch.syspath_prepend(str(site))

    def run(*args: object) -> tuple[int, str]:
        result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
        return result.exit_code, " ".join(result.output.split())
    return run


@pytest.mark.slow  # pip installs the example
def test_the_installed_example_is_listed_and_evaluated(loopnav, tiny_shards, tmp_path):
    code, listed = loopnav("models")
    assert code == 0 and "blurry-memory" in listed and "the mean of the last k context frames" in listed

    out = tmp_path / "results"
    code, output = loopnav("evaluate", "--model", "blurry-memory", "--model-args", "k=4", "--data", tiny_shards,
                           "-o", out, "--metrics", "ssim,psnr")
    assert code == 0, output
    (results_path,) = out.glob("*/results_*.json")
    results = json.loads(results_path.read_text())
    assert results["model"] == "blurry-memory[k=4]" and results["config"]["model_args"] == {"k": 4}
    assert results["n_trajectories"] == {"original": 4, "effective": 4}
    assert results["results"]["test/ABA/5"]["ssim"]["mean"] > 0
    assert "blurry-memory[k=4]" in output  # the summary names the entry in full


@pytest.mark.slow  # pip installs the example
@pytest.mark.parametrize("args, culprit", [("kk=4", "--model-args kk: model 'blurry-memory' takes k"),
                                           ("k=four", "--model-args k='four'"),
                                           ("k=0", "model arg k=0 must be at least 1")])
def test_a_bad_model_arg_of_the_example_is_an_error(loopnav, tiny_shards, tmp_path, args, culprit):
    out = tmp_path / "results"
    code, output = loopnav("evaluate", "--model", "blurry-memory", "--model-args", args, "--data", tiny_shards,
                           "-o", out)
    assert code == 2 and culprit in output, output
    assert not list(out.rglob("results_*.json"))  # nothing recorded for a run that never started


def test_the_readme_quotes_the_example_as_it_is():
    """Every line the README shows under a file name of examples/my_model is a line of that file."""
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    blocks = re.findall(r"```\w*\n# (examples/my_model/\S+)\n(.*?)```", readme, flags=re.S)
    assert {path for path, _ in blocks} == {"examples/my_model/my_model/model.py", "examples/my_model/pyproject.toml"}
    for path, block in blocks:
        source = (EXAMPLE.parents[1] / path).read_text()
        quoted = [line.split("  #")[0].rstrip() for line in block.splitlines() if line.strip()]
        assert [line for line in quoted if line not in source] == [], path
