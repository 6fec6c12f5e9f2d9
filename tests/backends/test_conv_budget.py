"""The fast convolution's scratch buffers (im2col patches, Winograd coefficients) stay under
the memory budget (`set_memory_budget`).

NumPy reports its data allocations to tracemalloc, so the traced peak during a call, minus the
arrays the call must return, is the extra memory it used.
"""

import tracemalloc

import numpy as np
import pytest

from dualnet import backend
from dualnet.backends import host_im2col, host_winograd, scratch
from dualnet.backends.numpy import NumpyBackend
from dualnet.layers import conv, conv_backward_fast, conv_backward_naive, conv_forward_fast


@pytest.fixture
def budget():
    """Restores the module's budget after a test changes it."""
    old = conv.get_memory_budget()
    yield conv.set_memory_budget
    conv.set_memory_budget(old)


@pytest.fixture(autouse=True)
def _warm_kernels():
    """One small call first: one-time allocations (kernel dispatch tables) are not scratch."""
    out, cache = conv_forward_fast(np.ones((1, 1, 3, 3), np.float32),
                                   np.ones((1, 1, 3, 3), np.float32),
                                   np.zeros(1, np.float32), {"stride": 1, "pad": 1})
    conv_backward_fast(out, cache)


def _traced_peak(fn, *args, **kwargs):
    """(result, peak bytes newly allocated while fn ran), scratch buffers dropped first so
    that the call's own scratch counts in full."""
    scratch.release()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak


def _winograd(fused):
    """The Winograd variant that runs on the numpy backend, with fused kernels allowed or not."""
    return "winograd-fused" if fused and backend.get("numpy").winograd_fused else "winograd"


@pytest.mark.parametrize("algorithm, fused", [("auto", True), ("auto", False), ("im2col", True),
                                              ("im2col", False)])
def test_large_batch_conv_stays_within_the_default_budget(monkeypatch, algorithm, fused):
    # 512x64x32x32 with 3x3 filters: the patches of the whole batch would take 1.2 GB (and
    # Winograd's transform coefficients 0.6 GB)
    monkeypatch.setattr(host_winograd, "fused_enabled", fused)
    monkeypatch.setattr(host_im2col, "fused_enabled", fused)
    im2col = "im2col-fused" if fused and backend.get("numpy").im2col_fused else "im2col"
    expected = im2col if algorithm == "im2col" else _winograd(fused)
    old = conv.set_algorithm(algorithm)
    with backend.use("numpy"):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((512, 64, 32, 32), dtype=np.float32)
        w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32) * np.float32(0.05)
        b = np.zeros(64, dtype=np.float32)
        param = {"stride": 1, "pad": 1}
        limit = conv.DEFAULT_MEMORY_BUDGET
        assert conv.get_memory_budget() == limit
        assert 512 * 64 * 9 * 32 * 32 * 4 > 4 * limit  # the test would notice a full im2col

        try:
            (out, cache), peak = _traced_peak(conv_forward_fast, x, w, b, param)
        finally:
            conv.set_algorithm(old)
        assert cache[-1] == expected
        assert out.dtype == np.float32
        assert peak - out.nbytes <= limit
        dout = np.ones_like(out)
        del out
        (dx, dw, db), peak = _traced_peak(conv_backward_fast, dout, cache)
        assert dx.dtype == dw.dtype == db.dtype == np.float32
        assert peak - dx.nbytes - dw.nbytes - db.nbytes <= limit


@pytest.mark.parametrize("nbytes", [1, 40_000, 10**9])
def test_results_do_not_depend_on_the_budget(budget, nbytes):
    # 1 byte: one sample per chunk; 40 kB: chunks of a few samples; 1 GB: one chunk
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    param = {"stride": 2, "pad": 1}
    budget(nbytes)
    out, cache = conv_forward_fast(x, w, b, param)
    dout = rng.standard_normal(out.shape)
    grads = conv_backward_fast(dout, cache)
    ref_grads = conv_backward_naive(dout, (x, w, b, param))
    for got, want in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.fixture(params=["cython", "fallback"])
def numpy_kernels(request, monkeypatch):
    """The numpy backend with its Cython kernels, or rebuilt without them."""
    if request.param == "fallback":
        monkeypatch.setenv("DUALNET_NO_EXTENSION", "1")
        monkeypatch.setitem(backend._instances, "numpy", NumpyBackend())
    with backend.use("numpy"):
        yield request.param


# (algorithm to ask for, filter shape, pad, algorithm expected to run)
SMALL_PROBLEMS = [("winograd", (8, 8, 3, 3), 1, "winograd"), ("im2col", (8, 8, 3, 3), 1, "im2col"),
                  ("auto", (8, 8, 7, 7), 3, "im2col-pairs")]


@pytest.mark.parametrize("algorithm, w_shape, pad, expected", SMALL_PROBLEMS)
def test_budget_bounds_a_small_problem_too(budget, numpy_kernels, monkeypatch, algorithm,
                                           w_shape, pad, expected):
    # the whole batch's scratch (several MB) is well above this 1 MB budget; the fused paths
    # (which need far less than 1 MB here) have their own test below
    monkeypatch.setattr(host_winograd, "fused_enabled", False)
    monkeypatch.setattr(host_im2col, "fused_enabled", False)
    budget(1_000_000)
    x = np.random.default_rng(2).standard_normal((64, 8, 16, 16), dtype=np.float32)
    w = np.ones(w_shape, dtype=np.float32)
    b = np.zeros(8, dtype=np.float32)
    old = conv.set_algorithm(algorithm)
    try:
        (out, cache), peak = _traced_peak(conv_forward_fast, x, w, b, {"stride": 1, "pad": pad})
    finally:
        conv.set_algorithm(old)
    assert cache[-1] == expected and len(cache[4]) > 1
    assert peak - out.nbytes <= 1_000_000
    (dx, dw, db), peak = _traced_peak(conv_backward_fast, np.ones_like(out), cache)
    assert peak - dx.nbytes - dw.nbytes - db.nbytes <= 1_000_000


@pytest.mark.parametrize("algorithm", ["winograd", "im2col"])
def test_fused_paths_stay_within_a_small_budget(budget, monkeypatch, algorithm):
    if backend.get("numpy").winograd_fused is None:
        pytest.skip("no fused kernels here")
    monkeypatch.setattr(host_winograd, "fused_enabled", True)  # wherever they build
    monkeypatch.setattr(host_im2col, "fused_enabled", True)
    budget(1_000_000)
    x = np.random.default_rng(2).standard_normal((64, 8, 16, 16), dtype=np.float32)
    w = np.ones((8, 8, 3, 3), dtype=np.float32)
    old = conv.set_algorithm(algorithm)
    try:
        (out, cache), peak = _traced_peak(conv_forward_fast, x, w, np.zeros(8, np.float32),
                                          {"stride": 1, "pad": 1})
    finally:
        conv.set_algorithm(old)
    assert cache[-1] == f"{algorithm}-fused"
    assert peak - out.nbytes <= 1_000_000
    (dx, dw, db), peak = _traced_peak(conv_backward_fast, np.ones_like(out), cache)
    assert peak - dx.nbytes - dw.nbytes - db.nbytes <= 1_000_000


@pytest.mark.parametrize("fused", [True, False])
def test_buffers_held_between_calls_stay_within_the_budget(budget, monkeypatch, fused):
    """Both algorithms draw on the same buffers: what stays held is one chunk's scratch."""
    monkeypatch.setattr(host_winograd, "fused_enabled", fused)
    monkeypatch.setattr(host_im2col, "fused_enabled", fused)
    budget(3_200_000)  # above the per-call 2.1 MB of filter transforms: both paths fit
    x = np.random.default_rng(3).standard_normal((32, 64, 8, 8), dtype=np.float32)
    im2col = "im2col-fused" if fused and backend.get("numpy").im2col_fused else "im2col"
    for algorithm, expected in (("winograd", _winograd(fused)), ("im2col", im2col)):
        old = conv.set_algorithm(algorithm)
        try:
            out, cache = conv_forward_fast(x, np.ones((64, 64, 3, 3), np.float32),
                                           np.zeros(64, np.float32), {"stride": 1, "pad": 1})
        finally:
            conv.set_algorithm(old)
        conv_backward_fast(np.ones_like(out), cache)
        assert cache[-1] == expected
    assert 0 < scratch.held() <= 3_200_000


def test_first_layer_can_skip_the_input_gradient():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    out, cache = conv_forward_fast(x, w, np.zeros(4), {"stride": 1, "pad": 1})
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv_backward_fast(dout, cache, need_dx=False)
    assert dx is None
    _, ref_dw, ref_db = conv_backward_naive(dout, (x, w, np.zeros(4), {"stride": 1, "pad": 1}))
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-10)
    np.testing.assert_allclose(db, ref_db, rtol=1e-10)


def test_budget_must_be_a_positive_integer(budget):
    with pytest.raises(ValueError, match="set_memory_budget: nbytes must be an integer >= 1"):
        budget(0)
