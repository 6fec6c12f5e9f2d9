"""ReLU, leaky ReLU, sigmoid, tanh: values, numeric gradients, dtypes, stability."""

import numpy as np
import pytest

from dualnet import layers
from dualnet.gradient_check import eval_numerical_gradient_array, rel_error

ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh"]


def _pair(name):
    return getattr(layers, f"{name}_forward"), getattr(layers, f"{name}_backward")


def test_relu_forward_matches_course_values():
    x = np.linspace(-0.5, 0.5, num=12).reshape(3, 4)
    out, _ = layers.relu_forward(x)
    correct_out = np.array([[0., 0., 0., 0.],
                            [0., 0., 0.04545455, 0.13636364],
                            [0.22727273, 0.31818182, 0.40909091, 0.5]])
    assert rel_error(out, correct_out) < 5e-8


@pytest.mark.parametrize("name, reference", [
    ("leaky_relu", lambda x: np.where(x > 0, x, 0.01 * x)),
    ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
    ("tanh", np.tanh),
])
def test_forward_values(name, reference):
    x = np.linspace(-3, 3, 25).reshape(5, 5)
    out, _ = _pair(name)[0](x)
    np.testing.assert_allclose(out, reference(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_numeric_gradient(name):
    forward, backward = _pair(name)
    rng = np.random.RandomState(231)
    # keep inputs away from ReLU's kink at 0, where the numeric gradient is undefined
    x = rng.randn(6, 7)
    x[np.abs(x) < 1e-3] = 0.5
    dout = rng.randn(6, 7)
    _, cache = forward(x)
    dx_num = eval_numerical_gradient_array(lambda v: forward(v)[0], x, dout)
    assert rel_error(backward(dout, cache), dx_num) < 1e-8


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_float32_stays_float32(name):
    forward, backward = _pair(name)
    x = np.random.RandomState(0).randn(3, 4).astype(np.float32)
    out, cache = forward(x)
    assert out.dtype == np.float32
    assert backward(np.ones_like(out), cache).dtype == np.float32


def test_sigmoid_is_stable_for_huge_inputs():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out, cache = layers.sigmoid_forward(x)
        dx = layers.sigmoid_backward(np.ones_like(x), cache)
    np.testing.assert_allclose(out, [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0], rtol=1e-12)
    assert np.all(np.isfinite(dx))


def test_activation_rejects_integer_input():
    with pytest.raises(TypeError, match="relu_forward: x must be float32 or float64, got int64"):
        layers.relu_forward(np.arange(3))
