"""Small file helpers every writer in loopnav uses: atomic writes, hashing, and paths that cannot escape a root."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, on error it is removed.

    Readers therefore see either the old file or the complete new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes files private (0600); give them the usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not valid JSON (not UTF-8 text)") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """A stable hash of a JSON-able object (sorted keys), for keying resumable work on its settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def resolve_within(root: str | Path, relative: str | Path, what: str = "path") -> Path:
    """`root / relative`, refusing anything (absolute paths, '..', symlinks) that would leave `root`."""
    try:
        root = Path(root).resolve()
        candidate = (root / relative).resolve()
    except RuntimeError as err:  # Python < 3.13 raises this for a symlink loop
        raise ValueError(f"{what} {str(relative)!r}: {err}") from None
    if not candidate.is_relative_to(root):
        raise ValueError(f"{what} {str(relative)!r} escapes the data root {root}")
    return candidate


OWNED = ".loopnav-owned.json"  # in a folder loopnav writes into: the paths it wrote there


class ForeignFileError(FileExistsError):
    """A writer would replace or delete a file or folder it cannot prove it wrote; the message names it."""


class OwnedFolder:
    """The one rule of every command that writes: in `root` it creates, replaces or deletes only what it can prove it
    wrote, and refuses a non-empty `root` it did not write, naming the first foreign file.

    Proof is the folder's OWNED record (kept by `claim`), or `proven`: paths a writer's own manifest or state lists
    (prepare). `root` may not exist yet; a file where the folder should be is refused."""

    def __init__(self, root: str | Path, writer: str, proven: Iterable[str] = ()):
        self.root, self.writer = Path(root), writer
        if self.root.exists() and not self.root.is_dir():
            raise ForeignFileError(f"{self.root}: is a file, not a folder; {writer} needs a folder there")
        record = read_json(self.root / OWNED) if (self.root / OWNED).exists() else {"paths": []}
        if not isinstance(record, dict) or not isinstance(record.get("paths"), list):
            raise ForeignFileError(f"{self.root / OWNED}: not a loopnav ownership record")
        self.owned = {*record["paths"], *proven}
        if not self.owned and self.root.is_dir():
            if foreign := next((p for p in sorted(self.root.iterdir()) if p.name != OWNED), None):
                raise ForeignFileError(f"{foreign}: in {self.root}, which {writer} did not write; choose an empty or "
                                       f"new folder (loopnav never replaces or deletes files it did not write)")

    def check(self, rels: Iterable[str]) -> None:
        """Refuse if any of `rels` exists and is not provably ours."""
        for rel in rels:
            path = resolve_within(self.root, rel, "output path")
            if rel not in self.owned and (path.exists() or path.is_symlink()):
                raise ForeignFileError(f"{self.root / rel}: exists but was not written by {self.writer}; move it "
                                       f"away or choose another folder")

    def claim(self, rels: Iterable[str]) -> None:
        """Check `rels`, then record them as ours before anything is written (a killed write leaves no orphan)."""
        rels = list(rels)
        self.check(rels)
        if not set(rels) <= self.owned:
            self.owned.update(rels)
            self._save()

    @contextlib.contextmanager
    def replace(self, rel: str) -> Iterator[Path]:
        """`atomic_path` for `root/rel`, claimed first."""
        self.claim([rel])
        with atomic_path(self.root / rel) as tmp:
            yield tmp

    def write_bytes(self, rel: str, data: bytes) -> Path:
        with self.replace(rel) as tmp:
            tmp.write_bytes(data)
        return self.root / rel

    def remove(self, rel: str) -> None:
        """Delete `root/rel` (file or folder tree) if it is ours; anything else is left alone."""
        if rel not in self.owned:
            return
        path = resolve_within(self.root, rel, "output path")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        self.owned.discard(rel)
        self._save()

    def _save(self) -> None:
        write_json_atomic(self.root / OWNED, {"writer": self.writer, "paths": sorted(self.owned)})


def xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def loopnav_cache_dir() -> Path:
    """Where loopnav keeps what it can make again (metric weights, cached latents): $LOOPNAV_CACHE_DIR, else
    $XDG_CACHE_HOME/loopnav, else ~/.cache/loopnav."""
    return Path(os.environ.get("LOOPNAV_CACHE_DIR") or xdg_cache() / "loopnav").expanduser()
