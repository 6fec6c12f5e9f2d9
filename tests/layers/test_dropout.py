"""Inverted dropout with the course's keep-probability `p`."""

import numpy as np
import pytest

from dualnet import backend
from dualnet.gradient_check import eval_numerical_gradient_array, rel_error
from dualnet.layers import dropout_backward, dropout_forward


@pytest.mark.parametrize("p", [0.25, 0.4, 0.7])
def test_train_mode_keeps_fraction_p_and_preserves_the_mean(p):
    x = np.random.RandomState(231).randn(500, 500) + 10
    out, _ = dropout_forward(x, {"mode": "train", "p": p, "seed": 123})
    assert abs((out != 0).mean() - p) < 0.01  # p is the KEEP probability
    assert abs(out.mean() - x.mean()) < 0.05  # inverted dropout rescales by 1 / p
    np.testing.assert_allclose(out[out != 0], x[out != 0] / p)


def test_test_mode_is_identity():
    x = np.random.RandomState(0).randn(20, 30)
    out, cache = dropout_forward(x, {"mode": "test", "p": 0.3})
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(dropout_backward(np.ones_like(x), cache), np.ones_like(x))


def test_same_seed_same_mask_and_matches_seeded_global_rng():
    x = np.ones((50, 40))
    param = {"mode": "train", "p": 0.5, "seed": 7}
    a, _ = dropout_forward(x, param)
    b, _ = dropout_forward(x, param)
    np.testing.assert_array_equal(a, b)
    # the course computes np.random.seed(seed); mask = np.random.rand(*x.shape) < p
    state = np.random.get_state()
    np.random.seed(7)
    course_mask = (np.random.rand(*x.shape) < 0.5) / 0.5
    np.random.set_state(state)
    np.testing.assert_array_equal(a, x * course_mask)


def test_unseeded_masks_follow_dualnet_seed():
    x = np.ones((30, 30))
    backend.seed(3)
    a, _ = dropout_forward(x, {"mode": "train", "p": 0.5})
    b, _ = dropout_forward(x, {"mode": "train", "p": 0.5})
    backend.seed(3)
    c, _ = dropout_forward(x, {"mode": "train", "p": 0.5})
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_numeric_gradient_with_seed():
    rng = np.random.RandomState(231)
    x, dout = rng.randn(10, 10) + 10, rng.randn(10, 10)
    param = {"mode": "train", "p": 0.2, "seed": 123}
    _, cache = dropout_forward(x, param)
    dx = dropout_backward(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda v: dropout_forward(v, param)[0], x, dout)
    assert rel_error(dx, dx_num) < 1e-10


def test_float32_stays_float32():
    x = np.ones((4, 4), np.float32)
    out, cache = dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 1})
    assert out.dtype == np.float32
    assert dropout_backward(x, cache).dtype == np.float32


@pytest.mark.parametrize("param, match", [
    ({"mode": "train", "p": 0.0}, "p is the KEEP probability and must be in"),
    ({"mode": "train", "p": 1.5}, "p is the KEEP probability and must be in"),
    ({"mode": "train"}, "p is the KEEP probability"),
    ({"mode": "eval", "p": 0.5}, "mode must be 'train' or 'test'"),
])
def test_bad_parameters(param, match):
    with pytest.raises(ValueError, match=f"dropout_forward: {match}"):
        dropout_forward(np.ones(3), param)
