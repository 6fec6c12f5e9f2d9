"""conv.cu and the CUDA toolchain around it: the source, its entry points, NVRTC options, and
what CuPy can tell about the CUDA runtime, driver and devices.

The backends that launch conv.cu's kernels live in `dualnet.backends` (`launch`, `cupy`,
`emu`). Nothing here compiles, allocates or imports CuPy at import time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: The CUDA source every GPU-side kernel comes from (package data).
KERNEL_SOURCE = Path(__file__).with_name("conv.cu")

#: Options dualnet gives `cupy.RawModule`. Never `-arch`: CuPy picks the device's own.
NVRTC_OPTIONS = ("--std=c++17",)

#: conv.cu's kernels; each has the entry points `<kernel>_f32` and `<kernel>_f64`.
KERNELS = (
    "im2col", "col2im",
    "maxpool_forward", "maxpool_backward",
    "avgpool_forward", "avgpool_backward",
    "depthwise_forward", "depthwise_backward_input", "depthwise_backward_filter",
)

#: The entry-point suffix of each dtype the kernels take.
DTYPE_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def entry_points() -> list[str]:
    """Every `extern "C"` kernel name in conv.cu, e.g. 'im2col_f32'."""
    return [f"{kernel}_{suffix}" for kernel in KERNELS for suffix in DTYPE_SUFFIX.values()]


def kernel_source() -> str:
    """The text of conv.cu."""
    return KERNEL_SOURCE.read_text(encoding="utf-8")


def _cuda_version(v: int) -> str:
    """CUDA's integer version (13020) as text ('13.2')."""
    return f"{v // 1000}.{v % 1000 // 10}"


def nvrtc_version() -> tuple[int, int]:
    from cupy_backends.cuda.libs import nvrtc

    return nvrtc.getVersion()


def device_description(cupy) -> str:
    """'NVIDIA T4 (compute capability 7.5)' for the current device."""
    dev = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(dev.id)["name"]
    if isinstance(name, bytes):
        name = name.decode()
    cc = dev.compute_capability
    return f"{name} (compute capability {cc[:-1]}.{cc[-1]})"


def cuda_versions(cupy) -> dict[str, str]:
    """CUDA runtime and driver versions as text; the driver is 'none' when not installed."""
    runtime = cupy.cuda.runtime
    driver = runtime.driverGetVersion()
    return {"runtime": _cuda_version(runtime.runtimeGetVersion()),
            "driver": _cuda_version(driver) if driver else "none"}


def device_problem(cupy) -> str | None:
    """Why CuPy cannot use a CUDA device here, or None when at least one answers."""
    runtime = cupy.cuda.runtime
    try:
        count = runtime.getDeviceCount()
    except runtime.CUDARuntimeError as exc:
        versions = cuda_versions(cupy)
        if versions["driver"] == "none":
            return f"no NVIDIA driver is installed, so no CUDA device answers ({exc})"
        if "InsufficientDriver" in str(exc):
            return (f"the NVIDIA driver is too old: it supports CUDA {versions['driver']}, "
                    f"CuPy {cupy.__version__} needs CUDA {versions['runtime']} ({exc})")
        return f"no CUDA device answers: {exc}"
    if count == 0:
        return "CUDA works but reports no device"
    return None
