"""Builds dualnet's optional Cython extension; all other metadata lives in pyproject.toml.

The extensions (`dualnet.kernels._im2col`, `_winograd`, `_norm`, `_regularize`) are
accelerators, not requirements: if Cython, NumPy headers or a C compiler are missing, the build
prints one warning and the package falls back to its pure-NumPy kernels (`dualnet doctor`
reports which are active).
"""

import hashlib
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Sources every module compiles in beside its own .pyx (dualnet.backend hashes the same list).
SHARED_SOURCES = ("microkernels.h", "microkernels.pxd")


def _sources(name):
    return [os.path.join("dualnet", "kernels", f) for f in (f"{name}.pyx", *SHARED_SOURCES)]


def _sha256(name):
    digest = hashlib.sha256()
    for path in _sources(name):
        with open(path, "rb") as fh:
            digest.update(fh.read())
    return digest.hexdigest()


def _extensions():
    if os.environ.get("DUALNET_NO_EXTENSION"):
        return []
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:  # pragma: no cover - depends on the build environment
        print(f"dualnet: not building the Cython kernels ({exc})", file=sys.stderr)
        return []
    exts = [
        Extension(
            f"dualnet.kernels._{name}",
            [f"dualnet/kernels/{name}.pyx"],
            include_dirs=[numpy.get_include()],
            depends=_sources(name)[1:],
            # the module records which source it was built from: dualnet.backend refuses a
            # stale build (one an editable install kept after its rebuild failed)
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                           ("DUALNET_SOURCE_SHA256", f'"{_sha256(name)}"')],
        )
        for name in ("im2col", "winograd", "norm", "regularize")
    ]
    try:
        return cythonize(exts, compiler_directives={"language_level": 3}, quiet=True)
    except Exception as exc:  # a Cython too old or a broken .pyx must not fail the install
        print(f"dualnet: WARNING: not building the Cython kernels ({exc}); "
              "the slower pure-NumPy kernels will be used", file=sys.stderr)
        return []


class OptionalBuildExt(build_ext):
    """build_ext that adds OpenMP when the compiler has it and never fails the install."""

    def build_extension(self, ext):
        flags = ["-fopenmp"] if self._compiler_has_openmp() else []
        ext.extra_compile_args = [*ext.extra_compile_args, "-O3", *flags]
        ext.extra_link_args = [*ext.extra_link_args, *flags]
        try:
            super().build_extension(ext)
        except Exception as exc:  # any compiler failure: keep the pure-NumPy fallback
            print(f"dualnet: WARNING: could not build {ext.name} ({exc}); "
                  "the slower pure-NumPy kernels will be used", file=sys.stderr)

    def _compiler_has_openmp(self):
        """Try `-fopenmp` on a one-line program (macOS clang has no OpenMP by default)."""
        import tempfile

        if sys.platform == "win32":
            return False
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "omp_probe.c")
            with open(src, "w") as fh:
                fh.write("#include <omp.h>\nint main(void){return omp_get_max_threads()<1;}\n")
            try:
                objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
                self.compiler.link_executable(objs, os.path.join(tmp, "omp_probe"),
                                              extra_postargs=["-fopenmp"])
            except Exception:
                return False
        return True


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
