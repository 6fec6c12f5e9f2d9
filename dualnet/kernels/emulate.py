"""conv.cu compiled for the CPU, for the `cuda-emu` backend (`dualnet.backends.emu`).

The host C++ compiler builds the unchanged conv.cu with `emulate.h` force-included (it
supplies `threadIdx`, `blockIdx`, `blockDim`, `gridDim` and empty `__global__`/`__device__`),
plus one generated `DUALNET_EMU_EXPORT(entry)` line per kernel, which defines a C function
`dualnet_launch_<entry>(grid, block, void** args)` that runs every block and thread of the
grid in turn. Python reaches it through the same launch code as the `cupy` backend; only
`_launch` differs. Arrays are numpy arrays.

The shared library is cached in a per-user directory under a hash of the compiler, flags and
every source byte. The compiler runs from an argument list (never a shell) on packaged
sources only. If it fails, the backend is unavailable with the compiler's own error text:
there is no silent fallback.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..backend import BackendUnavailable
from .cuda import KERNEL_SOURCE, entry_points

#: The header that makes conv.cu valid host C++.
HEADER = Path(__file__).with_name("emulate.h")

#: Host compiler flags; the header is added with `-include`.
CXX_FLAGS = ("-x", "c++", "-std=c++17", "-O2", "-shared", "-fPIC")


def cache_dir() -> Path:
    """Where compiled emulator libraries are kept: $DUALNET_CACHE_DIR, else the user cache."""
    root = os.environ.get("DUALNET_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(xdg) / "dualnet"
    return Path(root) / "cuda-emu"


def find_compiler() -> str:
    """Absolute path of the host C++ compiler: $CXX if set, else g++ or c++."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    raise BackendUnavailable(f"no host C++ compiler found (looked for {', '.join(candidates)};"
                             " install g++ or set CXX)")


def _translation_unit(source: str) -> str:
    """conv.cu's text (line numbers kept for error messages) plus one export per kernel."""
    exports = "".join(f"DUALNET_EMU_EXPORT({entry})\n" for entry in entry_points())
    return f'#line 1 "conv.cu"\n{source}\n#line 1 "dualnet-emu-exports"\n{exports}'


def build(source_path: Path = KERNEL_SOURCE, header_path: Path = HEADER,
          directory: Path | None = None) -> Path:
    """Compile `source_path` for the CPU (or reuse the cached build); returns the library path.

    Raises:
        BackendUnavailable: no compiler, or the compile failed (its stderr is in the message).
    """
    compiler = find_compiler()
    unit = _translation_unit(source_path.read_text(encoding="utf-8"))
    header = header_path.read_text(encoding="utf-8")
    identity = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                              check=False).stdout
    key = hashlib.sha256("\0".join([identity, *CXX_FLAGS, header, unit]).encode()).hexdigest()
    directory = Path(directory) if directory is not None else cache_dir()
    library = directory / f"conv-{key[:24]}.so"
    if library.exists():
        return library
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return _compile(compiler, source_path, header_path, unit, directory, library)
    except OSError as exc:
        raise BackendUnavailable(f"cannot build in the emulator cache {directory} ({exc}); "
                                 "set DUALNET_CACHE_DIR to a writable folder") from exc


def _compile(compiler, source_path, header_path, unit, directory, library) -> Path:
    """Compile `unit` in a scratch folder inside `directory`, then move it to `library`."""
    with tempfile.TemporaryDirectory(dir=directory) as work:
        unit_path = Path(work) / "conv_emu.cpp"
        unit_path.write_text(unit, encoding="utf-8")
        built = Path(work) / library.name
        cmd = [compiler, *CXX_FLAGS, "-include", str(header_path), str(unit_path), "-o",
               str(built)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BackendUnavailable(f"{source_path.name} does not compile for the CPU "
                                     f"({' '.join(cmd)}):\n{result.stderr.strip()}")
        # Atomic: a concurrent process sees either no library or a complete one.
        os.replace(built, library)
    return library
