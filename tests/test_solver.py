"""The Solver: course semantics, schedules, early stopping, loaders, NaN stop, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dualnet import backend, optim
from dualnet.checkpoint import CheckpointError
from dualnet.layers import affine_backward, affine_forward, softmax_loss
from dualnet.models import ConvNet, FullyConnectedNet
from dualnet.solver import DivergenceError, NonFiniteLossError, Solver


def _blobs(n, seed=0, classes=4, dim=6):
    """n points around `classes` well separated centers (own RNG: global state untouched)."""
    rng = np.random.RandomState(seed)
    centers = 3 * rng.randn(classes, dim)
    y = rng.randint(classes, size=n)
    return centers[y] + rng.randn(n, dim), y


def _data(n_train=40, n_val=20):
    X, y = _blobs(n_train + n_val)
    return {"X_train": X[:n_train], "y_train": y[:n_train],
            "X_val": X[n_train:], "y_val": y[n_train:]}


class CourseStyleSoftmax:
    """A model written as in the course: only `params` and `loss`; it remembers its batches."""

    def __init__(self, D=6, C=4):
        self.params = {"W": 0.01 * np.random.randn(D, C), "b": np.zeros(C)}
        self.batches = []

    def loss(self, X, y=None):
        scores, cache = affine_forward(X, self.params["W"], self.params["b"])
        if y is None:
            return scores
        self.batches.append(X.copy())
        loss, dscores = softmax_loss(scores, y)
        _, dW, db = affine_backward(dscores, cache)
        return loss, {"W": dW, "b": db}


def _solver(model, data=None, **kwargs):
    kwargs.setdefault("verbose", False)
    return Solver(model, data or _data(), **kwargs)


def test_histories_follow_the_course_schedule():
    solver = _solver(CourseStyleSoftmax(), batch_size=10, num_epochs=3,
                     optim_config={"learning_rate": 0.1}, lr_decay=0.5)
    solver.train()
    assert len(solver.loss_history) == 3 * 4  # 40 examples / batch 10 = 4 per epoch
    # after the first iteration and at each epoch end (the last iteration is one of them)
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 4
    assert solver.epoch == 3
    for history in (solver.loss_history, solver.train_acc_history, solver.val_acc_history):
        assert all(type(v) is float for v in history)
    assert solver.optim_configs["W"]["learning_rate"] == pytest.approx(0.1 * 0.5 ** 3)


def test_minibatches_are_drawn_with_replacement_like_the_course():
    data = _data()
    model = CourseStyleSoftmax()
    solver = _solver(model, data, batch_size=30, num_epochs=1)
    np.random.seed(4)
    expected = np.random.choice(40, 30)  # the course's sampling: with replacement
    np.random.seed(4)
    solver.train()
    assert np.array_equal(model.batches[0], data["X_train"][expected])


def test_best_params_are_swapped_in_at_the_end():
    data = _data()

    def random_walk(w, dw, config):  # makes validation accuracy go up and down
        return w + np.random.randn(*w.shape), config

    for restore_best in (True, False):
        np.random.seed(11)
        model = FullyConnectedNet([10], input_dim=6, num_classes=4, dtype=np.float64)
        # a random walk's loss grows without bound: it is not judged as divergence here
        solver = _solver(model, data, update_rule=random_walk, batch_size=10, num_epochs=6,
                         restore_best=restore_best, divergence=None)
        solver.train()
        assert solver.best_val_acc == max(solver.val_acc_history)
        assert solver.val_acc_history[-1] < solver.best_val_acc  # the case worth testing
        final = solver.check_accuracy(data["X_val"], data["y_val"])
        expected = solver.best_val_acc if restore_best else solver.val_acc_history[-1]
        assert final == expected


def test_overfits_50_examples():
    rng = np.random.RandomState(0)
    X, y = rng.randn(50, 3, 8, 8), rng.randint(10, size=50)
    np.random.seed(0)
    model = FullyConnectedNet([100, 100], input_dim=3 * 8 * 8, weight_scale="he")
    solver = _solver(model, {"X_train": X, "y_train": y, "X_val": X[:10], "y_val": y[:10]},
                     num_epochs=20, batch_size=25, optim_config={"learning_rate": 0.1})
    solver.train()
    assert solver.train_acc_history[-1] == 1.0


def test_learning_rate_schedule_and_decay():
    seen = []

    def spy_sgd(w, dw, config):
        seen.append(config["learning_rate"])
        return optim.sgd(w, dw, config)

    _solver(CourseStyleSoftmax(), _data(n_train=20), update_rule=spy_sgd, batch_size=10,
            num_epochs=2, optim_config={"learning_rate": 0.1}, lr_decay=0.5,
            lr_schedule="cosine").train()
    # lr = 0.1 * 0.5**epoch * cosine(iteration / 2 iterations per epoch, 2 epochs)
    assert seen[::2] == pytest.approx([0.1, 0.0853553390593, 0.025, 0.00732233047034])

    seen.clear()
    _solver(CourseStyleSoftmax(), _data(n_train=20), update_rule=spy_sgd, batch_size=10,
            num_epochs=2, optim_config={"learning_rate": 0.1}, lr_decay=0.5).train()
    assert seen[::2] == pytest.approx([0.1, 0.1, 0.05, 0.05])


def test_schedule_needs_a_learning_rate():
    with pytest.raises(ValueError, match="learning_rate"):
        _solver(CourseStyleSoftmax(), lr_schedule="cosine")


def test_early_stopping():
    def frozen(w, dw, config):  # an update rule that changes nothing: nothing ever improves
        return w, config

    solver = _solver(CourseStyleSoftmax(), batch_size=10, num_epochs=10, patience=2,
                     update_rule=frozen, optim_config={})
    solver.train()
    assert solver.stopped_early
    assert len(solver.val_acc_history) == 3  # the first check, then two without progress
    assert len(solver.loss_history) == 2 * 4


def test_on_check_sees_each_check_and_its_exception_ends_training():
    seen = []

    def on_check(solver):
        seen.append((solver.epoch, solver.iteration, len(solver.val_acc_history)))
        if solver.epoch == 2:
            raise StopIteration("enough")

    solver = _solver(CourseStyleSoftmax(), batch_size=10, num_epochs=5, on_check=on_check)
    with pytest.raises(StopIteration, match="enough"):
        solver.train()
    # after the first iteration, then at the end of epochs 1 and 2 (4 iterations each)
    assert seen == [(0, 1, 1), (1, 4, 2), (2, 8, 3)]
    assert len(solver.loss_history) == 8


def test_seed_makes_runs_identical():
    histories = []
    for disturb in (0, 5):
        np.random.seed(0)
        model = FullyConnectedNet([8], input_dim=6, num_classes=4, dropout_keep_ratio=0.7)
        np.random.rand(disturb)
        solver = _solver(model, batch_size=10, num_epochs=2, seed=3)
        solver.train()
        histories.append(solver.loss_history)
    assert histories[0] == histories[1]


def test_invalid_update_rule():
    with pytest.raises(ValueError, match="Invalid update_rule"):
        _solver(CourseStyleSoftmax(), update_rule="lbfgs")


def test_verbose_prints_the_course_lines(capsys):
    _solver(CourseStyleSoftmax(), batch_size=10, num_epochs=1, verbose=True, progress=False,
            print_every=2).train()
    out = capsys.readouterr().out
    assert "(Iteration 1 / 4) loss: " in out and "(Iteration 3 / 4) loss: " in out
    assert "(Epoch 0 / 1) train acc: " in out and "(Epoch 1 / 1) train acc: " in out


# -- loaders ------------------------------------------------------------------------------------
class Batches:
    """The loader protocol: len() batches per epoch, each iter() one epoch of (X, y)."""

    def __init__(self, X, y, batch_size, claim=None):
        self.X, self.y, self.batch_size = X, y, batch_size
        self.claim = claim

    def __len__(self):
        return self.claim or math.ceil(len(self.X) / self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.X), self.batch_size):
            yield self.X[start:start + self.batch_size], self.y[start:start + self.batch_size]


def test_trains_from_a_loader():
    data = _data(n_train=60)
    loader = Batches(data["X_train"].astype(np.float64), data["y_train"], 16)
    np.random.seed(0)
    model = FullyConnectedNet([16], input_dim=6, num_classes=4)
    solver = _solver(model, {"train": loader, "X_val": data["X_val"], "y_val": data["y_val"]},
                     update_rule="adam", optim_config={"learning_rate": 1e-2}, num_epochs=8,
                     batch_size=16, num_train_samples=40)
    solver.train()
    assert len(solver.loss_history) == 8 * 4
    assert solver.loss_history[-1] < solver.loss_history[0]
    assert solver.train_acc_history[-1] >= 0.9 and solver.best_val_acc >= 0.9


def test_loader_problems_are_explained():
    data = _data()
    short = Batches(data["X_train"], data["y_train"], 10, claim=7)
    solver = _solver(CourseStyleSoftmax(), {"train": short, "X_val": data["X_val"],
                                            "y_val": data["y_val"]}, batch_size=10)
    with pytest.raises(ValueError, match="yielded 4 batches"):
        solver.train()
    unsized = {"train": iter([]), "X_val": data["X_val"], "y_val": data["y_val"]}
    with pytest.raises(TypeError, match="len"):
        _solver(CourseStyleSoftmax(), unsized)


# -- non-finite losses ---------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN is the point
def test_nonfinite_loss_names_the_first_bad_layer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the diverged state is saved without checkpoint_name
    np.random.seed(0)
    model = FullyConnectedNet([5, 5], input_dim=6, num_classes=4)
    model.params["W2"][0, 0] = np.inf
    solver = _solver(model)
    with pytest.raises(NonFiniteLossError, match="'affine_relu2'.*non-finite parameters: W2"):
        solver.train()
    assert solver.loss_history == []
    assert (tmp_path / "solver_diverged.npz").is_file()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN is the point
def test_diverging_training_stops_with_finite_history_and_a_resumable_checkpoint(tmp_path,
                                                                               capsys):
    np.random.seed(0)
    model = FullyConnectedNet([20], input_dim=6, num_classes=4)
    solver = _solver(model, optim_config={"learning_rate": 1e30}, batch_size=10,
                     checkpoint_name=str(tmp_path / "run"))
    with pytest.raises(NonFiniteLossError, match="first layer with a non-finite output") as info:
        solver.train()
    assert solver.loss_history and all(math.isfinite(v) for v in solver.loss_history)
    saved = tmp_path / "run_diverged.npz"
    assert f"saved in {saved}" in str(info.value) and info.value.checkpoint == saved
    again = _solver(FullyConnectedNet([20], input_dim=6, num_classes=4),
                    optim_config={"learning_rate": 1e30}, batch_size=10)
    again.resume(saved)  # the last finite state, ready to continue with other settings
    assert again.loss_history == solver.loss_history
    assert all(np.all(np.isfinite(w)) for w in again.model.params.values())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN is the point
def test_nonfinite_loss_with_a_course_style_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = CourseStyleSoftmax()
    model.params["b"][1] = np.nan
    with pytest.raises(NonFiniteLossError, match="cannot name its layers"):
        _solver(model).train()


# -- interrupts and resuming --------------------------------------------------------------------
_TRIPWIRE = {"calls": 0, "at": None}


def tripwire_adam(w, dw, config):
    """adam that raises KeyboardInterrupt at a chosen call (mid-iteration, on purpose)."""
    _TRIPWIRE["calls"] += 1
    if _TRIPWIRE["calls"] == _TRIPWIRE["at"]:
        raise KeyboardInterrupt
    return optim.adam(w, dw, config)


def _resumable_run(checkpoint_name, interrupt_at=None, model_seed=0):
    """A run whose every random source matters: batchnorm, unseeded dropout, subsampling."""
    _TRIPWIRE.update(calls=0, at=interrupt_at)
    np.random.seed(model_seed)
    model = FullyConnectedNet([8], input_dim=6, num_classes=4, normalization="batchnorm",
                              dropout_keep_ratio=0.8, weight_scale=0.1)
    solver = _solver(model, update_rule=tripwire_adam, optim_config={"learning_rate": 1e-2},
                     lr_decay=0.9, batch_size=10, num_epochs=4, num_train_samples=20,
                     num_val_samples=10, checkpoint_name=str(checkpoint_name))
    return model, solver


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, capsys):
    model_a, a = _resumable_run(tmp_path / "a")
    a.train()

    # 6 parameters per iteration: the 40th call is in the middle of iteration 7.
    _, b = _resumable_run(tmp_path / "b", interrupt_at=40)
    with pytest.raises(KeyboardInterrupt):
        b.train()
    interrupted = tmp_path / "b_interrupted.npz"
    assert f"saved to {interrupted}" in capsys.readouterr().err

    model_c, c = _resumable_run(tmp_path / "c", model_seed=99)  # different weights
    c.resume(interrupted)
    assert c.iteration == 6 and len(c.loss_history) == 6
    c.train()
    assert c.loss_history == a.loss_history
    assert c.train_acc_history == a.train_acc_history
    assert c.val_acc_history == a.val_acc_history
    assert c.best_val_acc == a.best_val_acc
    for name, value in model_a.params.items():
        assert np.array_equal(model_c.params[name], value), name
    for bn_a, bn_c in zip(model_a.bn_params, model_c.bn_params, strict=True):
        assert np.array_equal(bn_a["running_mean"], bn_c["running_mean"])


def test_resume_from_an_epoch_checkpoint(tmp_path):
    model_a, a = _resumable_run(tmp_path / "a")
    a.train()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"a_epoch_{e}.npz" for e in range(5)]
    model_d, d = _resumable_run(tmp_path / "d", model_seed=7)
    d.resume(tmp_path / "a_epoch_2.npz")
    assert d.epoch == 2 and d.iteration == 8
    d.train()
    assert d.loss_history == a.loss_history and d.val_acc_history == a.val_acc_history


def test_interrupt_without_checkpoint_name_saves_in_the_working_directory(tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    _TRIPWIRE.update(calls=0, at=3)
    solver = _solver(CourseStyleSoftmax(), update_rule=tripwire_adam, batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        solver.train()
    resumed = _solver(CourseStyleSoftmax(), update_rule=tripwire_adam, batch_size=10)
    resumed.resume(tmp_path / "solver_interrupted.npz")
    assert resumed.iteration == 1 and len(resumed.loss_history) == 1


def test_mismatched_checkpoints_are_refused_without_changes(tmp_path):
    _, a = _resumable_run(tmp_path / "a")
    a.num_epochs = 1
    a.train()
    path = tmp_path / "a_epoch_1.npz"

    np.random.seed(0)
    other = FullyConnectedNet([9], input_dim=6, num_classes=4, normalization="batchnorm")
    before = {k: v.copy() for k, v in other.params.items()}
    solver = _solver(other, update_rule=tripwire_adam, batch_size=10)
    with pytest.raises(CheckpointError, match=r"W1 is float32\(6, 8\) there but float32\(6, 9\)"):
        solver.resume(path)
    assert all(np.array_equal(other.params[k], v) for k, v in before.items())
    assert solver.iteration == 0 and solver.loss_history == []

    _, same_model = _resumable_run(tmp_path / "x")
    same_model.batch_size = 5
    with pytest.raises(CheckpointError, match="batch_size is 10 there but 5 here"):
        same_model.resume(path)

    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        same_model.resume(path)


# -- divergence: the loss far above its start for several iterations ------------------------------
class ScriptedLoss:
    """A model whose training losses follow a script (zero gradients): the rule, exactly."""

    def __init__(self, losses):
        self.params = {"W": np.zeros((6, 4))}
        self.losses = list(losses)

    def loss(self, X, y=None):
        if y is None:
            return np.zeros((len(X), 4))
        return self.losses.pop(0), {"W": np.zeros((6, 4))}


@pytest.mark.parametrize("losses, stops_after, mean", [
    # means of 3: 8, 9.33, 9.33, 9, then 11 > 10 x 1: stopped there, before its update
    ([1, 11, 12, 5, 11, 11, 11, 1], [1, 11, 12, 5, 11, 11], 11),
    # a mean of exactly 10 is not above 10 x 1
    ([1, 10, 10, 10, 10, 10, 10, 10], None, None),
    # one spike to 25 is not enough (means of 9) ...
    ([1, 1, 1, 25, 1, 1, 1, 1], None, None),
    # ... one to 40 is (a mean of 14 with its neighbours)
    ([1, 1, 40, 1, 1, 1, 1, 1], [1, 1], 14),
    # a loss jumping between 0 and large values counts: means of 7, 6.67, 13.3
    ([1, 0, 20, 0, 20, 0, 20, 0], [1, 0, 20, 0], 40 / 3),
    # a first loss <= 0 is never judged by growth
    ([0, 5, 5, 5, 5, 5, 5, 5], None, None),
])
def test_the_divergence_rule(losses, stops_after, mean, tmp_path):
    solver = _solver(ScriptedLoss(losses), batch_size=10, num_epochs=2, divergence=(10, 3),
                     checkpoint_name=str(tmp_path / "run"))
    if stops_after is None:
        solver.train()
        assert solver.loss_history == losses
        return
    with pytest.raises(DivergenceError) as info:
        solver.train()
    assert not isinstance(info.value, NonFiniteLossError)
    assert solver.loss_history == stops_after
    assert info.value.reason == (f"the mean loss of the last 3 iterations ({mean:.4g}) is "
                                 f"above 10 x the first loss ({losses[0]})")
    epoch = len(stops_after) // 4  # 4 iterations per epoch
    assert str(info.value).startswith(f"Solver: iteration {len(stops_after) + 1} (epoch {epoch})"
                                      f": training diverged: ")
    assert "lower the learning rate" in str(info.value)
    saved = tmp_path / "run_diverged.npz"
    assert info.value.checkpoint == saved and info.value.saved_iteration == len(stops_after)
    again = _solver(ScriptedLoss([]), batch_size=10, num_epochs=2)
    again.resume(saved)
    assert again.iteration == len(stops_after) and again.loss_history == stops_after


def test_divergence_none_runs_to_the_end():
    losses = [1] + [1e6] * 7
    solver = _solver(ScriptedLoss(losses), batch_size=10, num_epochs=2, divergence=None)
    solver.train()
    assert solver.loss_history == losses


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_real_diverging_run_is_stopped_by_default(tmp_path):
    np.random.seed(0)
    model = FullyConnectedNet([20], input_dim=6, num_classes=4, dtype=np.float64)
    solver = _solver(model, update_rule="adam", optim_config={"learning_rate": 1e3},
                     batch_size=10, num_epochs=10, checkpoint_name=str(tmp_path / "run"))
    with pytest.raises(DivergenceError):  # growth or NaN, whichever comes first
        solver.train()
    assert solver.iteration < 40  # far from the 100 iterations asked for
    assert (tmp_path / "run_diverged.npz").is_file()


def test_keep_checkpoints_keeps_the_most_recent_and_the_best(tmp_path):
    np.random.seed(3)
    model = FullyConnectedNet([10], input_dim=6, num_classes=4, dtype=np.float64)

    def random_walk(w, dw, config):  # validation accuracy goes up and down
        return w + 0.3 * np.random.randn(*w.shape), config

    solver = _solver(model, update_rule=random_walk, batch_size=10, num_epochs=6,
                     checkpoint_name=str(tmp_path / "run"), keep_checkpoints=2, divergence=None)
    solver.train()
    best = int(np.argmax(solver.val_acc_history))  # one check per epoch after epoch 0
    assert best < 5  # the case worth testing: the best is not among the last two
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted({f"run_epoch_{e}.npz" for e in (5, 6, best)})


# -- backends -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in backend.names() if n != "numpy"])
def test_same_training_on_every_backend(name):
    reason = backend.why_unavailable(name)
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable: {reason}")
    rng = np.random.RandomState(0)
    X, y = rng.randn(12, 1, 4, 4), rng.randint(3, size=12)  # host data on purpose
    data = {"X_train": X, "y_train": y, "X_val": X, "y_val": y}
    histories = {}
    for which in ("numpy", name):
        with backend.use(which) as be:
            np.random.seed(0)
            model = ConvNet(input_dim=(1, 4, 4), num_filters=(2,), num_classes=3,
                            dtype=np.float64)
            solver = _solver(model, data, batch_size=4, num_epochs=2, seed=1,
                             update_rule="adam")
            solver.train()
            assert model.backend is be
        histories[which] = solver.loss_history + solver.val_acc_history
    assert histories[name] == pytest.approx(histories["numpy"], rel=1e-9)


def test_loader_training_resumes_exactly_mid_epoch(tmp_path):
    data = _data(n_train=60)

    def run(name, interrupt_at=None, model_seed=0):
        _TRIPWIRE.update(calls=0, at=interrupt_at)
        np.random.seed(model_seed)
        model = FullyConnectedNet([8], input_dim=6, num_classes=4, dropout_keep_ratio=0.8)
        loader = Batches(data["X_train"], data["y_train"], 10)
        return _solver(model, {"train": loader, "X_val": data["X_val"], "y_val": data["y_val"]},
                       update_rule=tripwire_adam, batch_size=10, num_epochs=3,
                       num_train_samples=45, num_val_samples=10,
                       checkpoint_name=str(tmp_path / name))

    a = run("a")
    a.train()
    b = run("b", interrupt_at=4 * 9 + 2)  # 4 parameters: inside iteration 10 of 18
    with pytest.raises(KeyboardInterrupt):
        b.train()
    c = run("c", model_seed=5)
    c.resume(tmp_path / "b_interrupted.npz")
    c.train()
    assert c.loss_history == a.loss_history
    assert c.train_acc_history == a.train_acc_history
    assert c.val_acc_history == a.val_acc_history
