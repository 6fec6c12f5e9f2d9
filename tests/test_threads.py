"""`dualnet._threads`: BLAS held to one thread inside dualnet's calls and as the user set it
outside them; large products split into blocks with the values of the unsplit product; and
the same training steps give the same numbers whichever of numpy and dualnet is imported
first. Nothing here looks at times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

from dualnet import _threads, backend

ROOT = Path(__file__).resolve().parents[1]


def _blas_threads():
    """{library path: thread count} of every BLAS library threadpoolctl sees."""
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


needs_blas = pytest.mark.skipif(not _threads._blas_libraries(),
                                reason="threadpoolctl sees no BLAS library in this NumPy")


# -- blas_one_thread ------------------------------------------------------------------------
@needs_blas
def test_blas_runs_on_one_thread_inside_and_as_set_outside():
    with threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        assert set(before.values()) == {2}
        with _threads.blas_one_thread():
            assert set(_blas_threads().values()) == {1}
            with _threads.blas_one_thread():  # reentrant: the inner exit restores nothing
                pass
            assert set(_blas_threads().values()) == {1}
        assert _blas_threads() == before


@needs_blas
def test_the_last_python_thread_to_leave_restores_blas():
    inside, leave = threading.Event(), threading.Event()

    def other_thread():
        with _threads.blas_one_thread():
            inside.set()
            leave.wait(10)

    with threadpool_limits(2, user_api="blas"):
        worker = threading.Thread(target=other_thread)
        with _threads.blas_one_thread():
            worker.start()
            assert inside.wait(10)
        assert set(_blas_threads().values()) == {1}  # the other thread is still inside
        leave.set()
        worker.join()
        assert set(_blas_threads().values()) == {2}


@needs_blas
def test_an_exception_inside_still_restores_the_thread_count():
    with threadpool_limits(2, user_api="blas"):
        with pytest.raises(RuntimeError), _threads.blas_one_thread():
            raise RuntimeError("boom")
        assert set(_blas_threads().values()) == {2}


@needs_blas
def test_another_python_thread_can_set_blas_limits_after_a_dualnet_call():
    # threadpoolctl lets one Python thread at a time control OpenBLAS; dualnet must hand
    # that control back, or a user's limit set from another thread would be ignored.
    x = np.ones((64, 64))
    backend.get("numpy").matmul(x, x)
    seen = {}

    def other_thread():
        with threadpool_limits(3, user_api="blas"):
            seen.update(_blas_threads())

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert set(seen.values()) == {3}


@needs_blas
def test_products_are_not_split_when_the_user_limits_blas_to_one_thread(monkeypatch):
    started = []
    monkeypatch.setattr(_threads, "_helpers", lambda n: started.append(n))
    monkeypatch.setattr(_threads, "MIN_BLOCK_MACS", 1)
    a = np.ones((64, 32))
    with threadpool_limits(1, user_api="blas"):
        np.testing.assert_array_equal(_threads.matmul(a, a.T), a @ a.T)
    assert started == []


# -- matmul -----------------------------------------------------------------------------------
CASES = {
    "rows (m > n)": ((37, 20), (20, 5)),
    "columns (n > m)": ((5, 20), (20, 41)),
    "inner dimension": ((6, 50), (50, 7)),
    "transposed operands": ((20, 37), (5, 20)),  # a.T @ b.T below
    "stacked": ((6, 7, 9), (6, 9, 8)),
}


def test_each_case_is_split_along_the_axis_it_names():
    assert _threads._split_axis(37, 5, 20) == "rows"
    assert _threads._split_axis(5, 41, 20) == "columns"
    assert _threads._split_axis(6, 7, 50) == "k"
    # the networks' products: x @ W of a wide first layer, dout @ W.T, x.T @ dout
    assert _threads._split_axis(200, 100, 3072) == "k"
    assert _threads._split_axis(50, 8192, 100) == "columns"
    assert _threads._split_axis(8192, 100, 50) == "rows"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_out", [False, True])
def test_a_split_product_equals_numpys(monkeypatch, case, dtype, with_out):
    monkeypatch.setattr(_threads, "_blocks", lambda macs: 3)  # split on any machine
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(dtype) for s in CASES[case])
    if case == "transposed operands":
        a, b = a.T, b.T
    expected = np.matmul(a, b)
    out = np.full(expected.shape, np.nan, dtype) if with_out else None
    got = _threads.matmul(a, b, out=out)
    assert got.dtype == dtype and got.shape == expected.shape
    if with_out:
        assert got is out
    tol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def test_an_error_in_a_block_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(_threads, "_blocks", lambda macs: 2)
    a = np.ones((8, 4))
    with pytest.raises(ValueError):
        _threads.matmul(a, np.ones((4, 6)), out=np.empty((8, 5)))  # out of the wrong shape


def test_products_too_small_for_a_block_each_are_not_split(monkeypatch):
    monkeypatch.setattr(_threads, "_threads", 2)
    monkeypatch.setattr(_threads, "MIN_BLOCK_MACS", 1000)
    assert _threads._blocks(1999) == 1
    assert _threads._blocks(2000) == 2
    assert _threads._blocks(10**9) == 2  # never more blocks than threads


def test_the_numpy_backend_computes_products_through_it(monkeypatch):
    calls = []
    real = _threads.matmul
    monkeypatch.setattr(_threads, "matmul",
                        lambda a, b, out=None: calls.append(a.shape) or real(a, b, out=out))
    from dualnet.layers import affine_backward, affine_forward

    x, w, b = np.ones((4, 3)), np.ones((3, 2)), np.zeros(2)
    out, cache = affine_forward(x, w, b)
    affine_backward(np.ones_like(out), cache)
    assert calls == [(4, 3), (4, 2), (3, 4)]  # x @ w, dout @ w.T, x.T @ dout


def test_doctor_says_what_is_in_effect():
    from dualnet.doctor import doctor

    line = next(ln for ln in doctor().splitlines() if ln.startswith("Threads:"))
    if _threads._blas_libraries():
        assert "outside dualnet's calls, as set; inside them 1 thread" in line
    else:
        assert "cannot be read" in line


# -- in a user's process, whatever the import order -------------------------------------------
TRAIN = """
import json, sys
first = sys.argv[1]
if first == "numpy":
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits
    import dualnet
else:
    import dualnet
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits
from dualnet.models import FullyConnectedNet, ThreeLayerConvNet

def blas():
    return [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]

dense = sys.argv[2] == "fc"
limits = threadpool_limits(int(sys.argv[3]), user_api="blas") if len(sys.argv) > 3 else None
np.random.seed(231)
if dense:  # products on BLAS's own threads (Model.blas_threads_in_step)
    model = FullyConnectedNet([64, 32], normalization="batchnorm", dropout_keep_ratio=0.5,
                              seed=1, reg=1e-3, dtype=np.float32)
else:
    model = ThreeLayerConvNet(num_filters=8, hidden_dim=20, weight_scale=1e-2,
                              dtype=np.float32)
rng = np.random.default_rng(0)
X = rng.standard_normal((20, 3, 32, 32)).astype(np.float32)
y = rng.integers(0, 10, 20)
before = blas()
losses = []
for _ in range(3):
    loss, grads = model.loss(X, y)
    losses.append(float(loss))
    for k, g in grads.items():
        model.params[k] -= np.float32(1e-2) * g
after = blas()
print(json.dumps({"losses": losses, "params": {k: v.tolist() for k, v in model.params.items()},
                  "blas_before": before, "blas_after": after}))
"""


def _train(first, model, *limit):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", TRAIN, first, model, *map(str, limit)],
                         env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.parametrize("model", ["convnet", "fc"])
def test_training_gives_the_same_numbers_whichever_is_imported_first(model):
    numpy_first, dualnet_first = _train("numpy", model), _train("dualnet", model)
    assert numpy_first["losses"] == dualnet_first["losses"]
    for name, value in numpy_first["params"].items():
        np.testing.assert_array_equal(np.array(value), np.array(dualnet_first["params"][name]),
                                      err_msg=name)


@needs_blas
@pytest.mark.parametrize("model", ["convnet", "fc"])
@pytest.mark.parametrize("limit", [None, 1, 2])
def test_a_training_step_leaves_the_users_blas_settings_as_they_were(model, limit):
    run = _train("numpy", model, *([] if limit is None else [limit]))
    assert run["blas_before"], "no BLAS library seen in the subprocess"
    assert run["blas_after"] == run["blas_before"]
    if limit is not None:
        assert {n for _, n in run["blas_before"]} == {limit}


@needs_blas
def test_blas_is_one_thread_while_a_layer_multiplies(monkeypatch):
    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        seen.append(sorted(set(_blas_threads().values())))
        return real(a, b, out=out)

    monkeypatch.setattr(_threads.np, "matmul", spy)
    from dualnet.layers import affine_forward

    with threadpool_limits(2, user_api="blas"):
        affine_forward(np.ones((4, 3)), np.ones((3, 2)), np.zeros(2))
        assert set(_blas_threads().values()) == {2}
    assert seen == [[1]]


@needs_blas
# a batch of 4: fused Winograd (library products only in the filter transforms); of 1: the
# chunked paths, one library GEMM per chunk
@pytest.mark.parametrize("algorithm, N", [("winograd", 4), ("winograd", 1), ("im2col", 1)])
def test_blas_is_one_thread_through_a_convolution(monkeypatch, algorithm, N):
    from dualnet.layers import conv, conv_backward_fast, conv_forward_fast

    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        seen.append(sorted(set(_blas_threads().values())))
        return real(a, b, out=out)

    monkeypatch.setattr(np, "matmul", spy)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    old = conv.set_algorithm(algorithm)
    try:
        with threadpool_limits(2, user_api="blas"):
            out, cache = conv_forward_fast(x, w, np.zeros(8, np.float32), {"stride": 1, "pad": 1})
            conv_backward_fast(np.ones_like(out), cache)
            assert set(_blas_threads().values()) == {2}
    finally:
        conv.set_algorithm(old)
    assert seen and all(threads == [1] for threads in seen)


# -- blas_own_threads: dense models' steps ---------------------------------------------------
@needs_blas
def test_inside_blas_own_threads_products_run_on_blas_threads_and_kernels_serially(monkeypatch):
    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        seen.append((sorted(set(_blas_threads().values())), _threads.kernels_serial()))
        return real(a, b, out=out)

    monkeypatch.setattr(_threads.np, "matmul", spy)
    a = np.ones((300, 300), np.float32)
    with threadpool_limits(2, user_api="blas"):
        assert not _threads.kernels_serial()
        with _threads.blas_own_threads():
            _threads.matmul(a, a)
            with _threads.blas_one_thread():  # a convolution inside: held, split, parallel
                assert not _threads.kernels_serial()
                _threads.matmul(a[:4], a[:, :4])
            other = []
            thread = threading.Thread(target=lambda: other.append(_threads.kernels_serial()))
            thread.start()
            thread.join()
            assert other == [False]  # per Python thread
            assert _threads.kernels_serial()
        assert not _threads.kernels_serial()
        assert set(_blas_threads().values()) == {2}
    assert seen == [([2], True), ([1], False)]


@needs_blas
@pytest.mark.parametrize("dense", [True, False])
def test_dense_models_leave_blas_its_threads_and_run_their_kernels_serially(monkeypatch, dense):
    """FullyConnectedNet's products see BLAS at the user's count and its batchnorm kernels
    are told `serial`; ThreeLayerConvNet's products see one thread."""
    from dualnet.models import FullyConnectedNet, ThreeLayerConvNet

    be = backend.get("numpy")
    if be._norm is None:
        pytest.skip("no Cython norm kernels: " + be.kernels())
    products, serial = [], []
    real = np.matmul
    monkeypatch.setattr(_threads.np, "matmul", lambda a, b, out=None: (
        products.append(sorted(set(_blas_threads().values()))) or real(a, b, out=out)))
    real_norm = be._norm

    class Norm:  # the kernel module, its channel_moments spied on
        def __getattr__(self, name):
            return getattr(real_norm, name)

        def channel_moments(self, *args):
            serial.append(args[-1])
            return real_norm.channel_moments(*args)

    monkeypatch.setattr(be, "_norm", Norm())
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, 8)
    if dense:
        model = FullyConnectedNet([16], input_dim=3 * 8 * 8, normalization="batchnorm")
    else:
        model = ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=4, hidden_dim=16)
    with threadpool_limits(2, user_api="blas"):
        model.loss(X, y)
    assert products and all(p == ([2] if dense else [1]) for p in products)
    assert serial == ([True] if dense else [])


def test_controller_sees_the_same_libraries_as_threadpoolctl():
    found = {lib.filepath for lib in _threads._blas_libraries()}
    assert found == {lib.filepath for lib in
                     ThreadpoolController().select(user_api="blas").lib_controllers}
