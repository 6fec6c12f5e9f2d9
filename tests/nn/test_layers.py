"""Every module: numeric gradients (float64), NHWC == NCHW, modes, bad construction."""

import numpy as np
import pytest

from dualnet import layers, nn

F64 = {"dtype": np.float64}


MODULES = [
    ("Linear", lambda: nn.Linear(12, 5, **F64), (3, 3, 4)),
    ("Conv2d", lambda: nn.Conv2d(3, 4, 3, stride=1, padding=1, **F64), (2, 3, 5, 5)),
    ("Conv2d-rect", lambda: nn.Conv2d(2, 3, (3, 2), stride=2, padding=1, **F64), (2, 2, 5, 6)),
    ("Conv2d-no-bias", lambda: nn.Conv2d(3, 4, 3, padding=1, bias=False, **F64), (2, 3, 5, 5)),
    ("Conv2d-no-bias-stride2", lambda: nn.Conv2d(2, 3, 3, stride=2, bias=False, **F64),
     (2, 2, 5, 5)),
    ("MaxPool2d", lambda: nn.MaxPool2d(2), (2, 3, 4, 4)),
    ("MaxPool2d-overlap", lambda: nn.MaxPool2d(3, stride=1), (2, 2, 5, 5)),
    ("AvgPool2d", lambda: nn.AvgPool2d(2), (2, 3, 4, 6)),
    # PyTorch's floor rule: trailing rows/columns no window reaches, and padding
    ("MaxPool2d-floor", lambda: nn.MaxPool2d(2), (2, 2, 7, 5)),
    ("MaxPool2d-floor-pad", lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 2, 6, 7)),
    ("AvgPool2d-floor", lambda: nn.AvgPool2d(3, stride=2), (2, 2, 6, 8)),
    ("AvgPool2d-floor-pad", lambda: nn.AvgPool2d(2, padding=1), (2, 2, 5, 4)),
    ("AdaptiveAvgPool2d-1", lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 4, 5)),
    ("AdaptiveAvgPool2d-2x3", lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 4, 6)),
    ("GlobalAvgPool2d", lambda: nn.GlobalAvgPool2d(), (2, 3, 4, 5)),
    ("BatchNorm1d", lambda: nn.BatchNorm1d(6, **F64), (5, 6)),
    ("BatchNorm2d", lambda: nn.BatchNorm2d(3, **F64), (4, 3, 3, 3)),
    ("LayerNorm", lambda: nn.LayerNorm(6, **F64), (5, 6)),
    ("GroupNorm", lambda: nn.GroupNorm(2, 4, **F64), (2, 4, 3, 3)),
    ("Dropout", lambda: nn.Dropout(0.3, seed=5), (6, 7)),
    ("ReLU", lambda: nn.ReLU(), (4, 5)),
    ("LeakyReLU", lambda: nn.LeakyReLU(0.1), (4, 5)),
    ("Sigmoid", lambda: nn.Sigmoid(), (4, 5)),
    ("Tanh", lambda: nn.Tanh(), (4, 5)),
    ("Flatten", lambda: nn.Flatten(), (2, 3, 2, 2)),
    ("Sequential", lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, **F64), nn.ReLU(),
                                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 4, **F64)),
     (2, 2, 4, 4)),
    ("Residual", lambda: nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, **F64),
                                                   nn.Tanh())), (2, 2, 4, 4)),
]


@pytest.mark.parametrize("name, make, shape", MODULES, ids=[m[0] for m in MODULES])
def test_numeric_gradients(name, make, shape, gradcheck):
    np.random.seed(231)
    x = np.random.randn(*shape)
    x[np.abs(x) < 1e-3] = 0.5  # away from ReLU's kink
    gradcheck(make(), x)


@pytest.mark.parametrize("make", [
    lambda fmt: nn.Conv2d(3, 4, 3, stride=2, padding=1, data_format=fmt, **F64),
    lambda fmt: nn.MaxPool2d(3, stride=2, data_format=fmt),
    lambda fmt: nn.AvgPool2d(3, stride=1, data_format=fmt),
    lambda fmt: nn.GlobalAvgPool2d(data_format=fmt),
    lambda fmt: nn.Conv2d(3, 2, 3, padding=1, bias=False, data_format=fmt, **F64),
    lambda fmt: nn.MaxPool2d(2, padding=1, data_format=fmt),
    lambda fmt: nn.AvgPool2d(3, stride=2, padding=1, data_format=fmt),
    lambda fmt: nn.AdaptiveAvgPool2d(1, data_format=fmt),
])
def test_nhwc_agrees_with_nchw(make):
    rng = np.random.RandomState(0)
    x = rng.randn(2, 3, 7, 7)
    nchw, nhwc = make("NCHW"), make("NHWC")
    if "weight" in nchw.params:  # same filters, given in the (kh, kw, in, out) layout
        nhwc.params["weight"] = nchw.params["weight"].transpose(2, 3, 1, 0).copy()
    out = nchw.forward(x)
    out_nhwc = nhwc.forward(x.transpose(0, 2, 3, 1))
    spatial = out.ndim == 4
    np.testing.assert_allclose(out_nhwc, out.transpose(0, 2, 3, 1) if spatial else out,
                               rtol=1e-12)
    dout = rng.randn(*out.shape)
    dx = nchw.backward(dout)
    dx_nhwc = nhwc.backward(dout.transpose(0, 2, 3, 1) if spatial else dout)
    np.testing.assert_allclose(dx_nhwc, dx.transpose(0, 2, 3, 1), rtol=1e-12)
    if "weight" in nchw.params:
        np.testing.assert_allclose(nhwc.grads["weight"],
                                   nchw.grads["weight"].transpose(2, 3, 1, 0), rtol=1e-12)
    if "bias" in nchw.params:
        np.testing.assert_allclose(nhwc.grads["bias"], nchw.grads["bias"], rtol=1e-12)


def test_nhwc_conv_gradients(gradcheck):
    np.random.seed(3)
    gradcheck(nn.Conv2d(2, 3, 3, padding=1, data_format="NHWC", **F64),
                  np.random.randn(2, 4, 4, 2))


def test_dropout_drops_fraction_p_in_train_and_nothing_in_eval():
    x = np.ones((400, 400), np.float32)
    drop = nn.Dropout(0.3)
    out = drop.forward(x)
    assert abs((out == 0).mean() - 0.3) < 0.01  # p is the DROP probability here
    assert out.dtype == np.float32
    drop.eval()
    np.testing.assert_array_equal(drop.forward(x), x)


def test_batchnorm_eval_uses_running_statistics():
    rng = np.random.RandomState(0)
    bn = nn.BatchNorm1d(3, momentum=0.0, **F64)  # momentum 0: running = last batch
    x = 5 + 2 * rng.randn(50, 3)
    bn.train().forward(x)
    np.testing.assert_allclose(bn.state_dict()["running_mean"], x.mean(axis=0))
    out = bn.eval().forward(x)  # with the batch's own statistics, as in train mode
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-3)
    shifted = bn.forward(x + 10)  # eval does not re-center on the new batch
    np.testing.assert_allclose(shifted.mean(axis=0), 10 / x.std(axis=0), rtol=1e-3)


def test_float32_modules_compute_in_float32():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    x = np.random.RandomState(0).randn(2, 1, 4, 4).astype(np.float32)
    out = model.forward(x)
    assert out.dtype == np.float32
    assert model.backward(np.ones_like(out)).dtype == np.float32
    assert all(g.dtype == np.float32 for g in model.grads.values())


@pytest.mark.parametrize("make, error, match", [
    (lambda: nn.Linear(0, 3), ValueError, "Linear: in_features must be an integer >= 1, got 0"),
    (lambda: nn.Linear(3, 2.5), ValueError, "Linear: out_features must be an integer"),
    (lambda: nn.Conv2d(3, 4, 0), ValueError, "Conv2d: kernel_size must be an integer >= 1"),
    (lambda: nn.Conv2d(3, 4, (3, 3, 3)), ValueError, "Conv2d: kernel_size must be an int or a pair"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), ValueError, "Conv2d: padding must be an integer >= 0"),
    (lambda: nn.Conv2d(3, 4, 3, data_format="CHW"), ValueError, "Conv2d: data_format must be"),
    (lambda: nn.Linear(3, 4, weight_scale=-1), ValueError, "Linear: weight_scale must be positive"),
    (lambda: nn.MaxPool2d(2, stride=0), ValueError, "MaxPool2d: stride must be an integer >= 1"),
    (lambda: nn.GroupNorm(3, 4), ValueError, "GroupNorm: num_groups=3 must divide num_channels=4"),
    (lambda: nn.Dropout(1.0), ValueError, r"Dropout: p is the DROP probability and must be in \[0, 1\)"),
    (lambda: nn.BatchNorm2d(-2), ValueError, "BatchNorm2d: num_features must be an integer >= 1"),
    (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, "Sequential: child '1' is a str"),
    (lambda: nn.Residual(lambda x: x), TypeError, "Residual: body must be a dualnet.nn.Module"),
    (lambda: nn.Conv2d(3, 4, 3, bias=None), TypeError, "Conv2d: bias must be True or False"),
    (lambda: nn.Conv2d(3, 4, 3, init_mode="fan_avg"), ValueError,
     "Conv2d: init_mode must be 'fan_in' or 'fan_out', got 'fan_avg'"),
    (lambda: nn.Linear(3, 4, weight_scale=1e-2, init_mode="fan_out"), ValueError,
     "Linear: init_mode='fan_out' applies to the 'he' and 'xavier' rules, not to a fixed "
     "weight_scale=0.01"),
    (lambda: nn.Linear(3, 4, weight_scale="kaiming"), ValueError,
     "Linear: weight_scale must be a number, 'he' or 'xavier', got 'kaiming'"),
    (lambda: nn.MaxPool2d(3, padding=2), ValueError,
     r"MaxPool2d: padding must be at most half of kernel_size \(3, 3\), got 2"),
    (lambda: nn.AvgPool2d(2, padding=-1), ValueError, "AvgPool2d: padding must be an integer >= 0"),
    (lambda: nn.MaxPool2d(2, ceil_mode="yes"), TypeError,
     "MaxPool2d: ceil_mode must be True or False, got 'yes'"),
    (lambda: nn.AdaptiveAvgPool2d(0), ValueError,
     "AdaptiveAvgPool2d: output_size must be an integer >= 1, got 0"),
])
def test_bad_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_residual_refuses_a_shape_changing_body():
    block = nn.Residual(nn.Conv2d(2, 3, 3, padding=1))
    with pytest.raises(ValueError, match=r"Residual: body maps \(1, 2, 4, 4\) to \(1, 3, 4, 4\)"):
        block.forward(np.zeros((1, 2, 4, 4), np.float32))


def test_layer_errors_name_the_functional_layer():
    with pytest.raises(ValueError, match="conv_forward_fast: channel mismatch"):
        nn.Conv2d(3, 4, 3).forward(np.zeros((1, 2, 5, 5), np.float32))


# -- pools: PyTorch's floor rule over the course's strict functional layers -------------------

def _pool_reference(x, k, stride, pad, reduce, fill):
    """Pooling written from PyTorch's definition, independently of dualnet: pad with `fill`,
    Ho = (H + 2*pad - k) // stride + 1, each output `reduce` of its k x k window."""
    N, C, H, W = x.shape
    padded = np.full((N, C, H + 2 * pad, W + 2 * pad), fill, dtype=x.dtype)
    padded[:, :, pad:pad + H, pad:pad + W] = x
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            window = padded[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = reduce(window.reshape(N, C, -1), axis=2)
    return out


@pytest.mark.parametrize("kind, cls, reduce, fill", [
    ("max", nn.MaxPool2d, np.max, -np.inf), ("avg", nn.AvgPool2d, np.mean, 0.0)])
@pytest.mark.parametrize("k, stride, pad, H, W", [
    (2, 2, 0, 7, 7), (2, 2, 1, 7, 6), (3, 2, 1, 8, 9), (3, 3, 0, 10, 11), (3, 1, 1, 5, 5),
    (4, 3, 2, 9, 13)])
def test_pools_follow_pytorch_floor_rule(kind, cls, reduce, fill, k, stride, pad, H, W):
    x = np.random.RandomState(k * 100 + H).randn(2, 3, H, W)
    out = cls(k, stride=stride, padding=pad).forward(x)
    assert out.shape == (2, 3, (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1)
    np.testing.assert_allclose(out, _pool_reference(x, k, stride, pad, reduce, fill),
                               rtol=1e-12)


def _ceil_pool_reference(x, k, stride, pad, kind):
    """PyTorch's ceil_mode=True written from its definition, independently of dualnet: the
    ceiling of the window count, less one where the last window would start past the input
    and its left padding; a window running past the padded input holds only what is inside
    (max over it; for avg, its sum over the elements inside the padded input, padding zeros
    counted)."""
    N, C, H, W = x.shape
    fill = -np.inf if kind == "max" else 0.0
    padded = np.full((N, C, H + 2 * pad, W + 2 * pad), fill, dtype=x.dtype)
    padded[:, :, pad:pad + H, pad:pad + W] = x

    def count(size):
        out = -(-(size + 2 * pad - k) // stride) + 1
        return out - 1 if (out - 1) * stride >= size + pad else out

    Ho, Wo = count(H), count(W)
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            window = padded[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            flat = window.reshape(N, C, -1)
            out[:, :, i, j] = flat.max(axis=2) if kind == "max" else flat.mean(axis=2)
    return out


@pytest.mark.parametrize("kind, cls", [("max", nn.MaxPool2d), ("avg", nn.AvgPool2d)])
@pytest.mark.parametrize("k, stride, pad, H, W", [
    (2, 2, 0, 7, 7), (3, 2, 1, 8, 9), (3, 3, 0, 10, 11), (2, 2, 1, 6, 5), (3, 2, 0, 6, 6)])
def test_pools_with_ceil_mode_follow_pytorch(gradcheck, kind, cls, k, stride, pad, H, W):
    x = np.random.RandomState(k * 10 + H).randn(2, 3, H, W)
    pool = cls(k, stride=stride, padding=pad, ceil_mode=True)
    out = pool.forward(x)
    want = _ceil_pool_reference(x, k, stride, pad, kind)
    assert out.shape == want.shape
    np.testing.assert_allclose(out, want, rtol=1e-12)
    gradcheck(pool, x)


def test_maxpool_2x2_on_7x7_with_ceil_mode_gives_4x4():
    x = np.arange(49.0).reshape(1, 1, 7, 7)
    out = nn.MaxPool2d(2, ceil_mode=True).forward(x)
    assert out.shape == (1, 1, 4, 4)
    assert out[0, 0, 3, 3] == 48.0  # the last window holds the corner element alone
    # PyTorch: AvgPool2d(2, ceil_mode=True) averages the corner window over its one element
    assert nn.AvgPool2d(2, ceil_mode=True).forward(x)[0, 0, 3, 3] == 48.0


def test_maxpool_2x2_on_7x7_gives_3x3_and_ignores_the_last_row_and_column():
    x = np.random.RandomState(0).randn(1, 2, 7, 7)
    pool = nn.MaxPool2d(2)
    out = pool.forward(x)
    assert out.shape == (1, 2, 3, 3)
    np.testing.assert_array_equal(out, x[:, :, :6, :6].reshape(1, 2, 3, 2, 3, 2).max(axis=(3, 5)))
    dx = pool.backward(np.ones_like(out))
    assert dx.shape == x.shape
    assert not dx[:, :, 6, :].any() and not dx[:, :, :, 6].any()
    assert dx.sum() == out.size  # each window's gradient went to one element


def test_avgpool_padding_counts_as_zeros_like_pytorch():
    # PyTorch: AvgPool2d(3, stride=2, padding=1)(ones(1, 1, 4, 4)) (count_include_pad=True)
    # averages over all 9 window positions: corner windows hold 4 ones, edge windows 6
    out = nn.AvgPool2d(3, stride=2, padding=1).forward(np.ones((1, 1, 4, 4)))
    np.testing.assert_allclose(out[0, 0], [[4 / 9, 6 / 9], [6 / 9, 1.0]], rtol=1e-12)


def test_maxpool_padding_never_wins():
    x = -1 - np.random.RandomState(0).rand(1, 1, 4, 4)  # all below zero
    out = nn.MaxPool2d(2, padding=1).forward(x)
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0, 0, 0] == x[0, 0, 0, 0]  # a corner window holds one real element
    assert (out < -1).all()


def test_functional_pools_keep_the_course_rule():
    x = np.zeros((1, 1, 7, 7))
    assert nn.MaxPool2d(2).forward(x).shape == (1, 1, 3, 3)
    from dualnet import layers

    with pytest.raises(ValueError, match="max_pool_forward_fast: output height is not integral"):
        layers.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})


def test_pool_window_larger_than_the_padded_input():
    with pytest.raises(ValueError, match="AvgPool2d: kernel_size 4 is larger than the padded "
                                         "input height 3"):
        nn.AvgPool2d(4, padding=0).forward(np.zeros((1, 1, 3, 8)))


def test_adaptive_avg_pool_averages_blocks():
    x = np.random.RandomState(0).randn(2, 3, 4, 6)
    out = nn.AdaptiveAvgPool2d((2, 3)).forward(x)
    assert out.shape == (2, 3, 2, 3)
    assert np.isclose(out[1, 2, 1, 2], x[1, 2, 2:4, 4:6].mean())
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d(1).forward(x)[:, :, 0, 0],
                               x.mean(axis=(2, 3)), rtol=1e-12)
    x32 = x.astype(np.float32)
    pool = nn.AdaptiveAvgPool2d(2)
    assert pool.forward(x32).dtype == np.float32
    assert pool.backward(np.ones((2, 3, 2, 2), np.float32)).dtype == np.float32


def test_adaptive_avg_pool_refuses_sizes_that_do_not_divide():
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d: output_size \(3, 3\) must divide "
                                         r"the input's spatial size \(7, 7\)"):
        nn.AdaptiveAvgPool2d(3).forward(np.zeros((1, 2, 7, 7)))


# -- Conv2d without bias ----------------------------------------------------------------------

def test_conv_without_bias_has_no_bias_anywhere():
    np.random.seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False, **F64)
    assert list(conv.params) == ["weight"]
    assert list(conv.state_dict()) == ["weight"]
    x = np.random.randn(2, 3, 5, 5)
    out = conv.forward(x)
    conv.backward(np.ones_like(out))
    assert list(conv.grads) == ["weight"]
    # the same filters with a zero bias compute the same thing
    with_bias = nn.Conv2d(3, 4, 3, padding=1, **F64)
    with_bias.params["weight"] = conv.params["weight"]
    with_bias.params["bias"] = np.zeros(4)
    np.testing.assert_array_equal(out, with_bias.forward(x))
    net = nn.Sequential(conv, nn.BatchNorm2d(4, **F64))
    assert net.regularized() == ["0.weight"]
    with pytest.raises(KeyError, match=r"unexpected keys \['0.bias'\]"):
        net.load_state_dict({**net.state_dict(), "0.bias": np.zeros(4)})


# -- initialization -----------------------------------------------------------------------------

@pytest.mark.parametrize("make, fan", [
    (lambda: nn.Conv2d(64, 256, 3, init_mode="fan_out", **F64), 256 * 9),
    (lambda: nn.Conv2d(64, 256, 3, **F64), 64 * 9),  # fan_in, the default
    (lambda: nn.Conv2d(64, 256, 3, data_format="NHWC", init_mode="fan_out", **F64), 256 * 9),
    (lambda: nn.Linear(1000, 250, weight_scale="he", init_mode="fan_out", **F64), 250),
    (lambda: nn.Linear(1000, 250, **F64), 1000),
    # groups: PyTorch's fan_in is (in / groups) * kh * kw, fan_out stays out * kh * kw
    (lambda: nn.Conv2d(256, 256, 3, groups=4, **F64), 64 * 9),
    (lambda: nn.Conv2d(512, 512, 3, groups=512, init_mode="fan_out", **F64), 512 * 9),
])
def test_he_init_std_matches_kaiming_normal(make, fan):
    np.random.seed(0)
    w = make().params["weight"]
    n = w.size  # >= 147456 draws
    expected = np.sqrt(2.0 / fan)  # PyTorch: kaiming_normal_(w, mode=..., nonlinearity='relu')
    # the sample std of n normal draws has a standard error of about std / sqrt(2n)
    assert abs(w.std() - expected) < 4 * expected / np.sqrt(2 * n)
    assert abs(w.mean()) < 4 * expected / np.sqrt(n)


def test_xavier_with_fan_out_divides_by_the_fan_out():
    np.random.seed(0)
    w = nn.Conv2d(32, 128, 3, weight_scale="xavier", init_mode="fan_out", **F64).params["weight"]
    expected = np.sqrt(1.0 / (128 * 9))
    assert abs(w.std() - expected) < 4 * expected / np.sqrt(2 * w.size)


# -- Conv2d: PyTorch's output size rule and groups --------------------------------------------

def test_conv2d_downsamples_even_sizes_like_pytorch():
    """3x3, stride 2, padding 1 on 32x32: the ResNet downsampling step gives 16x16."""
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, **F64)
    out = conv(np.random.default_rng(0).standard_normal((2, 3, 32, 32)))
    assert out.shape == (2, 8, 16, 16)


@pytest.mark.parametrize("groups, out_channels", [(1, 4), (2, 6), (4, 4), (4, 8)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_with_groups_equals_the_functional_layer_and_gradchecks(
        gradcheck, groups, out_channels, stride, bias):
    np.random.seed(3)
    conv = nn.Conv2d(4, out_channels, 3, stride=stride, padding=1, groups=groups, bias=bias,
                     **F64)
    assert conv.params["weight"].shape == (out_channels, 4 // groups, 3, 3)
    x = np.random.default_rng(4).standard_normal((2, 4, 7, 7))
    b = conv.params["bias"] if bias else np.zeros(out_channels)
    want, _ = layers.conv_forward_naive(x, conv.params["weight"], b,
                                        {"stride": stride, "pad": 1, "groups": groups,
                                         "rounding": "floor"})
    np.testing.assert_allclose(conv(x), want, rtol=1e-12, atol=1e-12)
    gradcheck(conv, x)


def test_conv2d_refuses_groups_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match="Conv2d: groups=4 must divide in_channels=6 and "
                                         "out_channels=8"):
        nn.Conv2d(6, 8, 3, groups=4)


def test_conv2d_groups_channels_last():
    np.random.seed(5)
    nhwc = nn.Conv2d(4, 4, 3, padding=1, groups=2, data_format="NHWC", **F64)
    assert nhwc.params["weight"].shape == (3, 3, 2, 4)
    nchw = nn.Conv2d(4, 4, 3, padding=1, groups=2, **F64)
    nchw.params = {"weight": nhwc.params["weight"].transpose(3, 2, 0, 1).copy(),
                   "bias": nhwc.params["bias"]}
    x = np.random.default_rng(6).standard_normal((2, 5, 5, 4))
    np.testing.assert_allclose(nhwc(x), nchw(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1),
                               rtol=1e-12, atol=1e-12)
