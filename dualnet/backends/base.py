"""The backend contract and its portable implementation: every kernel in pure `xp` code.

Subclasses (`numpy`, `cupy`, `cuda-emu` in this package) override what they accelerate and
keep the rest. Kernel methods take and return arrays of the backend.
"""

from __future__ import annotations

import numpy as np

from ..kernels import reference
from . import conv

#: Host backends' cap on a chunked convolution's scratch (`Backend.chunk_cap_bytes`).
HOST_CHUNK_BYTES = 8 * 2**20


def _channel_axes(x):
    """The axes batch normalization reduces over (all but 1), and the shape that broadcasts a
    (C,) vector along axis 1 of x."""
    return (0, *range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)


class Backend:
    """One array library plus the kernels that run on its arrays.

    Kernel methods take and return arrays of this backend. Shapes:

    - `im2col(x (N, C, H, W), HH, WW, pad, stride) -> cols (N, C*HH*WW, Ho*Wo)`, rows ordered
      (c, hh, ww) to match `w.reshape(F, -1)`; `col2im` is its adjoint (sums overlaps).
    - `maxpool_forward(x (N, C, H, W), ph, pw, stride) -> out, argmax (N, C, Ho, Wo)`,
      argmax an int64 flat index into the (H, W) plane, first maximum on ties.
    - `avgpool_forward/backward` likewise, without argmax.
    - `batchnorm_train(x (N, C, ...), gamma, beta, eps, relu) -> out, mean, var, std (each
      (C,))` and `batchnorm_train_backward(dout, x, mean, std, gamma, keep) -> dx, dgamma,
      dbeta`: batch normalization in training mode, statistics per channel (axis 1) over
      every other axis, optionally with the ReLU that follows it.
    - `dropout(x, p, seed) -> out, mask` (train mode, p the keep probability) and
      `l2_decay(dW, W, reg) -> dW + reg * W, sum(W**2)`: the regularizers of a training step.
    - `matmul(a (..., m, k), b (..., k, n), out=None) -> (..., m, n)`: every matrix product
      the layers and algorithms compute (the numpy backend's keeps BLAS off its kernels'
      cores, `dualnet._threads`).
    - `conv2d(x, w, b, stride, pad, Ho, Wo) -> out, ctx`, `conv2d_backward(dout, ctx, need_dx)
      -> dx, dw, db`: the convolution by the algorithm `conv_algorithm` picks among
      `conv_algorithms()` (`dualnet.backends.conv`); the base backend has the portable one.
    """

    name = "abstract"
    xp = None
    #: True when arrays live in host memory (numpy.ndarray).
    host = True
    #: Chunked convolutions keep a chunk's scratch under this many bytes where set (host
    #: backends: patches written by im2col are then still in cache when the GEMM reads them).
    chunk_cap_bytes = HOST_CHUNK_BYTES

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

    # -- regularization: dropout and L2 weight decay ----------------------------------
    def dropout(self, x, p, seed=None):
        """Inverted dropout of x in training: out = x * mask, mask = 1/p (in x's dtype) where
        u < p, else 0, for u = `rand(x.shape, float64, seed)` (the course's
        `np.random.rand(*x.shape) < p`, compared in double). Returns out, mask."""
        keep = self.rand(x.shape, np.float64, seed=seed) < p
        mask = keep * x.dtype.type(1 / p)
        return x * mask, mask

    def l2_decay(self, dW, W, reg):
        """L2 weight decay's gradient and penalty sum: dW + reg * W (a new array, W's dtype)
        and sum(W**2) (a number or a 0-d array)."""
        decayed = reg * W
        decayed += dW
        return decayed, self.xp.vdot(W, W)

    # -- kernels (pure-xp reference unless a subclass accelerates them) ---------------
    def matmul(self, a, b, out=None):
        return self.xp.matmul(a, b, out=out)

    def im2col(self, x, HH, WW, pad, stride):
        return reference.im2col(self.xp, x, HH, WW, pad, stride)

    def col2im(self, cols, x_shape, HH, WW, pad, stride):
        return reference.col2im(self.xp, cols, x_shape, HH, WW, pad, stride)

    def maxpool_forward(self, x, ph, pw, stride):
        return reference.maxpool_forward(self.xp, x, ph, pw, stride)

    def maxpool_backward(self, dout, argmax, x_shape, ph, pw, stride, keep=None):
        """dout (N, C, Ho, Wo) routed to the argmax positions -> dx (x_shape); with `keep`
        (dout's shape), dout * (keep > 0) instead: a ReLU after the pool, keep its output."""
        if keep is not None:
            dout = dout * (keep > 0)
        return reference.maxpool_backward(self.xp, dout, argmax, x_shape, ph, pw, stride)

    def avgpool_forward(self, x, ph, pw, stride):
        return reference.avgpool_forward(self.xp, x, ph, pw, stride)

    def avgpool_backward(self, dout, x_shape, ph, pw, stride):
        return reference.avgpool_backward(self.xp, dout, x_shape, ph, pw, stride)

    def depthwise_forward(self, x, w, b, stride, pad, Ho, Wo):
        """x (N, C, H, W), w (C*m, 1, HH, WW), b (C*m,) -> out (N, C*m, Ho, Wo), filter f on
        channel f // m; x, w, b C-contiguous."""
        return reference.depthwise_forward(self.xp, x, w, b, stride, pad, Ho, Wo)

    def depthwise_backward(self, dout, x, w, stride, pad, need_dx=True):
        """dout (N, C*m, Ho, Wo) C-contiguous -> dx (N, C, H, W) or None, dw (C*m, 1, HH, WW)."""
        return reference.depthwise_backward(self.xp, dout, x, w, stride, pad, need_dx)

    # -- batch normalization in training mode (statistics per channel: axis 1) --------
    def batchnorm_train(self, x, gamma, beta, eps, relu=False):
        """out = gamma * (x - mean) / std + beta with mean and biased var of each channel over
        every axis but 1 and std = sqrt(var + eps), or max(out, 0) with `relu` (a ReLU after
        the normalization); returns out (x's shape), mean, var, std, each (C,), all in x's
        dtype."""
        axes, shape = _channel_axes(x)
        mean = x.mean(axis=axes, keepdims=True)
        xc = x - mean
        var = (xc * xc).mean(axis=axes, keepdims=True)
        std = self.xp.sqrt(var + x.dtype.type(eps))
        out = gamma.reshape(shape) * (xc / std) + beta.reshape(shape)
        if relu:
            self.xp.maximum(out, 0, out=out)
        return out, mean.reshape(-1), var.reshape(-1), std.reshape(-1)

    def batchnorm_train_backward(self, dout, x, mean, std, gamma, keep=None):
        """dx (x's shape), dgamma (C,), dbeta (C,) of `batchnorm_train`, with xhat = (x -
        mean) / std and M values per channel:
        dx = gamma / std * (dout - dbeta / M - xhat * dgamma / M). With `keep`, the output
        of `batchnorm_train(..., relu=True)`, dout is first taken as 0 where keep is not
        positive (the ReLU's backward)."""
        if keep is not None:
            dout = dout * (keep > 0)
        axes, shape = _channel_axes(x)
        M = x.size // x.shape[1]
        xhat = (x - mean.reshape(shape)) / std.reshape(shape)
        dbeta = dout.sum(axis=axes)
        dgamma = (dout * xhat).sum(axis=axes)
        dx = (gamma / std).reshape(shape) * (dout - (dbeta / M).reshape(shape)
                                             - xhat * (dgamma / M).reshape(shape))
        return dx, dgamma, dbeta

    # -- convolution (algorithms: dualnet.backends.conv) ------------------------------
    def conv_algorithms(self) -> dict:
        """Every convolution algorithm this backend has, by name (built once)."""
        algorithms = self.__dict__.get("_conv_algorithms")
        if algorithms is None:
            algorithms = {a.name: a for a in self._make_conv_algorithms()}
            self._conv_algorithms = algorithms
        return algorithms

    def _make_conv_algorithms(self):
        return [conv.Depthwise(self), conv.Grouped(self), conv.PortableIm2col(self)]

    def conv_algorithm(self, call: conv.ConvCall) -> conv.ConvAlgorithm:
        """The algorithm that computes `call`, by this backend's one rule: depthwise calls
        take the direct depthwise kernels, other grouped calls run group by group, and a
        single group takes `single_group_algorithm`."""
        algorithms = self.conv_algorithms()
        for name in ("depthwise", "grouped"):
            if algorithms[name].applies(call):
                return algorithms[name]
        return self.single_group_algorithm(call)

    def single_group_algorithm(self, call: conv.ConvCall) -> conv.ConvAlgorithm:
        """The algorithm for a call with one group (the base backend has only the portable
        one; accelerated backends choose among theirs)."""
        return self.conv_algorithms()[conv.PortableIm2col.name]

    def conv2d(self, x, w, b, stride, pad, Ho, Wo, groups=1):
        """out (N, F, Ho, Wo), ctx for `conv2d_backward`; arguments validated by the caller,
        x and b C-contiguous, w (F, C // groups, HH, WW)."""
        call = conv.ConvCall.of(x, w, stride, pad, Ho, Wo, groups)
        algorithm = self.conv_algorithm(call)
        out, parts = algorithm.forward(x, w, b, call)
        return out, conv.ConvContext(x, w, stride, pad, parts, groups, algorithm.name)

    def conv2d_maxpool(self, x, w, b, stride, pad, Ho, Wo, pool, relu, groups=1):
        """`conv2d` followed by `maxpool_forward` over `pool` = (ph, pw, stride) windows of
        its output and, with `relu`, max(., 0): out (N, F, Hp, Wp), argmax (as
        `maxpool_forward` gives it) and the ctx `conv2d` returns. An algorithm that pools
        its output while it is in cache (`pools`) does so, and the convolution's output is
        never written out."""
        call = conv.ConvCall.of(x, w, stride, pad, Ho, Wo, groups)
        algorithm = self.conv_algorithm(call)
        if algorithm.pools(call, pool):
            out, argmax = algorithm.forward_maxpool(x, w, b, call, relu)
            parts = None
        else:
            a, parts = algorithm.forward(x, w, b, call)
            out, argmax = self.maxpool_forward(a, *pool)
            if relu:
                self.xp.maximum(out, 0, out=out)
        return out, argmax, conv.ConvContext(x, w, stride, pad, parts, groups, algorithm.name)

    def conv2d_maxpool_backward(self, dout, argmax, conv_shape, pool, ctx: conv.ConvContext,
                                need_dx=True, keep=None):
        """Gradients of `conv2d_maxpool`: dout (N, F, Hp, Wp), argmax as it returned, the
        convolution's output shape, `pool` = (ph, pw, stride), its ctx, and keep: the ReLU's
        output with `relu` (else None) -> dx or None (need_dx=False), dw, db."""
        dout = self.xp.ascontiguousarray(dout)
        return self.conv_algorithms()[ctx.algorithm].maxpool_gradients(
            dout, argmax, conv_shape, pool, keep, ctx, need_dx)

    def conv2d_backward(self, dout, ctx: conv.ConvContext, need_dx=True):
        """dx (N, C, H, W) or None (need_dx=False), dw (F, C, HH, WW), db (F,) for dout
        (N, F, Ho, Wo) and the context `conv2d` returned."""
        dout = self.xp.ascontiguousarray(dout)
        return self.conv_algorithms()[ctx.algorithm].gradients(dout, ctx, need_dx)

    def kernels(self) -> str:
        """One line saying which kernel implementation is active (for `doctor`)."""
        return "pure-xp reference kernels"

    def __repr__(self):
        return f"<dualnet backend {self.name!r}>"
