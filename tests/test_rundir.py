"""Run folders: fresh numbered names, what counts as a run, the lock and its stale case."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from dualnet.rundir import (
    LOCK_NAME,
    RunFolderError,
    RunLock,
    clear,
    fresh,
    latest_checkpoint,
    run_files,
)


def test_fresh_numbers_taken_names(tmp_path):
    base = tmp_path / "runs" / "convnet-digits"
    assert fresh(base) == base and base.is_dir()
    assert fresh(base) == tmp_path / "runs" / "convnet-digits-2"
    assert fresh(base) == tmp_path / "runs" / "convnet-digits-3"


def test_run_files_and_clear_touch_only_dualnets_names(tmp_path):
    assert run_files(tmp_path) == []
    (tmp_path / "notes.txt").write_text("the user's")
    assert run_files(tmp_path) == []  # a folder with other files holds no run
    for name in ("history.json", "checkpoint_epoch_0.npz", "checkpoint_diverged.npz",
                 "curves.png"):
        (tmp_path / name).write_text("x")
    assert run_files(tmp_path) == ["history.json", "checkpoint_diverged.npz",
                                   "checkpoint_epoch_0.npz"]
    clear(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for name, mtime in (("checkpoint_epoch_9.npz", 100), ("checkpoint_epoch_10.npz", 100),
                        ("checkpoint_epoch_2.npz", 50)):
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (mtime, mtime))
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_epoch_10.npz"
    (tmp_path / "checkpoint_interrupted.npz").write_text("x")  # written now: the latest
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_interrupted.npz"


def test_the_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path):
        owner = json.loads((tmp_path / LOCK_NAME).read_text())
        assert owner["host"] == socket.gethostname()
        with pytest.raises(RunFolderError, match=f"in use by process {owner['pid']}"):
            RunLock(tmp_path).acquire()  # this process is alive: the lock is not stale
    assert not (tmp_path / LOCK_NAME).exists()
    RunLock(tmp_path).acquire().release()


def _dead_pid():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_a_dead_processes_lock_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(),
                                                  "host": socket.gethostname()}))
    lock = RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).read_text() == lock._mine
    lock.release()
    assert sorted(tmp_path.iterdir()) == []  # no debris of the take-over


@pytest.mark.parametrize("content", [
    json.dumps({"pid": 1, "host": "another-machine"}),  # its pid cannot be checked from here
    "",                                                  # an owner still writing its pid
])
def test_locks_that_cannot_be_judged_are_respected(tmp_path, content):
    (tmp_path / LOCK_NAME).write_text(content)
    with pytest.raises(RunFolderError, match="is in use by"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).read_text() == content
