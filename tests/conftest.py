"""Suite-wide rules: tests marked `gpu` skip with the reason no device answers, and with
CI=true a missing NVRTC wheel or an unavailable `cuda-emu` backend fails instead of skipping.
"""

from __future__ import annotations

import os

import pytest

from dualnet import backend


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_unless_ci(reason: str):
    """Skip with `reason`, except under CI=true, where what is missing is required."""
    if in_ci():
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    reason = backend.why_unavailable("cupy")
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device for the cupy backend: {reason}")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def nvrtc():
    """CuPy's NVRTC binding (compiles CUDA without a GPU); skips if the wheels are absent."""
    try:
        from cupy_backends.cuda.libs import nvrtc as module

        module.getVersion()
    except Exception as exc:  # ImportError, or the NVRTC library itself missing
        skip_unless_ci(f"NVRTC is not usable (pip install 'dualnet[nvrtc]'): {exc}")
    return module


def require_backend(name: str):
    """Backend `name`, else skip with the reason (`cuda-emu` and `numpy` fail under CI=true;
    `cupy` never does: CI has no GPU, and its tests carry the `gpu` mark)."""
    reason = backend.why_unavailable(name)
    if reason is None:
        return backend.get(name)
    message = f"backend {name!r} is unavailable: {reason}"
    if name == "cupy":
        pytest.skip(message)
    skip_unless_ci(message)


@pytest.fixture(scope="session")
def emu():
    """The `cuda-emu` backend; skips with the reason when it cannot be built here."""
    return require_backend("cuda-emu")


@pytest.fixture(scope="session")
def backend_for():
    """`backend_for(name)`: the backend, or a skip (a failure under CI) saying why not."""
    return require_backend


@pytest.fixture
def one_line_error(capsys):
    """`one_line_error(*fragments)`: what a command printed on stderr is one error line
    (besides the one-time notice of missing compiled kernels), holding every fragment, with
    no traceback; returns that line."""

    def check(*fragments):
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if not line.startswith("dualnet: Cython")]
        assert len(lines) == 1, err
        assert "error" in lines[0]
        for fragment in fragments:
            assert fragment in lines[0], lines[0]
        return lines[0]

    return check
