"""One result type and one runner for `loopnav models check-upstream MODEL FIXTURE_DIR`: each published model module
exposes `check_upstream(fixture_dir: Path) -> list[FixtureResult]`, which loads the fixture's safetensors weights
(never a pickle), replays every saved input through loopnav's own code and reports each error against its tolerance."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

CHECKERS = {  # model name -> module whose check_upstream replays that model's fixture folder
    "oasis": "published.oasis",
    "worldmem": "published.worldmem",
    "nwm": "published.nwm",
}


@dataclass(frozen=True)
class FixtureResult:
    name: str          # fixture file and tensor, e.g. "dit_forward.safetensors:output"
    error: float       # max absolute error, or max relative error where `relative`
    tolerance: float
    relative: bool = False

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance


def check_upstream(model: str, fixture_dir: Path) -> list[FixtureResult]:
    if model not in CHECKERS:
        raise KeyError(f"no upstream fixtures are known for model {model!r}; known: {', '.join(sorted(CHECKERS))}")
    return importlib.import_module(CHECKERS[model]).check_upstream(Path(fixture_dir))
