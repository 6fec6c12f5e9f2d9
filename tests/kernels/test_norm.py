"""Batch normalization kernels (`dualnet.kernels._norm`) through the numpy backend, against the
base backend's reference arithmetic and against per-channel numpy statistics in float64."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualnet import backend
from dualnet.backends.base import Backend

cy = pytest.importorskip("dualnet.kernels._norm",
                         reason="Cython extension not built (pip install -e .)")

TOL = {np.float32: 2e-5, np.float64: 1e-12}


class _Reference(Backend):
    """The base backend's pure-numpy batch normalization."""

    name = "reference"
    xp = np


def _inputs(shape, dtype, seed, offset=3.0):
    rng = np.random.default_rng(seed)
    x = (offset + 2 * rng.standard_normal(shape)).astype(dtype)
    C = shape[1]
    gamma = rng.standard_normal(C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dout


@st.composite
def shapes(draw):
    """(N, C) features or (N, C, H, W) maps, small and odd sizes included."""
    N, C = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    if draw(st.booleans()):
        return (N, C)
    return (N, C, draw(st.integers(1, 9)), draw(st.integers(1, 9)))


@settings(max_examples=80, deadline=None)
@given(shape=shapes(), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.float32, np.float64]), relu=st.booleans())
def test_kernels_match_the_reference(shape, seed, dtype, relu):
    x, gamma, beta, dout = _inputs(shape, dtype, seed, offset=0.5)
    fast, ref = backend.get("numpy"), _Reference()
    got = fast.batchnorm_train(x, gamma, beta, 1e-5, relu)
    want = ref.batchnorm_train(x, gamma, beta, 1e-5, relu)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=TOL[dtype], atol=TOL[dtype])
    out, mean, _, std = want
    keep = out if relu else None
    grads = fast.batchnorm_train_backward(dout, x, mean, std, gamma, keep)
    want_grads = ref.batchnorm_train_backward(dout, x, mean, std, gamma, keep)
    scale = max(1.0, float(np.abs(dout).sum()))  # dgamma, dbeta are sums over a channel
    for g, w in zip(grads, want_grads, strict=True):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 5, 6), (300, 150), (8, 4, 32, 32)])
def test_a_fused_relu_is_the_relu_after_the_normalization(shape):
    """relu=True / keep= give what the unfused layers give: max(out, 0) forward, and
    backward the normalization's gradients of dout * (out > 0) (in the reference and in the
    kernels, serial and parallel sizes)."""
    x, gamma, beta, dout = _inputs(shape, np.float64, 3, offset=0.5)
    for be in (backend.get("numpy"), _Reference()):
        plain, mean, _, std = be.batchnorm_train(x, gamma, beta, 1e-5)
        fused = be.batchnorm_train(x, gamma, beta, 1e-5, relu=True)[0]
        assert (plain < 0).any() and (plain > 0).any()
        np.testing.assert_allclose(fused, np.maximum(plain, 0), rtol=1e-12, atol=1e-12)
        got = be.batchnorm_train_backward(dout, x, mean, std, gamma, keep=fused)
        want = be.batchnorm_train_backward(dout * (plain > 0), x, mean, std, gamma)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


# above SERIAL_BELOW, so on every thread: maps, and features in blocks of 64 columns and a rest
@pytest.mark.parametrize("shape", [(8, 4, 32, 32), (64, 3, 16, 16), (300, 150)])
def test_statistics_in_float64_and_in_parallel(shape):
    assert np.prod(shape) >= cy.SERIAL_BELOW
    x, gamma, beta, dout = _inputs(shape, np.float32, 0, offset=100.0)
    be = backend.get("numpy")
    out, mean, var, std = be.batchnorm_train(x, gamma, beta, 1e-5)
    axes, bshape = (0, *range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=axes), rtol=1e-7)
    np.testing.assert_allclose(var, x64.var(axis=axes), rtol=1e-6)
    np.testing.assert_allclose(std, np.sqrt(x64.var(axis=axes) + 1e-5), rtol=1e-6)
    xhat = (x64 - x64.mean(axis=axes, keepdims=True)) / std.reshape(bshape)
    expected = gamma.reshape(bshape) * xhat + beta.reshape(bshape)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    dx, dgamma, dbeta = be.batchnorm_train_backward(dout, x, mean, std, gamma)
    d64 = dout.astype(np.float64)
    np.testing.assert_allclose(dbeta, d64.sum(axis=axes), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(dgamma, (d64 * xhat).sum(axis=axes), rtol=1e-4, atol=1e-2)


def test_same_bits_from_run_to_run():
    x, gamma, beta, dout = _inputs((16, 8, 16, 16), np.float32, 1)
    be = backend.get("numpy")
    first = be.batchnorm_train(x, gamma, beta, 1e-5)
    again = be.batchnorm_train(x, gamma, beta, 1e-5)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    g1 = be.batchnorm_train_backward(dout, x, first[1], first[3], gamma)
    g2 = be.batchnorm_train_backward(dout, x, first[1], first[3], gamma)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_non_contiguous_input_takes_the_reference():
    x, gamma, beta, dout = _inputs((4, 3, 6, 5), np.float64, 2)
    xt = np.swapaxes(x, 2, 3)  # a view: not C-contiguous
    got = backend.get("numpy").batchnorm_train(xt, gamma, beta, 1e-5)
    want = _Reference().batchnorm_train(np.ascontiguousarray(xt), gamma, beta, 1e-5)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
