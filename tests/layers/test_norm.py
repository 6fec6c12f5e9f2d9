"""Batch, spatial batch, layer and group normalization: statistics, gradients, errors."""

import numpy as np
import pytest

from dualnet import layers
from dualnet.gradient_check import eval_numerical_gradient_array, rel_error
from dualnet.layers import norm

TOL = 1e-6  # the course notebooks' tolerance for normalization gradients


def _check_grads(forward, backward, x, gamma, beta, rng):
    """Numeric vs analytic dx, dgamma, dbeta for out = forward(x, gamma, beta)."""
    out = forward(x, gamma, beta)[0]
    dout = rng.randn(*out.shape)
    _, cache = forward(x, gamma, beta)
    dx, dgamma, dbeta = backward(dout, cache)
    args = {"x": x, "gamma": gamma, "beta": beta}
    for name, analytic in zip(args, (dx, dgamma, dbeta), strict=True):
        def f(v, name=name):
            return forward(**{**args, name: v})[0]
        numeric = eval_numerical_gradient_array(f, args[name], dout)
        assert analytic.shape == args[name].shape
        assert rel_error(analytic, numeric) < TOL, name


def test_batchnorm_train_output_has_gamma_std_and_beta_mean():
    rng = np.random.RandomState(231)
    x = 50 + 5 * rng.randn(200, 3)
    gamma, beta = np.array([1.0, 2.0, 3.0]), np.array([11.0, 12.0, 13.0])
    out, _ = layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=0), gamma, rtol=1e-5)


def test_batchnorm_running_statistics_and_test_mode():
    rng = np.random.RandomState(231)
    W1, W2 = rng.randn(50, 60), rng.randn(60, 3)
    bn_param = {"mode": "train"}
    gamma, beta = np.ones(3), np.zeros(3)
    for _ in range(50):
        a = np.maximum(0, rng.randn(200, 50) @ W1) @ W2
        layers.batchnorm_forward(a, gamma, beta, bn_param)
    # running = momentum * running + (1 - momentum) * batch: after 50 steps ~ true statistics
    bn_param["mode"] = "test"
    a = np.maximum(0, rng.randn(200, 50) @ W1) @ W2
    out, _ = layers.batchnorm_forward(a, gamma, beta, bn_param)
    assert np.all(np.abs(out.mean(axis=0)) < 0.2)
    assert np.all(np.abs(out.std(axis=0) - 1) < 0.2)


def test_batchnorm_running_update_rule():
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    bn_param = {"mode": "train", "momentum": 0.5}
    layers.batchnorm_forward(x, np.ones(2), np.zeros(2), bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], 0.5 * np.array([2.0, 4.0]))
    np.testing.assert_allclose(bn_param["running_var"], 0.5 * np.array([1.0, 4.0]))


@pytest.mark.parametrize("backward", [layers.batchnorm_backward, layers.batchnorm_backward_alt])
def test_batchnorm_gradients(backward):
    rng = np.random.RandomState(231)
    x = 5 * rng.randn(4, 5) + 12
    gamma, beta = rng.randn(5), rng.randn(5)
    bn_param = {"mode": "train"}

    def forward(x, gamma, beta):
        return layers.batchnorm_forward(x, gamma, beta, dict(bn_param))

    _check_grads(forward, backward, x, gamma, beta, rng)


def test_batchnorm_graph_and_alt_backward_agree():
    rng = np.random.RandomState(231)
    x, dout = 5 * rng.randn(100, 50) + 12, rng.randn(100, 50)
    _, cache = layers.batchnorm_forward(x, rng.randn(50), rng.randn(50), {"mode": "train"})
    for a, b in zip(layers.batchnorm_backward(dout, cache),
                    layers.batchnorm_backward_alt(dout, cache), strict=True):
        assert rel_error(a, b) < 1e-10


def test_batchnorm_test_mode_gradient_treats_statistics_as_constants():
    rng = np.random.RandomState(0)
    bn_param = {"mode": "test", "running_mean": rng.randn(4), "running_var": rng.rand(4) + 0.5}
    x, gamma, beta = rng.randn(3, 4), rng.randn(4), rng.randn(4)

    def forward(x, gamma, beta):
        return layers.batchnorm_forward(x, gamma, beta, bn_param)

    _check_grads(forward, layers.batchnorm_backward, x, gamma, beta, rng)


def test_spatial_batchnorm_normalizes_each_channel():
    rng = np.random.RandomState(231)
    x = 4 * rng.randn(10, 3, 4, 5) + 10
    gamma, beta = np.array([3.0, 4.0, 5.0]), np.array([6.0, 7.0, 8.0])
    out, _ = layers.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), beta, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), gamma, rtol=1e-5)


def test_spatial_batchnorm_gradients():
    rng = np.random.RandomState(231)
    x = 5 * rng.randn(2, 3, 4, 5) + 12

    def forward(x, gamma, beta):
        return layers.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})

    _check_grads(forward, layers.spatial_batchnorm_backward, x, rng.randn(3), rng.randn(3), rng)


FUSED_RELU = [
    (norm.batchnorm_relu_forward, norm.batchnorm_relu_backward, layers.batchnorm_forward, (6, 5)),
    (norm.spatial_batchnorm_relu_forward, norm.spatial_batchnorm_relu_backward,
     layers.spatial_batchnorm_forward, (2, 3, 4, 5)),
]


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize(("fused", "fused_backward", "plain", "shape"), FUSED_RELU)
def test_batchnorm_with_a_fused_relu(fused, fused_backward, plain, shape, mode):
    """The fused forward is max(plain forward, 0), with the same running statistics, and its
    gradients pass the numeric check (the batch keeps every unit away from the ReLU's kink)."""
    rng = np.random.RandomState(231)
    x = 5 * rng.randn(*shape) + 1
    C = shape[1]
    gamma, beta = rng.randn(C), 0.3 * rng.randn(C)
    running = {"running_mean": rng.randn(C), "running_var": rng.rand(C) + 0.5}
    fused_param, plain_param = {"mode": mode, **running}, {"mode": mode, **running}
    out, _ = fused(x, gamma, beta, fused_param)
    want, _ = plain(x, gamma, beta, plain_param)
    assert (want < 0).any() and (want > 0).any()
    np.testing.assert_allclose(out, np.maximum(want, 0), rtol=1e-12, atol=1e-12)
    for key in running:
        np.testing.assert_allclose(fused_param[key], plain_param[key], rtol=1e-12)

    def forward(x, gamma, beta):
        return fused(x, gamma, beta, {"mode": mode, **running})

    _check_grads(forward, fused_backward, x, gamma, beta, rng)


def test_layernorm_normalizes_each_sample():
    rng = np.random.RandomState(231)
    x = 5 * rng.randn(4, 20) + 3
    out, _ = layers.layernorm_forward(x, np.ones(20), np.zeros(20), {})
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=1), 1, rtol=1e-4)


def test_layernorm_gradients():
    rng = np.random.RandomState(231)
    x = 5 * rng.randn(4, 5) + 12

    def forward(x, gamma, beta):
        return layers.layernorm_forward(x, gamma, beta, {})

    _check_grads(forward, layers.layernorm_backward, x, rng.randn(5), rng.randn(5), rng)


def test_groupnorm_normalizes_each_group():
    rng = np.random.RandomState(231)
    x = 4 * rng.randn(2, 6, 4, 5) + 10
    out, _ = layers.spatial_groupnorm_forward(x, np.ones((1, 6, 1, 1)), np.zeros((1, 6, 1, 1)),
                                              3, {})
    groups = out.reshape(2, 3, -1)
    np.testing.assert_allclose(groups.mean(axis=2), 0, atol=1e-10)
    np.testing.assert_allclose(groups.std(axis=2), 1, rtol=1e-4)


def test_groupnorm_gradients():
    rng = np.random.RandomState(231)
    x = 5 * rng.randn(2, 6, 4, 5) + 12

    def forward(x, gamma, beta):
        return layers.spatial_groupnorm_forward(x, gamma, beta, 2, {})

    _check_grads(forward, layers.spatial_groupnorm_backward, x,
                 rng.randn(1, 6, 1, 1), rng.randn(1, 6, 1, 1), rng)


@pytest.mark.parametrize("name, call", [
    ("batchnorm_forward", lambda x, g, b: layers.batchnorm_forward(x, g, b, {"mode": "train"})),
    ("spatial_batchnorm_forward",
     lambda x, g, b: layers.spatial_batchnorm_forward(x, g, b, {"mode": "train"})),
    ("layernorm_forward", lambda x, g, b: layers.layernorm_forward(x, g, b, {})),
])
def test_float32_stays_float32(name, call):
    rng = np.random.RandomState(0)
    shape = (4, 3, 2, 2) if name.startswith("spatial") else (4, 3)
    x = rng.randn(*shape).astype(np.float32)
    out, _ = call(x, np.ones(3, np.float32), np.zeros(3, np.float32))
    assert out.dtype == np.float32


def test_float32_gradients_stay_float32():
    x = np.random.RandomState(0).randn(2, 4, 3, 3).astype(np.float32)
    g = np.ones((1, 4, 1, 1), np.float32)
    out, cache = layers.spatial_groupnorm_forward(x, g, 0 * g, 2, {})
    grads = layers.spatial_groupnorm_backward(np.ones_like(out), cache)
    bn_out, bn_cache = layers.batchnorm_forward(x.reshape(2, -1), np.ones(36, np.float32),
                                                np.zeros(36, np.float32), {"mode": "train"})
    grads += layers.batchnorm_backward(bn_out, bn_cache)
    assert all(g.dtype == np.float32 for g in grads)


def test_bad_mode_and_shapes():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="batchnorm_forward: mode must be 'train' or 'test'"):
        layers.batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "eval"})
    with pytest.raises(ValueError, match=r"batchnorm_forward: gamma must have shape \(3,\)"):
        layers.batchnorm_forward(x, np.ones(4), np.zeros(3), {"mode": "train"})
    with pytest.raises(ValueError, match=r"spatial_batchnorm_forward: x must be 4-D"):
        layers.spatial_batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "train"})
    with pytest.raises(ValueError, match="spatial_groupnorm_forward: G=4 groups must be a "
                                         "positive integer dividing C=6"):
        g = np.ones((1, 6, 1, 1))
        layers.spatial_groupnorm_forward(np.zeros((2, 6, 2, 2)), g, g, 4, {})
