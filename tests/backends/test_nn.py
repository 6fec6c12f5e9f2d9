"""The object API's composite modules give the numpy backend's numbers on every backend:
bias-free convolutions, pools with PyTorch's padding and floor rule, adaptive pooling,
residual projection shortcuts, gates and squeeze-excitation, in one network."""

import numpy as np

from dualnet import backend, nn


def _net(dtype):
    """Every new module at least once; a 9x9 input makes both pools floor."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False, init_mode="fan_out", dtype=dtype),
        nn.BatchNorm2d(8, dtype=dtype),
        nn.MaxPool2d(2, padding=1),                                   # 11x11 -> 5x5
        nn.Residual(nn.Sequential(nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1, bias=False,
                                                       dtype=dtype),
                                  nn.SqueezeExcitation(12, reduction=4, dtype=dtype)),
                    shortcut=nn.Conv2d(8, 12, 1, bias=False, dtype=dtype)),
        nn.Gate(nn.Sequential(nn.Conv2d(12, 1, 3, padding=1, dtype=dtype), nn.Sigmoid())),
        nn.AvgPool2d(2, padding=1),                                   # 7x7 -> 3x3
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5, dtype=dtype))


def _build(be, dtype):
    np.random.seed(231)
    with backend.use(be.name):
        return _net(dtype)


def test_new_modules_agree_with_numpy(be, dtype, assert_agrees):
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((4, 3, 9, 9)).astype(dtype), rng.integers(0, 5, size=4)
    ref, model = _build(backend.get("numpy"), dtype), _build(be, dtype)
    assert model.backend is be
    loss, grads = model.loss(be.asarray(X), be.asarray(y))
    dx = model.backward(model.criterion.backward())
    with backend.use("numpy"):
        ref_loss, ref_grads = ref.loss(X, y)
        ref_dx = ref.backward(ref.criterion.backward())
    assert_agrees(be.to_numpy(loss), ref_loss, dtype, "loss")
    assert_agrees(be.to_numpy(dx), ref_dx, dtype, "dx")
    assert sorted(grads) == sorted(ref_grads) == sorted(model.params)
    for k, g in grads.items():
        assert_agrees(be.to_numpy(g), ref_grads[k], dtype, f"grad {k}")
