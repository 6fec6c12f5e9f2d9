"""2-D convolution (NCHW): a naive loop reference and a fast im2col + GEMM version.

Shapes: x (N, C, H, W), w (F, C, HH, WW), b (F,), out (N, F, Ho, Wo) with
Ho = (H + 2*pad - HH) / stride + 1 (must be an integer; likewise Wo).
"""

from __future__ import annotations

from . import _checks


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


def conv_forward_fast(x, w, b, conv_param):
    """Convolution as one GEMM per sample over im2col patches (the backend's kernel).

    Returns out (N, F, Ho, Wo), cache for `conv_backward_fast`.
    """
    be, stride, pad, Ho, Wo = _conv_geometry("conv_forward_fast", x, w, b, conv_param)
    xp = be.xp
    N, F = x.shape[0], w.shape[0]
    HH, WW = w.shape[2:]
    cols = be.im2col(xp.ascontiguousarray(x), HH, WW, pad, stride)  # (N, C*HH*WW, Ho*Wo)
    out = xp.matmul(w.reshape(F, -1), cols)  # (N, F, Ho*Wo): already NCHW order
    out += b[:, None]
    return out.reshape(N, F, Ho, Wo), (x.shape, w, cols, stride, pad)


def conv_backward_fast(dout, cache):
    """Gradients of `conv_forward_fast`: two GEMMs and the backend's col2im.

    Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,).
    """
    x_shape, w, cols, stride, pad = cache
    be = _checks.floating("conv_backward_fast", dout=dout, w=w)
    xp = be.xp
    N, F = dout.shape[:2]
    HH, WW = w.shape[2:]
    dout = dout.reshape(N, F, -1)
    db = dout.sum(axis=(0, 2))
    dw = xp.tensordot(dout, cols, axes=([0, 2], [0, 2])).reshape(w.shape)
    dcols = xp.matmul(w.reshape(F, -1).T, dout)  # (N, C*HH*WW, Ho*Wo)
    dx = be.col2im(dcols, x_shape, HH, WW, pad, stride)
    return dx, dw, db
