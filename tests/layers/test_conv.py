"""Convolution: naive reference vs published values and an independent einsum, gradients,
fast == naive on random geometry, dtypes and error messages."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualnet import backend
from dualnet.gradient_check import eval_numerical_gradient_array, rel_error
from dualnet.layers import (
    conv_backward_fast,
    conv_backward_naive,
    conv_forward_fast,
    conv_forward_naive,
)


def einsum_conv(x, w, b, stride, pad):
    """An independent reference: sliding windows of the padded input, contracted by einsum."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=(2, 3))
    win = win[:, :, ::stride, ::stride]
    return np.einsum("nchwij,fcij->nfhw", win, w) + b[None, :, None, None]


def test_naive_forward_matches_course_values():
    # Inputs and expected output from the CS231n assignment's ConvolutionalNetworks notebook.
    x_shape, w_shape = (2, 3, 4, 4), (3, 3, 4, 4)
    x = np.linspace(-0.1, 0.5, num=np.prod(x_shape)).reshape(x_shape)
    w = np.linspace(-0.2, 0.3, num=np.prod(w_shape)).reshape(w_shape)
    b = np.linspace(-0.1, 0.2, num=3)
    out, _ = conv_forward_naive(x, w, b, {"stride": 2, "pad": 1})
    correct_out = np.array([[[[-0.08759809, -0.10987781], [-0.18387192, -0.2109216]],
                             [[0.21027089, 0.21661097], [0.22847626, 0.23004637]],
                             [[0.50813986, 0.54309974], [0.64082444, 0.67101435]]],
                            [[[-0.98053589, -1.03143541], [-1.19128892, -1.24695841]],
                             [[0.69108355, 0.66880383], [0.59480972, 0.56776003]],
                             [[2.36270298, 2.36904306], [2.38090835, 2.38247847]]]])
    assert rel_error(out, correct_out) < 1e-7


@pytest.mark.parametrize("forward", [conv_forward_naive, conv_forward_fast])
@pytest.mark.parametrize("stride, pad", [(1, 0), (1, 1), (2, 1), (3, 1), (2, 2)])
def test_forward_matches_einsum_reference(forward, stride, pad):
    rng = np.random.RandomState(1)
    x, w, b = rng.randn(2, 3, 7, 7), rng.randn(4, 3, 3, 3), rng.randn(4)
    out, _ = forward(x, w, b, {"stride": stride, "pad": pad})
    assert rel_error(out, einsum_conv(x, w, b, stride, pad)) < 1e-12


@pytest.mark.parametrize("forward, backward", [(conv_forward_naive, conv_backward_naive),
                                               (conv_forward_fast, conv_backward_fast)])
def test_numeric_gradients(forward, backward):
    rng = np.random.RandomState(231)
    x, w, b = rng.randn(4, 3, 5, 5), rng.randn(2, 3, 3, 3), rng.randn(2)
    dout = rng.randn(4, 2, 5, 5)
    param = {"stride": 1, "pad": 1}
    _, cache = forward(x, w, b, param)
    dx, dw, db = backward(dout, cache)
    # "around 1e-8 or less" in the course; the max over elements lands just above it
    assert rel_error(dx, eval_numerical_gradient_array(lambda v: forward(v, w, b, param)[0], x, dout)) < 5e-8
    assert rel_error(dw, eval_numerical_gradient_array(lambda v: forward(x, v, b, param)[0], w, dout)) < 5e-8
    assert rel_error(db, eval_numerical_gradient_array(lambda v: forward(x, w, v, param)[0], b, dout)) < 5e-8


@st.composite
def conv_geometry(draw):
    N, C, F = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    HH, WW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    Ho, Wo = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    H = (Ho - 1) * stride + HH - 2 * pad
    W = (Wo - 1) * stride + WW - 2 * pad
    return (N, C, max(H, 1), max(W, 1)), (F, C, HH, WW), stride, pad


def _valid(x_shape, w_shape, stride, pad):
    H, W = x_shape[2:]
    HH, WW = w_shape[2:]
    return (H + 2 * pad - HH) % stride == 0 and (W + 2 * pad - WW) % stride == 0 and \
        H + 2 * pad >= HH and W + 2 * pad >= WW


@settings(max_examples=60, deadline=None)
@given(geometry=conv_geometry(), dtype=st.sampled_from([np.float64, np.float32]),
       seed=st.integers(0, 2**31 - 1))
def test_fast_equals_naive(geometry, dtype, seed):
    x_shape, w_shape, stride, pad = geometry
    if not _valid(x_shape, w_shape, stride, pad):
        return
    rng = np.random.RandomState(seed)
    x, w = rng.randn(*x_shape).astype(dtype), rng.randn(*w_shape).astype(dtype)
    b = rng.randn(w_shape[0]).astype(dtype)
    param = {"stride": stride, "pad": pad}
    out_naive, cache_naive = conv_forward_naive(x, w, b, param)
    out_fast, cache_fast = conv_forward_fast(x, w, b, param)
    dout = rng.randn(*out_naive.shape).astype(dtype)
    tol = 1e-9 if dtype == np.float64 else 1e-5
    assert out_fast.dtype == dtype
    np.testing.assert_allclose(out_fast, out_naive, rtol=tol, atol=tol)
    grads_naive = conv_backward_naive(dout, cache_naive)
    grads_fast = conv_backward_fast(dout, cache_fast)
    for g_fast, g_naive in zip(grads_fast, grads_naive, strict=True):
        assert g_fast.dtype == dtype
        np.testing.assert_allclose(g_fast, g_naive, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("forward", [conv_forward_naive, conv_forward_fast])
def test_non_contiguous_input(forward):
    rng = np.random.RandomState(2)
    x = rng.randn(2, 6, 6, 3).transpose(0, 3, 1, 2)  # NHWC data viewed as NCHW
    w, b = rng.randn(2, 3, 3, 3), rng.randn(2)
    out, _ = forward(x, w, b, {"stride": 1, "pad": 1})
    assert rel_error(out, einsum_conv(np.ascontiguousarray(x), w, b, 1, 1)) < 1e-12


@pytest.mark.parametrize("forward", [conv_forward_naive, conv_forward_fast])
class TestBadInput:
    def test_output_size_not_integral(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: output height is not integral: "
                                             r"\(5 \+ 2\*0 - 2\) / 2 \+ 1 = 2.5"):
            forward(np.zeros((1, 1, 5, 4)), np.zeros((1, 1, 2, 2)), np.zeros(1),
                    {"stride": 2, "pad": 0})

    def test_channel_mismatch(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: channel mismatch: x \(1, 3, 4, 4\)"
                                             r" has C=3 but w \(2, 2, 3, 3\) expects C=2"):
            forward(np.zeros((1, 3, 4, 4)), np.zeros((2, 2, 3, 3)), np.zeros(2),
                    {"stride": 1, "pad": 1})

    def test_wrong_ndim(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: x must be 4-D \(N, C, H, W\), "
                                             r"got shape \(3, 4, 4\)"):
            forward(np.zeros((3, 4, 4)), np.zeros((2, 3, 3, 3)), np.zeros(2), {"stride": 1, "pad": 1})

    def test_dtype_mismatch(self, forward):
        with pytest.raises(TypeError, match=rf"{forward.__name__}: dtype mismatch \(x=float32, "
                                            r"w=float64"):
            forward(np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 1, 3, 3)), np.zeros(1),
                    {"stride": 1, "pad": 1})

    def test_bad_stride(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: conv_param\['stride'\] must be "
                                             r"an integer >= 1, got 0"):
            forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), np.zeros(1),
                    {"stride": 0, "pad": 1})

    def test_window_larger_than_input(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: window 5 is larger than the "
                                             r"padded input height"):
            forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 5, 5)), np.zeros(1),
                    {"stride": 1, "pad": 0})


def test_empty_filters_are_refused_by_name():
    x = np.zeros((1, 3, 4, 4))
    for forward in (conv_forward_naive, conv_forward_fast):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: w must have no empty axis, "
                                             r"got shape \(0, 3, 3, 3\)"):
            forward(x, np.zeros((0, 3, 3, 3)), np.zeros(0), {"stride": 1, "pad": 1})


def test_backward_fast_refuses_a_wrong_dout_or_a_foreign_cache():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    out, cache = conv_forward_fast(x, w, np.zeros(4), {"stride": 2, "pad": 1})
    assert out.shape == (2, 4, 3, 3)
    with pytest.raises(ValueError, match=r"conv_backward_fast: dout must have shape "
                                         r"\(2, 4, 3, 3\), got \(2, 4, 3, 4\)"):
        conv_backward_fast(np.zeros((2, 4, 3, 4)), cache)
    naive_cache = conv_forward_naive(x, w, np.zeros(4), {"stride": 2, "pad": 1})[1]
    with pytest.raises(TypeError, match="conv_backward_fast: cache must be the cache "
                                        "conv_forward_fast returned, got tuple"):
        conv_backward_fast(out, naive_cache)


def test_an_output_too_large_for_memory_names_the_layer_and_its_parameters():
    x, w = np.zeros((2, 3, 8, 8)), np.zeros((4, 3, 3, 3))
    with pytest.raises(MemoryError, match=r"conv_forward_fast: no memory for an output of "
                                          r"shape \(2, 4, 2000006, 2000006\)"):
        conv_forward_fast(x, w, np.zeros(4), {"stride": 1, "pad": 10**6})


# -- groups and PyTorch's floor rule --------------------------------------------------------
def grouped_einsum_conv(x, w, b, stride, pad, groups, floor=False):
    """Independent reference for groups and the floor rule: each group's channels convolved
    with its filters by `einsum_conv`, on the padded input cut to the rows and columns the
    windows reach (so a floor convolution becomes an exact one without padding)."""
    HH, WW = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = ((size - k) // stride + 1 for size, k in zip(xp.shape[2:], (HH, WW), strict=True))
    if not floor:
        assert (xp.shape[2] - HH) % stride == 0 and (xp.shape[3] - WW) % stride == 0
    xp = xp[:, :, :(Ho - 1) * stride + HH, :(Wo - 1) * stride + WW]
    Cg, Fg = x.shape[1] // groups, w.shape[0] // groups
    return np.concatenate([
        einsum_conv(xp[:, g * Cg:(g + 1) * Cg], w[g * Fg:(g + 1) * Fg], b[g * Fg:(g + 1) * Fg],
                    stride, 0) for g in range(groups)], axis=1)


GROUPED = [  # (x shape, filters, groups, stride, pad, rounding)
    ((2, 4, 6, 6), 4, 2, 1, 1, "exact"),
    ((2, 4, 7, 7), 6, 2, 2, 1, "exact"),
    ((2, 3, 5, 5), 3, 3, 1, 1, "exact"),     # depthwise
    ((2, 3, 7, 7), 6, 3, 2, 1, "exact"),     # depthwise, channel multiplier 2
    ((2, 4, 8, 8), 4, 4, 2, 1, "floor"),     # depthwise, ResNet's downsampling on an even size
    ((2, 6, 8, 7), 4, 2, 2, 1, "floor"),
    ((2, 2, 8, 8), 3, 1, 2, 1, "floor"),     # one group, floor
]


@pytest.mark.parametrize("forward", [conv_forward_naive, conv_forward_fast])
@pytest.mark.parametrize("x_shape, F, groups, stride, pad, rounding", GROUPED)
def test_groups_and_floor_match_the_grouped_einsum(forward, x_shape, F, groups, stride, pad,
                                                   rounding):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((F, x_shape[1] // groups, 3, 3))
    b = rng.standard_normal(F)
    param = {"stride": stride, "pad": pad, "groups": groups, "rounding": rounding}
    out, _ = forward(x, w, b, param)
    want = grouped_einsum_conv(x, w, b, stride, pad, groups, floor=rounding == "floor")
    assert out.shape == want.shape
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("forward, backward", [(conv_forward_naive, conv_backward_naive),
                                               (conv_forward_fast, conv_backward_fast)])
@pytest.mark.parametrize("groups, stride, rounding", [(1, 2, "floor"), (2, 1, "exact"),
                                                      (2, 2, "floor"), (4, 1, "exact"),
                                                      (4, 2, "floor")])
def test_grouped_numeric_gradients(forward, backward, groups, stride, rounding):
    rng = np.random.RandomState(17)
    x, w, b = rng.randn(2, 4, 6, 6), rng.randn(4, 4 // groups, 3, 3), rng.randn(4)
    param = {"stride": stride, "pad": 1, "groups": groups, "rounding": rounding}
    out, cache = forward(x, w, b, param)
    dout = rng.randn(*out.shape)
    dx, dw, db = backward(dout, cache)
    assert rel_error(dx, eval_numerical_gradient_array(lambda v: forward(v, w, b, param)[0], x, dout)) < 5e-8
    assert rel_error(dw, eval_numerical_gradient_array(lambda v: forward(x, v, b, param)[0], w, dout)) < 5e-8
    assert rel_error(db, eval_numerical_gradient_array(lambda v: forward(x, w, v, param)[0], b, dout)) < 5e-8


@st.composite
def grouped_geometry(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    C = groups * draw(st.integers(1, 2))
    depthwise = draw(st.booleans())
    if depthwise:
        groups = C
    F = groups * draw(st.integers(1, 2))
    HH, WW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    H, W = draw(st.integers(max(1, HH - 2 * pad), 9)), draw(st.integers(max(1, WW - 2 * pad), 9))
    return (draw(st.integers(1, 3)), C, H, W), (F, C // groups, HH, WW), stride, pad, groups


@pytest.mark.parametrize("name", [n for n in backend.available() if n != "cupy"])
@settings(max_examples=40, deadline=None)
@given(geometry=grouped_geometry(), dtype=st.sampled_from([np.float64, np.float32]),
       seed=st.integers(0, 2**31 - 1))
def test_grouped_fast_equals_naive_with_the_floor_rule(name, geometry, dtype, seed):
    """On the numpy backend and on cuda-emu (conv.cu's kernels, for host arrays)."""
    with backend.use(name):
        _check_grouped_fast_against_naive(geometry, dtype, seed)


def _check_grouped_fast_against_naive(geometry, dtype, seed):
    x_shape, w_shape, stride, pad, groups = geometry
    rng = np.random.RandomState(seed)
    x, w = rng.randn(*x_shape).astype(dtype), rng.randn(*w_shape).astype(dtype)
    b = rng.randn(w_shape[0]).astype(dtype)
    param = {"stride": stride, "pad": pad, "groups": groups, "rounding": "floor"}
    out_naive, cache_naive = conv_forward_naive(x, w, b, param)
    out_fast, cache_fast = conv_forward_fast(x, w, b, param)
    tol = 1e-9 if dtype == np.float64 else 1e-5
    assert out_fast.dtype == dtype
    np.testing.assert_allclose(out_fast, out_naive, rtol=tol, atol=tol)
    dout = rng.randn(*out_naive.shape).astype(dtype)
    for g_fast, g_naive in zip(conv_backward_fast(dout, cache_fast),
                               conv_backward_naive(dout, cache_naive), strict=True):
        assert g_fast.dtype == dtype
        np.testing.assert_allclose(g_fast, g_naive, rtol=tol, atol=tol * 10)
    dx, dw, _ = conv_backward_fast(dout, cache_fast, need_dx=False)
    assert dx is None
    np.testing.assert_allclose(dw, conv_backward_fast(dout, cache_fast)[1], rtol=0, atol=0)


def test_groups_pick_the_depthwise_or_the_grouped_algorithm():
    x = np.zeros((2, 4, 6, 6))
    b = np.zeros(4)
    param = {"stride": 1, "pad": 1}
    assert conv_forward_fast(x, np.zeros((4, 1, 3, 3)), b, {**param, "groups": 4})[1].algorithm \
        == "depthwise"
    assert conv_forward_fast(x, np.zeros((4, 2, 3, 3)), b, {**param, "groups": 2})[1].algorithm \
        == "grouped"


@pytest.mark.parametrize("forward", [conv_forward_naive, conv_forward_fast])
class TestBadGroups:
    def test_groups_must_divide_channels_and_filters(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: conv_param\['groups'\] = 2 "
                                             r"must divide both the input channels of x "
                                             r"\(1, 3, 4, 4\) and the filters of w"):
            forward(np.zeros((1, 3, 4, 4)), np.zeros((4, 1, 3, 3)), np.zeros(4),
                    {"stride": 1, "pad": 1, "groups": 2})

    def test_weights_must_have_the_group_width(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: channel mismatch: x "
                                             r"\(1, 4, 4, 4\) has C=4 but w \(4, 1, 3, 3\) with "
                                             r"groups=2 expects C=2"):
            forward(np.zeros((1, 4, 4, 4)), np.zeros((4, 1, 3, 3)), np.zeros(4),
                    {"stride": 1, "pad": 1, "groups": 2})

    def test_rounding_must_be_known(self, forward):
        with pytest.raises(ValueError, match=rf"{forward.__name__}: conv_param\['rounding'\] "
                                             r"must be 'exact' or 'floor', got 'ceil'"):
            forward(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), np.zeros(1),
                    {"stride": 1, "pad": 1, "rounding": "ceil"})

    def test_exact_rounding_stays_the_default(self, forward):
        with pytest.raises(ValueError, match="output height is not integral"):
            forward(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 3, 3)), np.zeros(1),
                    {"stride": 2, "pad": 1})
