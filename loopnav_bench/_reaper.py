"""The reaper process of `loopnav_bench.processes.Reaper`, run by path (`python _reaper.py FOLDER EXECUTABLE`) so
that it starts in milliseconds, importing only the standard library.

It reads pids, one a line, from stdin until the pipe reaches end-of-file: the parent closed it, or died in any way
(SIGKILL included). Then it kills those pids that still run EXECUTABLE and removes FOLDER."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys


def running(pid: int, executable: str) -> bool:
    """Whether `pid` runs `executable` (not a pid the system has since given to another program)."""
    try:
        return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(executable)
    except OSError:
        return False


def reap(folder: str, executable: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pids = [int(line) for line in sys.stdin if line.strip()]
    for pid in pids:
        if running(pid, executable):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)  # ViZDoom's engine ignores SIGTERM
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    reap(*sys.argv[1:3])
