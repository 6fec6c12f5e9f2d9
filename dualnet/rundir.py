"""Run folders (`dualnet train --out`): fresh names, no overwriting, one writer at a time.

- `fresh(base)`: `base` when it does not exist yet, else `base-2`, `base-3`, ...; the folder
  is created with a plain `mkdir` (which fails when the name exists), so two runs started
  at the same moment still get two folders.
- `run_files(folder)`: the files that show a run already lives there (its history, model,
  checkpoints); `latest_checkpoint(folder)` is the one to continue; `clear(folder)` deletes
  dualnet's own output files, and nothing else, for `--overwrite`.
- `RunLock(folder)`: `.dualnet-run.lock`, created with O_CREAT | O_EXCL (atomic: exactly one
  process can create it) and holding the owner's pid and host. A second process is refused
  with `RunFolderError` naming that pid. A lock left by a process that died without
  releasing it (its pid no longer exists on this host) is stale and taken over; a lock from
  another host (a shared drive) is never judged stale, since its pid cannot be checked.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

__all__ = ["LOCK_NAME", "OUTPUTS", "RunFolderError", "RunLock", "clear", "fresh",
           "latest_checkpoint", "run_files"]

LOCK_NAME = ".dualnet-run.lock"
#: What `dualnet train` writes besides its checkpoints (`checkpoint_*.npz`).
OUTPUTS = ("model.npz", "history.json", "curves.png", "filters.png", "confusion_matrix.png",
           "misclassified.png")
_MARKS = ("model.npz", "history.json")  # with checkpoints: a run lives in the folder


class RunFolderError(RuntimeError):
    """The run folder cannot be used: another process holds it."""


def fresh(base: Path) -> Path:
    """Create and return `base`, or the first of `base-2`, `base-3`, ... that is free."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RunFolderError(f"no free folder name next to {base} (tried {base.name}-2 ... -9999)")


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("checkpoint_*.npz"))


def run_files(folder: Path) -> list[str]:
    """Names of the files in `folder` that belong to a dualnet run (empty: no run there)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [name for name in _MARKS if (folder / name).is_file()] + [
        path.name for path in _checkpoints(folder)]


def latest_checkpoint(folder: Path) -> Path | None:
    """The most recently written checkpoint in `folder` (what --resume would continue);
    among equal times, the one of the highest epoch."""
    def age(path):
        epoch = path.stem.rpartition("_")[2]
        return path.stat().st_mtime_ns, int(epoch) if epoch.isdigit() else -1

    return max(_checkpoints(Path(folder)), key=age, default=None)


def clear(folder: Path) -> None:
    """Delete the outputs and checkpoints of the run in `folder` (only dualnet's names)."""
    folder = Path(folder)
    for path in [folder / name for name in OUTPUTS] + _checkpoints(folder):
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (True when that cannot be told)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class RunLock:
    """The lock of one run folder; use as `with RunLock(folder): ...`."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})

    def acquire(self) -> RunLock:
        for _ in range(3):  # a stale lock taken over, then a new try
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                seen = self._read()
                if not self._stale(seen):
                    raise RunFolderError(self._busy(seen)) from None
                self._take_over(seen)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self._mine)
            return self
        raise RunFolderError(self._busy(self._read()))

    def release(self) -> None:
        """Delete the lock file, if it is still this process's."""
        if self._read() == self._mine:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    @staticmethod
    def _owner(text) -> dict:
        try:
            owner = json.loads(text or "")
        except json.JSONDecodeError:
            return {}
        return owner if isinstance(owner, dict) else {}

    def _stale(self, text) -> bool:
        """Whether the lock holding `text` belongs to a process of this host that is gone."""
        if text is None:
            return True  # released between our open and our read
        owner = self._owner(text)
        pid = owner.get("pid")
        return (owner.get("host") == socket.gethostname() and isinstance(pid, int)
                and not _alive(pid))

    def _take_over(self, seen) -> None:
        """Remove the stale lock whose content was `seen`, unless another process replaced
        it meanwhile: the file is first renamed to a name of our own, atomically, and put
        back when it turns out not to be the stale one."""
        if seen is None:
            return
        grave = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return  # someone else took it over first
        if grave.read_text() != seen:  # a live process's fresh lock: give it back
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass
        grave.unlink()

    def _busy(self, text) -> str:
        owner = self._owner(text)
        who = (f"process {owner.get('pid')} on {owner.get('host')}" if owner
               else "another process")
        return (f"run folder {self.path.parent} is in use by {who} (lock file {self.path}); "
                f"wait for that run to end or choose another --out (delete the lock file "
                f"only if no run is using the folder)")
