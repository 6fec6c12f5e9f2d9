"""Max, average and global average pooling: values, gradients, fast == naive, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualnet import layers
from dualnet.gradient_check import eval_numerical_gradient_array, rel_error


def window_reduce(x, ph, pw, stride, reduce):
    """Independent reference: reduce each sliding window with `reduce` (np.max or np.mean)."""
    win = np.lib.stride_tricks.sliding_window_view(x, (ph, pw), axis=(2, 3))
    return reduce(win[:, :, ::stride, ::stride], axis=(4, 5))


def test_max_pool_naive_on_increasing_input_takes_bottom_right():
    x_shape = (2, 3, 4, 4)
    x = np.linspace(-0.3, 0.4, num=np.prod(x_shape)).reshape(x_shape)
    out, _ = layers.max_pool_forward_naive(x, {"pool_width": 2, "pool_height": 2, "stride": 2})
    np.testing.assert_array_equal(out, x[:, :, 1::2, 1::2])
    assert rel_error(out[0, 0], np.array([[-0.26315789, -0.24842105],
                                          [-0.20421053, -0.18947368]])) < 1e-7


POOLS = [
    ("max", layers.max_pool_forward_naive, layers.max_pool_backward_naive, np.max),
    ("max", layers.max_pool_forward_fast, layers.max_pool_backward_fast, np.max),
    ("avg", layers.avg_pool_forward_naive, layers.avg_pool_backward_naive, np.mean),
    ("avg", layers.avg_pool_forward_fast, layers.avg_pool_backward_fast, np.mean),
]
GEOMETRIES = [(2, 2, 2), (3, 3, 1), (4, 4, 2), (2, 2, 3), (3, 2, 2)]  # tile, overlap, gaps


@pytest.mark.parametrize("kind, forward, backward, reduce", POOLS)
@pytest.mark.parametrize("ph, pw, stride", GEOMETRIES)
def test_forward_and_numeric_gradient(kind, forward, backward, reduce, ph, pw, stride):
    rng = np.random.RandomState(231)
    H, W = 2 * stride + ph, 3 * stride + pw
    x = rng.randn(2, 3, H, W)
    param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    out, cache = forward(x, param)
    np.testing.assert_allclose(out, window_reduce(x, ph, pw, stride, reduce), rtol=1e-12)
    dout = rng.randn(*out.shape)
    dx = backward(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda v: forward(v, param)[0], x, dout)
    assert rel_error(dx, dx_num) < 1e-8


@settings(max_examples=60, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 3), ph=st.integers(1, 4), pw=st.integers(1, 4),
       stride=st.integers(1, 4), Ho=st.integers(1, 4), Wo=st.integers(1, 4),
       dtype=st.sampled_from([np.float64, np.float32]), kind=st.sampled_from(["max", "avg"]),
       ties=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_fast_equals_naive(N, C, ph, pw, stride, Ho, Wo, dtype, kind, ties, seed):
    rng = np.random.RandomState(seed)
    shape = (N, C, (Ho - 1) * stride + ph, (Wo - 1) * stride + pw)
    # integer-valued inputs make ties common: both must route to the first maximum
    x = (rng.randint(0, 3, size=shape) if ties else rng.randn(*shape)).astype(dtype)
    param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    f_naive = getattr(layers, f"{kind}_pool_forward_naive")
    b_naive = getattr(layers, f"{kind}_pool_backward_naive")
    f_fast = getattr(layers, f"{kind}_pool_forward_fast")
    b_fast = getattr(layers, f"{kind}_pool_backward_fast")
    out_n, cache_n = f_naive(x, param)
    out_f, cache_f = f_fast(x, param)
    dout = rng.randn(*out_n.shape).astype(dtype)
    tol = 1e-9 if dtype == np.float64 else 1e-5
    assert out_f.dtype == dtype
    np.testing.assert_allclose(out_f, out_n, rtol=tol, atol=tol)
    dx_f = b_fast(dout, cache_f)
    assert dx_f.dtype == dtype
    np.testing.assert_allclose(dx_f, b_naive(dout, cache_n), rtol=tol, atol=tol)


def test_global_avg_pool():
    rng = np.random.RandomState(0)
    x, dout = rng.randn(2, 3, 4, 5), rng.randn(2, 3)
    out, cache = layers.global_avg_pool_forward(x)
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)))
    dx = layers.global_avg_pool_backward(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda v: layers.global_avg_pool_forward(v)[0], x, dout)
    assert rel_error(dx, dx_num) < 1e-9
    out32, cache32 = layers.global_avg_pool_forward(x.astype(np.float32))
    assert out32.dtype == np.float32
    assert layers.global_avg_pool_backward(dout.astype(np.float32), cache32).dtype == np.float32


@pytest.mark.parametrize("forward", [layers.max_pool_forward_naive, layers.max_pool_forward_fast,
                                     layers.avg_pool_forward_naive, layers.avg_pool_forward_fast])
class TestBadInput:
    def test_output_not_integral(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: output width is not integral: "
                                             r"\(5 \+ 2\*0 - 2\) / 2 \+ 1 = 2.5"):
            forward(np.zeros((1, 1, 4, 5)), {"pool_height": 2, "pool_width": 2, "stride": 2})

    def test_missing_parameter(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: pool_param\['stride'\] must be "
                                             r"an integer >= 1, got None"):
            forward(np.zeros((1, 1, 4, 4)), {"pool_height": 2, "pool_width": 2})

    def test_wrong_ndim(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: x must be 4-D"):
            forward(np.zeros((4, 4)), {"pool_height": 2, "pool_width": 2, "stride": 2})


@pytest.mark.parametrize("ph, pw, stride", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_pool_backward_through_a_relu_equals_relu_backward_then_the_pool(ph, pw, stride,
                                                                            dtype):
    """keep= (a ReLU's output after the pool) routes relu_backward(dout, keep), NaN
    gradients where the ReLU is off included (NaN * 0): bit for bit in the kernel, to
    rounding in the backends' shared NumPy code (which sums overlapping windows in another
    order)."""
    from dualnet import backend
    from dualnet.backends.base import Backend

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 3 * stride + ph, 2 * stride + pw)).astype(dtype)
    param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    out, cache = layers.max_pool_forward_fast(x, param)
    keep = np.maximum(out, 0)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dout[0, 0, 0, :] = np.nan
    expected = layers.max_pool_backward_fast(layers.relu_backward(dout, keep), cache)
    np.testing.assert_array_equal(layers.max_pool_backward_fast(dout, cache, keep=keep),
                                  expected)
    be = backend.get("numpy")
    np.testing.assert_allclose(
        Backend.maxpool_backward(be, dout, cache[1], x.shape, ph, pw, stride, keep), expected,
        rtol=1e-5, atol=1e-6)


def test_max_pool_backward_keep_must_match_dout():
    x = np.ones((1, 1, 4, 4))
    out, cache = layers.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2,
                                                  "stride": 2})
    with pytest.raises(ValueError, match=r"max_pool_backward_fast: keep must have shape "
                                         r"\(1, 1, 2, 2\), got \(1, 1, 2, 1\)"):
        layers.max_pool_backward_fast(out, cache, keep=out[..., :1])
