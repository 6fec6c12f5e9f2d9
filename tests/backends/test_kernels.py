"""Every Backend kernel method agrees with the numpy backend's, on every geometry kind."""

import numpy as np
import pytest

from dualnet import backend
from dualnet.backends.launch import ConvKernelBackend, launch_config

# (H, W, k_h, k_w, pad, stride): square and not, padded, strided, windows with gaps.
CONV_GEOMETRIES = [
    (5, 5, 3, 3, 1, 1),
    (7, 5, 3, 1, 0, 2),
    (6, 6, 2, 2, 2, 2),
    (7, 7, 1, 1, 0, 3),
    (4, 6, 4, 6, 0, 1),
]
# (H, W, pool_height, pool_width, stride): tiling, overlapping, gaps, 1x1, whole plane.
POOL_GEOMETRIES = [
    (4, 6, 2, 2, 2),
    (7, 7, 3, 3, 2),
    (8, 8, 2, 2, 3),
    (3, 5, 1, 1, 1),
    (4, 4, 4, 4, 1),
]


def _both(be, method, host_args, prepare):
    """(result on `be` as host arrays, result on the numpy backend)."""
    args = [prepare(be, a) if isinstance(a, np.ndarray) else a for a in host_args]
    got = getattr(be, method)(*args)
    want = getattr(backend.get("numpy"), method)(*host_args)
    as_tuple = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    return [be.to_numpy(g) for g in as_tuple], list(want)


@pytest.fixture(params=["contiguous", "strided"])
def prepare(request, noncontiguous):
    if request.param == "strided":
        return noncontiguous
    return lambda be, a: be.asarray(a)


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=str)
def test_im2col_and_col2im(be, dtype, geometry, prepare, assert_agrees):
    H, W, kh, kw, pad, stride = geometry
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, H, W)).astype(dtype)
    got, want = _both(be, "im2col", (x, kh, kw, pad, stride), prepare)
    assert_agrees(got[0], want[0], dtype, "im2col")
    cols = rng.standard_normal(want[0].shape).astype(dtype)
    got, want = _both(be, "col2im", (cols, x.shape, kh, kw, pad, stride), prepare)
    assert_agrees(got[0], want[0], dtype, "col2im")


# (H, W, k_h, k_w, pad, stride, channel multiplier): output sizes by the floor rule.
DEPTHWISE_GEOMETRIES = [
    (5, 5, 3, 3, 1, 1, 1),
    (8, 8, 3, 3, 1, 2, 1),   # floor: 3.5 windows -> 4 (ResNet's downsampling)
    (7, 6, 3, 1, 0, 2, 2),
    (6, 9, 2, 4, 2, 3, 3),
]


@pytest.mark.parametrize("geometry", DEPTHWISE_GEOMETRIES, ids=str)
def test_depthwise_convolution(be, dtype, geometry, prepare, assert_agrees):
    H, W, kh, kw, pad, stride, m = geometry
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, H, W)).astype(dtype)
    w = rng.standard_normal((3 * m, 1, kh, kw)).astype(dtype)
    b = rng.standard_normal(3 * m).astype(dtype)
    Ho, Wo = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    got, want = _both(be, "depthwise_forward", (x, w, b, stride, pad, Ho, Wo), prepare)
    assert_agrees(got[0], want[0], dtype, "depthwise_forward")
    dout = rng.standard_normal(want[0].shape).astype(dtype)
    got, want = _both(be, "depthwise_backward", (dout, x, w, stride, pad), prepare)
    assert_agrees(got[0], want[0], dtype, "depthwise_backward dx")
    assert_agrees(got[1], want[1], dtype, "depthwise_backward dw")
    dx, dw = be.depthwise_backward(*(be.asarray(a) for a in (dout, x, w)), stride, pad, False)
    assert dx is None
    assert_agrees(be.to_numpy(dw), want[1], dtype, "depthwise_backward dw without dx")


@pytest.mark.parametrize("geometry", POOL_GEOMETRIES, ids=str)
def test_max_pooling(be, dtype, geometry, prepare, assert_agrees):
    H, W, ph, pw, stride = geometry
    rng = np.random.default_rng(1)
    # Few distinct values, so windows hold ties: the FIRST maximum must win everywhere.
    x = rng.integers(-2, 3, size=(2, 3, H, W)).astype(dtype)
    got, want = _both(be, "maxpool_forward", (x, ph, pw, stride), prepare)
    assert_agrees(got[0], want[0], dtype, "maxpool_forward out")
    assert_agrees(got[1], want[1], dtype, "maxpool_forward argmax")
    dout = rng.standard_normal(want[0].shape).astype(dtype)
    got, want = _both(be, "maxpool_backward", (dout, want[1], x.shape, ph, pw, stride), prepare)
    assert_agrees(got[0], want[0], dtype, "maxpool_backward")


@pytest.mark.parametrize("geometry", POOL_GEOMETRIES, ids=str)
def test_average_pooling(be, dtype, geometry, prepare, assert_agrees):
    H, W, ph, pw, stride = geometry
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, H, W)).astype(dtype)
    got, want = _both(be, "avgpool_forward", (x, ph, pw, stride), prepare)
    assert_agrees(got[0], want[0], dtype, "avgpool_forward")
    dout = rng.standard_normal(want[0].shape).astype(dtype)
    got, want = _both(be, "avgpool_backward", (dout, x.shape, ph, pw, stride), prepare)
    assert_agrees(got[0], want[0], dtype, "avgpool_backward")


def test_max_pooling_puts_nan_first_like_numpy(be, assert_agrees):
    x = np.array([[[[1.0, np.nan], [3.0, np.nan]]]], dtype=np.float32)
    got, want = _both(be, "maxpool_forward", (x, 2, 2, 2), lambda b, a: b.asarray(a))
    np.testing.assert_array_equal(got[0], want[0])  # NaN == NaN here
    assert_agrees(got[1], want[1], np.float32, "argmax of the first NaN")


def test_a_launch_larger_than_one_grid(be, dtype, assert_agrees):
    """More elements than grid * block threads: the grid-stride loops must cover the rest."""
    if not isinstance(be, ConvKernelBackend):
        pytest.skip(f"{be.name} does not launch conv.cu kernels")
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(dtype)
    total = 2 * 3 * 9 * 36  # im2col elements for 3x3 windows, pad 1
    grid, block = launch_config(total, be.block, be.max_grid)
    assert grid * block < total / 2, "the shape must need at least three grid passes"
    got, want = _both(be, "im2col", (x, 3, 3, 1, 1), lambda b, a: b.asarray(a))
    assert_agrees(got[0], want[0], dtype, "im2col over several grids")
    got, want = _both(be, "col2im", (want[0], x.shape, 3, 3, 1, 1), lambda b, a: b.asarray(a))
    assert_agrees(got[0], want[0], dtype, "col2im over several grids")


def test_empty_batches_launch_nothing(be, dtype):
    x = be.asarray(np.zeros((0, 3, 4, 4), dtype=dtype))
    assert be.im2col(x, 3, 3, 1, 1).shape == (0, 27, 16)
    out, argmax = be.maxpool_forward(x, 2, 2, 2)
    assert out.shape == argmax.shape == (0, 3, 2, 2)


@pytest.mark.parametrize("method", ["rand", "randn"])
def test_random_numbers_are_made_on_the_backend(be, dtype, method):
    a = getattr(be, method)((300, 40), dtype)
    assert be.owns(a) and a.dtype == dtype and a.shape == (300, 40)
    host = be.to_numpy(a)
    if method == "rand":
        assert 0 <= host.min() and host.max() < 1 and abs(host.mean() - 0.5) < 0.02
    else:
        assert abs(host.mean()) < 0.03 and abs(host.std() - 1) < 0.03
    again = be.to_numpy(getattr(be, method)((300, 40), dtype, seed=4))
    np.testing.assert_array_equal(again, be.to_numpy(getattr(be, method)((300, 40), dtype, seed=4)))
