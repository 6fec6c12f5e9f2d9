"""Elementwise activations: ReLU, leaky ReLU, sigmoid, tanh (any input shape)."""

from __future__ import annotations

from .. import _checks


def relu_forward(x):
    """max(0, x); returns (out, cache) with out of x's shape and dtype."""
    be = _checks.floating("relu_forward", x=x)
    return be.xp.maximum(x, 0), x


def relu_backward(dout, cache):
    """dx = dout where the input was positive, else 0."""
    x = cache
    return dout * (x > 0)


def leaky_relu_forward(x, alpha=0.01):
    """x where x > 0, else alpha * x. The cache is the per-element slope (1 or alpha)."""
    be = _checks.floating("leaky_relu_forward", x=x)
    slope = be.xp.where(x > 0, x.dtype.type(1), x.dtype.type(alpha))
    return x * slope, slope


def leaky_relu_backward(dout, cache):
    """dx = dout * (1 where x > 0, else alpha)."""
    slope = cache
    return dout * slope


def sigmoid_forward(x):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""
    be = _checks.floating("sigmoid_forward", x=x)
    xp = be.xp
    # exp of a non-positive number never overflows: use exp(-|x|) on both branches.
    z = xp.exp(-xp.abs(x))
    out = xp.where(x >= 0, 1 / (1 + z), z / (1 + z)).astype(x.dtype, copy=False)
    return out, out


def sigmoid_backward(dout, cache):
    """dx = dout * s * (1 - s), s the forward output."""
    s = cache
    return dout * s * (1 - s)


def tanh_forward(x):
    """tanh(x); the output is the cache."""
    be = _checks.floating("tanh_forward", x=x)
    out = be.xp.tanh(x)
    return out, out


def tanh_backward(dout, cache):
    """dx = dout * (1 - tanh(x)**2)."""
    t = cache
    return dout * (1 - t * t)
