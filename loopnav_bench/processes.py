"""Child processes that die with their parent, and temporary folders removed on any exit.

Two mechanisms, because a process killed with SIGKILL runs no code of its own:
- `die_with_parent()`: a worker asks the kernel (Linux prctl PR_SET_PDEATHSIG) for SIGKILL when its parent dies;
  without it, pool workers that hold both ends of their task pipe wait forever for work that never comes.
- `Reaper`: a small watchdog process for programs we do not start ourselves (ViZDoom's engine is forked by its C++
  library) and for a scratch folder. It is told the pids to kill; when its parent dies, however it dies, the pipe
  from the parent reaches end-of-file and the reaper (`_reaper.py`) kills those pids and removes the folder.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from loopnav_bench import _reaper

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child process: be killed when the parent dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Reaper:
    """Kills the pids it is given (those still running `executable`) and removes `folder` when this process ends,
    cleanly, by exception or by SIGKILL. `close()` ends it now (after the caller has stopped them its own way)."""

    def __init__(self, folder: str | Path, executable: str):
        # a session of its own: Ctrl-C in the terminal must not stop the reaper before it has cleaned up
        self._process = subprocess.Popen([sys.executable, _reaper.__file__, str(folder), executable],
                                         stdin=subprocess.PIPE, start_new_session=True, text=True)

    def watch(self, pid: int) -> None:
        self._process.stdin.write(f"{pid}\n")
        self._process.stdin.flush()

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait()


def children(executable: str) -> list[int]:
    """The pids of this process's children that run `executable` (Linux /proc; elsewhere none)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid() and _reaper.running(int(stat.parent.name), executable):
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # gone meanwhile, or not ours to read
            continue
    return found
