"""One registry mechanism for everything loopnav finds by name: models, trainers and data sources.

Each kind is an entry-point group; an entry maps a name to "module:attr" and is imported only when that name is used,
so listing names never imports torch. loopnav's own entries are declared in pyproject.toml exactly like a plug-in's:

    [project.entry-points."loopnav.models"]       mymodel = "mypkg.model:MyModel"          (a WorldModel subclass)
    [project.entry-points."loopnav.trainers"]     mymodel = "mypkg.train:train_mymodel"    (fn(TrainOptions, progress))
    [project.entry-points."loopnav.sources"]      mysource = "mypkg.source:MySource"       (a Source subclass)

A model that trains has the same name in `loopnav.models` and `loopnav.trainers`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

OWN = "loopnav"  # this distribution


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class Registry:
    kind: str    # what the names are, for messages: "model", "trainer", "source"
    group: str   # the entry-point group

    def entries(self) -> dict[str, EntryPoint]:
        # loopnav's own entries come last, so a plug-in cannot shadow a built-in name
        ordered = sorted(entry_points(group=self.group), key=lambda ep: ep.dist is not None and ep.dist.name == OWN)
        return {ep.name: ep for ep in ordered}

    def names(self) -> list[str]:
        return sorted(self.entries())

    def load(self, name: str, subclass_of: type | None = None) -> Any:
        """The object `name` points to, imported now; an unknown name gets "Did you mean …?". With `subclass_of`,
        anything but a subclass of it is refused."""
        entries = self.entries()
        if name not in entries:
            close = difflib.get_close_matches(name, entries, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(sorted(entries))}")
        found = entries[name].load()
        if subclass_of is not None and not (isinstance(found, type) and issubclass(found, subclass_of)):
            raise TypeError(f"{self.kind} {name!r} -> {entries[name].value} is not a "
                            f"{subclass_of.__module__}.{subclass_of.__qualname__} subclass")
        return found


MODELS = Registry("model", "loopnav.models")
TRAINERS = Registry("trainer", "loopnav.trainers")
SOURCES = Registry("source", "loopnav.sources")
