"""Normalization layers: batch, spatial batch, layer and group normalization.

All of them standardize x over some axes (`_standardize`) and then scale and shift by
gamma, beta; they differ only in which axes are reduced and whether running statistics are
kept. The backward passes share `_standardize_backward`, the simplified closed form
dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / std. `batchnorm_backward` alone keeps
the step-by-step computational-graph form the course asks students to derive.
"""

from __future__ import annotations

import math

from .. import _checks, backend
from .activations import relu_backward


def _standardize(xp, x, axes, eps):
    """(x - mean) / sqrt(var + eps) over `axes`; returns xhat and std (keepdims)."""
    xc = x - x.mean(axis=axes, keepdims=True)
    std = xp.sqrt((xc * xc).mean(axis=axes, keepdims=True) + x.dtype.type(eps))
    return xc / std, std


def _standardize_backward(dxhat, xhat, std, axes):
    """Input gradient of `_standardize` given the gradient with respect to xhat."""
    return (dxhat - dxhat.mean(axis=axes, keepdims=True)
            - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)) / std


def _mode(layer, param):
    mode = param.get("mode", "train")
    if mode not in ("train", "test"):
        raise ValueError(f"{layer}: mode must be 'train' or 'test', got {mode!r}")
    return mode


def _batchnorm(layer, x, gamma, beta, bn_param, axes, relu=False):
    """Batch normalization over `axes` of x, with per-channel running statistics; with
    `relu`, the ReLU that follows it too, in the same pass (its output, kept in the cache as
    'relu', is also the ReLU's mask).

    Channels are the one axis of x (1 for (N, C, ...), else 1 of (N, D)) not in `axes`;
    gamma, beta and the running mean/var have shape (C,).
    """
    be = _checks.floating(layer, x=x, gamma=gamma, beta=beta)
    xp = be.xp
    C = x.shape[1]
    _checks.shape(layer, "gamma", gamma, (C,))
    _checks.shape(layer, "beta", beta, (C,))
    mode = _mode(layer, bn_param)
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    running_mean = bn_param.get("running_mean")
    running_var = bn_param.get("running_var")
    if running_mean is None:
        running_mean = xp.zeros(C, dtype=x.dtype)
    if running_var is None:
        running_var = xp.zeros(C, dtype=x.dtype)
    _checks.shape(layer, "bn_param['running_mean']", running_mean, (C,))
    _checks.shape(layer, "bn_param['running_var']", running_var, (C,))
    if mode == "train":
        if math.prod(x.shape[a] for a in axes) == 0:
            # the mean of nothing is NaN, and it would stay in the running statistics for good
            raise ValueError(f"{layer}: x of shape {tuple(x.shape)} holds no values per channel; "
                             f"batch statistics need a non-empty batch in 'train' mode")
        # the backend's kernel: statistics and normalization in few passes over x
        out, mean, var, std = be.batchnorm_train(x, gamma, beta, eps, relu)
        bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mean
        bn_param["running_var"] = momentum * running_var + (1 - momentum) * var
        return out, {"mode": mode, "x": x, "mean": mean, "std": std, "gamma": gamma,
                     "axes": axes, "relu": out if relu else None}
    bshape = [1] * x.ndim
    bshape[1] = C
    std = xp.sqrt(running_var + x.dtype.type(eps)).reshape(bshape)
    xhat = (x - running_mean.reshape(bshape)) / std
    g = gamma.reshape(bshape)
    out = g * xhat + beta.reshape(bshape)
    if relu:
        xp.maximum(out, 0, out=out)
    return out, {"mode": mode, "xhat": xhat, "std": std, "gamma": g, "axes": axes,
                 "relu": out if relu else None}


def _checked(layer, dout, cache, made_by, keys=("xhat", "std", "gamma")):
    """The cache of forward function `made_by`, with dout checked against its output shape
    (that of the x or xhat it keeps)."""
    cache = _checks.dict_cache(layer, cache, keys, made_by)
    _checks.dout(layer, dout, (cache["x"] if "x" in cache else cache["xhat"]).shape, made_by)
    return cache


#: The keys of a batch normalization cache, by mode: training keeps x and its statistics
#: (the backend's backward kernel recomputes xhat), test mode xhat and the running std.
_BATCHNORM_KEYS = {"train": ("mode", "x", "mean", "std", "gamma", "axes"),
                   "test": ("mode", "xhat", "std", "gamma", "axes")}


def _batchnorm_cache(layer, dout, cache, made_by):
    """`_checked` for the caches of the batch normalizations, whose keys depend on the mode."""
    mode = _checks.dict_cache(layer, cache, ("mode",), made_by)["mode"]
    return _checked(layer, dout, cache, made_by, _BATCHNORM_KEYS.get(mode, ("mode", "x")))


def _affine_grads(dout, cache):
    """dgamma, dbeta (shape (C,)) and dxhat for the scale-and-shift that ends every norm."""
    axes = cache["param_axes"] if "param_axes" in cache else cache["axes"]
    dgamma = (dout * cache["xhat"]).sum(axis=axes)
    dbeta = dout.sum(axis=axes)
    return dgamma, dbeta, dout * cache["gamma"]


def _batchnorm_backward_closed(dout, cache):
    keep = cache.get("relu")  # the output of a fused ReLU, whose positives pass dout
    if cache["mode"] == "test":  # statistics were constants
        if keep is not None:
            dout = relu_backward(dout, keep)
        dgamma, dbeta, dxhat = _affine_grads(dout, cache)
        return dxhat / cache["std"], dgamma, dbeta
    return backend.of(dout).batchnorm_train_backward(dout, cache["x"], cache["mean"],
                                                     cache["std"], cache["gamma"], keep)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, D) over the batch.

    Args:
        x: (N, D). gamma, beta: (D,) scale and shift.
        bn_param: dict with 'mode' ('train' | 'test'), optional 'eps' (1e-5), 'momentum'
            (0.9); 'running_mean'/'running_var' (D,) are created and updated in it:
            running = momentum * running + (1 - momentum) * batch statistic.

    Returns:
        out (N, D), cache.
    """
    _checks.ndim("batchnorm_forward", "x", x, 2, "(N, D)")
    return _batchnorm("batchnorm_forward", x, gamma, beta, bn_param, axes=(0,))


def batchnorm_backward(dout, cache):
    """Batchnorm gradients by walking the computational graph one node at a time.

    Returns dx (N, D), dgamma (D,), dbeta (D,).
    """
    cache = _batchnorm_cache("batchnorm_backward", dout, cache, "batchnorm_forward")
    if cache["mode"] == "test":
        return _batchnorm_backward_closed(dout, cache)
    std, gamma = cache["std"], cache["gamma"]
    xc = cache["x"] - cache["mean"]
    xhat = xc / std
    M = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    # xhat = xc * inv_std
    inv_std = 1 / std
    dinv_std = (dxhat * xc).sum(axis=0, keepdims=True)
    dxc = dxhat * inv_std
    # inv_std = 1 / std, std = sqrt(var + eps), var = mean(xc ** 2)
    dstd = -dinv_std / (std * std)
    dvar = dstd / (2 * std)
    dxc += 2 * xc * dvar / M
    # xc = x - mean(x)
    dmean = -dxc.sum(axis=0, keepdims=True)
    dx = dxc + dmean / M
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """Batchnorm gradients from the simplified closed form (one pass, fewer temporaries).

    Returns dx (N, D), dgamma (D,), dbeta (D,).
    """
    cache = _batchnorm_cache("batchnorm_backward_alt", dout, cache, "batchnorm_forward")
    return _batchnorm_backward_closed(dout, cache)


def batchnorm_relu_forward(x, gamma, beta, bn_param):
    """max(batchnorm_forward(x, gamma, beta, bn_param), 0), normalization and ReLU in one pass
    where the backend has a kernel for it. Returns out (N, D), cache."""
    _checks.ndim("batchnorm_relu_forward", "x", x, 2, "(N, D)")
    return _batchnorm("batchnorm_relu_forward", x, gamma, beta, bn_param, axes=(0,), relu=True)


def batchnorm_relu_backward(dout, cache):
    """Gradients of `batchnorm_relu_forward`: dx (N, D), dgamma (D,), dbeta (D,)."""
    cache = _batchnorm_cache("batchnorm_relu_backward", dout, cache, "batchnorm_relu_forward")
    return _batchnorm_backward_closed(dout, cache)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, C, H, W) per channel, over N, H and W.

    gamma, beta: (C,). bn_param as for `batchnorm_forward`. Returns out (N, C, H, W), cache.
    """
    _checks.ndim("spatial_batchnorm_forward", "x", x, 4, "(N, C, H, W)")
    return _batchnorm("spatial_batchnorm_forward", x, gamma, beta, bn_param, axes=(0, 2, 3))


def spatial_batchnorm_backward(dout, cache):
    """Returns dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    cache = _batchnorm_cache("spatial_batchnorm_backward", dout, cache,
                             "spatial_batchnorm_forward")
    return _batchnorm_backward_closed(dout, cache)


def spatial_batchnorm_relu_forward(x, gamma, beta, bn_param):
    """max(spatial_batchnorm_forward(x, gamma, beta, bn_param), 0), in one pass where the
    backend has a kernel for it. Returns out (N, C, H, W), cache."""
    _checks.ndim("spatial_batchnorm_relu_forward", "x", x, 4, "(N, C, H, W)")
    return _batchnorm("spatial_batchnorm_relu_forward", x, gamma, beta, bn_param,
                      axes=(0, 2, 3), relu=True)


def spatial_batchnorm_relu_backward(dout, cache):
    """Gradients of `spatial_batchnorm_relu_forward`: dx (N, C, H, W), dgamma, dbeta (C,)."""
    cache = _batchnorm_cache("spatial_batchnorm_relu_backward", dout, cache,
                             "spatial_batchnorm_relu_forward")
    return _batchnorm_backward_closed(dout, cache)


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization of x (N, D): each sample over its own D features.

    gamma, beta: (D,). ln_param: dict with optional 'eps' (1e-5); train and test behave
    the same. Returns out (N, D), cache.
    """
    layer = "layernorm_forward"
    be = _checks.floating(layer, x=x, gamma=gamma, beta=beta)
    _checks.ndim(layer, "x", x, 2, "(N, D)")
    D = x.shape[1]
    _checks.shape(layer, "gamma", gamma, (D,))
    _checks.shape(layer, "beta", beta, (D,))
    xhat, std = _standardize(be.xp, x, (1,), ln_param.get("eps", 1e-5))
    out = gamma * xhat + beta
    return out, {"xhat": xhat, "std": std, "gamma": gamma, "axes": (1,), "param_axes": (0,)}


def layernorm_backward(dout, cache):
    """Returns dx (N, D), dgamma (D,), dbeta (D,)."""
    cache = _checked("layernorm_backward", dout, cache, "layernorm_forward")
    dgamma, dbeta, dxhat = _affine_grads(dout, cache)
    return _standardize_backward(dxhat, cache["xhat"], cache["std"], cache["axes"]), dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalization of x (N, C, H, W): each sample over groups of C // G channels.

    gamma, beta: (1, C, 1, 1), as in the course. gn_param: optional 'eps' (1e-5).
    Returns out (N, C, H, W), cache.
    """
    layer = "spatial_groupnorm_forward"
    be = _checks.floating(layer, x=x, gamma=gamma, beta=beta)
    _checks.ndim(layer, "x", x, 4, "(N, C, H, W)")
    N, C, H, W = x.shape
    if isinstance(G, bool) or not isinstance(G, int) or G < 1 or C % G:
        raise ValueError(f"{layer}: G={G!r} groups must be a positive integer dividing C={C}")
    _checks.shape(layer, "gamma", gamma, (1, C, 1, 1))
    _checks.shape(layer, "beta", beta, (1, C, 1, 1))
    xhat, std = _standardize(be.xp, x.reshape(N, G, -1), (2,), gn_param.get("eps", 1e-5))
    xhat = xhat.reshape(x.shape)
    out = gamma * xhat + beta
    return out, {"xhat": xhat, "std": std, "gamma": gamma, "G": G, "axes": (0, 2, 3)}


def spatial_groupnorm_backward(dout, cache):
    """Returns dx (N, C, H, W), dgamma (1, C, 1, 1), dbeta (1, C, 1, 1)."""
    cache = _checked("spatial_groupnorm_backward", dout, cache, "spatial_groupnorm_forward",
                     ("xhat", "std", "gamma", "G"))
    dgamma, dbeta, dxhat = _affine_grads(dout, cache)
    N, G = dout.shape[0], cache["G"]
    xhat = cache["xhat"].reshape(N, G, -1)
    dx = _standardize_backward(dxhat.reshape(N, G, -1), xhat, cache["std"], (2,))
    shape = (1, dout.shape[1], 1, 1)
    return dx.reshape(dout.shape), dgamma.reshape(shape), dbeta.reshape(shape)
