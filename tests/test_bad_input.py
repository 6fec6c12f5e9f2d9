"""Bad input is refused at the boundary, by name (issue 15).

One parametrized case per refusal: the exception type, and a message that starts with the
public function or class the user called and names the argument. Then the command line:
nonsense flags exit 2 with one line, and no command changes a file of another run.
(Convolution's own refusals are tested in tests/layers/test_conv.py.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dualnet import nn
from dualnet.cli import main
from dualnet.data import locate
from dualnet.layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    relu_forward,
    softmax_loss,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
    svm_loss,
)
from dualnet.models import ConvNet, FullyConnectedNet, ThreeLayerConvNet, TwoLayerNet
from dualnet.rundir import LOCK_NAME
from dualnet.solver import Solver

RNG = np.random.RandomState(0)
X43 = RNG.randn(4, 3)
W35 = RNG.randn(3, 5)
B5 = np.zeros(5)
G3, BETA3 = np.ones(3), np.zeros(3)
X4D = RNG.randn(2, 4, 3, 3)


def _affine_cache():
    return affine_forward(X43, W35, B5)[1]


def _bn_cache():
    return batchnorm_forward(X43, G3, BETA3, {"mode": "train"})[1]


def _data(n_train=40, n_val=20):
    X = RNG.randn(n_train + n_val, 6)
    y = RNG.randint(4, size=n_train + n_val)
    return {"X_train": X[:n_train], "y_train": y[:n_train], "X_val": X[n_train:],
            "y_val": y[n_train:]}


def _solver(data=None, **kwargs):
    model = FullyConnectedNet([5], input_dim=6, num_classes=4)
    return Solver(model, data or _data(), verbose=False, **kwargs)


def _short(data):
    data = dict(data)
    data["y_train"] = data["y_train"][:-1]
    return data


def _short_val(data):
    data = dict(data)
    data["X_val"] = data["X_val"][:5]
    return data


REFUSALS = [
    # -- layers: shapes against caches, empty batches
    ("affine_backward dout shape", lambda: affine_backward(np.ones((3, 5)), _affine_cache()),
     ValueError, r"affine_backward: dout must have the shape of affine_forward's output "
                 r"\(4, 5\), got \(3, 5\)"),
    ("affine_backward short cache", lambda: affine_backward(np.ones((4, 5)), (X43, W35)),
     TypeError, r"affine_backward: cache must be the 3-tuple affine_forward returned, got a "
                r"tuple of 2 items"),
    ("affine_backward relu cache",
     lambda: affine_backward(np.ones((4, 3)), relu_forward(X43)[1]),
     TypeError, r"affine_backward: cache must be the 3-tuple affine_forward returned, got a "
                r"ndarray"),
    ("batchnorm_backward dout shape", lambda: batchnorm_backward(np.ones((4, 2)), _bn_cache()),
     ValueError, r"batchnorm_backward: dout must have the shape of batchnorm_forward's output "
                 r"\(4, 3\), got \(4, 2\)"),
    ("batchnorm_backward affine cache",
     lambda: batchnorm_backward(np.ones((4, 5)), _affine_cache()),
     TypeError, r"batchnorm_backward: cache must be the dict batchnorm_forward returned"),
    ("batchnorm_backward_alt dout shape",
     lambda: batchnorm_backward_alt(np.ones((5, 3)), _bn_cache()),
     ValueError, r"batchnorm_backward_alt: dout must have the shape"),
    ("spatial_batchnorm_backward dout shape",
     lambda: spatial_batchnorm_backward(
         np.ones((2, 4, 3, 2)),
         spatial_batchnorm_forward(X4D, np.ones(4), np.zeros(4), {"mode": "train"})[1]),
     ValueError, r"spatial_batchnorm_backward: dout must have the shape of "
                 r"spatial_batchnorm_forward's output \(2, 4, 3, 3\)"),
    ("layernorm_backward dout shape",
     lambda: layernorm_backward(np.ones(3), layernorm_forward(X43, G3, BETA3, {})[1]),
     ValueError, r"layernorm_backward: dout must have the shape"),
    ("spatial_groupnorm_backward dout shape",
     lambda: spatial_groupnorm_backward(
         np.ones((1, 4, 3, 3)),
         spatial_groupnorm_forward(X4D, np.ones((1, 4, 1, 1)), np.zeros((1, 4, 1, 1)), 2,
                                   {})[1]),
     ValueError, r"spatial_groupnorm_backward: dout must have the shape"),
    ("batchnorm_forward running_mean length",
     lambda: batchnorm_forward(X43, G3, BETA3, {"mode": "train", "running_mean": np.zeros(4)}),
     ValueError, r"batchnorm_forward: bn_param\['running_mean'\] must have shape \(3,\), "
                 r"got \(4,\)"),
    ("batchnorm_forward running_var length",
     lambda: batchnorm_forward(X43, G3, BETA3, {"mode": "test", "running_var": np.zeros(2)}),
     ValueError, r"batchnorm_forward: bn_param\['running_var'\] must have shape \(3,\)"),
    ("batchnorm_forward empty batch",
     lambda: batchnorm_forward(np.zeros((0, 3)), G3, BETA3, {"mode": "train"}),
     ValueError, r"batchnorm_forward: x of shape \(0, 3\) holds no values per channel"),
    ("spatial_batchnorm_forward empty maps",
     lambda: spatial_batchnorm_forward(np.zeros((2, 4, 0, 3)), np.ones(4), np.zeros(4),
                                       {"mode": "train"}),
     ValueError, r"spatial_batchnorm_forward: x of shape \(2, 4, 0, 3\) holds no values"),
    ("softmax_loss empty batch",
     lambda: softmax_loss(np.zeros((0, 10)), np.zeros(0, dtype=np.int64)),
     ValueError, r"softmax_loss: x has shape \(0, 10\): the loss of an empty batch is undefined"),
    ("svm_loss empty batch",
     lambda: svm_loss(np.zeros((0, 10)), np.zeros(0, dtype=np.int64)),
     ValueError, r"svm_loss: x has shape \(0, 10\): the loss of an empty batch is undefined"),
    # -- models: the class the user built is named, even when a base class checks
    ("FullyConnectedNet hidden_dims int", lambda: FullyConnectedNet(50, input_dim=6),
     TypeError, r"FullyConnectedNet: hidden_dims must be a list of layer sizes, got 50 \(int\); "
                r"for one hidden layer of 50 units write \[50\]"),
    ("FullyConnectedNet hidden size 0", lambda: FullyConnectedNet([10, 0], input_dim=6),
     ValueError, r"FullyConnectedNet: hidden_dims\[1\] must be an integer >= 1, got 0"),
    ("FullyConnectedNet num_classes", lambda: FullyConnectedNet([4], num_classes=0),
     ValueError, r"FullyConnectedNet: num_classes must be an integer >= 1, got 0"),
    ("ThreeLayerConvNet 2-D input_dim", lambda: ThreeLayerConvNet(input_dim=(8, 8)),
     ValueError, r"ThreeLayerConvNet: input_dim must be \(C, H, W\) of one image, got \(8, 8\)"),
    ("ThreeLayerConvNet num_filters", lambda: ThreeLayerConvNet(input_dim=(1, 8, 8),
                                                                num_filters=0),
     ValueError, r"ThreeLayerConvNet: num_filters must be an integer >= 1, got 0"),
    ("ConvNet zero height", lambda: ConvNet(input_dim=(1, 0, 8)),
     ValueError, r"ConvNet: input_dim\[1\] must be an integer >= 1, got 0"),
    ("TwoLayerNet hidden_dim 0", lambda: TwoLayerNet(hidden_dim=0),
     ValueError, r"TwoLayerNet: hidden_dim must be an integer >= 1, got 0"),
    ("TwoLayerNet negative reg", lambda: TwoLayerNet(reg=-1),
     ValueError, r"TwoLayerNet: reg must be a finite number and >= 0, got -1"),
    ("TwoLayerNet negative weight_scale", lambda: TwoLayerNet(weight_scale=-1),
     ValueError, r"TwoLayerNet: weight_scale must be a finite number and > 0, got -1"),
    ("ConvNet nan reg", lambda: ConvNet(input_dim=(1, 8, 8), reg=float("nan")),
     ValueError, r"ConvNet: reg must be a finite number and >= 0, got nan"),
    # -- Solver: refused at construction, before any training
    ("Solver update_rule 42", lambda: _solver(update_rule=42),
     TypeError, r"Solver: update_rule must be the name of a rule in dualnet.optim \(sgd, "),
    ("Solver unknown update_rule name", lambda: _solver(update_rule="get_schedule"),
     ValueError, r'Solver: Invalid update_rule "get_schedule"; choose one of sgd, '),
    ("Solver batch_size 0", lambda: _solver(batch_size=0),
     ValueError, r"Solver: batch_size must be an integer >= 1, got 0"),
    ("Solver X/y lengths", lambda: _solver(_short(_data())),
     ValueError, r"Solver: data\['X_train'\] has 40 rows but data\['y_train'\] has 39"),
    ("Solver X_val/y_val lengths", lambda: _solver(_short_val(_data())),
     ValueError, r"Solver: data\['X_val'\] has 5 rows but data\['y_val'\] has 20"),
    ("Solver missing checkpoint folder",
     lambda: _solver(checkpoint_name=os.path.join("no", "such", "folder", "ck")),
     ValueError, r"Solver: checkpoint_name 'no/such/folder/ck' puts checkpoints in no/such/"
                 r"folder, which does not exist"),
    ("Solver negative learning rate",
     lambda: _solver(optim_config={"learning_rate": -1e-3}),
     ValueError, r"Solver: optim_config\['learning_rate'\] must be a finite number and > 0, "
                 r"got -0.001"),
    ("Solver zero learning rate", lambda: _solver(optim_config={"learning_rate": 0}),
     ValueError, r"Solver: optim_config\['learning_rate'\] must be a finite number and > 0, "
                 r"got 0"),
    ("Solver misspelled optim_config key", lambda: _solver(optim_config={"lr": 1e-3}),
     ValueError, r"Solver: optim_config key\(s\) 'lr' are not used by update rule 'sgd', which "
                 r"knows learning_rate"),
    ("Solver key of another rule",
     lambda: _solver(update_rule="sgd_momentum", optim_config={"beta1": 0.9}),
     ValueError, r"Solver: optim_config key\(s\) 'beta1' are not used by update rule "
                 r"'sgd_momentum', which knows learning_rate, momentum, velocity"),
    ("Solver optim_config not a dict", lambda: _solver(optim_config=[("learning_rate", 1)]),
     TypeError, r"Solver: optim_config must be a dict, got list"),
    ("Solver num_epochs -1", lambda: _solver(num_epochs=-1),
     ValueError, r"Solver: num_epochs must be an integer >= 1, got -1"),
    ("Solver num_epochs 0", lambda: _solver(num_epochs=0),
     ValueError, r"Solver: num_epochs must be an integer >= 1, got 0"),
    ("Solver lr_decay -1", lambda: _solver(lr_decay=-1),
     ValueError, r"Solver: lr_decay must be a finite number and > 0, got -1"),
    ("Solver divergence factor", lambda: _solver(divergence=(0.5, 3)),
     ValueError, r"Solver: divergence factor must be a finite number and > 1, got 0.5"),
    ("Solver divergence shape", lambda: _solver(divergence=10),
     TypeError, r"Solver: divergence must be \(factor, iterations\) or None, got 10"),
    ("Solver keep_checkpoints 0", lambda: _solver(keep_checkpoints=0),
     ValueError, r"Solver: keep_checkpoints must be an integer >= 1, got 0"),
    ("Solver print_every 0", lambda: _solver(print_every=0),
     ValueError, r"Solver: print_every must be an integer >= 1, got 0"),
    # -- nn modules and optimizers
    ("BatchNorm2d eps -1", lambda: nn.BatchNorm2d(4, eps=-1),
     ValueError, r"BatchNorm2d: eps must be a finite number and > 0, got -1"),
    ("BatchNorm1d momentum 2", lambda: nn.BatchNorm1d(4, momentum=2),
     ValueError, r"BatchNorm1d: momentum must be in \[0, 1\]"),
    ("LayerNorm eps 0", lambda: nn.LayerNorm(4, eps=0),
     ValueError, r"LayerNorm: eps must be a finite number and > 0, got 0"),
    ("GroupNorm eps -1", lambda: nn.GroupNorm(2, 4, eps=-1e-5),
     ValueError, r"GroupNorm: eps must be a finite number and > 0, got -1e-05"),
    ("SGD lr -1", lambda: nn.SGD(nn.Linear(2, 2), lr=-1),
     ValueError, r"SGD: lr must be a finite number and > 0, got -1"),
    # -- data
    ("locate cifar10", lambda: locate("cifar10"),
     ValueError, r"locate: unknown dataset 'cifar10'; the known names are 'cifar-10', "
                 r"'cifar-100'"),
]


@pytest.mark.parametrize("call, error, message", [case[1:] for case in REFUSALS],
                         ids=[case[0] for case in REFUSALS])
def test_refused_by_name(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error  # not a subclass from deep inside numpy
    assert re.match(message, str(info.value)), str(info.value)


def test_refused_empty_batch_leaves_the_running_statistics_alone():
    bn_param = {"mode": "train"}
    batchnorm_forward(X43, G3, BETA3, bn_param)
    before = {k: bn_param[k].copy() for k in ("running_mean", "running_var")}
    with pytest.raises(ValueError):
        batchnorm_forward(np.zeros((0, 3)), G3, BETA3, bn_param)
    for key, value in before.items():
        assert np.array_equal(bn_param[key], value) and np.isfinite(bn_param[key]).all()
    # in test mode an empty batch is fine: nothing is averaged over it
    out, _ = batchnorm_forward(np.zeros((0, 3)), G3, BETA3, dict(bn_param, mode="test"))
    assert out.shape == (0, 3)


def test_solver_accepts_its_rules_state_keys(tmp_path):
    """Keys a rule keeps as state (from a checkpoint's optim config) are not misspellings."""
    config = {"learning_rate": 1e-3, "beta1": 0.8, "t": 0, "m": None, "v": None}
    solver = _solver(update_rule="adam", optim_config=config, checkpoint_name=str(tmp_path / "c"))
    assert solver.optim_config == config


def test_custom_update_rules_keep_their_own_keys():
    def halve(w, dw, config):
        return w - config["step"] * dw, config

    assert _solver(update_rule=halve, optim_config={"step": 0.5}).optim_config == {"step": 0.5}


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("flags, fragment", [
    (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got '0'"),
    (["--num-train", "0"], "argument --num-train: must be an integer >= 1, got '0'"),
    (["--num-train", "-5"], "argument --num-train: must be an integer >= 1, got '-5'"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    (["--epochs", "-3"], "argument --epochs: must be an integer >= 1, got '-3'"),
    (["--epochs", "2.5"], "argument --epochs: must be an integer >= 1, got '2.5'"),
    (["--lr", "-1"], "argument --lr: must be a finite number > 0, got '-1'"),
    (["--lr=0"], "argument --lr: must be a finite number > 0, got '0'"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0, got 'nan'"),
    (["--reg", "-1"], "argument --reg: must be a finite number >= 0, got '-1'"),
    (["--lr-decay", "-1"], "argument --lr-decay: must be a finite number > 0, got '-1'"),
    (["--keep-checkpoints", "0"], "argument --keep-checkpoints: must be an integer >= 1"),
])
def test_nonsense_flags_exit_2_with_one_line(flags, fragment, tmp_path, capsys, one_line_error):
    with pytest.raises(SystemExit) as info:
        main(["train", *flags, "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    one_line_error(fragment)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def _tiny_run(out, *extra):
    """A real, quick run (two-layer net, 1 epoch on 64 digits)."""
    return main(["train", "--model", "two-layer", "--epochs", "1", "--num-train", "64",
                 "--out", str(out), *extra])


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "good"
    assert _tiny_run(out) == 0
    return out


@pytest.mark.parametrize("extra", [
    [],
    ["--epochs", "3"],
    ["--model", "fc"],
])
def test_an_explicit_out_holding_a_run_is_refused(extra, finished_run, capsys, one_line_error):
    before = _hashes(finished_run)
    capsys.readouterr()
    assert main(["train", "--model", "two-layer", "--epochs", "1", "--num-train", "64",
                 "--out", str(finished_run), *extra]) == 1
    one_line_error(f"output folder {finished_run} already holds a run",
                    f"continue it with --resume {finished_run / 'checkpoint_epoch_1.npz'}, or "
                    f"pass --overwrite")
    assert _hashes(finished_run) == before


def test_resuming_another_runs_checkpoint_into_a_run_is_refused(finished_run, tmp_path, capsys, one_line_error):
    other = tmp_path / "other"
    assert _tiny_run(other) == 0
    before = _hashes(finished_run)
    capsys.readouterr()
    rc = _tiny_run(finished_run, "--resume", str(other / "checkpoint_epoch_1.npz"))
    assert rc == 1
    one_line_error("already holds a run")
    assert _hashes(finished_run) == before


def test_a_bad_flag_into_a_run_changes_nothing(finished_run, capsys):
    before = _hashes(finished_run)
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "0", "--out", str(finished_run)])
    assert _hashes(finished_run) == before


def test_the_default_folder_gets_a_fresh_number(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--model", "two-layer", "--epochs", "1", "--num-train", "64"]
    assert main(args) == 0
    first = tmp_path / "runs" / "two-layer-digits"
    before = _hashes(first)
    assert main(args) == 0
    assert f"wrote to {os.path.join('runs', 'two-layer-digits-2')}" in capsys.readouterr().out
    assert _hashes(first) == before
    assert (tmp_path / "runs" / "two-layer-digits-2" / "model.npz").is_file()


def test_overwrite_replaces_every_file_of_the_old_run(tmp_path):
    out = tmp_path / "run"
    assert _tiny_run(out) == 0
    (out / "notes.txt").write_text("mine")  # not dualnet's: kept
    before = _hashes(out)
    assert _tiny_run(out, "--epochs", "2", "--overwrite") == 0
    after = _hashes(out)
    assert after["notes.txt"] == before["notes.txt"]
    stale = [name for name, digest in after.items()
             if name != "notes.txt" and before.get(name) == digest]
    assert stale == []
    assert json.loads((out / "history.json").read_text())["arguments"]["epochs"] == 2


def test_resume_continues_the_run_in_its_own_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert _tiny_run(out) == 0
    assert main(["train", "--model", "two-layer", "--epochs", "2", "--num-train", "64",
                 "--resume", str(out / "checkpoint_epoch_1.npz")]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss_history"]) == 2 * (64 // 32)
    assert f"wrote to {out}" in capsys.readouterr().out


def test_only_the_last_and_the_best_checkpoints_are_kept(tmp_path):
    out = tmp_path / "run"
    assert _tiny_run(out, "--epochs", "4") == 0
    history = json.loads((out / "history.json").read_text())
    best_epoch = int(np.argmax(history["val_acc_history"]))  # checks: epoch 0, 1, 2, ...
    kept = sorted(p.name for p in out.glob("checkpoint_*.npz"))
    assert kept == sorted({f"checkpoint_epoch_{e}.npz" for e in (4, best_epoch)})
    assert _tiny_run(tmp_path / "all", "--epochs", "4", "--keep-checkpoints", "9") == 0
    assert len(list((tmp_path / "all").glob("checkpoint_*.npz"))) == 5


HOLD_LOCK = textwrap.dedent("""
    import sys
    from dualnet.rundir import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the test closes our stdin
""")


def test_a_folder_in_use_by_another_process_is_refused(tmp_path, capsys, one_line_error):
    out = tmp_path / "run"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _tiny_run(out) == 1
        one_line_error(f"run folder {out} is in use by process {holder.pid}")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    assert not (out / LOCK_NAME).exists()  # released by its owner
    assert _tiny_run(out) == 0


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout),
                                             "host": socket.gethostname()}))
    assert _tiny_run(out) == 0
    assert not (out / LOCK_NAME).exists()


def test_lr_1e3_stops_as_diverged_with_a_one_line_hint(tmp_path, capsys, one_line_error):
    out = tmp_path / "run"
    rc = main(["train", "--lr", "1e3", "--epochs", "3", "--num-train", "320", "--out", str(out)])
    assert rc == 1
    line = one_line_error("training diverged:", "lower the learning rate (--lr 1000 now)",
                           str(out / "checkpoint_diverged.npz"))
    assert "is above 10 x the first loss" in line
    assert (out / "checkpoint_diverged.npz").is_file()
    assert not (out / "model.npz").exists()
