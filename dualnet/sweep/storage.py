"""Where a sweep's study lives: opening a journal file or a database, and the exclusive
lock that makes a journal file one sweep's at a time.

A journal file (Optuna's JournalStorage) is the default: nothing to install or start, safe
for several processes on one machine. A database URL (Optuna's RDBStorage) is for several
machines; its trials send heartbeats, so that a dead machine's trial is marked failed.
"""

from __future__ import annotations

import contextlib
import warnings

import optuna
from optuna.trial import TrialState

try:  # POSIX; elsewhere a journal file is used without the exclusive lock
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None

__all__ = ["open_storage", "is_journal", "exclusive_journal", "one_line"]

# seconds between a database worker's heartbeats, and before a silent one's trial is failed
_HEARTBEAT_S, _GRACE_S = 60, 180


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def is_journal(storage) -> bool:
    """Whether `storage` (as given to `open_storage`) names a journal file."""
    return storage is not None and "://" not in str(storage)


def open_storage(storage):
    """An Optuna storage for `storage`.

    Args:
        storage: None (in memory, this process only), a database URL ('sqlite:///f.db',
            'postgresql+psycopg://user:pw@host/db', ...; Optuna's RDBStorage with heartbeats
            every 60 s, a silent trial failed after 180 s), or the path of a journal file
            (created when missing; its folder must exist).

    Raises:
        ValueError: 'Sweep: cannot open storage ...' with the reason (the URL's password
            hidden) when it cannot be opened.
    """
    if storage is None:
        return optuna.storages.InMemoryStorage()
    text = str(storage)
    try:
        if not is_journal(text):
            with warnings.catch_warnings():  # heartbeats are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(text, heartbeat_interval=_HEARTBEAT_S,
                                                  grace_period=_GRACE_S)
        backend = optuna.storages.journal.JournalFileBackend(
            text, lock_obj=optuna.storages.journal.JournalFileOpenLock(text))
        return optuna.storages.JournalStorage(backend)
    except Exception as exc:  # drivers, parsers and servers raise many kinds; all end here
        raise ValueError(f"Sweep: cannot open storage {_hide_password(text)}: "
                         f"{type(exc).__name__}: {one_line(exc)}") from exc


def _hide_password(url: str) -> str:
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even parseable: show only the scheme
        return url.split("://", 1)[0] + "://..."


@contextlib.contextmanager
def exclusive_journal(path, study: optuna.Study):
    """Hold an exclusive flock on journal file `path` meanwhile (on POSIX).

    While it is held, every RUNNING trial of `study` belongs to this run: those found at the
    start were left by an earlier, killed run, and those found at the end by a worker
    stopped at an unlucky moment (Ctrl-C while Optuna records a trial's end); both are
    marked failed ('interrupted'). Only processes of this run may write to the study
    meanwhile.

    Raises:
        ValueError: another process holds the lock (another sweep on the same file).
    """
    if fcntl is None:
        yield
        return
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"Sweep: another sweep is running on {path}; wait for it or "
                             "use another storage") from None
        try:
            _fail_running(study)
            yield
        finally:
            _fail_running(study)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fail_running(study: optuna.Study) -> None:
    """Mark the study's RUNNING trials failed ('interrupted'); only for trials known to have
    no live process (see exclusive_journal)."""
    storage = study._storage  # the study's own storage object; Study has no public handle
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # _trial_id: the storage's key for the trial (FrozenTrial has no public one)
        storage.set_trial_user_attr(stale._trial_id, "interrupted", True)
        storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
