"""Winograd F(2x2, 3x3) tile transforms: the NumPy reference (the spec) against a direct
convolution, its adjoints against dot-product identities, and the Cython kernels
(`dualnet.kernels._winograd`) against the reference."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualnet.kernels import reference
from dualnet.layers import conv_backward_naive, conv_forward_naive

cy = pytest.importorskip("dualnet.kernels._winograd",
                         reason="Cython extension not built (pip install -e .)")

DTYPES = [np.float32, np.float64]


@st.composite
def planes(draw):
    """(N, C, H, W), pad, F: any plane a 3x3 window fits once padded, odd sizes included."""
    pad = draw(st.integers(0, 2))
    H = draw(st.integers(max(1, 3 - 2 * pad), 11))
    W = draw(st.integers(max(1, 3 - 2 * pad), 11))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 4)), H, W), pad, draw(st.integers(1, 4))


def _random(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _winograd_conv(x, w, b, pad):
    """A whole convolution from the reference transforms and 16 GEMMs."""
    N, _, H, W = x.shape
    M = reference.winograd_filter(np, w) @ reference.winograd_input(np, x, pad)
    return reference.winograd_output(np, M, b, (N, w.shape[0], H + 2 * pad - 2, W + 2 * pad - 2))


@settings(max_examples=40, deadline=None)
@given(geom=planes(), seed=st.integers(0, 2**16))
def test_reference_convolution_and_gradients_equal_the_naive_layer(geom, seed):
    x_shape, pad, F = geom
    x = _random(x_shape, np.float64, seed)
    w = _random((F, x_shape[1], 3, 3), np.float64, seed + 1)
    b = _random((F,), np.float64, seed + 2)
    out, cache = conv_forward_naive(x, w, b, {"stride": 1, "pad": pad})
    np.testing.assert_allclose(_winograd_conv(x, w, b, pad), out, rtol=1e-12, atol=1e-12)

    dout = _random(out.shape, np.float64, seed + 3)
    dx, dw, _ = conv_backward_naive(dout, cache)
    U = reference.winograd_filter(np, w)
    V = reference.winograd_input(np, x, pad)
    dM = reference.winograd_output_grad(np, dout)
    dV = U.transpose(0, 2, 1) @ dM
    np.testing.assert_allclose(reference.winograd_input_grad(np, dV, x.shape, pad), dx,
                               rtol=1e-12, atol=1e-12)
    dU = dM @ V.transpose(0, 2, 1)
    np.testing.assert_allclose(reference.winograd_filter_grad(np, dU), dw, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(geom=planes(), seed=st.integers(0, 2**16))
def test_reference_gradients_are_adjoints(geom, seed):
    """<T a, b> == <a, T* b> for each transform T and its gradient T*."""
    (N, C, H, W), pad, F = geom
    Ho, Wo = H + 2 * pad - 2, W + 2 * pad - 2
    x = _random((N, C, H, W), np.float64, seed)
    V = _random(reference.winograd_input(np, x, pad).shape, np.float64, seed + 1)
    assert np.vdot(reference.winograd_input(np, x, pad), V) == pytest.approx(
        np.vdot(x, reference.winograd_input_grad(np, V, x.shape, pad)), rel=1e-12)
    y = _random((N, F, Ho, Wo), np.float64, seed + 2)
    M = _random(reference.winograd_output_grad(np, y).shape, np.float64, seed + 3)
    assert np.vdot(reference.winograd_output(np, M, None, y.shape), y) == pytest.approx(
        np.vdot(M, reference.winograd_output_grad(np, y)), rel=1e-12)
    w = _random((F, C, 3, 3), np.float64, seed + 4)
    U = _random((16, F, C), np.float64, seed + 5)
    assert np.vdot(reference.winograd_filter(np, w), U) == pytest.approx(
        np.vdot(w, reference.winograd_filter_grad(np, U)), rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(geom=planes(), seed=st.integers(0, 2**16))
def test_cython_transforms_equal_the_reference(dtype, geom, seed):
    (N, C, H, W), pad, F = geom
    Ho, Wo = H + 2 * pad - 2, W + 2 * pad - 2
    tol = 2e-6 if dtype == np.float32 else 1e-14
    x = _random((N, C, H, W), dtype, seed)
    V = np.full(reference.winograd_input(np, x, pad).shape, np.nan, dtype)
    assert cy.winograd_input(x, pad, V) is V
    np.testing.assert_allclose(V, reference.winograd_input(np, x, pad), rtol=tol, atol=tol)

    dx = np.full_like(x, np.nan)  # every element must be written, padding rows included
    cy.winograd_input_grad(V, pad, dx)
    np.testing.assert_allclose(dx, reference.winograd_input_grad(np, V, x.shape, pad),
                               rtol=tol, atol=tol * 10)

    M = _random((16, F, V.shape[2]), dtype, seed + 1)
    b = _random((F,), dtype, seed + 2)
    y = np.full((N, F, Ho, Wo), np.nan, dtype)
    cy.winograd_output(M, b, y)
    np.testing.assert_allclose(y, reference.winograd_output(np, M, b, y.shape), rtol=tol,
                               atol=tol * 10)
    cy.winograd_output(M, None, y)
    np.testing.assert_allclose(y, reference.winograd_output(np, M, None, y.shape), rtol=tol,
                               atol=tol * 10)

    dM = np.full_like(M, np.nan)
    cy.winograd_output_grad(y, dM)
    np.testing.assert_allclose(dM, reference.winograd_output_grad(np, y), rtol=tol, atol=tol)


@pytest.mark.parametrize("W, pad", [(300, 1), (301, 0), (301, 2)])
def test_wide_planes_span_several_tile_segments(W, pad):
    """The kernels work on rows of at most 64 tiles; these planes need three segments, the
    last one partial, with even and odd output widths. NaN fills catch unwritten outputs."""
    x = _random((2, 3, 7, W), np.float32, 0)
    V = np.full(reference.winograd_input(np, x, pad).shape, np.nan, np.float32)
    np.testing.assert_allclose(cy.winograd_input(x, pad, V),
                               reference.winograd_input(np, x, pad), rtol=2e-6, atol=2e-6)
    dx = np.full_like(x, np.nan)
    np.testing.assert_allclose(cy.winograd_input_grad(V, pad, dx),
                               reference.winograd_input_grad(np, V, x.shape, pad),
                               rtol=2e-6, atol=2e-5)
    y = np.full((2, 4, 7 + 2 * pad - 2, W + 2 * pad - 2), np.nan, np.float32)
    M = _random((16, 4, V.shape[2]), np.float32, 1)
    np.testing.assert_allclose(cy.winograd_output(M, None, y),
                               reference.winograd_output(np, M, None, y.shape),
                               rtol=2e-6, atol=2e-5)
    np.testing.assert_allclose(cy.winograd_output_grad(y, np.full_like(M, np.nan)),
                               reference.winograd_output_grad(np, y), rtol=2e-6, atol=2e-6)


def test_kernels_reject_bad_arrays():
    x = np.zeros((2, 3, 8, 8), np.float32)
    V = np.zeros((16, 3, 2 * 4 * 4), np.float32)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        cy.winograd_input(x.transpose(0, 1, 3, 2), 1, V)
    with pytest.raises(ValueError, match=r"V must have shape \(16, 3, 50\)"):
        cy.winograd_input(x, 2, V)  # pad 2: 5x5 tiles per plane, not 4x4
    with pytest.raises(TypeError, match="V must have dtype float64"):
        cy.winograd_input(x.astype(np.float64), 0, V[:, :, :18].copy())
    with pytest.raises(TypeError, match="float32 or float64"):
        cy.winograd_output_grad(x.astype(np.int64), V)
    with pytest.raises(ValueError, match="bias must have shape"):
        cy.winograd_output(np.zeros((16, 3, 32), np.float32), np.zeros(4, np.float32),
                           np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="bad Winograd geometry"):
        cy.winograd_input_grad(V, 0, np.zeros((2, 3, 2, 8), np.float32))


@st.composite
def fused_geometry(draw):
    """Like `planes`, with channel and filter counts around the GEMM blocking (6 rows, 16 or 32
    columns) and tile counts on both sides of the 16-tile padding."""
    pad = draw(st.integers(0, 2))
    H = draw(st.integers(max(1, 3 - 2 * pad), 13))
    W = draw(st.integers(max(1, 3 - 2 * pad), 13))
    C = draw(st.sampled_from([1, 5, 6, 7, 16, 33]))
    F = draw(st.sampled_from([1, 4, 6, 13, 32, 35]))
    return (draw(st.integers(1, 5)), C, H, W), pad, F


GEMM_KERNELS = ["avx512", "avx2", "vector"]


@pytest.fixture(params=GEMM_KERNELS)
def gemm_kernel(request):
    """Each small-GEMM kernel this CPU runs, the best one restored afterwards."""
    if not cy.use_gemm_kernel(request.param):
        pytest.skip(f"this CPU or build has no {request.param} kernel")
    yield request.param
    assert cy.use_gemm_kernel(cy.FUSED_KERNEL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
# the fixture only selects the kernel; sharing it between examples is intended
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geom=fused_geometry(), seed=st.integers(0, 2**16))
def test_fused_convolution_equals_the_reference(gemm_kernel, dtype, threads, geom, seed):
    """The fused kernels against the reference transforms and numpy GEMMs. Workspaces start
    as NaN and more (or fewer) rows than samples: nothing may be read before it is written,
    and idle threads must add nothing to dU."""
    (N, C, H, W), pad, F = geom
    tol = 5e-6 if dtype == np.float32 else 1e-13
    x = _random((N, C, H, W), dtype, seed)
    w = _random((F, C, 3, 3), dtype, seed + 1)
    b = _random((F,), dtype, seed + 2)
    U = reference.winograd_filter(np, w)
    U_t = np.ascontiguousarray(U.transpose(0, 2, 1))
    ws = np.full((threads, cy.fused_workspace(C, F, H, W, pad, False) + 7), np.nan, dtype)
    y = np.full((N, F, H + 2 * pad - 2, W + 2 * pad - 2), np.nan, dtype)
    assert cy.winograd_conv_forward(x, U_t, b, pad, y, ws) is y
    np.testing.assert_allclose(y, _winograd_conv(x, w, b, pad), rtol=tol, atol=tol * 10)

    dout = _random(y.shape, dtype, seed + 3)
    V = reference.winograd_input(np, x, pad)
    dM = reference.winograd_output_grad(np, dout)
    ws = np.full((threads, cy.fused_workspace(C, F, H, W, pad, True)), np.nan, dtype)
    dx = np.full_like(x, np.nan)
    dU = cy.winograd_conv_backward(dout, x, U, pad, dx, ws)
    assert dU.dtype == dtype
    np.testing.assert_allclose(dU, dM @ V.transpose(0, 2, 1), rtol=tol, atol=tol * 100)
    dV = U.transpose(0, 2, 1) @ dM
    np.testing.assert_allclose(dx, reference.winograd_input_grad(np, dV, x.shape, pad),
                               rtol=tol, atol=tol * 100)
    ws[...] = np.nan
    dU_only = cy.winograd_conv_backward(dout, x, U, pad, None, ws)
    np.testing.assert_array_equal(dU_only, dU)


def test_fused_kernels_reject_bad_arrays():
    x = np.zeros((2, 3, 8, 8), np.float32)
    U = np.zeros((16, 4, 3), np.float32)
    U_t = np.zeros((16, 3, 4), np.float32)
    b = np.zeros(4, np.float32)
    y = np.zeros((2, 4, 8, 8), np.float32)
    need = cy.fused_workspace(3, 4, 8, 8, 1, False)
    with pytest.raises(ValueError, match=rf"ws must have shape \(threads >= 1, >= {need}\)"):
        cy.winograd_conv_forward(x, U_t, b, 1, y, np.zeros((2, need - 1), np.float32))
    with pytest.raises(TypeError, match="ws must have dtype float32"):
        cy.winograd_conv_forward(x, U_t, b, 1, y, np.zeros((2, need)))
    with pytest.raises(ValueError, match=r"U_t must have shape \(16, 3, 4\)"):
        cy.winograd_conv_forward(x, U, b, 1, y, np.zeros((2, need), np.float32))
    with pytest.raises(ValueError, match=r"y must have shape \(2, 4, 6, 6\)"):
        cy.winograd_conv_forward(x, U_t, b, 0, y, np.zeros((2, need), np.float32))
    with pytest.raises(ValueError, match="bad Winograd geometry"):
        cy.winograd_conv_forward(x[:, :, :1, :1].copy(), U_t, b, 0, y, np.zeros((2, need), np.float32))
    ws = np.zeros((1, cy.fused_workspace(3, 4, 8, 8, 1, True)), np.float32)
    with pytest.raises(ValueError, match=r"U must have shape \(16, 4, 3\)"):
        cy.winograd_conv_backward(y, x, U_t, 1, None, ws)
    with pytest.raises(ValueError, match="dx must have shape"):
        cy.winograd_conv_backward(y, x, U, 1, y, ws)


def test_gemm_kernels_are_chosen_by_what_the_cpu_runs():
    # the best at import; 'scalar' only where the compiler lacks vector extensions
    assert cy.FUSED_KERNEL in (*GEMM_KERNELS, "scalar")
    if cy.FUSED_KERNEL != "scalar":
        assert cy.use_gemm_kernel("vector")  # the baseline every vector build has
        assert cy.use_gemm_kernel(cy.FUSED_KERNEL)
    assert not cy.use_gemm_kernel("sse9")
    assert cy.max_threads() >= 1


FEWER_THREADS = """
import numpy as np
from dualnet.kernels import _im2col, _winograd, reference
rng = np.random.default_rng(0)
x = rng.standard_normal((3, 4, 6, 6))
w = rng.standard_normal((5, 4, 3, 3))
dout = rng.standard_normal((3, 5, 6, 6))
U = reference.winograd_filter(np, w)
ws = np.full((3, _winograd.fused_workspace(4, 5, 6, 6, 1, True)), np.nan)
dU = _winograd.winograd_conv_backward(dout, x, U, 1, None, ws)
dM = reference.winograd_output_grad(np, dout)
np.testing.assert_allclose(dU, dM @ reference.winograd_input(np, x, 1).transpose(0, 2, 1),
                           rtol=1e-12, atol=1e-12)
ws = np.full((3, _im2col.fused_workspace(4, 5, 3, 3, 6, 6, True)), np.nan)
dw, db = _im2col.conv_backward_fused(dout, x, w, 1, 1, None, ws)
np.testing.assert_allclose(dw, reference.winograd_filter_grad(np, dU), rtol=1e-12, atol=1e-12)
np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)
print("ok")
"""


def test_fused_backward_with_fewer_threads_than_workspace_rows():
    """OpenMP may start fewer threads than asked (here capped at one, as in a build without
    OpenMP): the rows of threads that never ran must add nothing."""
    import os
    import subprocess
    import sys

    if cy.FUSED_KERNEL == "scalar":
        pytest.skip("this build has no fused kernels")
    run = subprocess.run([sys.executable, "-c", FEWER_THREADS], capture_output=True, text=True,
                         env={**os.environ, "OMP_THREAD_LIMIT": "1"}, check=False)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
