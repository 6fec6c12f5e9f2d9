"""Pooling (NCHW): max and average pooling over any window and stride, and global average.

pool_param: {'pool_height', 'pool_width', 'stride'}; windows may overlap (4x4 stride 2) or
leave gaps (2x2 stride 3), but must fit exactly: (H - pool_height) / stride must be an integer.
That is the course's rule, kept here on purpose; `dualnet.nn.MaxPool2d`/`AvgPool2d` follow
PyTorch's instead (padding, and the output size floored: a 2x2 pool on 7x7 gives 3x3).
"""

from __future__ import annotations

from .. import _checks


def _pool_geometry(layer, x, pool_param):
    """Validate a pooling call; returns (backend, ph, pw, stride, Ho, Wo)."""
    be = _checks.floating(layer, x=x)
    _checks.ndim(layer, "x", x, 4, "(N, C, H, W)")
    return (be, *_pool_window(layer, *x.shape[2:], pool_param))


def _pool_window(layer, H, W, pool_param):
    """Validate pool_param for (H, W) planes; returns (ph, pw, stride, Ho, Wo)."""
    ph = _checks.positive_int(layer, "pool_param['pool_height']", pool_param.get("pool_height"))
    pw = _checks.positive_int(layer, "pool_param['pool_width']", pool_param.get("pool_width"))
    stride = _checks.positive_int(layer, "pool_param['stride']", pool_param.get("stride"))
    Ho = _checks.window_output(layer, H, ph, 0, stride, "height")
    Wo = _checks.window_output(layer, W, pw, 0, stride, "width")
    return ph, pw, stride, Ho, Wo


def _pool_forward_naive(layer, x, pool_param, reduce):
    """Loop over output positions; `reduce(window, axis=(2, 3))` gives each output value."""
    be, ph, pw, stride, Ho, Wo = _pool_geometry(layer, x, pool_param)
    N, C = x.shape[:2]
    out = be.xp.empty((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            window = x[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw]
            out[:, :, i, j] = reduce(window, axis=(2, 3))
    return out, (x, pool_param)


def max_pool_forward_naive(x, pool_param):
    """Reference max pooling with explicit loops. Returns out (N, C, Ho, Wo), cache."""
    return _pool_forward_naive("max_pool_forward_naive", x, pool_param,
                               lambda window, axis: window.max(axis=axis))


def max_pool_backward_naive(dout, cache):
    """Reference: each window's gradient goes to its first maximum. Returns dx (N, C, H, W)."""
    x, pool_param = cache
    be, ph, pw, stride, Ho, Wo = _pool_geometry("max_pool_backward_naive", x, pool_param)
    xp = be.xp
    N, C = x.shape[:2]
    dx = xp.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    window = x[n, c, i * stride:i * stride + ph, j * stride:j * stride + pw]
                    k = int(window.argmax())
                    dx[n, c, i * stride + k // pw, j * stride + k % pw] += dout[n, c, i, j]
    return dx


def max_pool_forward_fast(x, pool_param):
    """Max pooling through the backend's kernel. Returns out (N, C, Ho, Wo), cache."""
    be, ph, pw, stride, _, _ = _pool_geometry("max_pool_forward_fast", x, pool_param)
    out, argmax = be.maxpool_forward(be.xp.ascontiguousarray(x), ph, pw, stride)
    return out, (x.shape, argmax, ph, pw, stride)


def max_pool_backward_fast(dout, cache, keep=None):
    """Gradient of `max_pool_forward_fast`: dout routed to each window's argmax.

    keep: optional, the output of a ReLU after the pool (dout's shape); the gradient through
    both is routed, relu_backward's dout * (keep > 0), without a pass of its own.
    """
    x_shape, argmax, ph, pw, stride = cache
    layer = "max_pool_backward_fast"
    be = _checks.floating(layer, dout=dout)
    if keep is not None:
        _checks.shape(layer, "keep", keep, tuple(dout.shape))
        keep = be.xp.ascontiguousarray(keep, dtype=dout.dtype)
    return be.maxpool_backward(be.xp.ascontiguousarray(dout), argmax, x_shape, ph, pw, stride,
                               keep)


def avg_pool_forward_naive(x, pool_param):
    """Reference average pooling with explicit loops. Returns out (N, C, Ho, Wo), cache."""
    return _pool_forward_naive("avg_pool_forward_naive", x, pool_param,
                               lambda window, axis: window.mean(axis=axis))


def avg_pool_backward_naive(dout, cache):
    """Reference: each window's gradient is shared equally by its ph*pw inputs."""
    x, pool_param = cache
    be, ph, pw, stride, Ho, Wo = _pool_geometry("avg_pool_backward_naive", x, pool_param)
    dx = be.xp.zeros_like(x)
    for i in range(Ho):
        for j in range(Wo):
            share = (dout[:, :, i, j] / (ph * pw))[:, :, None, None]
            dx[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw] += share
    return dx


def avg_pool_forward_fast(x, pool_param):
    """Average pooling through the backend's kernel. Returns out (N, C, Ho, Wo), cache."""
    be, ph, pw, stride, _, _ = _pool_geometry("avg_pool_forward_fast", x, pool_param)
    out = be.avgpool_forward(be.xp.ascontiguousarray(x), ph, pw, stride)
    return out, (x.shape, ph, pw, stride)


def avg_pool_backward_fast(dout, cache):
    """Gradient of `avg_pool_forward_fast`. Returns dx (N, C, H, W)."""
    x_shape, ph, pw, stride = cache
    be = _checks.floating("avg_pool_backward_fast", dout=dout)
    return be.avgpool_backward(be.xp.ascontiguousarray(dout), x_shape, ph, pw, stride)


def global_avg_pool_forward(x):
    """Mean over all spatial positions: x (N, C, H, W) -> out (N, C)."""
    _checks.floating("global_avg_pool_forward", x=x)
    _checks.ndim("global_avg_pool_forward", "x", x, 4, "(N, C, H, W)")
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool_backward(dout, cache):
    """dout (N, C) spread evenly over H*W -> dx (N, C, H, W)."""
    N, C, H, W = cache
    be = _checks.floating("global_avg_pool_backward", dout=dout)
    share = dout / dout.dtype.type(H * W)
    return be.xp.broadcast_to(share[:, :, None, None], cache).copy()
