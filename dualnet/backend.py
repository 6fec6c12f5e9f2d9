"""Backends: which array library holds the data and which kernels do the heavy work.

This is the only module that knows backends exist. Layers, models, `optim` and `Solver` ask
the data::

    be = backend.of(x, w)   # the backend that owns these arrays
    xp = be.xp              # numpy or cupy
    cols = be.im2col(x, HH, WW, pad, stride)

Three backends fill one contract:

=========  ===================  ==================================================
name       arrays               kernels
=========  ===================  ==================================================
numpy      numpy.ndarray        Cython `kernels/{im2col,winograd}.pyx`, else NumPy
cupy       cupy.ndarray         `kernels/conv.cu` through CuPy (NVRTC)
cuda-emu   numpy.ndarray        the same `conv.cu` compiled for the CPU
=========  ===================  ==================================================

`numpy` and `cuda-emu` both hold host arrays, so for host arrays the *default* backend
(`use(...)`) decides which kernel set runs: that is an implementation variant, as in
Chainer, never a change of array library. Device arrays always belong to `cupy`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from pathlib import Path

import numpy as np

from .kernels import reference

__all__ = [
    "Backend", "BackendUnavailable", "of", "get", "use", "current", "available",
    "why_unavailable", "seed",
]


class BackendUnavailable(RuntimeError):
    """Raised by `get(name)` when a backend cannot run here; the message says why."""


class Backend:
    """One array library plus the kernels that run on its arrays.

    Kernel methods take and return arrays of this backend. Shapes:

    - `im2col(x (N, C, H, W), HH, WW, pad, stride) -> cols (N, C*HH*WW, Ho*Wo)`, rows ordered
      (c, hh, ww) to match `w.reshape(F, -1)`; `col2im` is its adjoint (sums overlaps).
    - `maxpool_forward(x (N, C, H, W), ph, pw, stride) -> out, argmax (N, C, Ho, Wo)`,
      argmax an int64 flat index into the (H, W) plane, first maximum on ties.
    - `avgpool_forward/backward` likewise, without argmax.
    """

    name = "abstract"
    xp = None
    #: True when arrays live in host memory (numpy.ndarray).
    host = True

    # -- arrays -----------------------------------------------------------------------
    def owns(self, a) -> bool:
        """Whether `a` is an array of this backend's array library."""
        return isinstance(a, self.xp.ndarray)

    def asarray(self, a, dtype=None):
        """`a` (host or foreign array, list, scalar) as an array of this backend."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        """`a` as a host `numpy.ndarray` (an explicit copy off the device where needed)."""
        return np.asarray(a)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on host backends); benchmarks call this."""

    # -- random numbers ---------------------------------------------------------------
    def seed(self, n: int) -> None:
        """Seed this backend's global random state."""
        np.random.seed(n)

    def rand(self, shape, dtype, seed=None):
        """Uniform [0, 1) samples of `shape` in `dtype`.

        With `seed`, the same numbers as `np.random.seed(seed); np.random.rand(*shape)` (so
        the course's seeded dropout masks are reproduced) without touching global state.
        """
        gen = np.random if seed is None else np.random.RandomState(seed)
        return self.asarray(gen.random_sample(shape), dtype=dtype)

    def randn(self, shape, dtype, seed=None):
        """Standard normal samples of `shape` in `dtype` (same seeding rule as `rand`)."""
        gen = np.random if seed is None else np.random.RandomState(seed)
        return self.asarray(gen.standard_normal(shape), dtype=dtype)

    # -- kernels (pure-xp reference unless a subclass accelerates them) ---------------
    def im2col(self, x, HH, WW, pad, stride):
        return reference.im2col(self.xp, x, HH, WW, pad, stride)

    def col2im(self, cols, x_shape, HH, WW, pad, stride):
        return reference.col2im(self.xp, cols, x_shape, HH, WW, pad, stride)

    def maxpool_forward(self, x, ph, pw, stride):
        return reference.maxpool_forward(self.xp, x, ph, pw, stride)

    def maxpool_backward(self, dout, argmax, x_shape, ph, pw, stride):
        return reference.maxpool_backward(self.xp, dout, argmax, x_shape, ph, pw, stride)

    def avgpool_forward(self, x, ph, pw, stride):
        return reference.avgpool_forward(self.xp, x, ph, pw, stride)

    def avgpool_backward(self, dout, x_shape, ph, pw, stride):
        return reference.avgpool_backward(self.xp, dout, x_shape, ph, pw, stride)

    def kernels(self) -> str:
        """One line saying which kernel implementation is active (for `doctor`)."""
        return "pure-xp reference kernels"

    def __repr__(self):
        return f"<dualnet backend {self.name!r}>"


class NumpyBackend(Backend):
    """Host arrays; Cython kernels when the extension is built, else the NumPy reference."""

    name = "numpy"
    xp = np
    #: im2col and col2im take `out=`: im2col writes into any (N, K, P) array with a contiguous
    #: last axis (the fast convolution passes a transposed view of a (K, N, P) buffer), col2im
    #: reads such an array and writes into a C-contiguous `out`.
    kernels_take_out = True

    def __init__(self):
        self._ext, self._ext_reason = _load_cython_kernels("_im2col")
        self._wino, wino_reason = _load_cython_kernels("_winograd")
        self._ext_reason = self._ext_reason or wino_reason

    @property
    def im2col_compiled(self) -> bool:
        """Whether im2col, col2im, pooling and the GEMM-row kernels run compiled (else the
        NumPy reference's)."""
        return self._ext is not None

    @property
    def winograd_compiled(self) -> bool:
        """Whether the Winograd transforms run compiled (else the NumPy reference's)."""
        return self._wino is not None

    @property
    def im2col_fused(self):
        """The compiled module whose fused im2col convolution (a sample's patches and small
        vectorized GEMMs in a thread's cache) the layers may use, or None."""
        if self._ext is None or self._ext.FUSED_KERNEL == "scalar":
            return None
        return self._ext

    @property
    def winograd_fused(self):
        """The compiled module whose fused Winograd convolution (transforms and small
        vectorized GEMMs per sample, in cache) the layers may use, or None: not compiled, or
        compiled without vector extensions."""
        if self._wino is None or self._wino.FUSED_KERNEL == "scalar":
            return None
        return self._wino

    def kernels(self):
        built = [f"dualnet.kernels.{m.__name__.rsplit('.', 1)[1]}"
                 for m in (self._ext, self._wino) if m is not None]
        if len(built) == 2:
            fused = self._ext.FUSED_KERNEL
            fused = (f"fused convolutions with {fused} vectors" if fused != "scalar" else
                     "no fused convolutions (the compiler has no vector extensions)")
            return f"Cython kernels ({', '.join(built)}; {fused})"
        if built:
            return f"Cython kernels ({built[0]}), pure-NumPy for the rest ({self._ext_reason})"
        return f"pure-NumPy kernels ({self._ext_reason})"

    def im2col(self, x, HH, WW, pad, stride, out=None):
        if self._ext is not None:
            return self._ext.im2col(x, HH, WW, pad, stride, out=out)
        cols = super().im2col(x, HH, WW, pad, stride)
        if out is None:
            return cols
        out[...] = cols
        return out

    def col2im(self, cols, x_shape, HH, WW, pad, stride, out=None):
        if self._ext is not None:
            return self._ext.col2im(cols, x_shape, HH, WW, pad, stride, out=out)
        dx = super().col2im(cols, x_shape, HH, WW, pad, stride)
        if out is None:
            return dx
        out[...] = dx
        return out

    def maxpool_forward(self, x, ph, pw, stride):
        if self._ext is None:
            return super().maxpool_forward(x, ph, pw, stride)
        return self._ext.maxpool_forward(x, ph, pw, stride)

    def maxpool_backward(self, dout, argmax, x_shape, ph, pw, stride):
        if self._ext is None:
            return super().maxpool_backward(dout, argmax, x_shape, ph, pw, stride)
        return self._ext.maxpool_backward(dout, argmax, x_shape, ph, pw, stride)

    def rows_to_nchw(self, rows, bias, out, q=1):
        """The fast convolution's GEMM rows (q*F, N*(Ho/q)*Wo) + bias -> out (N, F, Ho, Wo);
        all float32 or all float64, C-contiguous."""
        if self._ext is not None:
            return self._ext.rows_to_nchw(rows, bias, out, q)
        out[...] = reference.rows_to_nchw(np, rows, bias, out.shape, q)
        return out

    def nchw_to_rows(self, dout, out, q=1):
        """dout (N, F, Ho, Wo) -> out (q*F, N*(Ho/q)*Wo), the layout `rows_to_nchw` reads;
        one float dtype, C-contiguous."""
        if self._ext is not None:
            return self._ext.nchw_to_rows(dout, out, q)
        out[...] = reference.nchw_to_rows(np, dout, q)
        return out

    # -- Winograd F(2x2, 3x3) tile transforms (see kernels/reference.py), into `out` ---------
    # Arrays are C-contiguous and share one dtype, float32 or float64. The pure-NumPy versions
    # build their result first and copy it into `out` (the layers' memory budget allows for it).
    def winograd_input(self, x, pad, out):
        """x (N, C, H, W) -> out (16, C, N*th*tw)."""
        if self._wino is not None:
            return self._wino.winograd_input(x, pad, out)
        out[...] = reference.winograd_input(np, x, pad)
        return out

    def winograd_output(self, M, bias, out):
        """M (16, F, N*th*tw) -> out (N, F, Ho, Wo), plus bias (F,)."""
        if self._wino is not None:
            return self._wino.winograd_output(M, bias, out)
        out[...] = reference.winograd_output(np, M, bias, out.shape)
        return out

    def winograd_output_grad(self, dout, out):
        """dout (N, F, Ho, Wo) -> out (16, F, N*th*tw)."""
        if self._wino is not None:
            return self._wino.winograd_output_grad(dout, out)
        out[...] = reference.winograd_output_grad(np, dout)
        return out

    def winograd_input_grad(self, dV, pad, out):
        """dV (16, C, N*th*tw) -> out (N, C, H, W)."""
        if self._wino is not None:
            return self._wino.winograd_input_grad(dV, pad, out)
        out[...] = reference.winograd_input_grad(np, dV, out.shape, pad)
        return out


_said_no_extension = False


def _load_cython_kernels(module):
    """Import one compiled kernel module (`_im2col`, `_winograd`) from dualnet.kernels.

    Returns (module or None, reason it is missing). `DUALNET_NO_EXTENSION=1` disables them at
    run time (the fallback is tested that way). A module built from another version of its
    .pyx than the one installed beside it (a rebuild that failed in an editable install
    leaves the old one) is not used: its functions may not match the Python code. The first
    fallback is reported once on stderr, as the brief for slow paths asks.
    """
    global _said_no_extension
    if os.environ.get("DUALNET_NO_EXTENSION"):
        return None, "disabled by DUALNET_NO_EXTENSION"
    try:
        ext = importlib.import_module(f"dualnet.kernels.{module}")
        reason = _stale_reason(ext, module)
    except ImportError as exc:
        ext, reason = None, f"Cython extension not built: {exc}"
    if reason is None:
        return ext, ""
    if not _said_no_extension:
        _said_no_extension = True
        print(f"dualnet: {reason}; using slower pure-NumPy kernels", file=sys.stderr)
    return None, reason


#: Sources compiled into every kernel module beside its .pyx (setup.py's SHARED_SOURCES).
_SHARED_SOURCES = ("microkernels.h", "microkernels.pxd")


def _stale_reason(ext, module):
    """Why compiled `ext` does not match its installed sources, or None when it does."""
    kernels = Path(__file__).parent / "kernels"
    source = kernels / f"{module.lstrip('_')}.pyx"
    paths = [source, *(kernels / name for name in _SHARED_SOURCES)]
    if not all(p.exists() for p in paths):  # an install without sources: nothing to compare
        return None
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    built_from = getattr(ext, "SOURCE_SHA256", None)  # None: built before hashes were recorded
    if built_from == "" or built_from == digest.hexdigest():
        return None  # "": built without setup.py (e.g. cythonize -i), source unknown
    return (f"dualnet.kernels.{module} was built from another version of {source.name} "
            f"(rebuild it: pip install -e .)")


# -- registry ----------------------------------------------------------------------------
def _make_numpy():
    return NumpyBackend()


def _make_cupy():
    from .kernels import cuda

    return cuda.make_cupy_backend()


def _make_cuda_emu():
    from .kernels import emulate

    return emulate.make_emu_backend()


_FACTORIES = {"numpy": _make_numpy, "cupy": _make_cupy, "cuda-emu": _make_cuda_emu}
_instances: dict[str, Backend] = {}
_failures: dict[str, str] = {}
_default = "numpy"


def names() -> list[str]:
    """Every backend dualnet knows, usable here or not."""
    return list(_FACTORIES)


def get(name: str) -> Backend:
    """The Backend called `name`; raises `BackendUnavailable` with the reason if it cannot run."""
    if isinstance(name, Backend):
        return name
    if name not in _FACTORIES:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(_FACTORIES)}")
    if name in _instances:
        return _instances[name]
    if name in _failures:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {_failures[name]}")
    try:
        be = _FACTORIES[name]()
    except BackendUnavailable as exc:
        _failures[name] = str(exc)
        raise BackendUnavailable(f"backend {name!r} is unavailable: {exc}") from exc
    _instances[name] = be
    return be


def why_unavailable(name: str) -> str | None:
    """None when backend `name` runs here, else the reason it does not."""
    try:
        get(name)
    except BackendUnavailable:
        return _failures[name]
    return None


def available() -> list[str]:
    """Names of the backends usable on this machine (`'numpy'` always comes first)."""
    return [n for n in _FACTORIES if why_unavailable(n) is None]


def current() -> Backend:
    """The default backend: where new parameters are created and batches are moved."""
    return get(_default)


class use:
    """Make `name` the default backend, for good or, as a context manager, for a block.

    >>> backend.use('cupy')                 # from now on
    >>> with backend.use('cuda-emu'): ...   # only inside the block
    """

    def __init__(self, name: str):
        global _default
        be = get(name)  # fail now, with the reason, rather than at first use
        self._previous = _default
        _default = be.name

    def __enter__(self) -> Backend:
        return current()

    def __exit__(self, *exc_info) -> None:
        global _default
        _default = self._previous


def _array_family(a) -> str | None:
    """'host' for numpy arrays/scalars, 'cupy' for CuPy arrays, None for non-arrays."""
    if isinstance(a, (np.ndarray, np.generic)):
        return "host"
    module = type(a).__module__
    if module.startswith("cupy"):
        return "cupy"
    return None


def of(*arrays) -> Backend:
    """The backend that owns `arrays` (None and Python scalars are ignored).

    Host arrays belong to the default backend when it is a host backend (`numpy` or
    `cuda-emu`), else to `numpy`; CuPy arrays belong to `cupy`. Arrays of two backends
    raise `TypeError` naming both: dualnet never copies between devices behind your back.
    """
    families = {}
    for a in arrays:
        fam = _array_family(a)
        if fam is not None:
            families.setdefault(fam, type(a).__module__ + "." + type(a).__name__)
    if len(families) > 1:
        found = " and ".join(f"{fam} ({kind})" for fam, kind in families.items())
        raise TypeError(f"arrays from two backends were mixed: {found}; move them to one "
                        "backend first with backend.get(name).asarray(...)")
    if families.get("cupy"):
        return get("cupy")
    default = current()
    return default if default.host else get("numpy")


def seed(n: int) -> None:
    """Seed every usable backend's random state, so that a CPU run is exactly reproducible."""
    np.random.seed(n)
    for name in list(_instances):
        _instances[name].seed(n)
