"""Every model's scores, loss and gradients, and a few training steps, match the numpy backend."""

import numpy as np
import pytest

from dualnet import backend, models, optim
from dualnet.solver import Solver

# name -> (constructor taking dtype, input shape of one sample, draws random numbers).
MODELS = {
    "TwoLayerNet": (lambda dt: models.TwoLayerNet(input_dim=12, hidden_dim=8, num_classes=5,
                                                  weight_scale=0.1, reg=0.1, dtype=dt),
                    (3, 2, 2), False),
    "FullyConnectedNet_batchnorm_dropout": (
        lambda dt: models.FullyConnectedNet([8, 6], input_dim=12, num_classes=5,
                                            normalization="batchnorm", dropout_keep_ratio=0.8,
                                            seed=1, reg=0.1, weight_scale=0.1, dtype=dt),
        (12,), True),
    "FullyConnectedNet_layernorm": (
        lambda dt: models.FullyConnectedNet([8, 6], input_dim=12, num_classes=5,
                                            normalization="layernorm", reg=0.1, weight_scale=0.1,
                                            dtype=dt),
        (12,), False),
    "ThreeLayerConvNet": (
        lambda dt: models.ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=4, filter_size=3,
                                            hidden_dim=10, num_classes=5, weight_scale=0.1,
                                            reg=0.1, dtype=dt),
        (3, 8, 8), False),
    "ConvNet_batchnorm_residual": (
        lambda dt: models.ConvNet(input_dim=(3, 8, 8), num_filters=(4, 8), residual_blocks=1,
                                  hidden_dims=(10,), num_classes=5, reg=0.1, dtype=dt),
        (3, 8, 8), False),
    "ConvNet_groupnorm_flatten": (
        lambda dt: models.ConvNet(input_dim=(3, 8, 8), num_filters=(4,), normalization="groupnorm",
                                  num_groups=2, global_pool=False, num_classes=5, dtype=dt),
        (3, 8, 8), False),
}
N = 4


def _build(be, name, dtype):
    """The model created on `be` from the same seeded host draws as on any other backend."""
    make, _, _ = MODELS[name]
    np.random.seed(231)
    with backend.use(be.name):
        return make(dtype)


def _data(name, dtype):
    rng = np.random.default_rng(5)
    return rng.standard_normal((N, *MODELS[name][1])).astype(dtype), rng.integers(0, 5, size=N)


def _check_random(be, name):
    if MODELS[name][2] and not be.host:
        pytest.skip(f"{name} uses dropout and {be.name} draws its own random numbers")


@pytest.mark.parametrize("name", MODELS)
def test_scores_loss_and_gradients(be, name, dtype, assert_agrees):
    _check_random(be, name)
    X, y = _data(name, dtype)
    ref = _build(backend.get("numpy"), name, dtype)
    model = _build(be, name, dtype)
    assert model.backend is be
    scores = model.loss(be.asarray(X))
    loss, grads = model.loss(be.asarray(X), be.asarray(y))
    with backend.use("numpy"):  # host arrays follow the default backend
        ref_scores = ref.loss(X)
        ref_loss, ref_grads = ref.loss(X, y)
    assert_agrees(be.to_numpy(scores), ref_scores, dtype, "scores")
    assert_agrees(be.to_numpy(loss), ref_loss, dtype, "loss")
    assert sorted(grads) == sorted(ref_grads) == sorted(model.params)
    for k, g in grads.items():
        assert_agrees(be.to_numpy(g), ref_grads[k], dtype, f"grad {k}")


@pytest.mark.parametrize("name", ["ThreeLayerConvNet", "ConvNet_batchnorm_residual"])
def test_training_steps(be, name, dtype, assert_agrees):
    """Three SGD-momentum steps: parameters and running statistics stay in agreement."""
    X, y = _data(name, dtype)

    def train(on, X, y):
        model = _build(on, name, dtype)
        configs = {k: {"learning_rate": 0.05} for k in model.params}
        with backend.use(on.name):
            for _ in range(3):
                _, grads = model.loss(X, y)
                for k, w in model.params.items():
                    model.params[k], configs[k] = optim.sgd_momentum(w, grads[k], configs[k])
        return model

    ref = train(backend.get("numpy"), X, y)
    model = train(be, be.asarray(X), be.asarray(y))
    for k, w in model.params.items():
        assert_agrees(be.to_numpy(w), ref.params[k], dtype, f"param {k}")
    for mine, theirs in zip(model.bn_params, ref.bn_params, strict=True):
        for key in ("running_mean", "running_var"):
            assert_agrees(be.to_numpy(mine[key]), theirs[key], dtype, key)


def test_solver_steps(be, dtype, assert_agrees):
    """A short Solver run (host dataset, batches moved per step) matches the numpy run."""
    name = "ConvNet_batchnorm_residual"
    rng = np.random.default_rng(9)
    data = {"X_train": rng.standard_normal((16, 3, 8, 8)).astype(dtype),
            "y_train": rng.integers(0, 5, size=16),
            "X_val": rng.standard_normal((6, 3, 8, 8)).astype(dtype),
            "y_val": rng.integers(0, 5, size=6)}

    def train(on):
        model = _build(on, name, dtype)
        with backend.use(on.name):
            solver = Solver(model, data, update_rule="sgd_momentum",
                            optim_config={"learning_rate": 0.05}, batch_size=4, num_epochs=2,
                            restore_best=False, verbose=False, seed=3)
            solver.train()
        return solver

    ref, mine = train(backend.get("numpy")), train(be)
    assert len(mine.loss_history) == 8
    assert all(type(v) is float for v in mine.loss_history + mine.val_acc_history)
    # The losses were `dtype` values before becoming Python floats: compare them as such.
    assert_agrees(np.asarray(mine.loss_history, dtype), np.asarray(ref.loss_history, dtype),
                  dtype, "loss history")
    assert mine.val_acc_history == ref.val_acc_history
    for k, w in mine.model.params.items():
        assert be.owns(w)
        assert_agrees(be.to_numpy(w), ref.model.params[k], dtype, f"param {k}")
