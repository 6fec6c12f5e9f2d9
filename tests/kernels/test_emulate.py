"""The cuda-emu backend: how conv.cu is built for the CPU, cached, launched, and how it fails."""

import subprocess

import numpy as np
import pytest

from dualnet import backend
from dualnet.kernels import cuda, emulate, reference


def test_conv_cu_is_clean_host_cpp(tmp_path):
    """The emulator's translation unit compiles with every common warning as an error."""
    compiler = emulate.find_compiler()
    unit = tmp_path / "unit.cpp"
    unit.write_text(emulate._translation_unit(cuda.kernel_source()))
    cmd = [compiler, *emulate.CXX_FLAGS, "-Wall", "-Wextra", "-Werror", "-include",
           str(emulate.HEADER), str(unit), "-o", str(tmp_path / "conv.so")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_build_is_cached_by_content(tmp_path, monkeypatch):
    first = emulate.build(directory=tmp_path)
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(emulate.subprocess, "run",
                        lambda cmd, **kw: calls.append(cmd) or real_run(cmd, **kw))
    assert emulate.build(directory=tmp_path) == first
    assert [cmd[1:] for cmd in calls] == [["--version"]], "a cached build compiles nothing"

    changed = tmp_path / "conv.cu"
    changed.write_text(cuda.kernel_source() + "\n// a changed source is a new library\n")
    second = emulate.build(changed, directory=tmp_path)
    assert second != first and second.exists()


def test_cache_dir_is_per_user_and_configurable(monkeypatch, tmp_path):
    monkeypatch.setenv("DUALNET_CACHE_DIR", str(tmp_path))
    assert emulate.cache_dir() == tmp_path / "cuda-emu"
    monkeypatch.delenv("DUALNET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert emulate.cache_dir() == tmp_path / "xdg" / "dualnet" / "cuda-emu"


def test_a_compile_error_is_reported_with_the_compiler_text(tmp_path):
    broken = tmp_path / "conv.cu"
    broken.write_text(cuda.kernel_source().replace("T sum = T(0);", "T sum = T(0)", 1))
    with pytest.raises(backend.BackendUnavailable, match=r"(?s)does not compile.*conv\.cu:\d+"):
        emulate.build(broken, directory=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.so")), "nothing half-built is cached"


def test_an_unbuildable_emulator_is_unavailable_not_replaced(tmp_path, monkeypatch):
    """get('cuda-emu') must raise with the compiler's error, never fall back to numpy."""
    broken = tmp_path / "conv.cu"
    broken.write_text("this is not C++\n")
    real_build = emulate.build
    monkeypatch.setattr(emulate, "build", lambda: real_build(broken, directory=tmp_path))
    # A fresh registry for this test only: the real one keeps its working cuda-emu.
    monkeypatch.setattr(backend, "_instances", {"numpy": backend.get("numpy")})
    monkeypatch.setattr(backend, "_failures", {})
    with pytest.raises(backend.BackendUnavailable, match=r"(?s)does not compile.*error"):
        backend.get("cuda-emu")
    assert "cuda-emu" not in backend.available()
    assert "conv.cu:1:1: error" in backend.why_unavailable("cuda-emu")
    with pytest.raises(backend.BackendUnavailable):
        backend.use("cuda-emu")


def test_a_missing_compiler_is_named(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-dualnet")
    with pytest.raises(backend.BackendUnavailable, match="no host C\\+\\+ compiler found"):
        emulate.find_compiler()


@pytest.mark.parametrize("block, max_grid", [(1, 1), (32, 1), (32, 3), (256, 64), (7, 5)])
def test_the_launcher_runs_every_block_and_thread(emu, monkeypatch, block, max_grid):
    """Whatever the grid, every element is written exactly as the reference writes it."""
    monkeypatch.setattr(emu, "block", block)
    monkeypatch.setattr(emu, "max_grid", max_grid)
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    np.testing.assert_array_equal(emu.im2col(x, 3, 3, 1, 1),
                                  reference.im2col(np, x, 3, 3, 1, 1))


def test_launch_arguments_must_be_fixed_width(emu):
    x = np.zeros((1, 1, 2, 2))
    cols = np.empty((1, 1, 4))
    good = (x, cols, *map(np.int64, (4, 1, 2, 2, 1, 1, 0, 1, 2, 2)))
    emu._launch("im2col_f64", 1, 32, good)
    np.testing.assert_array_equal(cols, x.reshape(1, 1, 4))
    with pytest.raises(TypeError, match="numpy scalars, got int"):
        emu._launch("im2col_f64", 1, 32, (x, cols, 4, *good[3:]))


def test_kernels_line_names_the_library(emu):
    assert "conv.cu" in emu.kernels() and str(emu.library) in emu.kernels()


def test_an_unwritable_cache_is_reported(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(backend.BackendUnavailable, match="cannot build in the emulator cache"):
        emulate.build(directory=blocker / "cuda-emu")
