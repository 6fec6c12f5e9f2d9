"""Pure array-namespace kernels: the fallback when no compiled kernel covers a case.

Every function takes the array module `xp` (numpy or cupy) first and works on any backend.
They loop over the (small) window offsets and do whole-array slicing inside, which is fast
enough to be useful and simple enough to read. Geometry is validated by the layers before
these are called; outputs keep the input dtype.
"""

from __future__ import annotations


def _out_size(size, window, pad, stride):
    return (size + 2 * pad - window) // stride + 1


def im2col(xp, x, HH, WW, pad, stride):
    """x (N, C, H, W) -> cols (N, C*HH*WW, Ho*Wo), rows ordered (c, hh, ww)."""
    N, C, H, W = x.shape
    Ho, Wo = _out_size(H, HH, pad, stride), _out_size(W, WW, pad, stride)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    cols = xp.empty((N, C, HH, WW, Ho, Wo), dtype=x.dtype)
    for i in range(HH):
        for j in range(WW):
            cols[:, :, i, j] = x_pad[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
    return cols.reshape(N, C * HH * WW, Ho * Wo)


def col2im(xp, cols, x_shape, HH, WW, pad, stride):
    """Adjoint of `im2col`: cols (N, C*HH*WW, Ho*Wo) -> dx (N, C, H, W), overlaps summed.

    The sum runs over window offsets in a fixed order, so results are deterministic.
    """
    N, C, H, W = x_shape
    Ho, Wo = _out_size(H, HH, pad, stride), _out_size(W, WW, pad, stride)
    cols = cols.reshape(N, C, HH, WW, Ho, Wo)
    dx_pad = xp.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for i in range(HH):
        for j in range(WW):
            dx_pad[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += cols[:, :, i, j]
    if pad:
        return xp.ascontiguousarray(dx_pad[:, :, pad:pad + H, pad:pad + W])
    return dx_pad


def _windows(xp, x, ph, pw, stride):
    """x (N, C, H, W) -> (N, C, Ho, Wo, ph*pw): every pooling window, flattened row-major."""
    N, C, H, W = x.shape
    Ho, Wo = _out_size(H, ph, 0, stride), _out_size(W, pw, 0, stride)
    win = xp.empty((N, C, Ho, Wo, ph * pw), dtype=x.dtype)
    for i in range(ph):
        for j in range(pw):
            win[..., i * pw + j] = x[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
    return win


def maxpool_forward(xp, x, ph, pw, stride):
    """x (N, C, H, W) -> out (N, C, Ho, Wo), argmax (N, C, Ho, Wo) int64 into the H*W plane."""
    W = x.shape[3]
    win = _windows(xp, x, ph, pw, stride)
    k = win.argmax(axis=-1)  # first maximum on ties, like the naive loop
    out = xp.take_along_axis(win, k[..., None], axis=-1)[..., 0]
    Ho, Wo = out.shape[2:]
    rows = (xp.arange(Ho) * stride)[:, None] + k // pw
    cols = (xp.arange(Wo) * stride)[None, :] + k % pw
    return out, (rows * W + cols).astype(xp.int64)


def maxpool_backward(xp, dout, argmax, x_shape, ph, pw, stride):
    """Route dout (N, C, Ho, Wo) to the argmax positions -> dx (N, C, H, W)."""
    N, C, H, W = x_shape
    plane = xp.arange(N * C, dtype=xp.int64)[:, None] * (H * W)
    flat = (plane + argmax.reshape(N * C, -1)).ravel()
    # bincount sums every contribution to a position in a fixed order: deterministic.
    dx = xp.bincount(flat, weights=dout.ravel(), minlength=N * C * H * W)
    return dx.astype(dout.dtype, copy=False).reshape(x_shape)


def avgpool_forward(xp, x, ph, pw, stride):
    """x (N, C, H, W) -> mean over each ph x pw window, (N, C, Ho, Wo)."""
    return _windows(xp, x, ph, pw, stride).mean(axis=-1, dtype=x.dtype)


def avgpool_backward(xp, dout, x_shape, ph, pw, stride):
    """Spread dout (N, C, Ho, Wo) evenly over each window -> dx (N, C, H, W)."""
    Ho, Wo = dout.shape[2:]
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    share = dout / dout.dtype.type(ph * pw)
    for i in range(ph):
        for j in range(pw):
            dx[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += share
    return dx
