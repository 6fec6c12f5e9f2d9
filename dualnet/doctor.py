"""`dualnet doctor`: what this machine offers dualnet, and why any backend is missing.

`doctor()` returns the report as text (the CLI prints it). It never raises: each probe that
fails is reported with its reason, since a broken installation is what it is for.
"""

from __future__ import annotations

import platform
import sys

import numpy as np

from . import __version__, backend
from .backends import conv


def _module_version(name: str) -> str:
    try:
        module = __import__(name)
    except ImportError as exc:
        return f"not installed ({exc})"
    return getattr(module, "__version__", "installed, version unknown")


def _cuda_lines() -> list[str]:
    """CUDA runtime/driver/NVRTC versions and devices, as far as CuPy can tell."""
    try:
        import cupy
    except ImportError:
        return ["CUDA:     not probed (CuPy is not installed)"]
    from .kernels import cuda

    lines = []
    try:
        versions = cuda.cuda_versions(cupy)
        lines.append(f"CUDA:     runtime {versions['runtime']} (CuPy's), "
                     f"driver {versions['driver']}")
    except Exception as exc:  # a CuPy without its CUDA libraries fails in many ways
        lines.append(f"CUDA:     versions unknown ({type(exc).__name__}: {exc})")
    try:
        lines.append(f"NVRTC:    {'.'.join(map(str, cuda.nvrtc_version()))}")
    except Exception as exc:
        lines.append(f"NVRTC:    unavailable ({type(exc).__name__}: {exc})")
    problem = cuda.device_problem(cupy)
    if problem:
        lines.append(f"Devices:  none ({problem})")
        return lines
    for i in range(cupy.cuda.runtime.getDeviceCount()):
        with cupy.cuda.Device(i):
            lines.append(f"Device {i}: {cuda.device_description(cupy)}")
    return lines


def doctor() -> str:
    """The report: versions, CUDA, and per backend its kernels or why it is unavailable."""
    lines = [
        f"dualnet:  {__version__}",
        f"Python:   {platform.python_version()} ({sys.executable})",
        f"NumPy:    {np.__version__}",
        f"Cython:   {_module_version('Cython')}",
        f"CuPy:     {_module_version('cupy')}",
        *_cuda_lines(),
        "Backends:",
    ]
    for name in backend.names():
        reason = backend.why_unavailable(name)
        if reason is None:
            be = backend.get(name)
            lines.append(f"  {name:<9} available: {be.kernels()}")
            lines.append(f"  {'':<9} convolution algorithms: {', '.join(be.conv_algorithms())}")
        else:
            detail = reason.replace("\n", "\n            ")
            lines.append(f"  {name:<9} UNAVAILABLE: {detail}")
    lines.append(f"Default:  {backend.current().name}")
    lines.append(f"Conv:     set_algorithm({conv.get_algorithm()!r}), memory budget "
                 f"{conv.get_memory_budget() / 2**20:g} MiB")
    from . import _threads, _tuning

    lines.append(f"Tuning:   {'; '.join(_tuning.APPLIED) or 'none (DUALNET_NO_TUNING)'}")
    lines.append(f"Threads:  {_threads.describe()}")
    return "\n".join(lines)
