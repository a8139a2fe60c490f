"""Data sources: each turns some raw input into `Trajectory` records for `loopnav prepare`.

A source plans its work as a deterministic list of small JSON-able specs per split (a file path, a seed, ...), then
loads one spec at a time. Planning is cheap, loading is the expensive part; that split is what lets `prepare` resume
after a kill (completed shards are known by the specs they hold) and run several worker processes that produce the
same bytes as one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from loopnav_bench.registry import SOURCES
from loopnav_bench.schema import Trajectory


class SkipTrajectory(Exception):
    """Raised by `Source.load` for an input that cannot become a valid trajectory; prepare counts it with the reason."""


class Source(ABC):
    name: str
    shard_size: int = 32  # trajectories per shard

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that changes the output: recorded in the manifest and compared when a prepare resumes."""

    @abstractmethod
    def plan(self) -> dict[str, list[Any]]:
        """Split name -> ordered JSON-able specs. Must be deterministic for the same settings."""

    @abstractmethod
    def load(self, spec: Any) -> Trajectory:
        """One spec -> one valid trajectory, or raise SkipTrajectory(reason). Repairs go in meta['repairs']."""

    def summary(self, metas: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, Any]:
        """Source-specific figures for the manifest's "summary" (e.g. a simulator's success rate), computed from the
        meta of every written trajectory and every skipped input; an empty dict adds nothing."""
        return {}

    def rejected_inputs(self) -> list[dict[str, str]]:
        """Inputs dropped while planning (for example CSV rows that escape the data root), each {input, reason}."""
        return []


def source_class(name: str) -> type[Source]:
    """A registered source (entry-point group `loopnav.sources`, see loopnav_bench.registry) by name."""
    return SOURCES.load(name, subclass_of=Source)
