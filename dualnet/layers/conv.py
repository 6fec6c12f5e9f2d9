"""2-D convolution (NCHW): a naive loop reference and a fast im2col + GEMM version.

Shapes: x (N, C, H, W), w (F, C, HH, WW), b (F,), out (N, F, Ho, Wo) with
Ho = (H + 2*pad - HH) / stride + 1 (must be an integer; likewise Wo).

Memory: the fast layers unfold the input into im2col patches, C*HH*WW times the size of
the output planes, so they work through the batch in chunks. The scratch memory they hold at
once (patches, patch gradients, partial results; not the arrays they return) stays under a
budget: `DEFAULT_MEMORY_BUDGET` (256 MiB), or the `DUALNET_CONV_MEMORY_BUDGET`
environment variable (bytes) read at import, or `set_memory_budget(nbytes)`. The backward pass
recomputes each chunk's patches rather than keeping them from the forward pass. On the numpy
backend the chunk's scratch lives in per-thread buffers reused from call to call (sized by
the budget, dropped by `set_memory_budget`), laid out (C*HH*WW, n, Ho*Wo) so that each
chunk needs one large GEMM per pass instead of n thin ones.
"""

from __future__ import annotations

import math
import os
import threading

from . import _checks

#: Default bound, in bytes, on the scratch memory one fast convolution call holds at once.
DEFAULT_MEMORY_BUDGET = 256 * 2**20

# On host backends, chunks are also kept near this size even when the budget allows more:
# patches written by im2col are then still in cache when the GEMM reads them.
_HOST_CHUNK_BYTES = 8 * 2**20

_memory_budget = int(os.environ.get("DUALNET_CONV_MEMORY_BUDGET", DEFAULT_MEMORY_BUDGET))


def set_memory_budget(nbytes: int) -> int:
    """Bound the fast convolution's scratch memory to `nbytes`; returns the old bound.

    One sample is the smallest chunk, so a budget below one sample's scratch is exceeded.
    """
    global _memory_budget
    nbytes = _checks.positive_int("set_memory_budget", "nbytes", nbytes)
    old, _memory_budget = _memory_budget, nbytes
    _release_buffers()
    return old


def get_memory_budget() -> int:
    """The current bound, in bytes, on the fast convolution's scratch memory."""
    return _memory_budget


def _conv_geometry(layer, x, w, b, conv_param):
    """Validate a convolution; returns (backend, stride, pad, Ho, Wo)."""
    be = _checks.floating(layer, x=x, w=w, b=b)
    _checks.ndim(layer, "x", x, 4, "(N, C, H, W)")
    _checks.ndim(layer, "w", w, 4, "(F, C, HH, WW)")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{layer}: channel mismatch: x {tuple(x.shape)} has C={x.shape[1]} "
                         f"but w {tuple(w.shape)} expects C={w.shape[1]}")
    _checks.shape(layer, "b", b, (w.shape[0],))
    stride = _checks.positive_int(layer, "conv_param['stride']", conv_param.get("stride", 1))
    pad = _checks.positive_int(layer, "conv_param['pad']", conv_param.get("pad", 0), minimum=0)
    H, W = x.shape[2:]
    HH, WW = w.shape[2:]
    Ho = _checks.window_output(layer, H, HH, pad, stride, "height")
    Wo = _checks.window_output(layer, W, WW, pad, stride, "width")
    return be, stride, pad, Ho, Wo


def conv_forward_naive(x, w, b, conv_param):
    """Reference convolution with explicit loops over samples, filters and positions.

    conv_param: {'stride': int, 'pad': int} (zero padding on every side).
    Returns out (N, F, Ho, Wo), cache (x, w, b, conv_param).
    """
    be, stride, pad, Ho, Wo = _conv_geometry("conv_forward_naive", x, w, b, conv_param)
    xp = be.xp
    N, F = x.shape[0], w.shape[0]
    HH, WW = w.shape[2:]
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = xp.empty((N, F, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    window = x_pad[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[n, f, i, j] = (window * w[f]).sum() + b[f]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    """Reference gradients: each output position sends dout back through its window.

    Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,).
    """
    x, w, b, conv_param = cache
    be, stride, pad, Ho, Wo = _conv_geometry("conv_backward_naive", x, w, b, conv_param)
    xp = be.xp
    N, F = x.shape[0], w.shape[0]
    H, W = x.shape[2:]
    HH, WW = w.shape[2:]
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dx_pad = xp.zeros_like(x_pad)
    dw = xp.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    rows = slice(i * stride, i * stride + HH)
                    cols = slice(j * stride, j * stride + WW)
                    dw[f] += dout[n, f, i, j] * x_pad[n, :, rows, cols]
                    dx_pad[n, :, rows, cols] += dout[n, f, i, j] * w[f]
    dx = dx_pad[:, :, pad:pad + H, pad:pad + W]
    return xp.ascontiguousarray(dx), dw, db


def _chunks(be, N, sample_bytes):
    """Batch slices holding at most the budget's worth of `sample_bytes` each."""
    limit = _memory_budget
    if be.host:
        limit = min(limit, _HOST_CHUNK_BYTES)
    step = max(1, min(N, limit // max(1, sample_bytes)))
    return [slice(n, min(n + step, N)) for n in range(0, N, step)]


# -- scratch buffers of the host path ---------------------------------------------------------
# Fresh large numpy arrays are mmapped and fault their pages in on every call, which cost
# about as much as the copies themselves; the host path therefore reuses one buffer per role
# and thread. Their total is bounded by the memory budget: a chunk's scratch is sized by it,
# and `set_memory_budget` drops them.
_scratch = threading.local()


def _buffer(be, role, shape, dtype):
    """A reusable, uninitialized host array of `shape` for `role` ('cols', 'dcols', ...)."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    dtype = be.xp.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buf = bufs.get(role)
    if buf is None or buf.nbytes < nbytes:
        bufs.pop(role, None)
        del buf  # release the smaller buffer before the larger one is made
        buf = bufs[role] = be.xp.empty(nbytes, dtype=be.xp.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def _release_buffers():
    if getattr(_scratch, "bufs", None):
        _scratch.bufs.clear()


def _host_patches(be, x_part, HH, WW, pad, stride, K, P):
    """im2col of x_part (n, C, H, W) into the reused (K, n, P) scratch buffer; returns it."""
    cols = _buffer(be, "cols", (K, x_part.shape[0], P), x_part.dtype)
    be.im2col(x_part, HH, WW, pad, stride, out=cols.transpose(1, 0, 2))
    return cols


def _host_path(be):
    """Whether the backend's kernels can write patches into (C*HH*WW, N, Ho*Wo) buffers.

    That layout turns a chunk's per-sample GEMMs into one large GEMM each (forward, dw, dx):
    BLAS runs much faster on one (F, K) x (K, n*P) product than on n thin ones. Backends
    whose kernels take no `out=` (cupy, cuda-emu) keep the portable per-sample path.
    """
    return getattr(be, "kernels_take_out", False)


def conv_forward_fast(x, w, b, conv_param):
    """Convolution as im2col + GEMM, in batch chunks.

    Returns out (N, F, Ho, Wo) in x's dtype, cache for `conv_backward_fast`.
    """
    be, stride, pad, Ho, Wo = _conv_geometry("conv_forward_fast", x, w, b, conv_param)
    xp = be.xp
    x = xp.ascontiguousarray(x)
    N, F = x.shape[0], w.shape[0]
    HH, WW = w.shape[2:]
    w2 = w.reshape(F, -1)
    K, P = w2.shape[1], Ho * Wo
    # per sample, the backward pass holds patches, their gradient, a copy of dout and (on
    # the portable path) its share of dx and a dw term at once; the forward pass less
    if _host_path(be):
        sample_bytes = (2 * K * P + F * P) * x.itemsize
    else:
        sample_bytes = (2 * K * P + x[0].size + F * K) * x.itemsize
    out = xp.empty((N, F, P), dtype=x.dtype)
    parts = _chunks(be, N, sample_bytes)
    if _host_path(be):
        for part in parts:
            n = part.stop - part.start
            cols = _host_patches(be, x[part], HH, WW, pad, stride, K, P)
            prod = _buffer(be, "prod", (F, n, P), x.dtype)
            xp.matmul(w2, cols.reshape(K, n * P), out=prod.reshape(F, n * P))
            # (F, n, P) -> NCHW, with the bias added in the same pass
            xp.add(prod.transpose(1, 0, 2), b[:, None], out=out[part])
        return out.reshape(N, F, Ho, Wo), (x, w, stride, pad, parts)
    for part in parts:
        # patches (n, C*HH*WW, Ho*Wo), a temporary freed at once; out (n, F, Ho*Wo) is NCHW
        xp.matmul(w2, be.im2col(x[part], HH, WW, pad, stride), out=out[part])
    out += b[:, None]
    return out.reshape(N, F, Ho, Wo), (x, w, stride, pad, parts)


def conv_backward_fast(dout, cache, need_dx=True):
    """Gradients of `conv_forward_fast`: per chunk, two GEMMs and the backend's col2im.

    need_dx=False skips the input gradient (returned as None), a third of the work; the
    first layer of a network has no use for it.

    Returns dx (N, C, H, W) or None, dw (F, C, HH, WW), db (F,).
    """
    x, w, stride, pad, parts = cache
    be = _checks.floating("conv_backward_fast", dout=dout, w=w)
    xp = be.xp
    N, F = dout.shape[:2]
    HH, WW = w.shape[2:]
    w2 = w.reshape(F, -1)
    K = w2.shape[1]
    dout = xp.ascontiguousarray(dout).reshape(N, F, -1)
    P = dout.shape[2]
    db = dout.sum(axis=(0, 2))
    dw = xp.zeros_like(w2)
    dx = xp.empty_like(x) if need_dx else None
    if _host_path(be):
        for part in parts:
            n = part.stop - part.start
            # recomputing the patches costs less than keeping them: a chunk's patches are
            # rebuilt in cache, while kept ones would come back from main memory
            cols = _host_patches(be, x[part], HH, WW, pad, stride, K, P)
            g = _buffer(be, "prod", (F, n, P), x.dtype)
            g[...] = dout[part].transpose(1, 0, 2)
            g = g.reshape(F, n * P)
            # dw += sum over the chunk of dout_n @ cols_n.T: one GEMM over n*P
            if part.start == 0:
                xp.matmul(g, cols.reshape(K, n * P).T, out=dw)
            else:
                dw += xp.matmul(g, cols.reshape(K, n * P).T)
            if need_dx:
                dcols = _buffer(be, "dcols", (K, n, P), x.dtype)
                xp.matmul(w2.T, g, out=dcols.reshape(K, n * P))
                be.col2im(dcols.transpose(1, 0, 2), x[part].shape, HH, WW, pad, stride,
                          out=dx[part])
        return dx, dw.reshape(w.shape), db
    for part in parts:
        # recomputing the patches costs less than keeping them: a chunk's patches are
        # rebuilt in cache, while kept ones come back from main memory (and fresh pages
        # for them fault in on every forward pass)
        cols = be.im2col(x[part], HH, WW, pad, stride)
        # sum over the chunk of dout_n @ cols_n.T, as one batched GEMM
        dw += xp.matmul(dout[part], cols.transpose(0, 2, 1)).sum(axis=0)
        del cols  # freed before the next buffer is made: one chunk's scratch at a time
        if need_dx:
            dcols = xp.matmul(w2.T, dout[part])  # (n, C*HH*WW, Ho*Wo)
            dx[part] = be.col2im(dcols, x[part].shape, HH, WW, pad, stride)
            del dcols
    return dx, dw.reshape(w.shape), db
