"""The `cuda-emu` backend: conv.cu compiled for the CPU (`kernels/emulate.py`) and launched
like a GPU kernel, through the same launch code as the `cupy` backend; only `_launch` differs.
Arrays are numpy arrays.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from .. import backend
from ..backend import BackendUnavailable
from ..kernels import emulate
from .launch import ConvKernelBackend


def _ctypes_argument(a):
    """One launch argument as a ctypes value: an array's data pointer or a fixed-width scalar.

    Python ints and floats are refused, as the GPU path would silently pass them as
    `long long` / `double` whatever the kernel declares.
    """
    if isinstance(a, np.ndarray):
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, np.generic):
        return np.ctypeslib.as_ctypes_type(a.dtype)(a.item())
    raise TypeError(f"kernel arguments must be arrays or numpy scalars, got {type(a).__name__}")


class EmuBackend(ConvKernelBackend):
    """Host arrays; conv.cu's kernels compiled by the host C++ compiler, run thread by thread."""

    name = "cuda-emu"
    xp = np
    #: Emulated threads run one after another, so idle ones cost time: keep grids small.
    max_grid = 64

    def __init__(self, library: Path):
        self.library = library
        self._lib = ctypes.CDLL(str(library))
        self._entries = {}

    def _entry(self, entry):
        fn = self._entries.get(entry)
        if fn is None:
            fn = getattr(self._lib, f"dualnet_launch_{entry}")
            fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
            fn.restype = None
            self._entries[entry] = fn
        return fn

    def _launch(self, entry, grid, block, args):
        # Like cudaLaunchKernel: an array of pointers to each argument's value.
        values = [_ctypes_argument(a) for a in args]
        pointers = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
        self._entry(entry)(grid, block, pointers)

    def kernels(self) -> str:
        return f"conv.cu compiled for the CPU by the host compiler ({self.library})"


def make_emu_backend() -> EmuBackend:
    """Build (or reuse) the emulator library and check one kernel against the reference.

    Raises:
        BackendUnavailable: with the compiler's error text, or the self-test's complaint.
    """
    library = emulate.build()
    try:
        be = EmuBackend(library)
    except OSError as exc:  # e.g. a library built for another architecture
        raise BackendUnavailable(f"cannot load {library}: {exc}") from exc
    problem = be.self_test()
    if problem:
        raise BackendUnavailable(problem)
    return be


backend.register("cuda-emu", make_emu_backend)
