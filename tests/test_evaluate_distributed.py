"""`loopnav evaluate` under torchrun: 2 CPU processes (gloo) give the single process's numbers; a failing rank fails
the run quickly instead of hanging it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import install_model_plugin

from loopnav_bench.distributed import DistContext
from loopnav_bench.evaluate import EvalConfig, EvaluationError, evaluate

FAILS_ON_RANK_1 = """
class Plugin(WorldModel):
    def rollout(self, request):
        if request.id == "synthetic_ABCA_5_test_1":  # item 1 of 4: rank 1's first trajectory
            raise RuntimeError("boom on " + request.id)
        return np.repeat(request.context_frames[-1:], request.horizon, axis=0)
"""


def _torchrun(args: list[str], nproc: int = 2, plugins: Path | None = None, timeout: float = 90):
    env = dict(os.environ, OMP_NUM_THREADS="1", LOOPNAV_DIST_TIMEOUT="60")
    if plugins is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugins), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "loopnav", "evaluate", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=Path(__file__).resolve().parent.parent)


def _rows(results_path: Path) -> list[dict]:
    results = json.loads(results_path.read_text())
    return [json.loads(line) for line in (results_path.parent / results["samples_file"]).read_text().splitlines()]


@pytest.mark.slow  # torchrun
def test_two_ranks_equal_one_process(tiny_shards, tmp_path):
    single = evaluate(EvalConfig(data=tiny_shards, output_dir=tmp_path / "single", model="dummy",
                                 metrics=["ssim", "psnr"], batch_size=1))
    proc = _torchrun(["--model", "dummy", "--data", str(tiny_shards), "-o", str(tmp_path / "dist"),
                      "--metrics", "ssim,psnr", "--batch-size", "1"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [results_path] = (tmp_path / "dist" / "dummy").glob("results_*.json")
    results = json.loads(results_path.read_text())
    assert results["env"]["world_size"] == 2
    assert results["results"] == single.results["results"]
    assert _rows(results_path) == _rows(single.results_path)  # rank 0 merged both ranks' rows in list order
    assert not list((tmp_path / "dist").glob("dummy/run-*/score-*/ranks/*"))  # markers cleaned up after success

    # more ranks than trajectories: rank 1 has nothing to do
    proc = _torchrun(["--model", "dummy", "--data", str(tiny_shards), "-o", str(tmp_path / "one"),
                      "--metrics", "ssim", "--limit", "1"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [results_path] = (tmp_path / "one" / "dummy").glob("results_*.json")
    assert [r["id"] for r in _rows(results_path)] == ["synthetic_ABA_5_test_0"]


@pytest.mark.slow  # torchrun
def test_a_failing_rank_fails_the_run_quickly(tiny_shards, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    install_model_plugin(plugins, "fails-on-rank-1", FAILS_ON_RANK_1)
    start = time.monotonic()
    proc = _torchrun(["--model", "fails-on-rank-1", "--data", str(tiny_shards), "-o", str(tmp_path / "out"),
                      "--metrics", "ssim", "--batch-size", "1"], plugins=plugins)
    elapsed = time.monotonic() - start
    output = " ".join((proc.stdout + proc.stderr).split())  # the console wraps long messages at any width
    assert proc.returncode != 0, output
    assert elapsed < 60, f"took {elapsed:.0f}s"
    assert "boom on synthetic_ABCA_5_test_1" in output
    assert "1 of 2 ranks failed" in output  # rank 0's own message, naming the failure
    assert not list((tmp_path / "out").glob("*/results_*.json"))



def test_each_rank_gets_its_own_gpu_and_bad_devices_are_named(tiny_shards, tmp_path):
    assert DistContext(rank=1, world_size=2, local_rank=1).device("cuda") == "cuda:1"
    assert DistContext(rank=1, world_size=2, local_rank=1).device("cuda:0") == "cuda:0"
    assert DistContext().device("cuda") == "cuda"
    with pytest.raises(EvaluationError, match="--device 'gpu0'"):
        evaluate(EvalConfig(data=tiny_shards, output_dir=tmp_path, model="copy-last", metrics=["ssim"], device="gpu0"))


@pytest.mark.slow  # torchrun
def test_worldpack_rows_do_not_depend_on_batch_size_ranks_or_resume(tiny_shards, tmp_path):
    """The README's promise, on a model that batches its network calls: bit-identical rows whatever the batches."""
    def rows(out: Path, **overrides) -> list[dict]:
        config = EvalConfig(data=tiny_shards, output_dir=out, model="worldpack", model_args={"sampler_steps": 2},
                            metrics=["ssim", "psnr"], **{"batch_size": 8, **overrides})
        return _rows(evaluate(config).results_path)

    together = rows(tmp_path / "b8")
    assert len(together) == 4
    assert rows(tmp_path / "b1", batch_size=1) == together
    rows(tmp_path / "resumed", batch_size=2, limit=3)  # a run stopped after 3 trajectories, in other batches
    assert rows(tmp_path / "resumed") == together
    proc = _torchrun(["--model", "worldpack", "--model-args", "sampler_steps=2", "--data", str(tiny_shards),
                      "-o", str(tmp_path / "ranks"), "--metrics", "ssim,psnr", "--batch-size", "8"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [results_path] = (tmp_path / "ranks" / "worldpack__sampler_steps=2__").glob("results_*.json")
    assert _rows(results_path) == together
