"""The `numpy` backend: host arrays, the Cython kernels when they are built, else NumPy.

Its convolution algorithms live beside it: Winograd (`host_winograd`) and im2col
(`host_im2col`), each fused per sample in a thread's cache or chunked through the batch, with
scratch memory from `scratch`; `NumpyBackend.single_group_algorithm` is the rule that
picks among them (grouped calls: `Backend.conv_algorithm`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import sys
from pathlib import Path

import numpy as np

from .. import _threads, backend
from ..kernels import reference
from . import conv, host_im2col, host_winograd, scratch
from .base import Backend


class NumpyBackend(Backend):
    """Host arrays; Cython kernels when the extension is built, else the NumPy reference."""

    name = "numpy"
    xp = np

    def __init__(self):
        loaded = [_load_cython_kernels(m)
                  for m in ("_im2col", "_winograd", "_norm", "_regularize")]
        (self._ext, self._wino, self._norm, self._regularize) = (m for m, _ in loaded)
        self._ext_reason = next((reason for _, reason in loaded if reason), "")

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
        vectorized GEMMs in a thread's cache) `host_im2col` uses, or None."""
        if self._ext is None or self._ext.FUSED_KERNEL == "scalar":
            return None
        return self._ext

    @property
    def winograd_fused(self):
        """The compiled module whose fused Winograd convolution (transforms and small
        vectorized GEMMs per sample, in cache) `host_winograd` uses, or None: not compiled, or
        compiled without vector extensions."""
        if self._wino is None or self._wino.FUSED_KERNEL == "scalar":
            return None
        return self._wino

    # -- convolution ----------------------------------------------------------------------
    def _make_conv_algorithms(self):
        return [host_winograd.WinogradFused(self), host_winograd.WinogradChunked(self),
                host_im2col.Im2colFused(self), host_im2col.Im2colChunked(self),
                host_im2col.Im2colPairs(self), conv.Depthwise(self), conv.Grouped(self)]

    @property
    def fused_kernel(self) -> str:
        """The instruction set the fused convolutions' kernels run here ('avx512', 'avx2',
        'vector'; 'scalar' when none are built): each fused algorithm's `pays` rule reads it."""
        return self._ext.FUSED_KERNEL if self._ext is not None else "scalar"

    @staticmethod
    def _takes_fused(module, algorithm, call, budget):
        """Whether the rule takes `algorithm`, a fused path of `module`: it fits the call
        within `budget`, and `module.fused_enabled` is True, or None (the default) with the
        algorithm paying here (its `pays`)."""
        enabled = module.fused_enabled
        return algorithm.fits(call, budget) and (
            enabled or (enabled is None and algorithm.pays(call)))

    def single_group_algorithm(self, call):
        """The numpy backend's rule for one group, in order: Winograd for 3x3 stride-1 calls
        where it pays (`host_winograd.winograd_pays`; always with `set_algorithm('winograd')`),
        fused where that path pays here (`WinogradFused.pays`) and its workspace fits the
        budget, else chunked; then fused im2col likewise (`Im2colFused.pays`); then, under
        'auto', vertical output pairs for few-filter layers; else chunked im2col."""
        setting, budget = conv.settings.algorithm, conv.settings.memory_budget
        algorithms = self.conv_algorithms()
        winograd = algorithms["winograd"]
        if setting != "im2col" and winograd.applies(call):
            fused = self._takes_fused(host_winograd, algorithms["winograd-fused"], call, budget)
            if setting == "winograd" or (self.winograd_compiled and host_winograd.winograd_pays(
                    call.C, call.N * call.Ho * call.Wo, fused)):
                return algorithms["winograd-fused"] if fused else winograd
        if self._takes_fused(host_im2col, algorithms["im2col-fused"], call, budget):
            return algorithms["im2col-fused"]
        if setting == "auto" and algorithms["im2col-pairs"].applies(call):
            return algorithms["im2col-pairs"]
        return algorithms["im2col"]

    def kernels(self):
        built = [f"dualnet.kernels.{m.__name__.rsplit('.', 1)[1]}"
                 for m in (self._ext, self._wino, self._norm, self._regularize) if m is not None]
        if len(built) == 4:
            kernel = self.fused_kernel
            if kernel == "scalar":
                fused = "no fused convolutions (the compiler has no vector extensions)"
            else:
                fused = f"fused convolutions with {kernel} vectors"
                if kernel not in host_im2col.FUSED_PAYS:
                    fused += (", left to the chunked paths here (measured faster only with "
                              "AVX2 or AVX-512 kernels)")
            return f"Cython kernels ({', '.join(built)}; {fused})"
        if built:
            return (f"Cython kernels ({', '.join(built)}), pure-NumPy for the rest "
                    f"({self._ext_reason})")
        return f"pure-NumPy kernels ({self._ext_reason})"

    def matmul(self, a, b, out=None):
        """BLAS on one thread, large products split over dualnet's threads (`_threads`)."""
        return _threads.matmul(a, b, out=out)

    # -- batch normalization in training mode: the reference's arithmetic in two passes over
    # the data each way (kernels/norm.pyx), for C-contiguous arrays
    def _norm_kernels_take(self, x):
        return self._norm is not None and x.flags.c_contiguous

    def batchnorm_train(self, x, gamma, beta, eps, relu=False):
        if not self._norm_kernels_take(x):
            return super().batchnorm_train(x, gamma, beta, eps, relu)
        x3 = x.reshape(x.shape[0], x.shape[1], -1)
        out = np.empty_like(x3)
        mean, var = np.empty(x.shape[1], x.dtype), np.empty(x.shape[1], x.dtype)
        serial = _threads.kernels_serial()
        self._norm.channel_moments(x3, mean, var, serial)
        std = np.sqrt(var + x.dtype.type(eps))
        self._norm.channel_normalize(x3, mean, np.ascontiguousarray(gamma / std),
                                     np.ascontiguousarray(beta), out, relu, serial)
        return out.reshape(x.shape), mean, var, std

    def batchnorm_train_backward(self, dout, x, mean, std, gamma, keep=None):
        if not (self._norm_kernels_take(x) and (keep is None or keep.flags.c_contiguous)):
            return super().batchnorm_train_backward(dout, x, mean, std, gamma, keep)
        shape = (x.shape[0], x.shape[1], -1)
        dout3, x3 = np.ascontiguousarray(dout).reshape(shape), x.reshape(shape)
        keep3 = None if keep is None else keep.reshape(shape)
        dbeta, sum_gx = np.empty_like(mean), np.empty_like(mean)
        serial = _threads.kernels_serial()
        self._norm.channel_grad_sums(dout3, x3, mean, dbeta, sum_gx, keep3, serial)
        dgamma = sum_gx / std
        M = x.size // x.shape[1]
        dx = np.empty_like(x3)
        self._norm.channel_normalize_grad(dout3, x3, mean, np.ascontiguousarray(gamma / std),
                                          dbeta / M, dgamma / (M * std), dx, keep3, serial)
        return dx.reshape(x.shape), dgamma, dbeta

    # -- dropout and L2 weight decay in one pass each (kernels/regularize.pyx) -------------
    def dropout(self, x, p, seed=None):
        if self._regularize is None or not x.flags.c_contiguous:
            return super().dropout(x, p, seed)
        gen = _legacy_bit_generator(seed)
        if gen is None:
            return super().dropout(x, p, seed)
        out, mask = np.empty_like(x), np.empty_like(x)
        blocks = type(gen) is np.random.MT19937 and self._mt19937_matches
        with gen.lock:  # the global generator is shared with every other thread's draws
            self._regularize.dropout(x.reshape(-1), float(p), x.dtype.type(1 / p), gen, blocks,
                                      out.reshape(-1), mask.reshape(-1))
        return out, mask

    @functools.cached_property
    def _mt19937_matches(self):
        """Whether the dropout kernel's MT19937 block path draws NumPy's numbers (checked
        once per process on a generator of its own; else every number comes through the
        generator's own `next_double`)."""
        return bool(self._regularize.mt19937_matches(np.random.MT19937(0)))

    def l2_decay(self, dW, W, reg):
        if (self._regularize is None or dW.dtype != W.dtype or dW.shape != W.shape
                or not (dW.flags.c_contiguous and W.flags.c_contiguous)):
            return super().l2_decay(dW, W, reg)
        out = np.empty_like(W)
        squares = self._regularize.l2_decay(dW.reshape(-1), W.reshape(-1), W.dtype.type(reg),
                                            out.reshape(-1))
        return out, squares

    # Every library product inside a convolution (the algorithms' GEMMs, the Winograd filter
    # transforms) keeps BLAS on one thread, so BLAS's pool never wakes beside the kernels.
    def conv2d(self, *args, **kwargs):
        with _threads.blas_one_thread():
            return super().conv2d(*args, **kwargs)

    def conv2d_maxpool(self, *args, **kwargs):
        with _threads.blas_one_thread():
            return super().conv2d_maxpool(*args, **kwargs)

    def conv2d_maxpool_backward(self, *args, **kwargs):
        with _threads.blas_one_thread():
            return super().conv2d_maxpool_backward(*args, **kwargs)

    def conv2d_backward(self, *args, **kwargs):
        with _threads.blas_one_thread():
            return super().conv2d_backward(*args, **kwargs)

    # -- kernels: im2col and col2im take `out=`: im2col writes into any (N, K, P) array with a
    # contiguous last axis (the chunked im2col passes a transposed view of a (K, N, P) buffer),
    # col2im reads such an array and writes into a C-contiguous `out`.
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

    def maxpool_backward(self, dout, argmax, x_shape, ph, pw, stride, keep=None):
        if self._ext is None or not (keep is None or keep.flags.c_contiguous):
            return super().maxpool_backward(dout, argmax, x_shape, ph, pw, stride, keep)
        return self._ext.maxpool_backward(dout, argmax, x_shape, ph, pw, stride, keep)

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

    def _depthwise_ws(self, x, w, pad, Ho, Wo):
        """The depthwise kernels' per-thread rows (padded plane, partial sums), from scratch."""
        rows = self._ext.depthwise_workspace(x.shape[2], x.shape[3], w.shape[2], w.shape[3],
                                             pad, Ho, Wo)
        ws, = scratch.arrays(self, x.dtype, (self._ext.max_threads(), rows))
        return ws

    def depthwise_forward(self, x, w, b, stride, pad, Ho, Wo):
        if self._ext is None:
            return super().depthwise_forward(x, w, b, stride, pad, Ho, Wo)
        out = np.empty((x.shape[0], w.shape[0], Ho, Wo), dtype=x.dtype)
        return self._ext.depthwise_forward(x, np.ascontiguousarray(w), b, pad, stride, out,
                                           self._depthwise_ws(x, w, pad, Ho, Wo))

    def depthwise_backward(self, dout, x, w, stride, pad, need_dx=True):
        if self._ext is None:
            return super().depthwise_backward(dout, x, w, stride, pad, need_dx)
        dx = np.empty_like(x) if need_dx else None
        return self._ext.depthwise_backward(dout, x, np.ascontiguousarray(w), pad, stride, dx,
                                            np.empty(w.shape, dtype=w.dtype),
                                            self._depthwise_ws(x, w, pad, *dout.shape[2:]))

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


def _legacy_bit_generator(seed):
    """The bit generator `np.random.random_sample` draws from (the global RandomState's), or
    with `seed` that of `np.random.RandomState(seed)`; None where NumPy does not show it."""
    if seed is None:
        return np.random.get_bit_generator()
    return getattr(np.random.RandomState(seed), "_bit_generator", None)


#: Sources compiled into every kernel module beside its .pyx (setup.py's SHARED_SOURCES).
_SHARED_SOURCES = ("microkernels.h", "microkernels.pxd")


def _stale_reason(ext, module):
    """Why compiled `ext` does not match its installed sources, or None when it does."""
    kernels = Path(__file__).parent.parent / "kernels"
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


backend.register("numpy", NumpyBackend)
