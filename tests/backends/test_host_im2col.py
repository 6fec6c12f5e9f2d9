"""The numpy backend's im2col + GEMM algorithms (`dualnet/backends/host_im2col.py`), with and
without vertical output pairs: which shapes take pairs, the stacked filter matrix and its adjoint, and
the layers against the naive ones (Cython kernels and pure-NumPy fallback, several chunks), and
the fused per-sample path."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualnet import backend, layers
from dualnet.backends import host_im2col
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
def chunked(monkeypatch):
    """The chunked path unless a test asks for the fused one (`fused` below)."""
    monkeypatch.setattr(host_im2col, "fused_enabled", False)


@pytest.fixture
def fused(monkeypatch):
    be = backend.get("numpy")
    if be.im2col_fused is None:
        pytest.skip("no fused kernels: " + be.kernels())
    monkeypatch.setattr(host_im2col, "fused_enabled", True)
    return be


@pytest.fixture(params=["cython", "fallback"])
def numpy_backend(request, monkeypatch):
    """The numpy backend with its Cython kernels, or rebuilt without them."""
    if request.param == "fallback":
        monkeypatch.setenv("DUALNET_NO_EXTENSION", "1")
        monkeypatch.setitem(backend._instances, "numpy", NumpyBackend())
    be = backend.get("numpy")
    assert be.kernels().startswith("pure-NumPy") == (request.param == "fallback")
    with backend.use("numpy"):
        yield be


def _algorithm(x_shape, w_shape, stride, pad):
    x, w = np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32)
    return conv_forward_fast(x, w, np.zeros(w_shape[0], np.float32),
                             {"stride": stride, "pad": pad})[1][-1]


def _check_against_naive(x_shape, w_shape, stride, pad, dtype, seed, algorithm):
    """The fast layers take `algorithm` and give the naive layers' output and gradients (the
    filter and bias gradients unchanged when the input gradient is skipped)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    param = {"stride": stride, "pad": pad}
    out, cache = conv_forward_fast(x, w, b, param)
    assert cache[-1] == algorithm and out.dtype == dtype
    ref, ref_cache = conv_forward_naive(x, w, b, param)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    dout = rng.standard_normal(ref.shape).astype(dtype)
    grads = conv_backward_fast(dout, cache)
    for got, want in zip(grads, conv_backward_naive(dout, ref_cache), strict=True):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)
    dx, dw, db = conv_backward_fast(dout, cache, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw, grads[1])
    np.testing.assert_array_equal(db, grads[2])


def test_pairs_for_few_filters_tall_windows_and_even_heights():
    assert conv.get_algorithm() == "auto"
    assert _algorithm((2, 3, 32, 32), (32, 3, 7, 7), 1, 3) == "im2col-pairs"  # the course's conv
    assert _algorithm((2, 3, 33, 32), (32, 3, 7, 7), 1, 3) == "im2col"  # Ho = 33, odd
    assert _algorithm((2, 3, 32, 32), (33, 3, 7, 7), 1, 3) == "im2col"  # too many filters
    assert _algorithm((2, 3, 32, 32), (8, 3, 3, 7), 1, 1) == "im2col"  # window 3 < 4 strides
    assert _algorithm((2, 3, 31, 31), (8, 3, 5, 5), 2, 2) == "im2col"  # window 5 < 8
    assert _algorithm((2, 3, 36, 36), (8, 3, 8, 8), 2, 1) == "im2col-pairs"  # Ho = 16
    old = conv.set_algorithm("im2col")
    try:
        assert _algorithm((2, 3, 32, 32), (32, 3, 7, 7), 1, 3) == "im2col"
    finally:
        conv.set_algorithm(old)


@pytest.mark.parametrize("stride", [1, 2])
def test_stacked_weights_and_their_fold_are_adjoint(stride):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 5, 4))
    wq = host_im2col._stacked_weights(np, w, stride, 2)
    assert wq.shape == (6, 2 * (5 + stride) * 4)
    # copy 1 is copy 0 moved down `stride` rows
    stacked = wq.reshape(2, 3, 2, 5 + stride, 4)
    np.testing.assert_array_equal(stacked[0, :, :, :5], w)
    np.testing.assert_array_equal(stacked[1, :, :, stride:], w)
    U = rng.standard_normal(wq.shape)
    assert np.vdot(wq, U) == pytest.approx(
        np.vdot(w, host_im2col._folded(U, w.shape, stride, 2)), rel=1e-12)


@st.composite
def pair_geometry(draw):
    """Shapes the 'auto' choice sends to output pairs: F <= 32, HH >= 4*stride, even Ho."""
    stride = draw(st.integers(1, 2))
    HH = draw(st.integers(4 * stride, 4 * stride + 3))
    WW = draw(st.integers(1, 5))
    pad = draw(st.integers(0, 3))
    Ho, Wo = 2 * draw(st.integers(1, 4)), draw(st.integers(1, 5))
    H = (Ho - 1) * stride + HH - 2 * pad
    W = (Wo - 1) * stride + WW - 2 * pad
    N, C, F = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    return (N, C, max(H, 1), max(W, 1)), (F, C, HH, WW), stride, pad


def _valid(x_shape, w_shape, stride, pad):
    H, W = x_shape[2:]
    HH, WW = w_shape[2:]
    return (H + 2 * pad - HH) % stride == 0 and (W + 2 * pad - WW) % stride == 0 and \
        H + 2 * pad >= HH and W + 2 * pad >= WW and \
        (H + 2 * pad - HH) // stride % 2 == 1  # Ho even


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
# the fixture only selects a backend; sharing it across examples is intended
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geometry=pair_geometry(), seed=st.integers(0, 2**31 - 1))
def test_pairs_equal_the_naive_layer(numpy_backend, dtype, geometry, seed):
    x_shape, w_shape, stride, pad = geometry
    if not _valid(x_shape, w_shape, stride, pad):
        return
    _check_against_naive(x_shape, w_shape, stride, pad, dtype, seed, "im2col-pairs")


@pytest.mark.parametrize("per_chunk, chunks", [(1, 7), (3, 3), (7, 1)])
def test_pairs_do_not_depend_on_the_chunking(per_chunk, chunks):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 3, 12, 10))
    w = rng.standard_normal((5, 3, 5, 5))
    b = rng.standard_normal(5)
    param = {"stride": 1, "pad": 2}
    old = conv.set_memory_budget(host_im2col.fixed_bytes(w.shape, 1, 2, x.itemsize)
                                 + per_chunk * host_im2col.sample_bytes(w.shape, 1, 12, 10, 2,
                                                                      x.itemsize))
    try:
        out, cache = conv_forward_fast(x, w, b, param)
        dout = rng.standard_normal(out.shape)
        grads = conv_backward_fast(dout, cache)
        _, dw, _ = conv_backward_fast(dout, cache, need_dx=False)
    finally:
        conv.set_memory_budget(old)
    assert cache[-1] == "im2col-pairs" and len(cache[4]) == chunks
    ref, ref_cache = conv_forward_naive(x, w, b, param)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, conv_backward_naive(dout, ref_cache), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)
    np.testing.assert_array_equal(dw, grads[1])


def test_pairs_numeric_gradients():
    rng = np.random.RandomState(9)
    x, w, b = rng.randn(2, 2, 8, 7), rng.randn(3, 2, 5, 3), rng.randn(3)
    param = {"stride": 1, "pad": 1}
    out, cache = conv_forward_fast(x, w, b, param)
    assert cache[-1] == "im2col-pairs"
    dout = rng.randn(*out.shape)
    dx, dw, db = conv_backward_fast(dout, cache)
    assert rel_error(dx, eval_numerical_gradient_array(
        lambda v: conv_forward_fast(v, w, b, param)[0], x, dout)) < 5e-8
    assert rel_error(dw, eval_numerical_gradient_array(
        lambda v: conv_forward_fast(x, v, b, param)[0], w, dout)) < 5e-8
    assert rel_error(db, eval_numerical_gradient_array(
        lambda v: conv_forward_fast(x, w, v, param)[0], b, dout)) < 5e-8


@st.composite
def conv_geometry(draw):
    """Any valid convolution: square or not, strided, padded, channel and filter counts
    around the GEMM blocking (6 rows, 16-element vectors)."""
    stride = draw(st.integers(1, 3))
    HH, WW = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pad = draw(st.integers(0, 2))
    Ho, Wo = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    H, W = (Ho - 1) * stride + HH - 2 * pad, (Wo - 1) * stride + WW - 2 * pad
    if H < 1 or W < 1:
        pad = 0
        H, W = (Ho - 1) * stride + HH, (Wo - 1) * stride + WW
    C, F = draw(st.sampled_from([1, 3, 7])), draw(st.sampled_from([1, 5, 6, 17, 33]))
    return (draw(st.integers(1, 5)), C, H, W), (F, C, HH, WW), stride, pad


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
# the fixture only switches the fused path on; sharing it between examples is intended
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geom=conv_geometry(), seed=st.integers(0, 2**31 - 1))
def test_fused_equals_the_naive_layer(fused, dtype, geom, seed):
    _check_against_naive(*geom, dtype, seed, "im2col-fused")


def test_fused_path_needs_a_cache_sized_workspace_not_a_sample_per_thread(fused, monkeypatch):
    threads = fused.im2col_fused.max_threads()
    assert _algorithm((threads, 3, 32, 32), (32, 3, 7, 7), 1, 3) == "im2col-fused"
    assert _algorithm((1, 3, 32, 32), (32, 3, 7, 7), 1, 3) == "im2col-fused"
    monkeypatch.setattr(host_im2col, "FUSED_MAX_BYTES", 1000)
    assert _algorithm((threads, 3, 32, 32), (32, 3, 7, 7), 1, 3) == "im2col-pairs"


@pytest.mark.parametrize("pays", [True, False])
def test_by_default_the_fused_path_runs_where_it_pays(monkeypatch, pays):
    """fused_enabled None (the default) leaves the choice to `Im2colFused.pays`: the
    ThreeLayerConvNet's 7x7 layer takes the fused path where it pays, else the vertical
    pairs."""
    be = backend.get("numpy")
    if be.im2col_fused is None:
        pytest.skip("no fused kernels: " + be.kernels())
    monkeypatch.setattr(host_im2col, "fused_enabled", None)
    monkeypatch.setattr(host_im2col.Im2colFused, "pays", lambda self, call: pays)
    threads = be.im2col_fused.max_threads()
    assert _algorithm((threads, 3, 32, 32), (32, 3, 7, 7), 1, 3) == \
        ("im2col-fused" if pays else "im2col-pairs")


@pytest.mark.parametrize("kernel, pays", [("avx512", True), ("avx2", True), ("vector", False),
                                          ("scalar", False)])
def test_the_fused_path_pays_with_the_measured_kernels(monkeypatch, kernel, pays):
    """`Im2colFused.pays`: with AVX-512 and AVX2 kernels (measured faster), not with the
    unmeasured baseline vectors."""
    be = backend.get("numpy")
    monkeypatch.setattr(NumpyBackend, "fused_kernel", kernel)
    call = ConvCall.of(np.empty((8, 3, 32, 32)), np.empty((32, 3, 7, 7)), 1, 3, 32, 32)
    assert be.conv_algorithms()["im2col-fused"].pays(call) is pays


def test_fused_results_are_deterministic(fused):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 3, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    dout = rng.standard_normal((9, 8, 16, 16)).astype(np.float32)
    param = {"stride": 1, "pad": 2}
    first = conv_backward_fast(dout, conv_forward_fast(x, w, np.zeros(8, np.float32), param)[1])
    for _ in range(3):
        again = conv_backward_fast(dout, conv_forward_fast(x, w, np.zeros(8, np.float32),
                                                           param)[1])
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a, b)


@st.composite
def conv_pool_geometry(draw):
    """A convolution (`conv_geometry`) whose output a 2x2 stride-2 pool tiles, or one it
    does not (odd outputs: the backend pools the written output instead)."""
    (N, C, _, _), (F, _, HH, WW), stride, pad = draw(conv_geometry())
    Ho, Wo = 2 * draw(st.integers(1, 4)), 2 * draw(st.integers(1, 4))
    if draw(st.booleans()):
        Wo -= 1
    H, W = (Ho - 1) * stride + HH - 2 * pad, (Wo - 1) * stride + WW - 2 * pad
    if H < 1 or W < 1:
        pad = 0
        H, W = (Ho - 1) * stride + HH, (Wo - 1) * stride + WW
    return (N, C, H, W), (F, C, HH, WW), stride, pad


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geom=conv_pool_geometry(), seed=st.integers(0, 2**31 - 1))
def test_fused_conv_relu_pool_equals_the_naive_chain(fused, dtype, geom, seed):
    """conv_relu_pool on the fused path (the pool reads the convolution's output from the
    thread's workspace where the output is even) gives the naive conv -> ReLU -> pool's
    output, the same argmax as the fast pool on the naive output, and its gradients."""
    x_shape, w_shape, stride, pad = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    conv_param, pool_param = {"stride": stride, "pad": pad}, {"pool_height": 2,
                                                                "pool_width": 2, "stride": 2}
    a, conv_cache = conv_forward_naive(x, w, b, conv_param)
    if a.shape[3] % 2:  # the course's pool refuses windows that do not tile the plane
        pool_param["pool_width"] = pool_param["stride"] = 1
    out, cache = layers.conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    assert cache[0].algorithm == "im2col-fused" and out.dtype == dtype
    ref, (_, ref_argmax, *_) = layers.max_pool_forward_fast(np.maximum(a, 0), pool_param)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    # the pool's first maximum: ties of the ReLU's zeros aside, the same positions
    positive = ref > 0
    np.testing.assert_array_equal(cache[1][1][positive], ref_argmax[positive])
    dout = rng.standard_normal(out.shape).astype(dtype)
    da = layers.max_pool_backward_naive(dout * (out > 0), (a, pool_param))
    for got, want in zip(layers.conv_relu_pool_backward(dout, cache),
                         conv_backward_naive(da, conv_cache), strict=True):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 10)


def test_fused_conv_pool_kernel_refuses_what_it_cannot_compute(fused):
    mod = fused.im2col_fused
    x, w, b = np.ones((2, 3, 6, 5), np.float32), np.ones((4, 3, 3, 3), np.float32), \
        np.ones(4, np.float32)
    ws = np.zeros((2, mod.fused_workspace(3, 4, 3, 3, 6, 6, False, True)), np.float32)
    out, argmax = np.empty((2, 4, 3, 3), np.float32), np.empty((2, 4, 3, 3), np.int64)
    with pytest.raises(ValueError, match=r"even convolution output, got \(6, 5\)"):
        mod.conv_maxpool_forward_fused(x, w, b, 1, 1, out, argmax, ws, True)
    x = np.ones((2, 3, 6, 6), np.float32)
    with pytest.raises(ValueError, match="argmax int64"):
        mod.conv_maxpool_forward_fused(x, w, b, 1, 1, out, argmax.astype(np.int32), ws, True)
    with pytest.raises(ValueError, match="ws must have shape"):
        mod.conv_maxpool_forward_fused(x, w, b, 1, 1, out, argmax, ws[:, :10].copy(), True)
    call = ConvCall.of(x, w, 1, 1, 6, 6)
    algorithm = fused.conv_algorithms()["im2col-fused"]
    assert algorithm.pools(call, (2, 2, 2))
    assert not algorithm.pools(call, (3, 3, 3)) and not algorithm.pools(call, (2, 2, 1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pool", [(2, 2, 2), (3, 3, 1), (2, 3, 2)])
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("need_dx", [True, False])
def test_fused_backward_through_a_pool_routes_as_the_pool_backward_does(fused, dtype, pool,
                                                                      masked, need_dx):
    """conv_backward_fused with the pool's argmax (and a ReLU's keep) gives what it gives
    for the gradient maxpool_backward routes into main memory: dw and dx bit for bit (each
    sample's gradient is routed in the same order, only in the thread's workspace), db to
    rounding (summed from the pool's values, not from the routed plane)."""
    mod = fused.im2col_fused
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 8, 9)).astype(dtype)
    w = rng.standard_normal((6, 3, 3, 3)).astype(dtype)
    b = np.zeros(6, dtype)
    a, _ = conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})
    pooled, argmax = fused.maxpool_forward(np.ascontiguousarray(a, dtype), *pool)
    keep = np.maximum(pooled, 0) if masked else None
    dout = rng.standard_normal(pooled.shape).astype(dtype)
    da = fused.maxpool_backward(dout, argmax, a.shape, *pool, keep=keep)
    threads = mod.max_threads()
    plain = np.full((threads, mod.fused_workspace(3, 6, 3, 3, 8, 9, True)), np.nan, dtype)
    routed = np.full((threads, mod.fused_workspace(3, 6, 3, 3, 8, 9, True, True)), np.nan,
                     dtype)
    dx1, dx2 = (np.empty_like(x), np.empty_like(x)) if need_dx else (None, None)
    want = mod.conv_backward_fused(da, x, w, 1, 1, dx1, plain)
    got = mod.conv_backward_fused(dout, x, w, 1, 1, dx2, routed, argmax=argmax, keep=keep)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(dx2, dx1)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got[1], want[1], rtol=tol, atol=tol)


def test_fused_backward_through_a_pool_refuses_mismatched_arrays(fused):
    mod = fused.im2col_fused
    x, w = np.ones((2, 3, 6, 6)), np.ones((4, 3, 3, 3))
    ws = np.zeros((2, mod.fused_workspace(3, 4, 3, 3, 6, 6, True, True)))
    dout, argmax = np.ones((2, 4, 3, 3)), np.zeros((2, 4, 3, 3), np.int64)
    with pytest.raises(ValueError, match=r"argmax \(int64, C-contiguous\) must both be"):
        mod.conv_backward_fused(dout, x, w, 1, 1, None, ws, argmax=argmax[:, :3].copy())
    with pytest.raises(ValueError, match=r"keep must be \(2, 4, 3, 3\) of dtype float64, "
                                         r"got \(2, 4, 3, 2\)"):
        mod.conv_backward_fused(dout, x, w, 1, 1, None, ws, argmax=argmax,
                                keep=np.ones((2, 4, 3, 2)))
    with pytest.raises(ValueError, match="ws must have shape"):
        mod.conv_backward_fused(dout, x, w, 1, 1, None, ws[:, :-64].copy(), argmax=argmax)
