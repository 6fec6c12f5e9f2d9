"""conv.cu compiles where it must run: NVRTC (what CuPy uses) for every supported GPU
generation, and nvcc with warnings as errors as a second opinion. No GPU is needed.
"""

import re
import shutil
import subprocess

import pytest

from dualnet.kernels import cuda

# Compute capabilities dualnet supports: Colab's T4 (7.5), A100 (8.0), RTX 30xx/A10 (8.6),
# L4/RTX 40xx (8.9), H100 (9.0).
ARCHS = ("75", "80", "86", "89", "90")

# What CuPy adds to RawModule's options before calling NVRTC (cupy/cuda/compiler.py,
# `_compile_with_cache_cuda` and `_compile_using_nvrtc_no_warning`): flush-to-zero, device
# code by default, and `-arch=sm_XX` for the current device, which we play in turn.
CUPY_NVRTC_ADDS = ("-ftz=true", "--device-as-default-execution-space")


def test_source_is_self_contained():
    source = cuda.kernel_source()
    assert not re.search(r'^\s*#\s*include\s*"', source, re.MULTILINE), "no local #include"


def test_dualnet_never_chooses_the_architecture():
    assert not any("arch" in opt for opt in cuda.NVRTC_OPTIONS)


def test_every_kernel_has_a_float32_and_a_float64_entry_point():
    source = cuda.kernel_source()
    assert len(cuda.entry_points()) == 2 * len(cuda.KERNELS)
    for kernel in cuda.KERNELS:
        assert re.search(rf"void {kernel}_##suffix\(", source), kernel


@pytest.mark.parametrize("arch", ARCHS)
def test_compiles_under_nvrtc(nvrtc, arch):
    options = (*cuda.NVRTC_OPTIONS, *CUPY_NVRTC_ADDS, f"-arch=sm_{arch}")
    program = nvrtc.createProgram(cuda.kernel_source(), "conv.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError:
            pytest.fail(f"NVRTC sm_{arch}:\n{nvrtc.getProgramLog(program)}")
        log = nvrtc.getProgramLog(program).strip()
        cubin = nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)
    assert log == "", f"NVRTC warnings for sm_{arch}:\n{log}"
    for entry in cuda.entry_points():
        assert entry.encode() in cubin, f"{entry} missing from the sm_{arch} cubin"


def _nvcc_archs(nvcc):
    listed = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True)
    return set(re.findall(r"compute_(\d+)", listed.stdout))


# nvcc is a second opinion on the language, not on each target: the oldest and newest suffice.
@pytest.mark.parametrize("arch", (ARCHS[0], ARCHS[-1]))
def test_compiles_under_nvcc_without_warnings(arch, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed (NVRTC is the compiler that matters)")
    if arch not in _nvcc_archs(nvcc):
        pytest.skip(f"this nvcc cannot target compute_{arch}")
    cmd = [nvcc, "-ptx", f"-arch=compute_{arch}", "--std=c++17", "-Werror", "all-warnings",
           str(cuda.KERNEL_SOURCE), "-o", str(tmp_path / "conv.ptx")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ptx = (tmp_path / "conv.ptx").read_text()
    for entry in cuda.entry_points():
        assert f".entry {entry}(" in ptx
