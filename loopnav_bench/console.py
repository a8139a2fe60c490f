"""One rich console and one progress bar style for every long job in loopnav."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)

ProgressFn = Callable[..., None]


@contextlib.contextmanager
def progress_bar() -> Iterator[ProgressFn]:
    """Yield `update(description, done, total, **fields)`; each description gets its own bar.

    Extra keyword fields (loss=..., fps=...) are shown after the bar, e.g. for training loss and throughput.
    """
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[str, int] = {}

        def update(description: str, done: int, total: int, **fields: object) -> None:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total, info=info)
            progress.update(tasks[description], completed=done, total=total, info=info)

        yield update
