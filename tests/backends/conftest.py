"""The cross-backend harness: every backend other than `numpy` against the `numpy` backend.

`numpy` is the reference, so it is not parametrized against itself. `cupy` cases carry the
`gpu` mark (skipped with the reason where no device answers); `cuda-emu` runs everywhere and
is required under CI=true.
"""

from __future__ import annotations

import numpy as np
import pytest

from dualnet import backend
from dualnet.backends.launch import ConvKernelBackend

#: Agreement with the numpy backend, per dtype (relative, and absolute on the output's scale).
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}

#: Tests shrink the launch grid to this many blocks, so modest shapes already need several
#: grid-stride passes (and the emulator runs fewer idle threads).
SMALL_GRID = 2


def _params():
    names = [n for n in backend.names() if n != "numpy"]
    return [pytest.param(n, id=n, marks=[pytest.mark.gpu] if n == "cupy" else [])
            for n in names]


@pytest.fixture(params=_params())
def be(request, backend_for, monkeypatch):
    """A non-numpy backend, made the default (so host arrays run on cuda-emu's kernels)."""
    chosen = backend_for(request.param)
    if isinstance(chosen, ConvKernelBackend):
        monkeypatch.setattr(chosen, "max_grid", SMALL_GRID)
    with backend.use(chosen.name):
        yield chosen


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def assert_agrees():
    """`assert_agrees(got, want, dtype)`: host arrays equal in dtype and close in value."""

    def check(got, want, dtype, what=""):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape, what
        if want.dtype.kind == "f":
            assert got.dtype == dtype, f"{what}: {got.dtype}, expected {dtype}"
            tol = TOLERANCE[np.dtype(dtype)]
            scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)
        else:
            assert got.dtype == want.dtype, what
            np.testing.assert_array_equal(got, want, err_msg=what)

    return check


@pytest.fixture
def noncontiguous():
    """`noncontiguous(be, a)`: a strided view on `be` holding the values of host array `a`."""

    def view(be, a):
        doubled = be.xp.stack([be.asarray(a)] * 2, axis=-1)
        out = doubled[..., 0]
        assert a.size <= 1 or not out.flags.c_contiguous
        return out

    return view
