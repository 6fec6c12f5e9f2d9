"""The Winograd path of `conv_forward_fast`/`conv_backward_fast` (3x3, stride 1, numpy backend):
which shapes take it, and that it equals the naive layer and the im2col path, with the Cython
kernels and with the pure-NumPy fallback, in one chunk or many."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualnet import backend
from dualnet.backends import host_im2col, host_winograd
from dualnet.backends.conv import ConvCall
from dualnet.backends.numpy import NumpyBackend
from dualnet.gradient_check import eval_numerical_gradient_array, rel_error
from dualnet.layers import (
    conv,
    conv_backward_fast,
    conv_backward_naive,
    conv_forward_fast,
    conv_forward_naive,
)


@pytest.fixture(autouse=True)
def _chunked_im2col(monkeypatch):
    """The im2col side of these tests is the chunked path (the fused one has its own tests in
    test_host_im2col.py), so 'im2col' keeps its name."""
    monkeypatch.setattr(host_im2col, "fused_enabled", False)


@pytest.fixture
def winograd():
    """winograd(True) sends every 3x3 stride-1 call through Winograd, winograd(False) through
    im2col; the setting is restored after the test."""
    old = conv.set_algorithm("winograd")
    yield lambda enabled: conv.set_algorithm("winograd" if enabled else "im2col")
    conv.set_algorithm(old)


@pytest.fixture(params=["cython", "cython-chunked", "fallback"])
def numpy_backend(request, monkeypatch):
    """The numpy backend with its Cython kernels (fused per sample where the batch has a
    sample per thread, or always chunked), or rebuilt without them."""
    if request.param == "fallback":
        monkeypatch.setenv("DUALNET_NO_EXTENSION", "1")
        monkeypatch.setitem(backend._instances, "numpy", NumpyBackend())
    # the fused kernels are tested wherever they build, not only where the rule takes them
    monkeypatch.setattr(host_winograd, "fused_enabled", request.param == "cython")
    be = backend.get("numpy")
    assert be.kernels().startswith("pure-NumPy") == (request.param == "fallback")
    with backend.use("numpy"):
        yield be


def _algorithm(x, w, param):
    return conv_forward_fast(x, w, np.zeros(w.shape[0], x.dtype), param)[1][-1]


def _winograd_variant(be, x, F, pad=1):
    """The algorithm name a Winograd call on `be` with input `x` and F filters records, at the
    current memory budget."""
    call = ConvCall.of(x, np.zeros((F, x.shape[1], 3, 3)), 1, pad, 0, 0)
    fused = be._takes_fused(host_winograd, be.conv_algorithms()["winograd-fused"], call,
                            conv.get_memory_budget())
    return "winograd-fused" if fused else "winograd"


def test_only_3x3_stride_1_on_the_numpy_backend_takes_it(winograd):
    x = np.zeros((2, 3, 9, 9))
    be = backend.get("numpy")
    assert _algorithm(x, np.zeros((4, 3, 3, 3)), {"stride": 1, "pad": 1}) \
        == _winograd_variant(be, x, 4)
    assert _algorithm(x, np.zeros((4, 3, 3, 3)), {"stride": 1, "pad": 0}) \
        == _winograd_variant(be, x, 4, pad=0)
    assert _algorithm(x, np.zeros((4, 3, 3, 3)), {"stride": 2, "pad": 1}) == "im2col"
    assert _algorithm(x, np.zeros((4, 3, 5, 5)), {"stride": 1, "pad": 2}) == "im2col"
    assert _algorithm(x, np.zeros((4, 3, 3, 1)), {"stride": 1, "pad": 1}) == "im2col"
    with backend.use("cuda-emu"):
        assert _algorithm(x, np.zeros((4, 3, 3, 3)), {"stride": 1, "pad": 1}) == "im2col-portable"
    winograd(False)
    assert _algorithm(x, np.zeros((4, 3, 3, 3)), {"stride": 1, "pad": 1}) == "im2col"
    with pytest.raises(ValueError, match="set_algorithm: name must be 'auto', 'im2col' or"):
        conv.set_algorithm("fft")


@pytest.mark.parametrize("fused", [True, False])
def test_auto_takes_it_where_there_are_enough_channels(monkeypatch, fused):
    monkeypatch.setattr(host_winograd, "fused_enabled", fused)
    assert conv.set_algorithm("auto") == "auto"  # the default
    be = backend.get("numpy")
    param = {"stride": 1, "pad": 1}
    x = np.zeros((64, 64, 4, 4), np.float32)
    assert _algorithm(x, np.zeros((8, 64, 3, 3), np.float32), param) \
        == _winograd_variant(be, x, 8)
    fused = _winograd_variant(be, np.zeros((64, 16, 16, 16), np.float32), 8) == "winograd-fused"
    # 16 channels: on the fused path only
    x = np.zeros((64, 16, 16, 16), np.float32)
    assert _algorithm(x, np.zeros((8, 16, 3, 3), np.float32), param) \
        == ("winograd-fused" if fused else "im2col")
    # 3 channels: never
    x = np.zeros((64, 3, 16, 16), np.float32)
    assert _algorithm(x, np.zeros((8, 3, 3, 3), np.float32), param) == "im2col"
    if not fused:  # 32 channels on the chunked path: only with at least 8192 outputs per filter
        x = np.zeros((8, 32, 32, 32), np.float32)
        assert _algorithm(x, np.zeros((8, 32, 3, 3), np.float32), param) == "winograd"
        assert _algorithm(x[:2], np.zeros((8, 32, 3, 3), np.float32), param) == "im2col"


@st.composite
def geometry(draw):
    pad = draw(st.integers(0, 2))
    H = draw(st.integers(max(1, 3 - 2 * pad), 9))
    W = draw(st.integers(max(1, 3 - 2 * pad), 9))
    N, C, F = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return (N, C, H, W), (F, C, 3, 3), pad


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
# the fixtures only select a backend and restore the switch; sharing them is intended
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geom=geometry(), seed=st.integers(0, 2**31 - 1))
def test_equals_naive_and_im2col(numpy_backend, winograd, dtype, geom, seed):
    x_shape, w_shape, pad = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    param = {"stride": 1, "pad": pad}
    winograd(True)
    out, cache = conv_forward_fast(x, w, b, param)
    assert cache[-1] == _winograd_variant(numpy_backend, x, w_shape[0], pad)
    assert out.dtype == dtype
    ref, ref_cache = conv_forward_naive(x, w, b, param)
    dout = rng.standard_normal(ref.shape).astype(dtype)
    winograd(False)
    out_i2c, cache_i2c = conv_forward_fast(x, w, b, param)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(out, out_i2c, rtol=tol, atol=tol)
    grads = conv_backward_fast(dout, cache)
    for got, want, i2c in zip(grads, conv_backward_naive(dout, ref_cache),
                              conv_backward_fast(dout, cache_i2c), strict=True):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)
        np.testing.assert_allclose(got, i2c, rtol=tol, atol=tol * 10)
    dx, dw, db = conv_backward_fast(dout, cache, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw, grads[1])
    np.testing.assert_array_equal(db, grads[2])


def test_numeric_gradients(winograd):
    rng = np.random.RandomState(7)
    x, w, b = rng.randn(3, 2, 7, 6), rng.randn(3, 2, 3, 3), rng.randn(3)
    param = {"stride": 1, "pad": 1}
    out, cache = conv_forward_fast(x, w, b, param)
    assert cache[-1] == _winograd_variant(backend.get("numpy"), x, 3)
    dout = rng.randn(*out.shape)
    dx, dw, db = conv_backward_fast(dout, cache)
    assert rel_error(dx, eval_numerical_gradient_array(
        lambda v: conv_forward_fast(v, w, b, param)[0], x, dout)) < 5e-8
    assert rel_error(dw, eval_numerical_gradient_array(
        lambda v: conv_forward_fast(x, v, b, param)[0], w, dout)) < 5e-8
    assert rel_error(db, eval_numerical_gradient_array(
        lambda v: conv_forward_fast(x, w, v, param)[0], b, dout)) < 5e-8


@pytest.mark.parametrize("per_chunk, chunks", [(1, 9), (2, 5), (9, 1)])
def test_results_do_not_depend_on_the_chunking(winograd, monkeypatch, per_chunk, chunks):
    monkeypatch.setattr(host_winograd, "fused_enabled", False)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 4, 10, 11))
    w = rng.standard_normal((5, 4, 3, 3))
    b = rng.standard_normal(5)
    param = {"stride": 1, "pad": 1}
    old = conv.set_memory_budget(host_winograd.fixed_bytes(4, 5, x.itemsize)
                                 + per_chunk * host_winograd.sample_bytes(4, 5, 10, 11, 1,
                                                                           x.itemsize))
    try:
        out, cache = conv_forward_fast(x, w, b, param)
        dout = rng.standard_normal(out.shape)
        grads = conv_backward_fast(dout, cache)
        dx, dw, db = conv_backward_fast(dout, cache, need_dx=False)
    finally:
        conv.set_memory_budget(old)
    assert cache[-1] == "winograd" and dx is None and len(cache[4]) == chunks
    ref, ref_cache = conv_forward_naive(x, w, b, param)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, conv_backward_naive(dout, ref_cache), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)
    np.testing.assert_array_equal(dw, grads[1])
    np.testing.assert_array_equal(db, grads[2])


def test_fused_path_needs_its_workspace_within_the_budget(winograd, monkeypatch):
    be = backend.get("numpy")
    if be.winograd_fused is None:
        pytest.skip("no fused kernels: " + be.kernels())
    monkeypatch.setattr(host_winograd, "fused_enabled", True)  # wherever they build
    rng = np.random.default_rng(4)
    N = be.winograd_fused.max_threads()
    x = rng.standard_normal((N, 8, 12, 12))
    w = rng.standard_normal((6, 8, 3, 3))
    b = rng.standard_normal(6)
    param = {"stride": 1, "pad": 1}
    need = be.conv_algorithms()["winograd-fused"].scratch_bytes(
        ConvCall.of(x, w, 1, 1, 12, 12))
    old = conv.set_memory_budget(need)
    try:
        out, cache = conv_forward_fast(x, w, b, param)
        assert cache[-1] == "winograd-fused"
        conv.set_memory_budget(need - 1)
        out_chunked, cache_chunked = conv_forward_fast(x, w, b, param)
        assert cache_chunked[-1] == "winograd"
        dout = rng.standard_normal(out.shape)
        for fused, chunked in zip(conv_backward_fast(dout, cache),
                                  conv_backward_fast(dout, cache_chunked), strict=True):
            np.testing.assert_allclose(fused, chunked, rtol=1e-12, atol=1e-12)
    finally:
        conv.set_memory_budget(old)
    np.testing.assert_allclose(out, out_chunked, rtol=1e-12, atol=1e-12)
    # a batch smaller than the thread count leaves threads idle: chunked instead
    if N > 1:
        assert conv_forward_fast(x[:N - 1], w, b, param)[1][-1] == "winograd"


def test_fused_results_are_deterministic(winograd):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 16, 10, 10)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    dout = rng.standard_normal((7, 16, 10, 10)).astype(np.float32)
    param = {"stride": 1, "pad": 1}
    first = conv_backward_fast(dout, conv_forward_fast(x, w, b, param)[1])
    for _ in range(3):
        for a, b_ in zip(first, conv_backward_fast(dout, conv_forward_fast(x, w, b, param)[1]),
                         strict=True):
            np.testing.assert_array_equal(a, b_)


def test_auto_judges_winograd_by_the_path_that_fits_the_budget(monkeypatch):
    """16 channels pay only on the fused path: when its workspace does not fit the budget,
    'auto' takes im2col rather than chunked Winograd."""
    be = backend.get("numpy")
    if be.winograd_fused is None:
        pytest.skip("no fused kernels: " + be.kernels())
    monkeypatch.setattr(host_winograd, "fused_enabled", True)  # wherever they build
    N = max(2, be.winograd_fused.max_threads())
    x = np.zeros((N, 16, 32, 32), np.float32)
    w = np.zeros((16, 16, 3, 3), np.float32)
    need = be.conv_algorithms()["winograd-fused"].scratch_bytes(
        ConvCall.of(x, w, 1, 1, 32, 32))
    assert conv.get_algorithm() == "auto"
    old = conv.set_memory_budget(need)
    try:
        assert _algorithm(x, w, {"stride": 1, "pad": 1}) == "winograd-fused"
        conv.set_memory_budget(need - 1)
        assert _algorithm(x, w, {"stride": 1, "pad": 1}) == "im2col"
    finally:
        conv.set_memory_budget(old)


@pytest.mark.parametrize("pays", [True, False])
def test_by_default_the_fused_path_runs_where_it_pays(monkeypatch, pays):
    """fused_enabled None (the default) leaves the choice to `WinogradFused.pays`: a call
    the fused path fits takes it where it pays, else the chunked path, with the same
    values."""
    be = backend.get("numpy")
    if be.winograd_fused is None:
        pytest.skip("no fused kernels: " + be.kernels())
    assert host_winograd.fused_enabled is None
    monkeypatch.setattr(host_winograd.WinogradFused, "pays", lambda self, call: pays)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((max(2, be.winograd_fused.max_threads()), 64, 8, 8))
    w = rng.standard_normal((64, 64, 3, 3))
    out, cache = conv_forward_fast(x, w, np.zeros(64), {"stride": 1, "pad": 1})
    assert cache[-1] == ("winograd-fused" if pays else "winograd")
    np.testing.assert_allclose(out, conv_forward_naive(x, w, np.zeros(64),
                                                       {"stride": 1, "pad": 1})[0],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", ["avx512", "avx2", "vector"])
def test_the_fused_path_pays_by_kernel_and_size(monkeypatch, kernel):
    """`WinogradFused.pays`: always with AVX-512 kernels; with AVX2 ones while a thread's
    workspace and the transformed filters stay within `AVX2_FUSED_MAX_BYTES` (64 -> 64
    channels at 16x16 within it, 256 -> 256 at 8x8 beyond); never with baseline vectors."""
    be = backend.get("numpy")
    monkeypatch.setattr(NumpyBackend, "fused_kernel", kernel)
    if be.winograd_fused is None:
        pytest.skip("no fused kernels: " + be.kernels())
    fused = be.conv_algorithms()["winograd-fused"]

    def pays(C, F, size):
        x, w = np.empty((64, C, size, size), np.float32), np.empty((F, C, 3, 3), np.float32)
        return fused.pays(ConvCall.of(x, w, 1, 1, size, size))

    assert (pays(64, 64, 16), pays(256, 256, 8)) == {
        "avx512": (True, True), "avx2": (True, False), "vector": (False, False)}[kernel]
