"""`doctor()` reports versions, and for every backend its kernels or the exact reason it is out."""

import platform

import numpy as np

from dualnet import backend
from dualnet.doctor import doctor


def test_report_names_versions():
    report = doctor()
    assert f"Python:   {platform.python_version()}" in report
    assert f"NumPy:    {np.__version__}" in report
    assert "Cython:" in report and "CuPy:" in report and "CUDA:" in report


def test_report_gives_each_backend_its_kernels_or_its_reason():
    report = doctor()
    for name in backend.names():
        reason = backend.why_unavailable(name)
        if reason is None:
            assert f"{name:<9} available: {backend.get(name).kernels()}" in report
        else:
            first_line = reason.splitlines()[0]
            assert f"{name:<9} UNAVAILABLE: {first_line}" in report


def test_report_without_a_gpu_says_why_there_is_no_device():
    reason = backend.why_unavailable("cupy")
    report = doctor()
    if reason is None:
        assert "compute capability" in report
    else:
        assert "Device" in report and "compute capability" not in report


def test_report_names_each_backends_convolution_algorithms_and_the_settings():
    from dualnet.layers import conv

    old_algorithm = conv.set_algorithm("winograd")
    old_budget = conv.set_memory_budget(3 * 2**20)
    try:
        report = doctor()
    finally:
        conv.set_algorithm(old_algorithm)
        conv.set_memory_budget(old_budget)
    assert "Conv:     set_algorithm('winograd'), memory budget 3 MiB" in report
    numpy_algorithms = ", ".join(backend.get("numpy").conv_algorithms())
    assert "winograd-fused" in numpy_algorithms and "im2col-portable" not in numpy_algorithms
    assert f"convolution algorithms: {numpy_algorithms}" in report
    if backend.why_unavailable("cuda-emu") is None:
        emu_algorithms = ", ".join(backend.get("cuda-emu").conv_algorithms())
        assert "im2col-portable" in emu_algorithms and "winograd" not in emu_algorithms
        assert f"convolution algorithms: {emu_algorithms}" in report
