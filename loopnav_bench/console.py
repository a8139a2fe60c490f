"""One rich console and one progress bar style for every long job in loopnav."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

console = Console(stderr=True)

ProgressFn = Callable[..., None]


class FitWidth:
    """Renders the first of `layouts` whose natural width fits the console (the last one if none does): a wide table
    where the terminal has room, a narrower arrangement of the same content at 80 columns or in a pipe."""

    def __init__(self, *layouts: RenderableType):
        self.layouts = layouts

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        fits = (layout for layout in self.layouts
                if Measurement.get(console, options.update(width=10**4), layout).maximum <= options.max_width)
        yield next(fits, self.layouts[-1])


@contextlib.contextmanager
def progress_bar() -> Iterator[ProgressFn]:
    """Yield `update(description, done, total, **fields)`; each description gets its own bar.

    Extra keyword fields (loss=..., fps=...) are shown after the bar, e.g. for training loss and throughput.
    """
    # a long description (a path) is elided, so that the bar, counts and times still fit 80 columns
    description = TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis",
                                                                              max_width=32))
    columns = (description, BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[str, int] = {}

        def update(description: str, done: int, total: int, **fields: object) -> None:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total, info=info)
            progress.update(tasks[description], completed=done, total=total, info=info)

        yield update
