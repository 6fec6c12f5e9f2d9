"""Where a study lives: a journal file or a database opens, or fails in one line without
the password; a journal is one sweep's at a time, and the trials left running are marked."""

import fcntl

import optuna
import pytest
from optuna.trial import TrialState

from dualnet.sweep.storage import exclusive_journal, is_journal, open_storage


def _study(path):
    return optuna.create_study(storage=open_storage(path), study_name="s",
                               load_if_exists=True)


def test_journal_files_and_databases_open(tmp_path):
    assert isinstance(open_storage(tmp_path / "s.journal"), optuna.storages.JournalStorage)
    assert (tmp_path / "s.journal").is_file()
    database = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(database, optuna.storages.RDBStorage)
    assert isinstance(open_storage(None), optuna.storages.InMemoryStorage)
    assert is_journal(tmp_path / "s.journal") and not is_journal("sqlite:///x.db")
    assert not is_journal(None)


@pytest.mark.parametrize("storage, words", [
    ("postgresql+psycopg://ann:s3cret@127.0.0.1:1/db", "cannot open storage "
     "postgresql+psycopg://ann:***@127.0.0.1:1/db"),
    ("nosuchdb://host/x", "cannot open storage nosuchdb://host/x"),
    ("{missing}/deeper/s.journal", "cannot open storage"),
])
def test_storages_that_cannot_be_opened_are_one_line(tmp_path, storage, words):
    with pytest.raises(ValueError, match="^Sweep: ") as info:
        open_storage(storage.format(missing=tmp_path / "missing"))
    message = str(info.value)
    assert words in message and "\n" not in message and "s3cret" not in message


def test_a_held_journal_refuses_a_second_sweep(tmp_path):
    journal = tmp_path / "s.journal"
    study = _study(journal)
    with exclusive_journal(journal, study):
        with pytest.raises(ValueError, match="another sweep is running on"):
            with exclusive_journal(journal, study):
                pass
    with open(journal, "rb") as handle:  # released afterwards
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_trials_left_running_are_marked_at_the_start_and_at_the_end(tmp_path):
    journal = tmp_path / "s.journal"
    study = _study(journal)
    study.ask()  # left by a killed run
    with exclusive_journal(journal, study):
        assert [t.state for t in study.trials] == [TrialState.FAIL]
        study.ask()  # a worker stopped while recording its trial's end
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all(t.user_attrs["interrupted"] is True for t in study.trials)
