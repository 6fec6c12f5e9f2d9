"""The dropout kernel (`dualnet.kernels._regularize`) through the numpy backend: the masks are the
course's `np.random.rand(*x.shape) < p` drawn from NumPy's own generator, and the generator
is left where NumPy's draws would have left it."""

import threading

import numpy as np
import pytest

from dualnet import backend
from dualnet.backends.base import Backend

cy = pytest.importorskip("dualnet.kernels._regularize",
                         reason="Cython extension not built (pip install -e .)")


@pytest.fixture
def numpy_backend():
    be = backend.get("numpy")
    if be._regularize is None:
        pytest.skip("the numpy backend runs without its compiled kernels here")
    return be


@pytest.fixture
def global_state():
    """NumPy's global random state, restored after the test."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


# Sizes around the MT19937 block of 624 outputs (312 numbers) and the kernel's chunk of 512
# numbers, from empty to several twists, with the generator started mid-block.
SIZES = [0, 1, 311, 312, 313, 512, 513, 1000, 20_000]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("already_drawn", [0, 1, 311])
def test_unseeded_mask_is_the_global_streams_and_advances_it_alike(
        numpy_backend, global_state, dtype, size, already_drawn):
    p = 0.37
    x = np.random.RandomState(1).standard_normal(size).astype(dtype) + 3
    np.random.seed(231)
    np.random.random_sample(already_drawn)
    out, mask = numpy_backend.dropout(x, p)
    after = np.random.random_sample(700)

    np.random.seed(231)
    np.random.random_sample(already_drawn)
    keep = np.random.rand(size) < p  # the course's mask, compared in double
    expected_after = np.random.random_sample(700)

    np.testing.assert_array_equal(mask, keep * dtype(1 / p))
    np.testing.assert_array_equal(out, x * (keep * dtype(1 / p)))
    assert out.dtype == mask.dtype == dtype
    np.testing.assert_array_equal(after, expected_after)


def test_seeded_mask_is_a_fresh_randomstates_and_leaves_the_global_stream(
        numpy_backend, global_state):
    x = np.ones((40, 70), np.float32)
    np.random.seed(5)
    _, mask = numpy_backend.dropout(x, 0.5, seed=123)
    untouched = np.random.random_sample(10)
    np.random.seed(5)
    np.testing.assert_array_equal(untouched, np.random.random_sample(10))
    np.testing.assert_array_equal(mask != 0, np.random.RandomState(123).rand(40, 70) < 0.5)


def test_a_global_generator_other_than_mt19937_goes_through_its_own_draws(
        numpy_backend, global_state):
    """np.random.set_bit_generator swaps the legacy functions' generator: the kernel then
    asks it for every number, as random_sample does."""
    previous = np.random.get_bit_generator()
    try:
        np.random.set_bit_generator(np.random.PCG64(9))
        x = np.arange(1, 1001, dtype=np.float64)
        _, mask = numpy_backend.dropout(x, 0.6)
        np.random.set_bit_generator(np.random.PCG64(9))
        np.testing.assert_array_equal(mask != 0, np.random.random_sample(1000) < 0.6)
    finally:
        np.random.set_bit_generator(previous)


def test_block_path_agrees_with_numpys_mt19937(numpy_backend):
    """The self-check the backend runs before it uses the block path, on states mid-block."""
    for drawn in (0, 1, 623, 624, 1000):
        gen = np.random.MT19937(drawn)
        gen.random_raw(drawn)
        assert cy.mt19937_matches(gen)
    assert numpy_backend._mt19937_matches


@pytest.mark.parametrize("columns", [slice(None), slice(None, None, 2)])
def test_matches_the_base_backends_dropout(numpy_backend, global_state, columns):
    """The backend (its kernel; NumPy for a strided x) and the base backend's formula give
    the same arrays."""
    x = np.random.RandomState(3).standard_normal((64, 33)).astype(np.float32)[:, columns]
    np.random.seed(11)
    kernel = numpy_backend.dropout(x, 0.8)
    np.random.seed(11)
    reference = Backend.dropout(numpy_backend, x, 0.8)
    for got, want in zip(kernel, reference, strict=True):
        np.testing.assert_array_equal(got, want)


def test_threads_drawing_at_once_draw_each_number_once(numpy_backend, global_state):
    """Each call holds the generator's lock: two threads' masks together are the stream's
    next numbers, none drawn twice or skipped."""
    n, calls = 1000, 50
    x = np.ones(n)
    np.random.seed(0)
    masks, lock = [], threading.Lock()

    def work():
        for _ in range(calls):
            _, mask = numpy_backend.dropout(x, 0.5)
            with lock:
                masks.append(mask != 0)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.random.seed(0)
    expected = {tuple(np.random.rand(n) < 0.5) for _ in range(2 * calls)}
    assert {tuple(m) for m in masks} == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [0, 1, 7, 1023, 1024, 1025, 307_200])
def test_l2_decay_is_the_gradient_plus_reg_w_and_the_sum_of_squares(numpy_backend, dtype, size):
    rng = np.random.default_rng(size)
    W = rng.standard_normal(size).astype(dtype)
    dW = rng.standard_normal(size).astype(dtype)
    decayed, squares = numpy_backend.l2_decay(dW, W, 5e-3)
    assert decayed.dtype == dtype and decayed is not dW
    np.testing.assert_allclose(decayed, dW + dtype(5e-3) * W, rtol=1e-6 if dtype == np.float32 else 1e-14)
    exact = float(np.sum(W.astype(np.float64) ** 2))
    assert squares == pytest.approx(exact, rel=1e-6 if dtype == np.float32 else 1e-12)


def test_l2_decay_takes_any_layout_through_the_base_formula(numpy_backend):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((30, 40)).astype(np.float32).T  # a transposed view
    dW = rng.standard_normal((40, 30)).astype(np.float32)
    decayed, squares = numpy_backend.l2_decay(dW, W, 0.1)
    np.testing.assert_allclose(decayed, dW + np.float32(0.1) * W, rtol=1e-6)
    assert float(squares) == pytest.approx(float(np.sum(W.astype(np.float64) ** 2)), rel=1e-5)
