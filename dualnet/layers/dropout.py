"""Inverted dropout, with the course's convention: `p` is the probability of KEEPING a unit."""

from __future__ import annotations

from .. import _checks


def dropout_forward(x, dropout_param):
    """Inverted dropout: in 'train' mode keep each unit with probability p and scale by 1/p.

    Args:
        x: array of any shape.
        dropout_param: dict with 'p' (keep probability, 0 < p <= 1), 'mode' ('train' |
            'test'), optional 'seed' (the same seed gives the same mask, which is what makes
            numeric gradient checks possible).

    Returns:
        out (x's shape and dtype), cache (dropout_param, mask); mask is None in 'test' mode.
    """
    layer = "dropout_forward"
    be = _checks.floating(layer, x=x)
    p = dropout_param.get("p")
    if p is None or not 0 < p <= 1:
        raise ValueError(f"{layer}: p is the KEEP probability and must be in (0, 1], got {p!r}")
    mode = dropout_param.get("mode", "train")
    if mode not in ("train", "test"):
        raise ValueError(f"{layer}: mode must be 'train' or 'test', got {mode!r}")
    if mode == "test":
        return x, (dropout_param, None)
    out, mask = be.dropout(x, p, seed=dropout_param.get("seed"))
    return out, (dropout_param, mask)


def dropout_backward(dout, cache):
    """dx = dout * mask in 'train' mode (the same units, the same 1/p scale); dout in 'test'."""
    _, mask = cache
    return dout if mask is None else dout * mask
