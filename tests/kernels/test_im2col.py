"""The Cython CPU kernels (`dualnet.kernels._im2col`) against the pure-NumPy reference kernels,
an adjoint identity, the naive layers, and the pure-NumPy fallback of the `numpy` backend."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dualnet import backend, layers
from dualnet.backends.numpy import NumpyBackend
from dualnet.kernels import reference

cy = pytest.importorskip("dualnet.kernels._im2col",
                         reason="Cython extension not built (pip install -e .)")

DTYPES = [np.float32, np.float64]


@st.composite
def windows(draw, max_pad=2, stride_pairs=False):
    """(x shape, window h, window w, pad, stride) whose windows tile the padded input exactly;
    with `stride_pairs`, stride may be a (rows, columns) pair."""
    sh = sw = draw(st.integers(1, 3))
    if stride_pairs and draw(st.booleans()):
        sw = draw(st.integers(1, 3))
    pad = draw(st.integers(0, max_pad))
    HH, WW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    Ho, Wo = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    H = (Ho - 1) * sh + HH - 2 * pad
    W = (Wo - 1) * sw + WW - 2 * pad
    assume(H >= 1 and W >= 1)
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    return (N, C, H, W), HH, WW, pad, (sh if sh == sw else (sh, sw))


def _random(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None)
@given(geom=windows(stride_pairs=True), seed=st.integers(0, 2**16))
def test_im2col_col2im_equal_reference(dtype, geom, seed):
    x_shape, HH, WW, pad, stride = geom
    x = _random(x_shape, dtype, seed)
    cols = cy.im2col(x, HH, WW, pad, stride)
    assert cols.dtype == dtype and cols.flags.c_contiguous
    # both only copy elements, so they must agree exactly
    np.testing.assert_array_equal(cols, reference.im2col(np, x, HH, WW, pad, stride))
    g = _random(cols.shape, dtype, seed + 1)
    dx = cy.col2im(g, x_shape, HH, WW, pad, stride)
    assert dx.dtype == dtype and dx.shape == x_shape
    # same terms added in the same order as the reference: equal bit for bit
    np.testing.assert_array_equal(dx, reference.col2im(np, g, x_shape, HH, WW, pad, stride))


@settings(max_examples=30, deadline=None)
@given(geom=windows(stride_pairs=True), seed=st.integers(0, 2**16))
def test_col2im_is_the_adjoint_of_im2col(geom, seed):
    # <im2col(x), g> == <x, col2im(g)> holds for the true adjoint, whatever the reference says
    x_shape, HH, WW, pad, stride = geom
    x = _random(x_shape, np.float64, seed)
    cols = cy.im2col(x, HH, WW, pad, stride)
    g = _random(cols.shape, np.float64, seed + 1)
    lhs = np.vdot(cols, g)
    rhs = np.vdot(x, cy.col2im(g, x_shape, HH, WW, pad, stride))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None)
@given(geom=windows(max_pad=0), seed=st.integers(0, 2**16), ties=st.booleans())
def test_pooling_equals_reference(dtype, geom, seed, ties):
    x_shape, ph, pw, _, stride = geom
    x = _random(x_shape, dtype, seed)
    if ties:  # few distinct values: windows hold repeated maxima, first one must win
        x = np.round(x).astype(dtype)
    out, argmax = cy.maxpool_forward(x, ph, pw, stride)
    ref_out, ref_argmax = reference.maxpool_forward(np, x, ph, pw, stride)
    assert out.dtype == dtype and argmax.dtype == np.int64
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(argmax, ref_argmax)
    dout = _random(out.shape, dtype, seed + 1)
    dx = cy.maxpool_backward(dout, argmax, x_shape, ph, pw, stride)
    assert dx.dtype == dtype
    # the reference sums overlapping windows in float64 (bincount): equal up to rounding
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(
        dx, reference.maxpool_backward(np, dout, argmax, x_shape, ph, pw, stride),
        rtol=tol, atol=tol)
    avg = cy.avgpool_forward(x, ph, pw, stride)
    assert avg.dtype == dtype
    np.testing.assert_allclose(avg, reference.avgpool_forward(np, x, ph, pw, stride),
                               rtol=tol, atol=tol)
    davg = cy.avgpool_backward(dout, x_shape, ph, pw, stride)
    assert davg.dtype == dtype
    np.testing.assert_allclose(davg, reference.avgpool_backward(np, dout, x_shape, ph, pw, stride),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_2x2_backward_zeros_the_rows_and_columns_no_window_covers(dtype):
    """A 2x2 stride-2 pool on odd planes floors its output (the kernels' rule; the layers
    refuse such shapes): the last row and column get no gradient, as in the reference."""
    x = _random((2, 3, 5, 7), dtype, 1)
    out, argmax = cy.maxpool_forward(x, 2, 2, 2)
    assert out.shape == (2, 3, 2, 3)
    dout = _random(out.shape, dtype, 2)
    dx = cy.maxpool_backward(dout, argmax, x.shape, 2, 2, 2)
    np.testing.assert_array_equal(dx, reference.maxpool_backward(np, dout, argmax, x.shape,
                                                                 2, 2, 2))
    assert not dx[:, :, 4].any() and not dx[:, :, :, 6].any()


def test_maxpool_first_maximum_and_nan_like_numpy_argmax():
    x = np.array([[[[1.0, 3.0, 3.0, 0.0],
                    [3.0, 2.0, np.nan, 5.0]]]], dtype=np.float32)
    out, argmax = cy.maxpool_forward(x, 2, 2, 2)
    # left window: three 3.0s, the first in row-major order (index 1) wins
    assert argmax[0, 0, 0, 0] == 1 and out[0, 0, 0, 0] == 3.0
    # right window: a NaN wins over larger numbers, as numpy.argmax decides
    assert argmax[0, 0, 0, 1] == 6 and np.isnan(out[0, 0, 0, 1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_maxpool_2x2_stride_2_path_equals_reference(dtype, seed):
    # the branch-free 2x2/2 kernels: ties, signed zeros, infinities and NaNs (several in one
    # window, or first) decide exactly as the reference's first-maximum scan does
    rng = np.random.default_rng(seed)
    x_shape = (3, 5, 2 * int(rng.integers(1, 9)), 2 * int(rng.integers(1, 9)))
    specials = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan], dtype=dtype)
    x = specials[rng.integers(0, specials.size, x_shape)]
    x = np.where(rng.random(x_shape) < 0.5, rng.standard_normal(x_shape).astype(dtype), x)
    out, argmax = cy.maxpool_forward(x, 2, 2, 2)
    ref_out, ref_argmax = reference.maxpool_forward(np, x, 2, 2, 2)
    np.testing.assert_array_equal(argmax, ref_argmax)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(ref_out))
    np.testing.assert_array_equal(out, ref_out)
    dout = specials[rng.integers(0, specials.size, out.shape)]
    dx = cy.maxpool_backward(dout, argmax, x_shape, 2, 2, 2)
    ref_dx = reference.maxpool_backward(np, dout, argmax, x_shape, 2, 2, 2)
    np.testing.assert_array_equal(dx, ref_dx)
    np.testing.assert_array_equal(np.signbit(dx), np.signbit(ref_dx))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q", [1, 2])
def test_gemm_rows_to_nchw_and_back_equal_reference(dtype, q):
    rng = np.random.default_rng(5)
    N, F, Ho, Wo = 3, 4, 6, 7
    rows = rng.standard_normal((q * F, N * Ho * Wo // q)).astype(dtype)
    bias = rng.standard_normal(F).astype(dtype)
    out = np.full((N, F, Ho, Wo), np.nan, dtype)
    assert cy.rows_to_nchw(rows, bias, out, q) is out
    np.testing.assert_array_equal(out, reference.rows_to_nchw(np, rows, bias, out.shape, q))
    # sample 1, filter 2, copy q-1: its output rows q*hp + q-1
    P = Ho * Wo // q
    np.testing.assert_array_equal(out[1, 2, q - 1::q],
                                  rows[(q - 1) * F + 2, P:2 * P].reshape(Ho // q, Wo) + bias[2])
    back = np.full_like(rows, np.nan)
    cy.nchw_to_rows(out - bias[:, None, None], back, q)
    np.testing.assert_allclose(back, rows, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(back, reference.nchw_to_rows(np, out - bias[:, None, None], q))
    with pytest.raises(ValueError, match=r"rows_to_nchw: rows must be a float\S* array of shape"):
        cy.rows_to_nchw(rows[:, :-1].copy(), bias, out, q)
    with pytest.raises(ValueError, match="rows_to_nchw: bias must be"):
        cy.rows_to_nchw(rows, bias[:-1].copy(), out, q)
    with pytest.raises(ValueError, match="nchw_to_rows: dout must be C-contiguous"):
        cy.nchw_to_rows(out.transpose(0, 1, 3, 2), back, q)
    with pytest.raises(ValueError, match="Ho=5 is not a multiple of q=2"):
        cy.nchw_to_rows(out[:, :, :5].copy(), back, 2)


def test_kernels_reject_bad_arrays():
    x = np.zeros((2, 3, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        cy.im2col(x.transpose(0, 1, 3, 2), 3, 3, 1, 1)
    with pytest.raises(TypeError, match="float32 or float64"):
        cy.maxpool_forward(x.astype(np.int32), 2, 2, 2)
    with pytest.raises(ValueError, match="4-D"):
        cy.im2col(x[0], 3, 3, 1, 1)
    with pytest.raises(ValueError, match="cols must have shape"):
        cy.col2im(np.zeros((2, 27, 63), np.float32), x.shape, 3, 3, 1, 1)
    with pytest.raises(ValueError, match="bad im2col height geometry"):
        cy.im2col(x, 11, 3, 1, 1)


# -- the layers, with the extension and with the fallback ------------------------------------
@pytest.fixture(params=["cython", "fallback"])
def numpy_backend(request, monkeypatch):
    """The `numpy` backend with its Cython kernels, or rebuilt with them disabled."""
    if request.param == "fallback":
        monkeypatch.setenv("DUALNET_NO_EXTENSION", "1")
        be = NumpyBackend()
        assert be.kernels().startswith("pure-NumPy kernels")
        monkeypatch.setitem(backend._instances, "numpy", be)
    be = backend.get("numpy")
    with backend.use("numpy"):
        yield be


@pytest.mark.parametrize("dtype", DTYPES)
# the fixture only selects a backend; sharing it across examples is intended
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geom=windows(max_pad=1), F=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_fast_layers_equal_naive_layers(numpy_backend, dtype, geom, F, seed):
    x_shape, HH, WW, pad, stride = geom
    x = _random(x_shape, dtype, seed)
    w = _random((F, x_shape[1], HH, WW), dtype, seed + 1)
    b = _random((F,), dtype, seed + 2)
    param = {"stride": stride, "pad": pad}
    tol = 2e-5 if dtype == np.float32 else 1e-10
    out, cache = layers.conv_forward_fast(x, w, b, param)
    ref, ref_cache = layers.conv_forward_naive(x, w, b, param)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    dout = _random(out.shape, dtype, seed + 3)
    for fast, naive in zip(layers.conv_backward_fast(dout, cache),
                           layers.conv_backward_naive(dout, ref_cache), strict=True):
        assert fast.dtype == dtype
        np.testing.assert_allclose(fast, naive, rtol=tol, atol=tol * 10)
    pool = {"pool_height": HH, "pool_width": WW, "stride": stride}
    if pad == 0:
        out, cache = layers.max_pool_forward_fast(x, pool)
        ref, ref_cache = layers.max_pool_forward_naive(x, pool)
        np.testing.assert_array_equal(out, ref)
        dout = _random(out.shape, dtype, seed + 4)
        np.testing.assert_allclose(layers.max_pool_backward_fast(dout, cache),
                                   layers.max_pool_backward_naive(dout, ref_cache),
                                   rtol=tol, atol=tol)


def test_numpy_backend_reports_active_kernels():
    fused = cy.FUSED_KERNEL
    assert backend.get("numpy").kernels() == (
        "Cython kernels (dualnet.kernels._im2col, dualnet.kernels._winograd, "
        "dualnet.kernels._norm, dualnet.kernels._regularize; "
        + (f"fused convolutions with {fused} vectors"
           + ("" if fused in ("avx512", "avx2") else
              ", left to the chunked paths here (measured faster only with AVX2 or AVX-512 "
              "kernels)") + ")"
           if fused != "scalar" else
           "no fused convolutions (the compiler has no vector extensions))"))


def test_env_var_disables_the_extension_in_a_fresh_process():
    """DUALNET_NO_EXTENSION=1 at start-up: pure-NumPy kernels, same results as the naive layers."""
    script = textwrap.dedent("""
        import numpy as np
        from dualnet import backend, layers
        print(backend.get("numpy").kernels())
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
        w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        b = rng.standard_normal(4).astype(np.float32)
        p = {"stride": 2, "pad": 1}
        fast, _ = layers.conv_forward_fast(x, w, b, p)
        naive, _ = layers.conv_forward_naive(x, w, b, p)
        assert fast.dtype == np.float32
        np.testing.assert_allclose(fast, naive, rtol=1e-5, atol=1e-5)
        print("equal")
    """)
    env = {**os.environ, "DUALNET_NO_EXTENSION": "1"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["pure-NumPy kernels (disabled by DUALNET_NO_EXTENSION)",
                                          "equal"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("HH, pad, stride", [(3, 1, 1), (7, 3, 1), (5, 2, 1), (3, 1, 2),
                                              (3, 0, 1)])
def test_im2col_out_views_and_same_padding_blocks(dtype, HH, pad, stride):
    """The stride-1 'same' block copy (its wrapped edge columns zeroed) and `out=` views of a
    (K, N, P) buffer, as the fast convolution passes them, equal the reference exactly."""
    x_shape = (3, 2, 9, 9)
    x = _random(x_shape, dtype, HH + pad)
    ref = reference.im2col(np, x, HH, HH, pad, stride)
    N, K, P = ref.shape
    buf = np.full((K, N, P), np.nan, dtype=dtype)
    got = cy.im2col(x, HH, HH, pad, stride, out=buf.transpose(1, 0, 2))
    assert got.base is not None
    np.testing.assert_array_equal(buf.transpose(1, 0, 2), ref)
    np.testing.assert_array_equal(cy.im2col(x, HH, HH, pad, stride), ref)
    g = _random(ref.shape, dtype, 7)
    gbuf = np.ascontiguousarray(g.transpose(1, 0, 2))
    dx = np.full(x_shape, np.nan, dtype=dtype)
    cy.col2im(gbuf.transpose(1, 0, 2), x_shape, HH, HH, pad, stride, out=dx)
    np.testing.assert_array_equal(dx, reference.col2im(np, g, x_shape, HH, HH, pad, stride))


def test_im2col_out_must_match():
    x = np.ones((2, 1, 4, 4))
    with pytest.raises(ValueError, match="im2col: out must have shape"):
        cy.im2col(x, 3, 3, 1, 1, out=np.empty((2, 9, 15)))
    with pytest.raises(TypeError, match="im2col: out must have dtype"):
        cy.im2col(x, 3, 3, 1, 1, out=np.empty((2, 9, 16), np.float32))
    with pytest.raises(ValueError, match="contiguous along its last axis"):
        cy.im2col(x, 3, 3, 1, 1, out=np.empty((2, 9, 32))[:, :, ::2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool_2x2_fast_path_equals_reference(dtype, ties):
    x = _random((3, 4, 6, 8), dtype, 11)
    if ties:
        x = np.round(x).astype(dtype)
    x[0, 0, 0, :2] = np.nan
    out, argmax = cy.maxpool_forward(x, 2, 2, 2)
    ref_out, ref_argmax = reference.maxpool_forward(np, x, 2, 2, 2)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(argmax, ref_argmax)
    dout = _random(out.shape, dtype, 12)
    dout[0, 1, 0, 0] = -0.0
    dx = cy.maxpool_backward(dout, argmax, x.shape, 2, 2, 2)
    ref_dx = reference.maxpool_backward(np, dout, argmax, x.shape, 2, 2, 2)
    np.testing.assert_array_equal(dx, ref_dx)
    at = divmod(int(argmax[0, 1, 0, 0]), x.shape[3])
    assert not np.signbit(dx[0, 1][at])  # 0 + -0.0 is +0.0, as the scatter into zeros gives


def test_fused_convolution_rejects_bad_arrays():
    if cy.FUSED_KERNEL == "scalar":
        pytest.skip("this build has no fused kernels")
    x = np.zeros((2, 3, 8, 8), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    b = np.zeros(4, np.float32)
    y = np.zeros((2, 4, 8, 8), np.float32)
    need = cy.fused_workspace(3, 4, 3, 3, 8, 8, False)
    with pytest.raises(ValueError, match=rf"ws must have shape \(threads >= 1, >= {need}\)"):
        cy.conv_forward_fused(x, w, b, 1, 1, y, np.zeros((2, need - 1), np.float32))
    with pytest.raises(ValueError, match="w and ws must have x's dtype float32"):
        cy.conv_forward_fused(x, w.astype(np.float64), b, 1, 1, y, np.zeros((2, need)))
    with pytest.raises(ValueError, match="does not fit x"):
        cy.conv_forward_fused(x, w[:, :2].copy(), b, 1, 1, y, np.zeros((2, need), np.float32))
    with pytest.raises(ValueError, match=r"must be \(4,\) and \(2, 4, 6, 6\)"):
        cy.conv_forward_fused(x, w, b, 0, 1, y, np.zeros((2, need), np.float32))
    with pytest.raises(ValueError, match="bad height geometry"):
        cy.conv_forward_fused(x[:, :, :1].copy(), w, b, 0, 1, y, np.zeros((2, need), np.float32))
    ws = np.zeros((1, cy.fused_workspace(3, 4, 3, 3, 8, 8, True)), np.float32)
    with pytest.raises(ValueError, match=r"dout must be \(2, 4, 8, 8\)"):
        cy.conv_backward_fused(y[:, :3].copy(), x, w, 1, 1, None, ws)
    with pytest.raises(ValueError, match=r"dx must be \(2, 3, 8, 8\)"):
        cy.conv_backward_fused(y, x, w, 1, 1, y, ws)


@pytest.mark.parametrize("kernel", ["avx512", "avx2", "vector"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_convolution_equals_the_naive_layer_on_every_kernel(kernel, dtype):
    """The fused entry points with each GEMM instruction set this CPU has (the layers' tests
    run the best one only): strided, padded, channel and filter counts off the blocking."""
    if not cy.use_gemm_kernel(kernel):
        pytest.skip(f"this CPU or build has no {kernel} kernel")
    try:
        rng = np.random.default_rng(7)
        x = rng.standard_normal((3, 5, 11, 9)).astype(dtype)
        w = rng.standard_normal((19, 5, 3, 5)).astype(dtype)
        b = rng.standard_normal(19).astype(dtype)
        param = {"stride": 2, "pad": 2}
        ref, ref_cache = layers.conv_forward_naive(x, w, b, param)
        y = np.full(ref.shape, np.nan, dtype)
        Ho, Wo = ref.shape[2:]
        ws = np.full((2, cy.fused_workspace(5, 19, 3, 5, Ho, Wo, True)), np.nan, dtype)
        cy.conv_forward_fused(x, w, b, 2, 2, y, ws)
        dout = rng.standard_normal(ref.shape).astype(dtype)
        dx = np.full_like(x, np.nan)
        dw, db = cy.conv_backward_fused(dout, x, w, 2, 2, dx, ws)
    finally:
        assert cy.use_gemm_kernel(cy.FUSED_KERNEL)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    ref_dx, ref_dw, ref_db = layers.conv_backward_naive(dout, ref_cache)
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, ref_dx, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(dw, ref_dw, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(db, ref_db, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=60, deadline=None)
@given(geom=windows(), F=st.integers(1, 9), threads=st.integers(1, 5), seed=st.integers(0, 99))
def test_fused_forward_on_more_threads_than_samples_equals_the_naive_layer(dtype, geom, F,
                                                                          threads, seed):
    """With fewer samples than workspace rows (threads) the fused forward splits each sample
    into blocks of output rows, the last one shorter where Ho does not divide: padding rows
    inside and across blocks, same-width block copies and strided rows alike."""
    if cy.FUSED_KERNEL == "scalar":
        pytest.skip("this build has no fused kernels")
    x_shape, HH, WW, pad, stride = geom
    x = _random(x_shape, dtype, seed)
    w = _random((F, x_shape[1], HH, WW), dtype, seed + 1)
    b = _random(F, dtype, seed + 2)
    ref, _ = layers.conv_forward_naive(x, w, b, {"stride": stride, "pad": pad})
    Ho, Wo = ref.shape[2:]
    ws = np.full((threads, cy.fused_workspace(x_shape[1], F, HH, WW, Ho, Wo, False)), np.nan,
                 dtype)
    y = np.full(ref.shape, np.nan, dtype)
    cy.conv_forward_fused(x, w, b, pad, stride, y, ws)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


# -- depthwise convolution ------------------------------------------------------------------
@st.composite
def depthwise_geometry(draw):
    """(x shape, w shape, pad, stride), output sizes by the floor rule."""
    C, m = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    HH, WW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pad, stride = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    H = draw(st.integers(max(1, HH - 2 * pad), 9))
    W = draw(st.integers(max(1, WW - 2 * pad), 17))
    return (draw(st.integers(1, 3)), C, H, W), (C * m, 1, HH, WW), pad, stride


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None)
@given(geom=depthwise_geometry(), seed=st.integers(0, 2**16), need_dx=st.booleans())
def test_depthwise_equals_reference(dtype, geom, seed, need_dx):
    x_shape, w_shape, pad, stride = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    Ho = (x_shape[2] + 2 * pad - w_shape[2]) // stride + 1
    Wo = (x_shape[3] + 2 * pad - w_shape[3]) // stride + 1
    out = np.full((x_shape[0], w_shape[0], Ho, Wo), np.nan, dtype)
    # NaN-filled workspace rows, 1 to 3 of them: nothing may be read before it is written
    ws = np.full((1 + seed % 3, cy.depthwise_workspace(*x_shape[2:], *w_shape[2:], pad, Ho,
                                                       Wo)), np.nan, dtype)
    assert cy.depthwise_forward(x, w, b, pad, stride, out, ws) is out
    tol = 1e-12 if dtype == np.float64 else 2e-5
    want = reference.depthwise_forward(np, x, w, b, stride, pad, Ho, Wo)
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = np.full(x.shape, np.nan, dtype) if need_dx else None
    dw = np.full(w.shape, np.nan, dtype)
    got_dx, got_dw = cy.depthwise_backward(dout, x, w, pad, stride, dx, dw, ws)
    want_dx, want_dw = reference.depthwise_backward(np, dout, x, w, stride, pad, need_dx)
    assert got_dx is dx and got_dw is dw
    np.testing.assert_allclose(dw, want_dw, rtol=tol, atol=tol * 10)
    if need_dx:
        np.testing.assert_allclose(dx, want_dx, rtol=tol, atol=tol * 10)


def test_depthwise_refuses_what_would_read_out_of_bounds():
    x = np.zeros((2, 3, 6, 6), np.float32)
    w = np.zeros((3, 1, 3, 3), np.float32)
    b = np.zeros(3, np.float32)
    ws = np.zeros((2, cy.depthwise_workspace(6, 6, 3, 3, 1, 6, 6)), np.float32)
    with pytest.raises(ValueError, match=r"depthwise_forward: output \(2, 3, 7, 6\) does not fit"):
        cy.depthwise_forward(x, w, b, 1, 1, np.zeros((2, 3, 7, 6), np.float32), ws)
    with pytest.raises(ValueError, match=r"depthwise_forward: w must have shape \(C\*m, 1"):
        cy.depthwise_forward(x, np.zeros((4, 1, 3, 3), np.float32), np.zeros(4, np.float32), 1,
                             1, np.zeros((2, 4, 6, 6), np.float32), ws)
    with pytest.raises(ValueError, match="arrays must share x's dtype float32"):
        cy.depthwise_forward(x, w.astype(np.float64), b, 1, 1, np.zeros((2, 3, 6, 6), np.float32),
                             ws)
    with pytest.raises(ValueError, match=r"depthwise_forward: ws must be \(threads >= 1, >= "):
        cy.depthwise_forward(x, w, b, 1, 1, np.zeros((2, 3, 6, 6), np.float32),
                             np.ascontiguousarray(ws[:, :-1]))
    with pytest.raises(ValueError, match="C-contiguous"):
        cy.depthwise_backward(np.zeros((2, 3, 6, 6), np.float32), x.transpose(0, 1, 3, 2), w, 1,
                              1, None, np.zeros_like(w), ws)
    with pytest.raises(ValueError, match=r"depthwise_backward: dx must be \(2, 3, 6, 6\)"):
        cy.depthwise_backward(np.zeros((2, 3, 6, 6), np.float32), x, w, 1, 1,
                              np.zeros((2, 3, 6, 5), np.float32), np.zeros_like(w), ws)


@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 1), (2, 0)])
def test_depthwise_layer_on_both_numpy_kernel_sets(numpy_backend, stride, pad):
    """The depthwise algorithm through the layers, with the Cython kernels and the fallback."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((6, 1, 3, 3))
    b = rng.standard_normal(6)
    param = {"stride": stride, "pad": pad, "groups": 3, "rounding": "floor"}
    out, cache = layers.conv_forward_fast(x, w, b, param)
    assert cache.algorithm == "depthwise"
    ref, ref_cache = layers.conv_forward_naive(x, w, b, param)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    for got, want in zip(layers.conv_backward_fast(dout, cache),
                         layers.conv_backward_naive(dout, ref_cache), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-11)
