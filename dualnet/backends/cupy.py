"""The `cupy` backend: CuPy arrays on a CUDA device, conv.cu through `cupy.RawModule` (NVRTC).

Choosing it requires CuPy to import, a device to answer, and conv.cu to compile and give the
reference result on it (`make_cupy_backend`); anything less leaves it unavailable with the
reason. CuPy is imported only when the backend is first asked for.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..backend import BackendUnavailable
from ..kernels.cuda import (
    NVRTC_OPTIONS,
    device_description,
    device_problem,
    kernel_source,
    nvrtc_version,
)
from .launch import ConvKernelBackend


class CupyBackend(ConvKernelBackend):
    """CuPy arrays on the current CUDA device; conv.cu through `cupy.RawModule` (NVRTC)."""

    name = "cupy"
    host = False
    chunk_cap_bytes = None  # device memory: chunks as large as the budget allows

    def __init__(self, cupy):
        self.xp = cupy
        self._module = None  # compiled at the first launch, then cached (CuPy caches on disk)

    def to_numpy(self, a) -> np.ndarray:
        if isinstance(a, self.xp.ndarray):
            return a.get()
        return np.asarray(a)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def seed(self, n: int) -> None:
        self.xp.random.seed(n)

    def _generator(self, seed):
        return self.xp.random if seed is None else self.xp.random.RandomState(seed)

    def rand(self, shape, dtype, seed=None):
        """Uniform [0, 1) samples made on the device (`seed` makes them reproducible on
        CuPy, but they are not NumPy's numbers: no host round trip for a dropout mask)."""
        return self._generator(seed).random_sample(shape, dtype=dtype)

    def randn(self, shape, dtype, seed=None):
        """Standard normal samples made on the device (same seeding rule as `rand`)."""
        return self._generator(seed).standard_normal(shape, dtype=dtype)

    def _launch(self, entry, grid, block, args):
        if self._module is None:
            self._module = self.xp.RawModule(code=kernel_source(), options=NVRTC_OPTIONS)
        self._module.get_function(entry)((grid,), (block,), args)

    def kernels(self) -> str:
        return (f"conv.cu through cupy.RawModule (NVRTC {'.'.join(map(str, nvrtc_version()))})"
                f" on {device_description(self.xp)}")


def make_cupy_backend() -> CupyBackend:
    """The `cupy` backend, after checking that CuPy, a device and conv.cu all work.

    Raises:
        BackendUnavailable: with the reason (CuPy missing, no device, driver too old,
            conv.cu compile error text, or a kernel that ran but computed wrong values).
    """
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailable(f"CuPy is not installed ({exc})") from exc
    problem = device_problem(cupy)
    if problem:
        raise BackendUnavailable(problem)
    be = CupyBackend(cupy)
    try:
        problem = be.self_test()
    except cupy.cuda.compiler.CompileException as exc:
        raise BackendUnavailable(f"conv.cu does not compile under NVRTC: {exc}") from exc
    except (cupy.cuda.driver.CUDADriverError, cupy.cuda.runtime.CUDARuntimeError) as exc:
        raise BackendUnavailable(f"a conv.cu kernel failed to run: {exc}") from exc
    if problem:
        raise BackendUnavailable(problem)
    return be


backend.register("cupy", make_cupy_backend)
