"""Layer modules: thin objects over the functional layers in `dualnet.layers`.

Each module turns its constructor arguments into the functional layer's parameter dicts,
keeps the cache between `forward` and `backward`, and names its parameters `weight`/`bias`
(buffers `running_mean`/`running_var`). Arrays are created on the default backend
(`dualnet.backend.use`) in `dtype`.

Differences from PyTorch, kept on purpose so both dualnet APIs share numbers:
- `Linear.weight` is (in_features, out_features), the layout of `affine_forward`.
- `BatchNorm*` `momentum` is the course's: running = momentum * running + (1 - momentum) *
  batch (0.9 here is PyTorch's 0.1).
- `Dropout(p)` takes the DROP probability, like PyTorch; the functional `dropout_forward`
  takes the KEEP probability `p`, like the course. `Dropout(0.3)` keeps 70% of the units.
"""

from __future__ import annotations

import numpy as np

from .. import _validate, backend, layers
from ..layers import _checks
from ..models.base import init_scale
from .module import Module


def _new_weight(name, shape, fan_in, weight_scale, dtype):
    """scale * N(0, 1) with the models' rule (`dualnet.models.base.init_scale`): a positive
    number, 'he' or 'xavier'; None means 'he'.

    Drawn from numpy's global RNG on the host (as the course models do, so np.random.seed
    reproduces them) and placed on the default backend.
    """
    if weight_scale is None:
        weight_scale = "he"
    if not isinstance(weight_scale, str) and not weight_scale > 0:
        raise ValueError(f"{name}: weight_scale must be positive, 'he', 'xavier' or None "
                         f"(He init), got {weight_scale!r}")
    try:
        scale = init_scale(weight_scale, fan_in)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return backend.current().asarray(scale * np.random.randn(*shape), dtype=dtype)


def _filled(shape, value, dtype):
    return backend.current().asarray(np.full(shape, value), dtype=dtype)


def _pair(name, what, value):
    """An int or a pair of ints -> (int, int), each validated."""
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 2:
        raise ValueError(f"{name}: {what} must be an int or a pair of ints, got {value!r}")
    return tuple(_checks.positive_int(name, what, v) for v in values)


_FORMATS = ("NCHW", "NHWC")


def _check_format(name, data_format):
    if data_format not in _FORMATS:
        raise ValueError(f"{name}: data_format must be 'NCHW' or 'NHWC', got {data_format!r}")
    return data_format


def _to_nchw(x, data_format):
    return x.transpose(0, 3, 1, 2) if data_format == "NHWC" else x


def _from_nchw(x, data_format):
    return x.transpose(0, 2, 3, 1) if data_format == "NHWC" else x


class Linear(Module):
    """out = x.reshape(N, -1) @ weight + bias; weight (in_features, out_features)."""

    decayed = ("weight",)

    def __init__(self, in_features, out_features, weight_scale=None, dtype=np.float32):
        super().__init__()
        D = _checks.positive_int("Linear", "in_features", in_features)
        M = _checks.positive_int("Linear", "out_features", out_features)
        self._params["weight"] = _new_weight("Linear", (D, M), D, weight_scale, dtype)
        self._params["bias"] = _filled((M,), 0, dtype)

    def forward(self, x):
        out, self._cache = layers.affine_forward(x, self._params["weight"], self._params["bias"])
        return out

    def backward(self, dout):
        dx, self._grads["weight"], self._grads["bias"] = layers.affine_backward(dout, self._cache)
        return dx


class Conv2d(Module):
    """2-D convolution through `conv_forward_fast`.

    NCHW: x (N, C, H, W), weight (out, in, kh, kw). NHWC: x (N, H, W, C) and weight
    (kh, kw, in, out), for course code whose images are channels-last; outputs follow x.
    """

    decayed = ("weight",)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 data_format="NCHW", weight_scale=None, dtype=np.float32):
        super().__init__()
        C = _checks.positive_int("Conv2d", "in_channels", in_channels)
        F = _checks.positive_int("Conv2d", "out_channels", out_channels)
        kh, kw = _pair("Conv2d", "kernel_size", kernel_size)
        self.conv_param = {"stride": _checks.positive_int("Conv2d", "stride", stride),
                           "pad": _checks.positive_int("Conv2d", "padding", padding, minimum=0)}
        self.data_format = _check_format("Conv2d", data_format)
        shape = (F, C, kh, kw) if data_format == "NCHW" else (kh, kw, C, F)
        self._params["weight"] = _new_weight("Conv2d", shape, C * kh * kw, weight_scale, dtype)
        self._params["bias"] = _filled((F,), 0, dtype)

    def _weight_fchw(self):
        w = self._params["weight"]
        return w.transpose(3, 2, 0, 1) if self.data_format == "NHWC" else w

    def forward(self, x):
        out, self._cache = layers.conv_forward_fast(
            _to_nchw(x, self.data_format), self._weight_fchw(), self._params["bias"],
            self.conv_param)
        return _from_nchw(out, self.data_format)

    def backward(self, dout):
        dx, dw, self._grads["bias"] = layers.conv_backward_fast(
            _to_nchw(dout, self.data_format), self._cache)
        self._grads["weight"] = dw.transpose(2, 3, 1, 0) if self.data_format == "NHWC" else dw
        return _from_nchw(dx, self.data_format)


class _Pool(Module):
    """Shared by MaxPool2d and AvgPool2d: window, stride (default: the window), format."""

    kind = ""

    def __init__(self, kernel_size, stride=None, data_format="NCHW"):
        super().__init__()
        name = type(self).__name__
        ph, pw = _pair(name, "kernel_size", kernel_size)
        stride = ph if stride is None else _checks.positive_int(name, "stride", stride)
        self.pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
        self.data_format = _check_format(name, data_format)
        self._forward = getattr(layers, f"{self.kind}_pool_forward_fast")
        self._backward = getattr(layers, f"{self.kind}_pool_backward_fast")

    def forward(self, x):
        out, self._cache = self._forward(_to_nchw(x, self.data_format), self.pool_param)
        return _from_nchw(out, self.data_format)

    def backward(self, dout):
        dx = self._backward(_to_nchw(dout, self.data_format), self._cache)
        return _from_nchw(dx, self.data_format)


class MaxPool2d(_Pool):
    """Max pooling over kernel_size windows (stride defaults to the window size)."""

    kind = "max"


class AvgPool2d(_Pool):
    """Average pooling over kernel_size windows (stride defaults to the window size)."""

    kind = "avg"


class GlobalAvgPool2d(Module):
    """Mean over all positions: (N, C, H, W) or (N, H, W, C) -> (N, C)."""

    def __init__(self, data_format="NCHW"):
        super().__init__()
        self.data_format = _check_format("GlobalAvgPool2d", data_format)

    def forward(self, x):
        out, self._cache = layers.global_avg_pool_forward(_to_nchw(x, self.data_format))
        return out

    def backward(self, dout):
        return _from_nchw(layers.global_avg_pool_backward(dout, self._cache), self.data_format)


class _BatchNorm(Module):
    """Shared by BatchNorm1d/2d: weight (gamma), bias (beta), running statistics."""

    functional = ""
    backward_name = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.9, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        C = _checks.positive_int(name, "num_features", num_features)
        self.eps = _validate.number(name, "eps", eps, above=0)
        self.momentum = _validate.number(name, "momentum", momentum, at_least=0)
        if self.momentum > 1:
            raise ValueError(f"{name}: momentum must be in [0, 1] (the course's: running = "
                             f"momentum * running + (1 - momentum) * batch), got {momentum!r}")
        self._params["weight"] = _filled((C,), 1, dtype)
        self._params["bias"] = _filled((C,), 0, dtype)
        self._buffers["running_mean"] = _filled((C,), 0, dtype)
        self._buffers["running_var"] = _filled((C,), 0, dtype)

    def forward(self, x):
        bn_param = {"mode": "train" if self.training else "test", "eps": self.eps,
                    "momentum": self.momentum, **self._buffers}
        forward = getattr(layers, f"{self.functional}_forward")
        out, self._cache = forward(x, self._params["weight"], self._params["bias"], bn_param)
        self._buffers["running_mean"] = bn_param["running_mean"]
        self._buffers["running_var"] = bn_param["running_var"]
        return out

    def backward(self, dout):
        backward = getattr(layers, self.backward_name)
        dx, self._grads["weight"], self._grads["bias"] = backward(dout, self._cache)
        return dx


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, D) features (`batchnorm_forward`)."""

    functional = "batchnorm"
    backward_name = "batchnorm_backward_alt"


class BatchNorm2d(_BatchNorm):
    """Per-channel batch normalization of (N, C, H, W) (`spatial_batchnorm_forward`)."""

    functional = "spatial_batchnorm"
    backward_name = "spatial_batchnorm_backward"


class LayerNorm(Module):
    """Layer normalization of (N, D) features, weight and bias of shape (D,)."""

    def __init__(self, num_features, eps=1e-5, dtype=np.float32):
        super().__init__()
        D = _checks.positive_int("LayerNorm", "num_features", num_features)
        self.eps = _validate.number("LayerNorm", "eps", eps, above=0)
        self._params["weight"] = _filled((D,), 1, dtype)
        self._params["bias"] = _filled((D,), 0, dtype)

    def forward(self, x):
        out, self._cache = layers.layernorm_forward(x, self._params["weight"],
                                                    self._params["bias"], {"eps": self.eps})
        return out

    def backward(self, dout):
        dx, self._grads["weight"], self._grads["bias"] = layers.layernorm_backward(dout,
                                                                                   self._cache)
        return dx


class GroupNorm(Module):
    """Group normalization of (N, C, H, W); weight and bias stored as (C,)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, dtype=np.float32):
        super().__init__()
        G = _checks.positive_int("GroupNorm", "num_groups", num_groups)
        C = _checks.positive_int("GroupNorm", "num_channels", num_channels)
        if C % G:
            raise ValueError(f"GroupNorm: num_groups={G} must divide num_channels={C}")
        self.G, self.eps = G, _validate.number("GroupNorm", "eps", eps, above=0)
        self._params["weight"] = _filled((C,), 1, dtype)
        self._params["bias"] = _filled((C,), 0, dtype)

    def forward(self, x):
        shape = (1, -1, 1, 1)  # the functional layer's (1, C, 1, 1) scale and shift
        out, self._cache = layers.spatial_groupnorm_forward(
            x, self._params["weight"].reshape(shape), self._params["bias"].reshape(shape),
            self.G, {"eps": self.eps})
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = layers.spatial_groupnorm_backward(dout, self._cache)
        self._grads["weight"], self._grads["bias"] = dgamma.reshape(-1), dbeta.reshape(-1)
        return dx


class Dropout(Module):
    """Inverted dropout that zeroes each unit with probability `p` (the DROP probability).

    `seed` fixes the mask (for gradient checks). Identity in eval mode.
    """

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p is the DROP probability and must be in [0, 1), "
                             f"got {p!r}")
        self.p, self.seed = p, seed

    def forward(self, x):
        param = {"p": 1 - self.p, "mode": "train" if self.training else "test"}
        if self.seed is not None:
            param["seed"] = self.seed
        out, self._cache = layers.dropout_forward(x, param)
        return out

    def backward(self, dout):
        return layers.dropout_backward(dout, self._cache)


class _Activation(Module):
    """An elementwise functional pair `<functional>_forward/_backward` as a module."""

    functional = ""

    def forward(self, x):
        out, self._cache = getattr(layers, f"{self.functional}_forward")(x)
        return out

    def backward(self, dout):
        return getattr(layers, f"{self.functional}_backward")(dout, self._cache)


class ReLU(_Activation):
    functional = "relu"


class Sigmoid(_Activation):
    functional = "sigmoid"


class Tanh(_Activation):
    functional = "tanh"


class LeakyReLU(Module):
    """x where x > 0, else negative_slope * x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        out, self._cache = layers.leaky_relu_forward(x, self.negative_slope)
        return out

    def backward(self, dout):
        return layers.leaky_relu_backward(dout, self._cache)


class Flatten(Module):
    """(N, d1, ..., dk) -> (N, d1 * ... * dk)."""

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._shape)
