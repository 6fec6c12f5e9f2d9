"""Sandwich layers: each equals its parts chained, and its gradients check numerically."""

import numpy as np
import pytest

from dualnet import layers
from dualnet.gradient_check import eval_numerical_gradient_array, rel_error

CONV = {"stride": 1, "pad": 1}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def _inputs(rng, kind):
    if kind == "affine":
        return {"x": rng.randn(4, 3, 2), "w": rng.randn(6, 5), "b": rng.randn(5)}
    return {"x": rng.randn(2, 3, 4, 4), "w": rng.randn(3, 3, 3, 3), "b": rng.randn(3)}


CASES = [
    ("affine_relu", "affine", {}),
    ("affine_norm_relu", "affine",
     {"gamma": "C", "beta": "C", "norm_param": {"mode": "train"}, "normalization": "batchnorm"}),
    ("affine_norm_relu", "affine",
     {"gamma": "C", "beta": "C", "norm_param": {}, "normalization": "layernorm"}),
    ("conv_relu", "conv", {"conv_param": CONV}),
    ("conv_relu_pool", "conv", {"conv_param": CONV, "pool_param": POOL}),
    ("conv_bn_relu", "conv", {"gamma": "C", "beta": "C", "conv_param": CONV,
                              "bn_param": {"mode": "train"}}),
    ("conv_bn_relu_pool", "conv", {"gamma": "C", "beta": "C", "conv_param": CONV,
                                   "bn_param": {"mode": "train"}, "pool_param": POOL}),
]


@pytest.mark.parametrize("name, kind, extra", CASES)
def test_numeric_gradients(name, kind, extra):
    rng = np.random.RandomState(231)
    forward = getattr(layers, f"{name}_forward")
    backward = getattr(layers, f"{name}_backward")
    arrays = _inputs(rng, kind)
    C = arrays["b"].shape[0]
    for key in ("gamma", "beta"):
        if key in extra:
            arrays[key] = rng.randn(C) + (1.0 if key == "gamma" else 0.0)
    params = {k: v for k, v in extra.items() if k not in ("gamma", "beta")}

    def f(**overrides):
        kwargs = {**arrays, **overrides}
        return forward(**kwargs, **{k: dict(v) if isinstance(v, dict) else v
                                    for k, v in params.items()})[0]

    out = f()
    dout = rng.randn(*out.shape)
    _, cache = forward(**arrays, **params)
    grads = backward(dout, cache)
    assert len(grads) == len(arrays)
    for (key, value), analytic in zip(arrays.items(), grads, strict=True):
        numeric = eval_numerical_gradient_array(lambda v, key=key: f(**{key: v}), value, dout)
        if key == "b" and params.get("normalization", "batchnorm") == "batchnorm" and "gamma" in arrays:
            # batchnorm subtracts the batch mean, so the bias before it has zero gradient:
            # a relative error between two roundoff-sized numbers means nothing.
            assert np.abs(analytic).max() < 1e-12 and np.abs(numeric).max() < 1e-9
        else:
            assert rel_error(analytic, numeric) < 1e-6, key


def test_conv_relu_pool_equals_its_parts():
    rng = np.random.RandomState(0)
    x, w, b = rng.randn(2, 3, 4, 4), rng.randn(3, 3, 3, 3), rng.randn(3)
    out, _ = layers.conv_relu_pool_forward(x, w, b, CONV, POOL)
    a, _ = layers.conv_forward_naive(x, w, b, CONV)
    expected, _ = layers.max_pool_forward_naive(np.maximum(a, 0), POOL)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_unknown_normalization():
    with pytest.raises(ValueError, match="affine_norm_relu_forward: normalization must be one of"):
        layers.affine_norm_relu_forward(np.ones((2, 2)), np.ones((2, 2)), np.ones(2),
                                        np.ones(2), np.ones(2), {}, "groupnorm")
