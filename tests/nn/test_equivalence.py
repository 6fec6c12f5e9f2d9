"""Object and functional styles give the same numbers: Sequential vs ThreeLayerConvNet."""

import numpy as np
import pytest

from dualnet import backend, nn
from dualnet.models import ThreeLayerConvNet
from dualnet.solver import Solver

# ThreeLayerConvNet's course keys and the Sequential's dotted names for the same arrays
NAMES = {"W1": "0.weight", "b1": "0.bias", "W2": "4.weight", "b2": "4.bias",
         "W3": "6.weight", "b3": "6.bias"}


def _pair(reg):
    functional = ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=4, filter_size=3,
                                   hidden_dim=6, num_classes=5, weight_scale=0.1, reg=reg,
                                   dtype=np.float64)
    sequential = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, dtype=np.float64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 6, dtype=np.float64), nn.ReLU(),
        nn.Linear(6, 5, dtype=np.float64), reg=reg)
    for key, name in NAMES.items():
        sequential.params[name] = functional.params[key].copy()
    return functional, sequential


@pytest.mark.parametrize("name", backend.names())
@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_sequential_equals_three_layer_convnet(name, reg):
    if name not in backend.available():
        pytest.skip(f"{name} unavailable here: {backend.why_unavailable(name)}")
    np.random.seed(231)
    with backend.use(name) as be:
        functional, sequential = _pair(reg)
        X = be.asarray(np.random.randn(3, 3, 8, 8))
        y = be.asarray(np.array([0, 4, 2]))
        np.testing.assert_allclose(be.to_numpy(sequential.loss(X)),
                                   be.to_numpy(functional.loss(X)), rtol=1e-12)
        loss_f, grads_f = functional.loss(X, y)
        loss_s, grads_s = sequential.loss(X, y)
        assert abs(float(loss_f) - float(loss_s)) < 1e-12
        for key, dotted in NAMES.items():
            np.testing.assert_allclose(be.to_numpy(grads_s[dotted]), be.to_numpy(grads_f[key]),
                                       rtol=1e-10, atol=1e-14)


def test_solver_trains_a_sequential_like_the_functional_model():
    rng = np.random.RandomState(0)
    data = {"X_train": rng.randn(20, 3, 8, 8), "y_train": rng.randint(5, size=20),
            "X_val": rng.randn(10, 3, 8, 8), "y_val": rng.randint(5, size=10)}
    histories = []
    for model in _pair(0.01):
        np.random.seed(5)  # the Solver samples minibatches from numpy's global RNG
        solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-2},
                        batch_size=5, num_epochs=2, verbose=False)
        solver.train()
        histories.append(solver.loss_history)
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-10)
    assert histories[0][-1] < histories[0][0]


def _bn_run(tmp_path, name, model_seed):
    np.random.seed(model_seed)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, dtype=np.float64),
                          nn.BatchNorm2d(2, dtype=np.float64), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3, dtype=np.float64))
    rng = np.random.RandomState(1)
    data = {"X_train": rng.randn(20, 1, 4, 4), "y_train": rng.randint(3, size=20),
            "X_val": rng.randn(6, 1, 4, 4), "y_val": rng.randint(3, size=6)}
    np.random.seed(3)
    solver = Solver(model, data, update_rule="adam", batch_size=5, num_epochs=3,
                    checkpoint_name=str(tmp_path / name), verbose=False)
    return model, solver


def test_solver_checkpoint_resumes_a_sequential_with_its_running_statistics(tmp_path):
    model_a, a = _bn_run(tmp_path, "a", model_seed=0)
    a.train()
    model_b, b = _bn_run(tmp_path, "b", model_seed=42)  # other weights, fresh statistics
    b.resume(tmp_path / "a_epoch_1.npz")
    b.train()
    assert b.loss_history == a.loss_history
    assert len(model_b.bn_params) == 1
    for key, value in model_a.state_dict().items():
        np.testing.assert_array_equal(model_b.state_dict()[key], value, err_msg=key)
