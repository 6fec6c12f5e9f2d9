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
