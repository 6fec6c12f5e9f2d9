"""Every module: numeric gradients (float64), NHWC == NCHW, modes, bad construction."""

import numpy as np
import pytest

from dualnet import nn
from dualnet.gradient_check import eval_numerical_gradient_array, rel_error

F64 = {"dtype": np.float64}


def _check_module(module, x, tol=1e-7):
    """Numeric vs analytic gradient for the input and every parameter of `module`."""
    rng = np.random.RandomState(1)
    out = module.forward(x)
    dout = rng.randn(*out.shape)
    module.forward(x)
    dx = module.backward(dout)
    assert dx.shape == x.shape
    numeric_dx = eval_numerical_gradient_array(lambda v: module.forward(v), x, dout)
    assert rel_error(dx, numeric_dx) < tol, "input"
    grads = module.grads
    assert set(grads) == set(module.params)
    for name, p in module.parameters():
        numeric = eval_numerical_gradient_array(lambda _: module.forward(x), p, dout)
        assert grads[name].shape == p.shape
        assert rel_error(grads[name], numeric) < tol, name


MODULES = [
    ("Linear", lambda: nn.Linear(12, 5, **F64), (3, 3, 4)),
    ("Conv2d", lambda: nn.Conv2d(3, 4, 3, stride=1, padding=1, **F64), (2, 3, 5, 5)),
    ("Conv2d-rect", lambda: nn.Conv2d(2, 3, (3, 2), stride=2, padding=1, **F64), (2, 2, 5, 6)),
    ("MaxPool2d", lambda: nn.MaxPool2d(2), (2, 3, 4, 4)),
    ("MaxPool2d-overlap", lambda: nn.MaxPool2d(3, stride=1), (2, 2, 5, 5)),
    ("AvgPool2d", lambda: nn.AvgPool2d(2), (2, 3, 4, 6)),
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
def test_numeric_gradients(name, make, shape):
    np.random.seed(231)
    x = np.random.randn(*shape)
    x[np.abs(x) < 1e-3] = 0.5  # away from ReLU's kink
    _check_module(make(), x)


@pytest.mark.parametrize("make", [
    lambda fmt: nn.Conv2d(3, 4, 3, stride=2, padding=1, data_format=fmt, **F64),
    lambda fmt: nn.MaxPool2d(3, stride=2, data_format=fmt),
    lambda fmt: nn.AvgPool2d(3, stride=1, data_format=fmt),
    lambda fmt: nn.GlobalAvgPool2d(data_format=fmt),
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
        np.testing.assert_allclose(nhwc.grads["bias"], nchw.grads["bias"], rtol=1e-12)


def test_nhwc_conv_gradients():
    np.random.seed(3)
    _check_module(nn.Conv2d(2, 3, 3, padding=1, data_format="NHWC", **F64),
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
