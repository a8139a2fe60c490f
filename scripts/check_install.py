"""Install check: build the sdist and wheel, install the wheel (not editable) into a fresh virtual environment that
already holds the pinned torch, and use it from outside the source tree, as a researcher adding loopnav to their own
environment would. CI runs it after the tests.

    python scripts/check_install.py [--workdir DIR] [--keep]

Checks: the wheel's metadata declares ranges and no exact pins; it holds every shipped checkpoint and no test, run or
data file; `loopnav --version` and `loopnav models` work; one trajectory evaluates with a shipped checkpoint; and every
loopnav module is imported from the fresh environment, never from this checkout.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("loopnav", "loopnav_bench", "modelkit", "worldpack", "baselines", "published", "leaderboard")
NEVER_SHIPPED = re.compile(r"(^|/)(tests|runs|benchmarks|scripts|\.venv)/|\.(tar|npz|npy|jsonl)$")


class CheckFailed(Exception):
    pass


def run(*args, cwd: Path | None = None) -> str:
    command = [str(a) for a in args]
    print("+", " ".join(command), flush=True)
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckFailed(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


def pinned(requirement: str) -> bool:
    """An exact pin (`==`, `===`) in a Requires-Dist line, environment markers aside."""
    return bool(re.search(r"===?", requirement.split(";")[0]))


def shipped_checkpoints() -> set[str]:
    """Every tracked checkpoint file, as a path inside the wheel."""
    listed = run("git", "ls-files", "*/checkpoints/*", cwd=ROOT).split()
    return {path for path in listed if path.endswith((".json", ".safetensors"))}


def check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    if pins := [r for r in requires if pinned(r)]:
        raise CheckFailed(f"{wheel.name} pins exact versions: {pins}; pyproject.toml must declare ranges")
    if missing := sorted(shipped_checkpoints() - names):
        raise CheckFailed(f"{wheel.name} lacks shipped checkpoint files: {missing}")
    if stray := sorted(n for n in names if NEVER_SHIPPED.search(n)):
        raise CheckFailed(f"{wheel.name} holds files that are not part of the package: {stray[:10]}")
    print(f"ok  {wheel.name}: {len(requires)} requirements as ranges, every shipped checkpoint, no test or run data")


def fresh_environment(where: Path) -> Path:
    """A new virtual environment with the pinned torch of constraints.txt already in it, as a user's would have."""
    run(sys.executable, "-m", "venv", where)
    python = where / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", "torch", "torchvision")
    return python


def use_installed(python: Path, outside: Path, wheel: Path) -> None:
    loopnav = python.parent / "loopnav"
    version = run(loopnav, "--version", cwd=outside).strip()
    if version != f"loopnav {wheel.name.split('-')[1]}":
        raise CheckFailed(f"`loopnav --version` printed {version!r} for {wheel.name}")
    print(f"ok  {version}")
    run(loopnav, "models", cwd=outside)
    where = json.loads(run(python, "-c", "import importlib, json; print(json.dumps({p: importlib.import_module(p)"
                                         f".__file__ for p in {list(PACKAGES[1:])!r}}}))", cwd=outside))
    if leaks := {p: f for p, f in where.items() if Path(f).resolve().is_relative_to(ROOT)}:
        raise CheckFailed(f"imported from the checkout, not the installed wheel: {leaks}")
    data, results = outside / "data", outside / "results"
    run(loopnav, "prepare", "--source", "vizdoom", "--preset", "demo", "--split", "test", "--tasks", "ABA",
        "--ranges", "5", "--per-cell", "1", "--out", data, cwd=outside)
    run(loopnav, "evaluate", "--model", "worldpack", "--data", data, "--split", "test", "--limit", "1",
        "--metrics", "ssim,psnr", "-o", results, cwd=outside)
    [results_file] = results.glob("*/results_*.json")
    record = json.loads(results_file.read_text())
    if record["n_trajectories"]["effective"] != 1:
        raise CheckFailed(f"{results_file}: expected one evaluated trajectory, got {record['n_trajectories']}")
    print(f"ok  one trajectory evaluated from the installed package ({results_file.relative_to(outside)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="Work here instead of a temporary folder (kept afterwards).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder.")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="loopnav-install-check-"))
    try:
        dist = work / "dist"
        run(sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", dist, ROOT)
        [wheel] = dist.glob("loopnav-*.whl")
        [_sdist] = dist.glob("loopnav-*.tar.gz")
        check_wheel(wheel)
        python = fresh_environment(work / "venv")
        run(python, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", wheel)
        outside = work / "outside"
        outside.mkdir()
        use_installed(python, outside, wheel)
    except CheckFailed as err:
        print(f"install check failed: {err}", file=sys.stderr)
        return 1
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
