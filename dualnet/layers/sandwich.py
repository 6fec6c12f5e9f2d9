"""Common layer stacks ("sandwiches") built from the fast layers, each with its backward."""

from __future__ import annotations

from .. import _checks
from ..backend import of
from .activations import relu_backward, relu_forward
from .conv import ConvContext, _conv_geometry, conv_backward_fast, conv_forward_fast
from .dense import affine_backward, affine_forward
from .norm import (
    batchnorm_relu_backward,
    batchnorm_relu_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_relu_backward,
    spatial_batchnorm_relu_forward,
)
from .pool import _pool_window, max_pool_backward_fast, max_pool_forward_fast


def _relu_inplace(a):
    """max(a, 0) written over `a`, an intermediate the sandwich owns; returns a."""
    return of(a).xp.maximum(a, 0, out=a)


def _layernorm_relu_forward(x, gamma, beta, ln_param):
    """layernorm -> ReLU, the ReLU in place on the normalized array (ours; the layernorm
    cache does not hold it), whose positives are then the ReLU's mask."""
    an, ln_cache = layernorm_forward(x, gamma, beta, ln_param)
    out = _relu_inplace(an)
    return out, (ln_cache, out)


def _layernorm_relu_backward(dout, cache):
    ln_cache, relu_cache = cache
    return layernorm_backward(relu_backward(dout, relu_cache), ln_cache)


#: normalization -> (norm + ReLU forward, its backward); batchnorm's fuses them in one pass.
_NORMS = {
    "batchnorm": (batchnorm_relu_forward, batchnorm_relu_backward),
    "layernorm": (_layernorm_relu_forward, _layernorm_relu_backward),
}


def affine_relu_forward(x, w, b):
    """affine -> ReLU. Returns out (N, M), cache."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache, need_dx=True):
    """Returns dx, dw, db (dx None with need_dx=False, for a network's first layer)."""
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache, need_dx=need_dx)


def affine_norm_relu_forward(x, w, b, gamma, beta, norm_param, normalization="batchnorm"):
    """affine -> batchnorm or layernorm -> ReLU.

    normalization: 'batchnorm' (norm_param is a bn_param) or 'layernorm' (an ln_param).
    Returns out (N, M), cache.
    """
    if normalization not in _NORMS:
        raise ValueError(f"affine_norm_relu_forward: normalization must be one of "
                         f"{sorted(_NORMS)}, got {normalization!r}")
    norm_relu_forward, _ = _NORMS[normalization]
    a, fc_cache = affine_forward(x, w, b)
    out, norm_cache = norm_relu_forward(a, gamma, beta, norm_param)
    return out, (fc_cache, norm_cache, normalization)


def affine_norm_relu_backward(dout, cache, need_dx=True):
    """Returns dx, dw, db, dgamma, dbeta (dx None with need_dx=False)."""
    fc_cache, norm_cache, normalization = cache
    _, norm_relu_backward = _NORMS[normalization]
    dan, dgamma, dbeta = norm_relu_backward(dout, norm_cache)
    dx, dw, db = affine_backward(dan, fc_cache, need_dx=need_dx)
    return dx, dw, db, dgamma, dbeta


def conv_relu_forward(x, w, b, conv_param):
    """conv -> ReLU. Returns out (N, F, Ho, Wo), cache."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    # ReLU in place: the conv output is ours, and (relu(a) > 0) == (a > 0) is the mask
    # relu_backward needs, so it doubles as the ReLU cache
    out = _relu_inplace(a)
    return out, (conv_cache, out)


def conv_relu_backward(dout, cache, need_dx=True):
    """Returns dx, dw, db (dx None with need_dx=False, for a network's first layer)."""
    conv_cache, relu_cache = cache
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache, need_dx=need_dx)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """conv -> ReLU -> max pool. Returns out, cache.

    Computed as conv -> max pool -> ReLU, which is the same function (ReLU is monotone, so
    it commutes with max) on a quarter of the elements for a 2x2 pool, in one backend call
    (`conv2d_maxpool`): where the backend's convolution pools its output in cache, that
    output is never written out. The caches are those of the three fast layers.
    """
    be, stride, pad, groups, Ho, Wo = _conv_geometry("conv_forward_fast", x, w, b, conv_param)
    ph, pw, pool_stride, _, _ = _pool_window("max_pool_forward_fast", Ho, Wo, pool_param)
    xp = be.xp
    out, argmax, conv_cache = be.conv2d_maxpool(
        xp.ascontiguousarray(x), w, xp.ascontiguousarray(b), stride, pad, Ho, Wo,
        (ph, pw, pool_stride), relu=True, groups=groups)
    pool_cache = ((x.shape[0], w.shape[0], Ho, Wo), argmax, ph, pw, pool_stride)
    return out, (conv_cache, pool_cache, out)


def conv_relu_pool_backward(dout, cache, need_dx=True):
    """Returns dx, dw, db (dx None with need_dx=False, for a network's first layer).

    A window whose maximum is not positive passes no gradient, as ReLU before the pool would
    have it: the ReLU mask applies to dout before the pool routes it.
    """
    conv_cache, pool_cache, relu_cache = cache
    if not isinstance(conv_cache, ConvContext):
        raise TypeError(f"conv_relu_pool_backward: cache must be the cache "
                        f"conv_relu_pool_forward returned, its first item a "
                        f"{type(conv_cache).__name__}")
    conv_shape, argmax, ph, pw, stride = pool_cache
    layer = "conv_relu_pool_backward"
    be = _checks.floating(layer, dout=dout)
    _checks.shape(layer, "dout", dout, tuple(relu_cache.shape))
    return be.conv2d_maxpool_backward(dout, argmax, conv_shape, (ph, pw, stride), conv_cache,
                                      need_dx=need_dx, keep=relu_cache)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    """conv -> spatial batchnorm -> ReLU. Returns out, cache."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, bn_cache = spatial_batchnorm_relu_forward(a, gamma, beta, bn_param)
    return out, (conv_cache, bn_cache)


def conv_bn_relu_backward(dout, cache, need_dx=True):
    """Returns dx, dw, db, dgamma, dbeta (dx None with need_dx=False)."""
    conv_cache, bn_cache = cache
    dan, dgamma, dbeta = spatial_batchnorm_relu_backward(dout, bn_cache)
    dx, dw, db = conv_backward_fast(dan, conv_cache, need_dx=need_dx)
    return dx, dw, db, dgamma, dbeta


def conv_bn_relu_pool_forward(x, w, b, gamma, beta, conv_param, bn_param, pool_param):
    """conv -> spatial batchnorm -> ReLU -> max pool. Returns out, cache."""
    a, inner_cache = conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param)
    out, pool_cache = max_pool_forward_fast(a, pool_param)
    return out, (inner_cache, pool_cache)


def conv_bn_relu_pool_backward(dout, cache, need_dx=True):
    """Returns dx, dw, db, dgamma, dbeta (dx None with need_dx=False)."""
    inner_cache, pool_cache = cache
    return conv_bn_relu_backward(max_pool_backward_fast(dout, pool_cache), inner_cache,
                                 need_dx=need_dx)
