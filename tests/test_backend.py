"""The backend contract: ownership by data, mixing errors, registry, defaults, RNG."""

import numpy as np
import pytest

from dualnet import backend
from dualnet.backends import numpy as numpy_backend


class FakeCupyArray:
    """Stands in for a cupy.ndarray: `of` classifies arrays by their type's module."""

    __module__ = "cupy._core.core"
    shape = (2,)
    dtype = np.dtype(np.float32)


def test_numpy_arrays_belong_to_numpy_backend():
    be = backend.of(np.zeros(3), None, 2.0, np.float32(1))
    assert be.name == "numpy" and be.xp is np


def test_no_arrays_gives_the_default_backend():
    assert backend.of(None, 1) is backend.current()


def test_mixing_backends_names_both():
    with pytest.raises(TypeError, match=r"arrays from two backends were mixed: host "
                                        r"\(numpy\.ndarray\) and cupy \(cupy\._core\.core\."
                                        r"FakeCupyArray\)"):
        backend.of(np.zeros(2), FakeCupyArray())


def test_get_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'torch'; known backends: numpy, cupy, "
                                         "cuda-emu"):
        backend.get("torch")


def test_available_always_starts_with_numpy_and_explains_the_rest():
    names = backend.available()
    assert names[0] == "numpy"
    assert backend.why_unavailable("numpy") is None
    for name in backend.names():
        reason = backend.why_unavailable(name)
        if name in names:
            assert reason is None
        else:
            assert isinstance(reason, str) and reason
            with pytest.raises(backend.BackendUnavailable, match=f"backend '{name}' is "
                                                                 "unavailable: "):
                backend.get(name)


def test_use_as_context_manager_restores_the_default():
    before = backend.current()
    with backend.use("numpy") as be:
        assert be is backend.current() is backend.get("numpy")
    assert backend.current() is before


def test_use_refuses_an_unusable_backend_without_changing_the_default():
    before = backend.current()
    with pytest.raises(ValueError):
        backend.use("no-such-backend")
    assert backend.current() is before


@pytest.mark.parametrize("name", backend.names())
def test_host_arrays_follow_a_host_default(name):
    if name not in backend.available():
        pytest.skip(f"{name} unavailable here: {backend.why_unavailable(name)}")
    with backend.use(name) as be:
        owner = backend.of(np.zeros(2))
        assert owner is (be if be.host else backend.get("numpy"))


def test_asarray_and_to_numpy_round_trip():
    be = backend.get("numpy")
    a = be.asarray([1, 2, 3], dtype=np.float32)
    assert a.dtype == np.float32
    back = be.to_numpy(a)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, [1, 2, 3])


def test_seeded_rand_matches_the_legacy_global_rng_without_touching_it():
    be = backend.get("numpy")
    state = np.random.get_state()
    a = be.rand((3, 4), np.float32, seed=5)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, np.random.RandomState(5).rand(3, 4).astype(np.float32))
    assert np.array_equal(np.random.get_state()[1], state[1])
    n = be.randn((2, 2), np.float64, seed=5)
    np.testing.assert_array_equal(n, np.random.RandomState(5).randn(2, 2))


def test_dualnet_seed_makes_unseeded_draws_reproducible():
    be = backend.get("numpy")
    backend.seed(11)
    a = be.rand((5,), np.float64)
    backend.seed(11)
    np.testing.assert_array_equal(a, be.rand((5,), np.float64))


def test_numpy_backend_reports_its_kernels():
    text = backend.get("numpy").kernels()
    assert "Cython" in text or "pure-NumPy" in text


def test_a_stale_extension_is_refused_with_the_reason(monkeypatch, capsys):
    """A compiled module whose recorded source hash differs from the installed .pyx (a rebuild
    that failed left the old build) gives way to the pure-NumPy kernels, said once."""
    winograd = pytest.importorskip("dualnet.kernels._winograd",
                                   reason="Cython extension not built (pip install -e .)")
    monkeypatch.setattr(winograd, "SOURCE_SHA256", "0" * 64)
    monkeypatch.setattr(numpy_backend, "_said_no_extension", False)
    be = numpy_backend.NumpyBackend()
    assert be._wino is None and be._ext is not None
    assert "built from another version of winograd.pyx" in be.kernels()
    assert be.kernels().startswith("Cython kernels (dualnet.kernels._im2col, "
                                   "dualnet.kernels._norm, dualnet.kernels._regularize), pure-NumPy")
    assert "rebuild it: pip install -e ." in capsys.readouterr().err
    numpy_backend.NumpyBackend()
    assert capsys.readouterr().err == ""  # said once


def test_the_stale_check_hashes_the_sources_setup_py_compiles():
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).parents[1] / "setup.py").read_text())
    shared = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", None) == "SHARED_SOURCES")
    assert shared == numpy_backend._SHARED_SOURCES
    be = numpy_backend.NumpyBackend()
    if be.winograd_compiled:  # a fresh build is accepted
        assert numpy_backend._stale_reason(be._wino, "_winograd") is None
