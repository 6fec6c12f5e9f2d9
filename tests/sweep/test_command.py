"""`dualnet sweep`: six trials in two worker processes on the bundled digits, its files, the
best trial retrained by `dualnet train`'s code to the same validation accuracy, Ctrl-C and
the same command again, a shared PostgreSQL study, and one-line errors with exit 2 or 1."""

import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image

from dualnet.cli import main
from dualnet.sweep import open_storage

SPACE = ["--space", "lr=1e-3:1e-2:log", "hidden=32,64"]


def _counted(records):
    return [r for r in records if r["state"] in ("complete", "pruned")
            or (r["state"] == "fail" and r["failure"] != "interrupted")]


@pytest.fixture(scope="module")
def six_trials(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    rc = main(["sweep", "--model", "fc", "--trials", "6", "--epochs", "2", "--workers", "2",
               "--seed", "4", "--out", str(out), *SPACE])
    return rc, out


def test_six_trials_in_two_workers_write_every_file(six_trials):
    rc, out = six_trials
    assert rc == 0
    results = json.loads((out / "trials.json").read_text())
    assert len(results["trials"]) == 6 and len(_counted(results["trials"])) == 6
    assert {r["seed"] for r in results["trials"]} == {4 + k for k in range(6)}
    assert results["settings"]["space"] == {"lr": "0.001:0.01:log", "hidden": "32,64"}
    assert results["settings"]["dataset"] == "digits"
    for name in ("optimization_history.png", "hyperparameters.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and np.asarray(im.convert("L"), float).std() > 10
    assert (out / "study.journal").is_file()
    folder = out / f"best-trial-{results['best']['number']}"
    for name in ("model.npz", "history.json", "curves.png"):
        assert (folder / name).is_file(), name


def test_the_retrained_best_trial_reproduces_its_validation_accuracy(six_trials):
    _, out = six_trials
    best = json.loads((out / "trials.json").read_text())["best"]
    history = json.loads((out / f"best-trial-{best['number']}" / "history.json").read_text())
    # the trial ran in a worker process with one thread, the retraining here, through
    # `dualnet train`'s code: same seed, same hyperparameters, same numbers
    assert history["best_val_accuracy"] == best["value"]
    assert history["val_acc_history"][1:] == list(best["val_acc_per_epoch"].values())
    assert history["arguments"]["lr"] == best["params"]["lr"]
    assert history["arguments"]["seed"] == best["seed"]


def test_the_same_command_again_finds_the_sweep_done(six_trials, capsys):
    _, out = six_trials
    rc = main(["sweep", "--model", "fc", "--trials", "6", "--epochs", "2", "--workers", "2",
               "--seed", "4", "--out", str(out), *SPACE])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "continuing from 6 trials" in printed
    assert "best of 6 trials" in printed and "was retrained before" in printed
    assert len(json.loads((out / "trials.json").read_text())["trials"]) == 6


USER_MODEL = """
from dualnet import nn


def build(input_dim, num_classes, width=16):
    C, H, W = input_dim
    return nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, width), nn.ReLU(),
                         nn.Linear(width, num_classes))
"""


def test_a_model_of_your_own_gets_its_hyperparameters_in_trials_and_retraining(tmp_path,
                                                                               capsys, one_line_error):
    source = tmp_path / "net.py"
    source.write_text(USER_MODEL)
    argv = ["sweep", "--model", f"{source}:build", "--trials", "2", "--epochs", "1",
            "--out", str(tmp_path / "out")]
    assert main([*argv, "--space", "depth=1,2"]) == 2
    one_line_error(f"model {source}:build has no hyperparameter 'depth'",
                          "width")
    assert main([*argv, "--space", "lr=1e-3:1e-2:log", "width=8,32"]) == 0
    best = json.loads((tmp_path / "out" / "trials.json").read_text())["best"]
    folder = tmp_path / "out" / f"best-trial-{best['number']}"
    history = json.loads((folder / "history.json").read_text())
    assert history["best_val_accuracy"] == best["value"]
    with np.load(folder / "model.npz") as saved:
        assert saved["params/1.weight"].shape == (64, best["params"]["width"])


def test_ctrl_c_then_the_same_command_loses_no_trial(tmp_path):
    out = tmp_path / "sweep"
    argv = ["sweep", "--model", "fc", "--trials", "10", "--epochs", "40", "--workers", "2",
            "--out", str(out), "--no-retrain", *SPACE]
    # a terminal's Ctrl-C: SIGINT to the command's whole process group, workers included
    process = subprocess.Popen([sys.executable, "-m", "dualnet", *argv],
                               start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    # Interrupted once its progress bar counts two finished trials, read as it comes (a full
    # stderr pipe would block the command); 40 epochs a trial leave seconds before the end.
    # The suite must not run with SIGINT ignored (as `cmd &` in a non-interactive shell
    # does): the command inherits that, and the Ctrl-C never reaches it.
    err_lines, two_done = [], threading.Event()

    def read_stderr():
        for line in process.stderr:
            err_lines.append(line)
            done = re.search(r"(\d+)/10 ", line)
            if done and int(done.group(1)) >= 2:
                two_done.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    journal = out / "study.journal"
    two_done.wait(timeout=120)
    running = process.poll() is None
    if running:
        os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=60)
    reader.join(timeout=60)
    err = "".join(err_lines)
    assert running, err
    assert process.returncode == 130, err
    assert "run the same command again to continue" in err
    study = optuna.load_study(study_name="dualnet-sweep", storage=open_storage(journal))
    before = {t.number: (t.params, t.value) for t in study.trials
              if t.state == TrialState.COMPLETE}
    assert len(before) >= 2
    assert not study.get_trials(states=(TrialState.RUNNING,))
    for t in study.get_trials(states=(TrialState.FAIL,)):
        assert t.user_attrs["interrupted"] is True

    assert main(argv) == 0
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert len(_counted(trials)) == 10
    after = {r["number"]: (r["params"], r["value"]) for r in trials}
    assert {n: after[n] for n in before} == before


def _postgres_bin() -> str | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.isfile(os.path.join(folder, "initdb")):
            return folder
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on a Unix socket (a few seconds to start)."""
    folder = _postgres_bin()
    if folder is None:
        pytest.skip("no PostgreSQL server here (Debian: apt-get install postgresql); the "
                    "README documents --storage postgresql://...")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install 'psycopg[binary]'")
    root = tempfile.mkdtemp(prefix="dualnet-pg-")  # pytest's tmp is unreadable to postgres
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = 20000 + os.getpid() % 20000  # names the socket file; no TCP port is opened
    data = os.path.join(root, "data")
    subprocess.run([*as_user, f"{folder}/initdb", "-D", data, "-A", "trust", "-U",
                    "postgres"], check=True, capture_output=True, timeout=60)
    subprocess.run([*as_user, f"{folder}/pg_ctl", "-D", data, "-w", "-t", "30", "-l",
                    os.path.join(root, "log"), "-o", f"-k {root} -c listen_addresses='' "
                    f"-p {port}", "start"], check=True, capture_output=True, timeout=60)
    yield f"postgresql+psycopg://postgres@/postgres?host={root}&port={port}"
    subprocess.run([*as_user, f"{folder}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                   capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def test_workers_share_a_postgresql_study(postgres_url, tmp_path):
    rc = main(["sweep", "--model", "two-layer", "--trials", "4", "--epochs", "1",
               "--workers", "2", "--storage", postgres_url, "--study-name", "shared",
               "--out", str(tmp_path), "--no-retrain", *SPACE])
    assert rc == 0
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert len(study.trials) == 4
    assert not (tmp_path / "study.journal").exists()


@pytest.mark.parametrize("argv, status, fragments", [
    (["--space", "lr=1e-2:1e-4"], 2, ["--space: space entry 'lr=1e-2:1e-4': the low bound"]),
    (["--space", "lr"], 2, ["--space: space entry 'lr' has no '='"]),
    (["--space", "hiden=10,20"], 2, ["model two-layer has no hyperparameter 'hiden'"]),
    (["--space", "optimizer=lbfgs"], 2, ["optimizer 'lbfgs' is not an update rule"]),
    (["--storage", "postgresql://ann:s3cret@127.0.0.1:1/db"], 1,
     ["cannot open storage postgresql://ann:***@127.0.0.1:1/db", "Connection refused"]),
    (["--storage", "nosuchdb://x/y"], 1, ["cannot open storage nosuchdb://x/y"]),
])
def test_mistakes_are_one_line_with_exit_2_or_1(tmp_path, capsys, argv, status, fragments, one_line_error):
    rc = main(["sweep", "--model", "two-layer", "--trials", "1", "--epochs", "1",
               "--out", str(tmp_path / "out"), *argv])
    assert rc == status
    one_line_error("dualnet: error:", *fragments)
    assert "s3cret" not in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--trials", "0"], ["--workers", "-1"], ["--epochs", "x"],
                                  ["--sampler", "grid"]])
def test_bad_counts_and_choices_are_argparse_errors(capsys, argv, one_line_error):
    with pytest.raises(SystemExit) as info:
        main(["sweep", *argv])
    assert info.value.code == 2
    one_line_error("dualnet sweep: error:")
