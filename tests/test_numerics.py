"""Debug mode (`dualnet.debug()`, DUALNET_DEBUG_NUMERICS=1) names the first layer that
produces NaN or inf, in the forward or the backward pass, for models and nn containers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import dualnet
from dualnet import nn, numerics
from dualnet.layers import affine_backward, affine_forward
from dualnet.models import FullyConnectedNet
from dualnet.models.base import Model
from dualnet.numerics import NonFiniteValueError
from dualnet.solver import NonFiniteLossError, Solver

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN is the point


def _batch(N=5, D=6, C=4):
    rng = np.random.RandomState(0)
    return rng.randn(N, D), rng.randint(C, size=N)


def _fc():
    np.random.seed(0)
    return FullyConnectedNet([5, 5], input_dim=6, num_classes=4, dtype=np.float64)


def test_off_by_default_and_nothing_is_checked():
    assert not numerics.enabled()  # (the suite does not run with DUALNET_DEBUG_NUMERICS)
    model = _fc()
    model.params["W2"][0, 0] = np.inf
    loss, _ = model.loss(*_batch())
    assert not np.isfinite(loss)  # off: the NaN goes through, as it always did


def test_the_first_bad_layer_of_the_forward_pass_is_named():
    model = _fc()
    model.params["W2"][0, 0] = np.inf
    with dualnet.debug(), pytest.raises(NonFiniteValueError) as info:
        model.loss(*_batch())
    assert str(info.value).startswith("FullyConnectedNet: layer 'affine_relu2' produced ")
    assert "in its output (shape (5, 5))" in str(info.value)
    assert (info.value.layer, info.value.what) == ("affine_relu2", "output")
    assert not numerics.enabled()  # the context manager restores the setting


def test_bad_input_is_blamed_on_the_input():
    X, y = _batch()
    X[2, 3] = np.nan
    with dualnet.debug(), pytest.raises(NonFiniteValueError,
                                        match=r"^FullyConnectedNet: the input X already holds "
                                              r"1 NaN and 0 inf of 30 values"):
        _fc().loss(X, y)


class _GradientBomb(Model):
    """affine - (identity whose backward returns NaN) - affine: only the backward breaks."""

    def __init__(self):
        super().__init__(dtype=np.float64)
        self._add_weight("W1", (6, 5), fan_in=6)
        self._add_zeros("b1", 5)
        self._add_weight("W2", (5, 4), fan_in=5)
        self._add_zeros("b2", 4)

    def _scores(self, X):
        out = self._layer("affine1", affine_forward, affine_backward, X, ("W1", "b1"))
        out = self._layer("bomb", lambda x: (x, None), lambda dout, cache: dout * np.nan, out)
        return self._layer("affine2", affine_forward, affine_backward, out, ("W2", "b2"))


def test_the_first_bad_gradient_of_the_backward_pass_is_named():
    model = _GradientBomb()
    with dualnet.debug(), pytest.raises(NonFiniteValueError) as info:
        model.loss(*_batch())
    assert str(info.value).startswith("_GradientBomb: layer 'bomb' produced 25 NaN and 0 inf "
                                      "of 25 values in its input gradient")
    assert info.value.layer == "bomb"


class _ScaleBomb(Model):
    """affine - (x * s, whose gradient for s is NaN) - affine."""

    def __init__(self):
        super().__init__(dtype=np.float64)
        self._add_weight("W1", (6, 5), fan_in=6)
        self._add_zeros("b1", 5)
        self._add_ones("s", 5)
        self._add_weight("W2", (5, 4), fan_in=5)
        self._add_zeros("b2", 4)

    def _scores(self, X):
        out = self._layer("affine1", affine_forward, affine_backward, X, ("W1", "b1"))
        out = self._layer("scale", lambda x, s: (x * s, (x, s)),
                          lambda dout, c: (dout * c[1], (dout * c[0]).sum(axis=0) * np.nan),
                          out, ("s",))
        return self._layer("affine2", affine_forward, affine_backward, out, ("W2", "b2"))


def test_a_parameter_gradient_is_named():
    with dualnet.debug(), pytest.raises(NonFiniteValueError) as info:
        _ScaleBomb().loss(*_batch())
    assert str(info.value).startswith("_ScaleBomb: layer 'scale' produced 5 NaN and 0 inf of 5 "
                                      "values in its gradient of s")


def test_nested_nn_containers_name_the_dotted_path():
    np.random.seed(0)
    inner = nn.Sequential(nn.Linear(4, 4, dtype=np.float64), nn.Linear(4, 3, dtype=np.float64))
    net = nn.Sequential(nn.Linear(6, 4, dtype=np.float64), nn.ReLU(), inner)
    inner[1].params["weight"][0, 0] = np.nan
    X, y = _batch(C=3)
    with dualnet.debug(), pytest.raises(NonFiniteValueError) as info:
        net.loss(X, y)
    assert str(info.value).startswith("Sequential: layer '2.1' (Linear) produced ")
    assert info.value.layer == "2.1"


class _NanBackward(nn.Module):
    def forward(self, x):
        return x

    def backward(self, dout):
        return dout * np.nan


def test_nn_backward_and_residual_bodies_are_checked():
    np.random.seed(0)
    net = nn.Sequential(nn.Linear(6, 4, dtype=np.float64),
                        nn.Residual(nn.Sequential(nn.ReLU(), _NanBackward())),
                        nn.Linear(4, 3, dtype=np.float64))
    X, y = _batch(C=3)
    with dualnet.debug(), pytest.raises(NonFiniteValueError) as info:
        net.loss(X, y)
    assert str(info.value).startswith("Sequential: layer '1.body.1' (_NanBackward) produced 20 "
                                      "NaN and 0 inf of 20 values in its input gradient")


def test_debug_false_turns_it_off_inside():
    model = _fc()
    model.params["W2"][0, 0] = np.inf
    with dualnet.debug(), dualnet.debug(False):
        model.loss(*_batch())  # no error
        assert not numerics.enabled()


def test_the_solver_stops_and_saves_the_state_in_debug_mode(tmp_path):
    model = _GradientBomb()
    X, y = _batch(N=40)
    data = {"X_train": X, "y_train": y, "X_val": X[:10], "y_val": y[:10]}
    solver = Solver(model, data, batch_size=10, verbose=False,
                    checkpoint_name=str(tmp_path / "run"))
    with dualnet.debug(), pytest.raises(NonFiniteLossError) as info:
        solver.train()
    assert str(info.value).startswith("Solver: iteration 1 (epoch 0): _GradientBomb: layer "
                                      "'bomb' produced")
    assert info.value.reason == "layer 'bomb' produced NaN in its input gradient"
    assert info.value.checkpoint == tmp_path / "run_diverged.npz"
    assert info.value.checkpoint.is_file()


def test_the_environment_variable_turns_it_on():
    env = dict(os.environ, DUALNET_DEBUG_NUMERICS="1", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", "import dualnet.numerics as n; "
                           "print(n.enabled())"], capture_output=True, text=True, env=env,
                          check=True)
    assert done.stdout.strip() == "True"
