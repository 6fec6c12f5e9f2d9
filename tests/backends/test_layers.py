"""Every layer's forward and backward gives the numpy backend's answer on every other backend.

Each case builds host inputs; the same values run once on the `numpy` backend (the
reference) and once on the backend under test, contiguous and as strided views. Every output,
every gradient and every updated parameter dict (batchnorm running statistics) must agree to
the dtype's tolerance and keep the input dtype.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import dualnet.layers as L
from dualnet import backend

CONV = {"stride": 1, "pad": 1}
CONV_STRIDED = {"stride": 2, "pad": 1}
CONV_FLOOR = {"stride": 2, "pad": 1, "rounding": "floor"}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}
POOL_OVERLAP = {"pool_height": 3, "pool_width": 3, "stride": 1}


@dataclass
class Case:
    """`forward(*make(rng, dtype))`, then `backward(dout, cache)` (None: forward returns
    (loss, dx), as the losses do). `random`: draws random numbers, so only host backends
    (which share NumPy's generator) must reproduce it exactly."""

    id: str
    forward: Callable
    backward: Callable | None
    make: Callable
    random: bool = False


def _x(rng, dtype, *shape):
    return rng.standard_normal(shape).astype(dtype)


def _conv_args(rng, dt, x_shape=(2, 3, 5, 5), filters=4, size=3, groups=1):
    return [_x(rng, dt, *x_shape), _x(rng, dt, filters, x_shape[1] // groups, size, size),
            _x(rng, dt, filters)]


def _bn(mode, channels, dt, rng):
    if mode == "train":
        return {"mode": "train"}
    return {"mode": "test", "running_mean": _x(rng, dt, channels),
            "running_var": np.abs(_x(rng, dt, channels)) + dt.type(0.5)}


CASES = [
    Case("relu", L.relu_forward, L.relu_backward, lambda r, d: [_x(r, d, 3, 4, 5)]),
    Case("leaky_relu", L.leaky_relu_forward, L.leaky_relu_backward,
         lambda r, d: [_x(r, d, 3, 4), 0.1]),
    Case("sigmoid", L.sigmoid_forward, L.sigmoid_backward, lambda r, d: [_x(r, d, 4, 5) * 10]),
    Case("tanh", L.tanh_forward, L.tanh_backward, lambda r, d: [_x(r, d, 4, 5)]),
    Case("affine", L.affine_forward, L.affine_backward,
         lambda r, d: [_x(r, d, 3, 2, 3), _x(r, d, 6, 4), _x(r, d, 4)]),
    Case("conv_naive", L.conv_forward_naive, L.conv_backward_naive,
         lambda r, d: [*_conv_args(r, d, (2, 2, 4, 4), filters=2), CONV]),
    Case("conv_fast", L.conv_forward_fast, L.conv_backward_fast,
         lambda r, d: [*_conv_args(r, d), CONV]),
    Case("conv_fast_strided", L.conv_forward_fast, L.conv_backward_fast,
         lambda r, d: [*_conv_args(r, d, (2, 3, 7, 7)), CONV_STRIDED]),
    Case("conv_fast_floor", L.conv_forward_fast, L.conv_backward_fast,
         lambda r, d: [*_conv_args(r, d, (2, 3, 8, 8)), CONV_FLOOR]),
    Case("conv_fast_grouped", L.conv_forward_fast, L.conv_backward_fast,
         lambda r, d: [*_conv_args(r, d, (2, 4, 6, 6), filters=6, groups=2),
                       {**CONV, "groups": 2}]),
    Case("conv_fast_depthwise", L.conv_forward_fast, L.conv_backward_fast,
         lambda r, d: [*_conv_args(r, d, (2, 4, 6, 6), filters=8, groups=4),
                       {**CONV, "groups": 4}]),
    Case("conv_fast_depthwise_floor", L.conv_forward_fast, L.conv_backward_fast,
         lambda r, d: [*_conv_args(r, d, (2, 4, 8, 8), groups=4), {**CONV_FLOOR, "groups": 4}]),
    Case("dropout_train", L.dropout_forward, L.dropout_backward,
         lambda r, d: [_x(r, d, 4, 6), {"p": 0.7, "mode": "train", "seed": 3}], random=True),
    Case("dropout_test", L.dropout_forward, L.dropout_backward,
         lambda r, d: [_x(r, d, 4, 6), {"p": 0.7, "mode": "test"}]),
    Case("softmax_loss", L.softmax_loss, None,
         lambda r, d: [_x(r, d, 5, 4), r.integers(0, 4, size=5)]),
    Case("svm_loss", L.svm_loss, None,
         lambda r, d: [_x(r, d, 5, 4), r.integers(0, 4, size=5)]),
    Case("batchnorm_train", L.batchnorm_forward, L.batchnorm_backward,
         lambda r, d: [_x(r, d, 6, 5), _x(r, d, 5), _x(r, d, 5), _bn("train", 5, d, r)]),
    Case("batchnorm_test", L.batchnorm_forward, L.batchnorm_backward,
         lambda r, d: [_x(r, d, 6, 5), _x(r, d, 5), _x(r, d, 5), _bn("test", 5, d, r)]),
    Case("batchnorm_alt", L.batchnorm_forward, L.batchnorm_backward_alt,
         lambda r, d: [_x(r, d, 6, 5), _x(r, d, 5), _x(r, d, 5), _bn("train", 5, d, r)]),
    Case("layernorm", L.layernorm_forward, L.layernorm_backward,
         lambda r, d: [_x(r, d, 4, 6), _x(r, d, 6), _x(r, d, 6), {}]),
    Case("spatial_batchnorm", L.spatial_batchnorm_forward, L.spatial_batchnorm_backward,
         lambda r, d: [_x(r, d, 3, 2, 4, 4), _x(r, d, 2), _x(r, d, 2), _bn("train", 2, d, r)]),
    Case("spatial_batchnorm_test", L.spatial_batchnorm_forward, L.spatial_batchnorm_backward,
         lambda r, d: [_x(r, d, 3, 2, 4, 4), _x(r, d, 2), _x(r, d, 2), _bn("test", 2, d, r)]),
    Case("spatial_groupnorm", L.spatial_groupnorm_forward, L.spatial_groupnorm_backward,
         lambda r, d: [_x(r, d, 2, 4, 3, 3), _x(r, d, 1, 4, 1, 1), _x(r, d, 1, 4, 1, 1), 2, {}]),
    Case("max_pool_naive", L.max_pool_forward_naive, L.max_pool_backward_naive,
         lambda r, d: [_x(r, d, 2, 3, 4, 4), POOL]),
    Case("max_pool_fast", L.max_pool_forward_fast, L.max_pool_backward_fast,
         lambda r, d: [_x(r, d, 2, 3, 6, 6), POOL]),
    Case("max_pool_fast_overlap", L.max_pool_forward_fast, L.max_pool_backward_fast,
         lambda r, d: [_x(r, d, 2, 3, 5, 5), POOL_OVERLAP]),
    Case("avg_pool_naive", L.avg_pool_forward_naive, L.avg_pool_backward_naive,
         lambda r, d: [_x(r, d, 2, 3, 4, 4), POOL]),
    Case("avg_pool_fast", L.avg_pool_forward_fast, L.avg_pool_backward_fast,
         lambda r, d: [_x(r, d, 2, 3, 6, 6), POOL]),
    Case("avg_pool_fast_overlap", L.avg_pool_forward_fast, L.avg_pool_backward_fast,
         lambda r, d: [_x(r, d, 2, 3, 5, 5), POOL_OVERLAP]),
    Case("global_avg_pool", L.global_avg_pool_forward, L.global_avg_pool_backward,
         lambda r, d: [_x(r, d, 2, 3, 4, 4)]),
    Case("affine_relu", L.affine_relu_forward, L.affine_relu_backward,
         lambda r, d: [_x(r, d, 3, 6), _x(r, d, 6, 4), _x(r, d, 4)]),
    Case("affine_batchnorm_relu", L.affine_norm_relu_forward, L.affine_norm_relu_backward,
         lambda r, d: [_x(r, d, 4, 6), _x(r, d, 6, 5), _x(r, d, 5), _x(r, d, 5), _x(r, d, 5),
                       {"mode": "train"}, "batchnorm"]),
    Case("affine_layernorm_relu", L.affine_norm_relu_forward, L.affine_norm_relu_backward,
         lambda r, d: [_x(r, d, 4, 6), _x(r, d, 6, 5), _x(r, d, 5), _x(r, d, 5), _x(r, d, 5),
                       {}, "layernorm"]),
    Case("conv_relu", L.conv_relu_forward, L.conv_relu_backward,
         lambda r, d: [*_conv_args(r, d), CONV]),
    Case("conv_relu_pool", L.conv_relu_pool_forward, L.conv_relu_pool_backward,
         lambda r, d: [*_conv_args(r, d, (2, 3, 6, 6)), CONV, POOL]),
    Case("conv_bn_relu", L.conv_bn_relu_forward, L.conv_bn_relu_backward,
         lambda r, d: [*_conv_args(r, d), _x(r, d, 4), _x(r, d, 4), CONV, {"mode": "train"}]),
    Case("conv_bn_relu_pool", L.conv_bn_relu_pool_forward, L.conv_bn_relu_pool_backward,
         lambda r, d: [*_conv_args(r, d, (2, 3, 6, 6)), _x(r, d, 4), _x(r, d, 4), CONV,
                       {"mode": "train"}, POOL]),
]


def _on(be, obj, place):
    """`obj` with every host array moved to `be` by `place(be, array)`; dicts are copied."""
    if isinstance(obj, np.ndarray):
        return place(be, obj)
    if isinstance(obj, dict):
        return {k: _on(be, v, place) for k, v in obj.items()}
    return obj


def _host(be, obj):
    if isinstance(obj, (tuple, list)):
        return [_host(be, o) for o in obj]
    if isinstance(obj, dict):
        return {k: _host(be, v) for k, v in obj.items()}
    if hasattr(obj, "dtype"):
        return be.to_numpy(obj)
    return obj


def run(be, case, dtype, place):
    """Forward and backward of `case` on `be`; returns host (outputs, dict args after)."""
    rng = np.random.default_rng(7)
    args = [_on(be, a, place) for a in case.make(rng, dtype)]
    with backend.use(be.name):  # host arrays run on the default host backend's kernels
        out = case.forward(*args)
        if case.backward is None:
            results = list(out)
        else:
            out, cache = out
            dout = rng.standard_normal(out.shape).astype(dtype)
            results = [out, case.backward(_on(be, dout, place), cache)]
    return _host(be, results), _host(be, [a for a in args if isinstance(a, dict)])


def _flatten(obj, prefix="out"):
    """(name, host array) for every array in nested tuples, lists and dicts."""
    if isinstance(obj, (tuple, list)):
        for i, o in enumerate(obj):
            yield from _flatten(o, f"{prefix}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}[{k!r}]")
    elif hasattr(obj, "dtype"):
        yield prefix, obj


def _contiguous(be, a):
    return be.asarray(a)


@pytest.fixture(params=["contiguous", "strided"])
def place(request, noncontiguous):
    return noncontiguous if request.param == "strided" else _contiguous


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_layer_agrees_with_numpy(be, case, dtype, place, assert_agrees):
    if case.random and not be.host:
        pytest.skip(f"{be.name} draws its own random numbers (see test_dropout_on_the_device)")
    got = list(_flatten(run(be, case, dtype, place)))
    want = list(_flatten(run(backend.get("numpy"), case, dtype, _contiguous)))
    assert [name for name, _ in got] == [name for name, _ in want]
    assert len(got) >= 2, "an output and at least one gradient"
    for (name, g), (_, w) in zip(got, want, strict=True):
        assert_agrees(g, w, dtype, f"{case.id} {name}")


def test_dropout_on_the_device(be, dtype):
    """Device random numbers differ from NumPy's; the mask must still be inverted dropout's."""
    p = 0.6
    x = be.asarray(np.ones((200, 50), dtype=dtype))
    out, cache = L.dropout_forward(x, {"p": p, "mode": "train", "seed": 1})
    out = be.to_numpy(out)
    assert out.dtype == dtype
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / p, rtol=1e-6)
    assert abs(kept.mean() - p) < 0.02
    dx = be.to_numpy(L.dropout_backward(be.asarray(np.ones_like(out)), cache))
    np.testing.assert_array_equal(dx, out)


def test_every_layer_has_a_case():
    covered = {f.__name__ for c in CASES for f in (c.forward, c.backward) if f is not None}
    public = {name for name in dir(L) if name.endswith(("_forward", "_backward", "_loss",
                                                        "_backward_alt"))}
    assert public - covered == set()


class _ReadCounting(np.ndarray):
    """A host array that records each read of its values into Python (float(), int(),
    bool(), .item(), .tolist()). On a GPU every such read is a device->host copy and a
    synchronization; derived arrays inherit the class, so reads of intermediates count too."""

    reads: list = []

    def _read(self, how):
        caller = sys._getframe(2).f_code.co_name
        _ReadCounting.reads.append(f"{how} in {caller}")
        return getattr(self.view(np.ndarray), how)()

    def __float__(self):
        return self._read("__float__")

    def __int__(self):
        return self._read("__int__")

    def __bool__(self):
        return self._read("__bool__")

    def item(self):
        return self._read("item")

    def tolist(self):
        return self._read("tolist")


def _counting(obj):
    if isinstance(obj, tuple):
        return tuple(_counting(o) for o in obj)
    return obj.view(_ReadCounting)


KERNEL_METHODS = ("im2col", "col2im", "maxpool_forward", "maxpool_backward",
                  "avgpool_forward", "avgpool_backward")
# The losses check that labels lie in [0, C): two scalar reads, made on purpose.
ALLOWED_READS = {"softmax_loss": ["__int__ in labels"] * 2, "svm_loss": ["__int__ in labels"] * 2}
TRAINING_CASES = [c for c in CASES if "naive" not in c.id]  # naive loops are references


@pytest.mark.parametrize("case", TRAINING_CASES, ids=[c.id for c in TRAINING_CASES])
def test_layers_read_nothing_back_from_the_device(emu, case, monkeypatch):
    """Run on cuda-emu with every input and kernel output counting value reads."""
    for method in KERNEL_METHODS:
        kernel = getattr(emu, method)
        monkeypatch.setattr(emu, method,
                            lambda *a, _kernel=kernel, **k: _counting(_kernel(*a, **k)))
    monkeypatch.setattr(_ReadCounting, "reads", [])
    run(emu, case, np.dtype(np.float64), lambda be, a: _counting(be.asarray(a)))
    assert _ReadCounting.reads == ALLOWED_READS.get(case.id, [])
