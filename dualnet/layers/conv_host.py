"""The fast convolution on host backends: im2col into reused buffers, one GEMM per chunk.

A chunk of n samples unfolds into patches laid out (K, n, P), K = C*HH*WW rows and P = Ho*Wo
columns per sample, so each pass is one large GEMM over n*P columns instead of n thin ones
(BLAS runs much faster on one (F, K) x (K, n*P) product):

    forward   rows = w (F, K) @ cols (K, n*P);  out = NCHW view of rows, + b (one kernel)
    backward  rows = dout as (F, n*P);  dw += rows @ cols^T;  dx = col2im(w^T @ rows)

Buffers come from `_scratch`; the caller sizes the chunks (`parts`) to the memory budget.
"""

from __future__ import annotations

from . import _scratch


def sample_bytes(w, Ho, Wo, itemsize):
    """Scratch bytes per sample: the backward pass holds patches, their gradient and dout."""
    return (2 * w[0].size + w.shape[0]) * Ho * Wo * itemsize


def _patches(be, x_part, HH, WW, pad, stride, K, P):
    """im2col of x_part (n, C, H, W) into the reused (K, n, P) scratch buffer; returns it."""
    cols = _scratch.buffer(be, "cols", (K, x_part.shape[0], P), x_part.dtype)
    be.im2col(x_part, HH, WW, pad, stride, out=cols.transpose(1, 0, 2))
    return cols


def forward(be, x, w, b, stride, pad, parts, Ho, Wo):
    """x (N, C, H, W) C-contiguous, w (F, C, HH, WW), b (F,) -> out (N, F, Ho, Wo)."""
    xp = be.xp
    F, _, HH, WW = w.shape
    K, P = w[0].size, Ho * Wo
    w2 = w.reshape(F, K)
    out = xp.empty((x.shape[0], F, Ho, Wo), dtype=x.dtype)
    for part in parts:
        n = part.stop - part.start
        cols = _patches(be, x[part], HH, WW, pad, stride, K, P)
        rows = _scratch.buffer(be, "rows", (F, n * P), x.dtype)
        xp.matmul(w2, cols.reshape(K, n * P), out=rows)
        be.rows_to_nchw(rows, b, out[part])
    return out


def backward(be, dout, x, w, stride, pad, parts, need_dx=True):
    """Gradients of `forward` for dout (N, F, Ho, Wo) C-contiguous: dx (or None), dw.

    Each chunk's patches are recomputed: rebuilt in cache, they cost less than kept ones
    coming back from main memory.
    """
    xp = be.xp
    F, _, HH, WW = w.shape
    K, P = w[0].size, dout.shape[2] * dout.shape[3]
    w2 = w.reshape(F, K)
    dw = xp.empty((F, K), dtype=x.dtype)
    dx = xp.empty_like(x) if need_dx else None
    for part in parts:
        n = part.stop - part.start
        cols = _patches(be, x[part], HH, WW, pad, stride, K, P)
        rows = be.nchw_to_rows(dout[part], _scratch.buffer(be, "rows", (F, n * P), x.dtype))
        # dw += sum over the chunk of dout_n @ cols_n.T: one GEMM over n*P
        if part.start == 0:
            xp.matmul(rows, cols.reshape(K, n * P).T, out=dw)
        else:
            dw += xp.matmul(rows, cols.reshape(K, n * P).T)
        if need_dx:
            dcols = _scratch.buffer(be, "dcols", (K, n, P), x.dtype)
            xp.matmul(w2.T, rows, out=dcols.reshape(K, n * P))
            be.col2im(dcols.transpose(1, 0, 2), x[part].shape, HH, WW, pad, stride,
                      out=dx[part])
    return dx, dw.reshape(w.shape)
