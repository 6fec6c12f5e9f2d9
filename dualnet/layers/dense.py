"""Fully connected (affine) layer."""

from __future__ import annotations

import math

from .. import _checks


def affine_forward(x, w, b):
    """out = x.reshape(N, D) @ w + b.

    Args:
        x: (N, d_1, ..., d_k) inputs, D = d_1 * ... * d_k.
        w: (D, M) weights. b: (M,) biases. All of one float dtype.

    Returns:
        out (N, M) in x's dtype, cache for `affine_backward`.
    """
    layer = "affine_forward"
    be = _checks.floating(layer, x=x, w=w, b=b)
    if x.ndim < 2:
        raise ValueError(f"{layer}: x must be (N, d1, ..., dk), got shape {tuple(x.shape)}")
    _checks.ndim(layer, "w", w, 2, "(D, M)")
    N, D = x.shape[0], math.prod(x.shape[1:])
    if w.shape[0] != D:
        raise ValueError(f"{layer}: x of shape {tuple(x.shape)} flattens to D={D} features "
                         f"but w has shape {tuple(w.shape)} (expected ({D}, M))")
    _checks.shape(layer, "b", b, (w.shape[1],))
    out = be.matmul(x.reshape(N, D), w)
    out += b
    return out, (x, w, b)


def affine_backward(dout, cache, need_dx=True):
    """Gradients of `affine_forward`.

    Args:
        dout: (N, M) upstream gradient. cache: from `affine_forward`.
        need_dx: False skips the input gradient (returned as None), a third of the work;
            a network's first layer has no use for it.

    Returns:
        dx (N, d_1, ..., d_k) or None, dw (D, M), db (M,).
    """
    layer = "affine_backward"
    x, w, _ = _checks.tuple_cache(layer, cache, 3, "affine_forward")
    _checks.dout(layer, dout, (x.shape[0], w.shape[1]), "affine_forward")
    be = _checks.floating(layer, dout=dout, w=w)
    dx = be.matmul(dout, w.T).reshape(x.shape) if need_dx else None
    dw = be.matmul(x.reshape(x.shape[0], -1).T, dout)
    db = dout.sum(axis=0)
    return dx, dw, db
