"""2-D convolution (NCHW): a naive loop reference and a fast version.

The fast layers validate their arguments and hand the work to the backend that owns the
arrays (`be.conv2d`, `be.conv2d_backward`). Each backend owns its algorithms and picks one per
call (`dualnet.backends`: Winograd's minimal filtering and im2col + GEMM in several variants
on the numpy backend, the portable im2col + batched GEMM on cupy and cuda-emu); the cache
records the one taken, and all give the naive layer's values to float rounding (the tests
compare them).
`set_algorithm` ('auto', 'im2col', 'winograd') overrides the choice, and `set_memory_budget`
bounds the scratch memory one call holds (`DEFAULT_MEMORY_BUDGET`, 256 MiB, or the
`DUALNET_CONV_MEMORY_BUDGET` environment variable in bytes, read at import); both are
documented in `dualnet.backends.conv`.

conv_param: {'stride': int (default 1), 'pad': int (default 0, zeros on every side),
'groups': int (default 1), 'rounding': 'exact' (default) or 'floor'}.

Shapes: x (N, C, H, W), w (F, C // groups, HH, WW), b (F,), out (N, F, Ho, Wo) with
Ho = (H + 2*pad - HH) / stride + 1 and likewise Wo. With rounding 'exact' (the course's rule)
that must be an integer, else the layer refuses; 'floor' rounds it down as PyTorch does
(windows that would run past the padded input are dropped; `nn.Conv2d` uses it).

Groups (PyTorch's `groups`): channels and filters split into `groups` equal parts; filter
f sees only input channels [g*C/groups, (g+1)*C/groups) of its group g = f // (F/groups).
groups = C is the depthwise convolution.
"""

from __future__ import annotations

import math

from .. import _checks
from ..backends.conv import (
    DEFAULT_MEMORY_BUDGET,
    ConvContext,
    get_algorithm,
    get_memory_budget,
    set_algorithm,
    set_memory_budget,
)

__all__ = [
    "conv_forward_naive", "conv_backward_naive", "conv_forward_fast", "conv_backward_fast",
    "set_algorithm", "get_algorithm", "set_memory_budget", "get_memory_budget",
    "DEFAULT_MEMORY_BUDGET",
]


_ROUNDINGS = ("exact", "floor")


def _conv_geometry(layer, x, w, b, conv_param):
    """Validate a convolution; returns (backend, stride, pad, groups, Ho, Wo)."""
    be = _checks.floating(layer, x=x, w=w, b=b)
    _checks.ndim(layer, "x", x, 4, "(N, C, H, W)")
    _checks.ndim(layer, "w", w, 4, "(F, C // groups, HH, WW)")
    if 0 in w.shape:
        raise ValueError(f"{layer}: w must have no empty axis, got shape {tuple(w.shape)}")
    groups = _checks.positive_int(layer, "conv_param['groups']", conv_param.get("groups", 1))
    C, F = x.shape[1], w.shape[0]
    if C % groups or F % groups:
        raise ValueError(f"{layer}: conv_param['groups'] = {groups} must divide both the input "
                         f"channels of x {tuple(x.shape)} and the filters of w {tuple(w.shape)}")
    if C != w.shape[1] * groups:
        grouped = f" with groups={groups}" if groups > 1 else ""
        raise ValueError(f"{layer}: channel mismatch: x {tuple(x.shape)} has C={C} but w "
                         f"{tuple(w.shape)}{grouped} expects C={w.shape[1] * groups}")
    _checks.shape(layer, "b", b, (F,))
    stride = _checks.positive_int(layer, "conv_param['stride']", conv_param.get("stride", 1))
    pad = _checks.positive_int(layer, "conv_param['pad']", conv_param.get("pad", 0), minimum=0)
    rounding = conv_param.get("rounding", "exact")
    if rounding not in _ROUNDINGS:
        raise ValueError(f"{layer}: conv_param['rounding'] must be 'exact' or 'floor', "
                         f"got {rounding!r}")
    H, W = x.shape[2:]
    HH, WW = w.shape[2:]
    floor = rounding == "floor"
    Ho = _checks.window_output(layer, H, HH, pad, stride, "height", floor)
    Wo = _checks.window_output(layer, W, WW, pad, stride, "width", floor)
    return be, stride, pad, groups, Ho, Wo


def _group_channels(f, C_group, F_group):
    """The input channels filter f sees: those of its group."""
    g = f // F_group
    return slice(g * C_group, (g + 1) * C_group)


def conv_forward_naive(x, w, b, conv_param):
    """Reference convolution with explicit loops over samples, filters and positions.

    conv_param: see the module docstring. Returns out (N, F, Ho, Wo), cache
    (x, w, b, conv_param).
    """
    be, stride, pad, groups, Ho, Wo = _conv_geometry("conv_forward_naive", x, w, b, conv_param)
    xp = be.xp
    N, F = x.shape[0], w.shape[0]
    HH, WW = w.shape[2:]
    x_pad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = xp.empty((N, F, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            channels = _group_channels(f, w.shape[1], F // groups)
            for i in range(Ho):
                for j in range(Wo):
                    window = x_pad[n, channels, i * stride:i * stride + HH,
                                   j * stride:j * stride + WW]
                    out[n, f, i, j] = (window * w[f]).sum() + b[f]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    """Reference gradients: each output position sends dout back through its window.

    Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,).
    """
    x, w, b, conv_param = cache
    be, stride, pad, groups, Ho, Wo = _conv_geometry("conv_backward_naive", x, w, b,
                                                     conv_param)
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
            channels = _group_channels(f, w.shape[1], F // groups)
            for i in range(Ho):
                for j in range(Wo):
                    rows = slice(i * stride, i * stride + HH)
                    cols = slice(j * stride, j * stride + WW)
                    dw[f] += dout[n, f, i, j] * x_pad[n, channels, rows, cols]
                    dx_pad[n, channels, rows, cols] += dout[n, f, i, j] * w[f]
    dx = dx_pad[:, :, pad:pad + H, pad:pad + W]
    return xp.ascontiguousarray(dx), dw, db


def conv_forward_fast(x, w, b, conv_param):
    """The convolution by the backend's fastest algorithm for this call (module docstring).

    Returns out (N, F, Ho, Wo) in x's dtype, cache for `conv_backward_fast`.
    """
    be, stride, pad, groups, Ho, Wo = _conv_geometry("conv_forward_fast", x, w, b, conv_param)
    xp = be.xp
    try:
        return be.conv2d(xp.ascontiguousarray(x), w, xp.ascontiguousarray(b), stride, pad,
                         Ho, Wo, groups)
    except MemoryError as exc:
        out_shape = (x.shape[0], w.shape[0], Ho, Wo)
        raise MemoryError(f"conv_forward_fast: no memory for an output of shape {out_shape} "
                          f"({math.prod(out_shape) * x.itemsize / 2**30:.3g} GiB) with "
                          f"conv_param {conv_param}") from exc


def conv_backward_fast(dout, cache, need_dx=True):
    """Gradients of `conv_forward_fast`.

    need_dx=False skips the input gradient (returned as None), a third of the work; the
    first layer of a network has no use for it.

    Returns dx (N, C, H, W) or None, dw (F, C, HH, WW), db (F,).
    """
    layer = "conv_backward_fast"
    if not isinstance(cache, ConvContext):
        raise TypeError(f"{layer}: cache must be the cache conv_forward_fast returned, got "
                        f"{type(cache).__name__}")
    x, w, stride, pad = cache.x, cache.w, cache.stride, cache.pad
    be = _checks.floating(layer, dout=dout, w=w)
    (H, W), (HH, WW) = x.shape[2:], w.shape[2:]
    # the floor covers both rules: forward refused inexact shapes unless asked for 'floor'
    Ho = _checks.window_output(layer, H, HH, pad, stride, "height", floor=True)
    Wo = _checks.window_output(layer, W, WW, pad, stride, "width", floor=True)
    _checks.shape(layer, "dout", dout, (x.shape[0], w.shape[0], Ho, Wo))
    return be.conv2d_backward(dout, cache, need_dx)
