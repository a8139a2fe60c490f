"""The package layout's rules (see the README's Contents): arrows point one way, inference never imports training."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the top-level packages of this project it must never import
FORBIDDEN = {
    "loopnav_bench": {"loopnav", "leaderboard", "modelkit", "worldpack", "baselines", "published"},  # names no model
    "leaderboard": {"loopnav", "modelkit", "worldpack", "baselines", "published"},                 # knows no model
    "modelkit": {"loopnav", "leaderboard", "worldpack", "baselines", "published"},
    "worldpack": {"loopnav", "leaderboard", "baselines", "published"},
    "baselines": {"loopnav", "leaderboard", "worldpack", "published"},
    "published": {"loopnav", "leaderboard", "worldpack", "baselines"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downwards(package):
    offences = {str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
                for path in sorted((ROOT / package).rglob("*.py"))}
    assert {k: v for k, v in offences.items() if v} == {}


@pytest.mark.slow  # a fresh interpreter
def test_rolling_out_a_trained_model_imports_no_training_module():
    code = """
import sys
import numpy as np
from loopnav_bench.evaluate import evaluate  # noqa: F401
from loopnav_bench.models import RolloutRequest, load_model
T, offset = 8, 6
frames = np.zeros((T, 32, 32, 3), np.uint8)
poses = np.zeros((T, 5))
poses[:, 0] = np.arange(T) * 8.0
actions = np.zeros((T, 4), np.float32)
meta = {"units_per_block": 32, "action_layout": "vizdoom-v1"}
for name in ("worldpack", "nwm", "diamond"):
    request = RolloutRequest(name, frames[:offset], poses[:offset], actions[:offset], poses[offset:], actions[offset:],
                             meta)
    load_model(name, sampler_steps=1).rollout(request)
print(" ".join(m for m in sys.modules if m.split(".")[0] in {"loopnav_bench", "modelkit", "worldpack", "baselines"}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = done.stdout.split()
    assert "worldpack.world_model" in imported and "baselines.diamond" in imported
    training = [m for m in imported if m.rsplit(".", 1)[-1].startswith("train") or m.endswith("_train")]
    assert training == []


@pytest.mark.slow  # a fresh interpreter
def test_reading_results_imports_no_torch():
    """The leaderboard, the paper and memory reliance only read results: torch (seconds to import) stays unloaded
    until something computes on frames."""
    code = """
import sys
import leaderboard.memory, leaderboard.paper, leaderboard.plots, leaderboard.table  # noqa: E401, F401
from loopnav_bench.metrics import FRAME_METRICS, cap_values, trajectory_mean  # noqa: F401
print("torch" in sys.modules)
from loopnav_bench.metrics import psnr  # noqa: F401
print("torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False", "True"]
