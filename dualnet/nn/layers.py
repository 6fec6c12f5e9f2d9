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

Like PyTorch (and unlike the functional course layers, which require windows that fit
exactly), `MaxPool2d`/`AvgPool2d` floor their output size and ignore the trailing rows and
columns no window reaches.
"""

from __future__ import annotations

import numpy as np

from .. import _checks, backend, layers
from ..models.base import init_scale
from .module import Module

_INIT_MODES = ("fan_in", "fan_out")


def _new_weight(name, shape, fans, weight_scale, init_mode, dtype):
    """scale * N(0, 1) with the models' rule (`dualnet.models.base.init_scale`): a positive
    number, 'he' or 'xavier'; None means 'he'.

    fans: {'fan_in': ..., 'fan_out': ...} of this weight; `init_mode` picks the one the 'he'
    and 'xavier' rules divide by, as `mode` does in PyTorch's `kaiming_normal_`. A fixed
    number has no fan, so it only goes with the default 'fan_in'.
    Drawn from numpy's global RNG on the host (as the course models do, so np.random.seed
    reproduces them) and placed on the default backend.
    """
    if init_mode not in _INIT_MODES:
        raise ValueError(f"{name}: init_mode must be 'fan_in' or 'fan_out', got {init_mode!r}")
    if weight_scale is None:
        weight_scale = "he"
    if not isinstance(weight_scale, str):
        if not weight_scale > 0:
            raise ValueError(f"{name}: weight_scale must be positive, 'he', 'xavier' or None "
                             f"(He init), got {weight_scale!r}")
        if init_mode != "fan_in":
            raise ValueError(f"{name}: init_mode={init_mode!r} applies to the 'he' and "
                             f"'xavier' rules, not to a fixed weight_scale={weight_scale!r}")
    try:
        scale = init_scale(weight_scale, fans[init_mode])
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
    """out = x.reshape(N, -1) @ weight + bias; weight (in_features, out_features).

    Fans: fan_in = in_features, fan_out = out_features.
    weight_scale: std of the normal init: a positive number, 'he' (sqrt(2 / fan), the
        default) or 'xavier' (sqrt(1 / fan)).
    init_mode: 'fan_in' (default) or 'fan_out', the fan those rules use; 'he' with
        'fan_out' is PyTorch's `kaiming_normal_(w, mode='fan_out', nonlinearity='relu')`.
    """

    decayed = ("weight",)

    def __init__(self, in_features, out_features, weight_scale=None, init_mode="fan_in",
                 dtype=np.float32):
        super().__init__()
        D = _checks.positive_int("Linear", "in_features", in_features)
        M = _checks.positive_int("Linear", "out_features", out_features)
        self._params["weight"] = _new_weight("Linear", (D, M), {"fan_in": D, "fan_out": M},
                                             weight_scale, init_mode, dtype)
        self._params["bias"] = _filled((M,), 0, dtype)

    def forward(self, x):
        out, self._cache = layers.affine_forward(x, self._params["weight"], self._params["bias"])
        return out

    def backward(self, dout):
        dx, self._grads["weight"], self._grads["bias"] = layers.affine_backward(dout, self._cache)
        return dx


class Conv2d(Module):
    """2-D convolution through `conv_forward_fast`, with PyTorch's output size rule: windows
    that would run past the padded input are dropped (Ho = floor((H + 2p - kh) / s) + 1), so
    a 3x3 stride-2 padding-1 convolution takes 32x32 to 16x16. (The functional course layer
    refuses such shapes unless `conv_param['rounding']` is 'floor'.)

    NCHW: x (N, C, H, W), weight (out, in / groups, kh, kw). NHWC: x (N, H, W, C) and weight
    (kh, kw, in / groups, out), for course code whose images are channels-last; outputs
    follow x.
    groups: channels and filters split into this many groups, each filter seeing only its
        group's input channels (PyTorch's `groups`); groups = in_channels is the depthwise
        convolution. Both channel counts must be multiples of it.
    bias: with False the module has no bias parameter at all (not in params, grads or
        state_dict), as in PyTorch; for convolutions followed by batch normalization.
    Fans (as PyTorch counts them): fan_in = in / groups * kh * kw, fan_out = out * kh * kw.
    weight_scale: std of the normal init: a positive number, 'he' (sqrt(2 / fan), the
        default) or 'xavier' (sqrt(1 / fan)).
    init_mode: 'fan_in' (default) or 'fan_out', the fan those rules use; 'he' with
        'fan_out' is PyTorch's `kaiming_normal_(w, mode='fan_out', nonlinearity='relu')`.
    """

    decayed = ("weight",)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1,
                 bias=True, data_format="NCHW", weight_scale=None, init_mode="fan_in",
                 dtype=np.float32):
        super().__init__()
        C = _checks.positive_int("Conv2d", "in_channels", in_channels)
        F = _checks.positive_int("Conv2d", "out_channels", out_channels)
        kh, kw = _pair("Conv2d", "kernel_size", kernel_size)
        groups = _checks.positive_int("Conv2d", "groups", groups)
        if C % groups or F % groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={C} and "
                             f"out_channels={F}")
        self.conv_param = {"stride": _checks.positive_int("Conv2d", "stride", stride),
                           "pad": _checks.positive_int("Conv2d", "padding", padding, minimum=0),
                           "groups": groups, "rounding": "floor"}
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"Conv2d: bias must be True or False, got {bias!r}")
        self.data_format = _check_format("Conv2d", data_format)
        Cg = C // groups
        shape = (F, Cg, kh, kw) if data_format == "NCHW" else (kh, kw, Cg, F)
        fans = {"fan_in": Cg * kh * kw, "fan_out": F * kh * kw}
        self._params["weight"] = _new_weight("Conv2d", shape, fans, weight_scale, init_mode,
                                             dtype)
        if bias:
            self._params["bias"] = _filled((F,), 0, dtype)

    def _weight_fchw(self):
        w = self._params["weight"]
        return w.transpose(3, 2, 0, 1) if self.data_format == "NHWC" else w

    def _bias(self, w):
        if "bias" in self._params:
            return self._params["bias"]
        # The functional layer always adds a bias: a zero one adds nothing. Its gradient is
        # dropped in `backward`, since a bias-free module has no bias to train.
        return backend.of(w).xp.zeros(w.shape[0], dtype=w.dtype)

    def forward(self, x):
        w = self._weight_fchw()
        out, self._cache = layers.conv_forward_fast(_to_nchw(x, self.data_format), w,
                                                    self._bias(w), self.conv_param)
        return _from_nchw(out, self.data_format)

    def backward(self, dout):
        dx, dw, db = layers.conv_backward_fast(_to_nchw(dout, self.data_format), self._cache)
        self._grads["weight"] = dw.transpose(2, 3, 1, 0) if self.data_format == "NHWC" else dw
        if "bias" in self._params:
            self._grads["bias"] = db
        return _from_nchw(dx, self.data_format)


class _Pool(Module):
    """Shared by MaxPool2d and AvgPool2d: PyTorch's output-size rule over the course's fast
    pooling layers.

    Ho = floor((H + 2 * padding - kernel_size) / stride) + 1 (PyTorch's default), or with
    ceil_mode=True the ceiling, less one where that last window would start past the input
    and its left padding (PyTorch's rule); likewise Wo. The input is padded with `pad_value`
    (and, in ceil mode, further to the right and bottom so that the last windows fit), then
    the trailing rows and columns that no window reaches are cropped, so that the functional
    layer, which keeps the course's rule (windows must fit exactly), sees an input its
    windows fit.
    """

    kind = ""
    pad_value = 0.0

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 data_format="NCHW"):
        super().__init__()
        name = type(self).__name__
        ph, pw = _pair(name, "kernel_size", kernel_size)
        stride = ph if stride is None else _checks.positive_int(name, "stride", stride)
        self.padding = _checks.positive_int(name, "padding", padding, minimum=0)
        if 2 * self.padding > min(ph, pw):
            # PyTorch's limit too: it keeps every window on at least one input element
            raise ValueError(f"{name}: padding must be at most half of kernel_size "
                             f"{(ph, pw)}, got {padding}")
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f"{name}: ceil_mode must be True or False, got {ceil_mode!r}")
        self.ceil_mode = bool(ceil_mode)
        self.pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
        self.data_format = _check_format(name, data_format)
        self._forward = getattr(layers, f"{self.kind}_pool_forward_fast")
        self._backward = getattr(layers, f"{self.kind}_pool_backward_fast")

    def _outputs(self, size, window, axis):
        """Output length along an axis of input length `size` (before padding)."""
        p, stride = self.padding, self.pool_param["stride"]
        if size + 2 * p < window:
            raise ValueError(f"{type(self).__name__}: kernel_size {window} is larger than the "
                             f"padded input {axis} {size + 2 * p} (padding {p})")
        span = size + 2 * p - window
        if not self.ceil_mode:
            return span // stride + 1
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + p:  # the last window would start past the input
            out -= 1
        return out

    def forward(self, x):
        x = _to_nchw(x, self.data_format)
        name = type(self).__name__
        be = _checks.floating(name, x=x)
        _checks.ndim(name, "x", x, 4, "(N, C, H, W) or (N, H, W, C)")
        ph, pw, stride = (self.pool_param[k] for k in ("pool_height", "pool_width", "stride"))
        H, W = x.shape[2:]
        Ho, Wo = self._outputs(H, ph, "height"), self._outputs(W, pw, "width")
        p = self.padding
        # the rows and columns the windows reach: the padded input cropped, or, in ceil
        # mode, extended past its end
        reach = ((Ho - 1) * stride + ph, (Wo - 1) * stride + pw)
        extra = (max(0, reach[0] - H - 2 * p), max(0, reach[1] - W - 2 * p))
        if p or any(extra):
            x = be.xp.pad(x, ((0, 0), (0, 0), (p, p + extra[0]), (p, p + extra[1])),
                          constant_values=self.pad_value)
        self._padded_shape, self._extra, self._reached = x.shape, extra, reach
        out, self._cache = self._forward(x[:, :, :reach[0], :reach[1]], self.pool_param)
        self._scale = self._ceil_scale(be.xp, H, W, Ho, Wo, out.dtype)
        if self._scale is not None:
            out = out * self._scale
        return _from_nchw(out, self.data_format)

    def _ceil_scale(self, xp, H, W, Ho, Wo, dtype):
        """None, or (Ho, Wo) factors for the windows that run past the padded input."""
        return None

    def backward(self, dout):
        dout = _to_nchw(dout, self.data_format)
        if self._scale is not None:
            dout = dout * self._scale
        dx = self._backward(dout, self._cache)
        if dx.shape != self._padded_shape:  # the cropped rows and columns get no gradient
            full = backend.of(dx).xp.zeros(self._padded_shape, dtype=dx.dtype)
            full[:, :, :self._reached[0], :self._reached[1]] = dx
            dx = full
        p, (eh, ew) = self.padding, self._extra
        Hp, Wp = self._padded_shape[2:]
        dx = dx[:, :, p:Hp - p - eh, p:Wp - p - ew]
        return _from_nchw(dx, self.data_format)


class MaxPool2d(_Pool):
    """Max pooling over kernel_size windows (stride defaults to the window size).

    x (N, C, H, W) -> (N, C, Ho, Wo) with PyTorch's rule (see `_Pool`): a 2x2 pool on 7x7
    gives 3x3, or 4x4 with ceil_mode=True. Padding counts as -inf, so it is never the maximum.
    padding: at most half the window, as in PyTorch.
    """

    kind = "max"
    pad_value = -np.inf


class AvgPool2d(_Pool):
    """Average pooling over kernel_size windows (stride defaults to the window size).

    x (N, C, H, W) -> (N, C, Ho, Wo) with PyTorch's rule (see `_Pool`). Padding counts as
    zeros in each window's average, like PyTorch's default count_include_pad=True; in ceil
    mode a window running past the padded input averages only what lies inside it, as in
    PyTorch. padding: at most half the window, as in PyTorch.
    """

    kind = "avg"
    pad_value = 0.0

    def _ceil_scale(self, xp, H, W, Ho, Wo, dtype):
        """window size / elements inside the padded input, per output (1 where it fits)."""
        if not any(self._extra):
            return None
        ph, pw, stride = (self.pool_param[k] for k in ("pool_height", "pool_width", "stride"))
        p = self.padding
        rows = np.minimum(np.arange(Ho) * stride + ph, H + 2 * p) - np.arange(Ho) * stride
        cols = np.minimum(np.arange(Wo) * stride + pw, W + 2 * p) - np.arange(Wo) * stride
        return xp.asarray(ph * pw / np.outer(rows, cols), dtype=dtype)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size: (N, C, H, W) -> (N, C, oh, ow).

    output_size: an int or an (oh, ow) pair that divides the input's (H, W); each output is
    the mean of an (H // oh, W // ow) block, as in PyTorch. 1 is global average pooling
    that keeps the 4-D shape (N, C, 1, 1). Sizes that do not divide the input (PyTorch's
    uneven, overlapping windows) are refused.
    """

    def __init__(self, output_size, data_format="NCHW"):
        super().__init__()
        self.output_size = _pair("AdaptiveAvgPool2d", "output_size", output_size)
        self.data_format = _check_format("AdaptiveAvgPool2d", data_format)

    def forward(self, x):
        x = _to_nchw(x, self.data_format)
        _checks.floating("AdaptiveAvgPool2d", x=x)
        _checks.ndim("AdaptiveAvgPool2d", "x", x, 4, "(N, C, H, W) or (N, H, W, C)")
        N, C, H, W = x.shape
        oh, ow = self.output_size
        if H % oh or W % ow:
            raise ValueError(f"AdaptiveAvgPool2d: output_size {(oh, ow)} must divide the "
                             f"input's spatial size {(H, W)}")
        self._shape = x.shape
        # each output averages one (H // oh, W // ow) block: axes 3 and 5 of this view
        out = x.reshape(N, C, oh, H // oh, ow, W // ow).mean(axis=(3, 5))
        return _from_nchw(out, self.data_format)

    def backward(self, dout):
        N, C, H, W = self._shape
        oh, ow = self.output_size
        dout = _to_nchw(dout, self.data_format)
        share = dout / dout.dtype.type((H // oh) * (W // ow))
        blocks = (N, C, oh, H // oh, ow, W // ow)
        dx = backend.of(dout).xp.broadcast_to(share[:, :, :, None, :, None], blocks)
        return _from_nchw(dx.reshape(self._shape), self.data_format)


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
    """Shared by BatchNorm1d/2d: weight (gamma), bias (beta), running statistics.

    momentum follows the course, the opposite of PyTorch's: running = momentum * running +
    (1 - momentum) * batch, so the default 0.9 keeps 90% of the running value (PyTorch's
    momentum=0.1 does the same; PyTorch's 0.9 is 0.1 here).
    """

    functional = ""
    backward_name = ""
    absorbs_relu = True

    def __init__(self, num_features, eps=1e-5, momentum=0.9, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        C = _checks.positive_int(name, "num_features", num_features)
        self.eps = _checks.number(name, "eps", eps, above=0)
        self.momentum = _checks.number(name, "momentum", momentum, at_least=0)
        if self.momentum > 1:
            raise ValueError(f"{name}: momentum must be in [0, 1] (the course's: running = "
                             f"momentum * running + (1 - momentum) * batch), got {momentum!r}")
        self._params["weight"] = _filled((C,), 1, dtype)
        self._params["bias"] = _filled((C,), 0, dtype)
        self._buffers["running_mean"] = _filled((C,), 0, dtype)
        self._buffers["running_var"] = _filled((C,), 0, dtype)

    def forward(self, x):
        return self._forward(x, "_forward")

    def forward_relu(self, x):
        """max(forward(x), 0) in the normalization's own pass, for a `Sequential` whose next
        child is a ReLU; `backward` then applies the ReLU's mask too (the cache says so)."""
        return self._forward(x, "_relu_forward")

    def _forward(self, x, suffix):
        bn_param = {"mode": "train" if self.training else "test", "eps": self.eps,
                    "momentum": self.momentum, **self._buffers}
        forward = getattr(layers.norm, f"{self.functional}{suffix}")
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
    """Per-channel batch normalization of (N, C, H, W) (`spatial_batchnorm_forward`).

    momentum is the course's (0.9 keeps 90% of the running value), not PyTorch's: see
    `_BatchNorm`.
    """

    functional = "spatial_batchnorm"
    backward_name = "spatial_batchnorm_backward"


class LayerNorm(Module):
    """Layer normalization of (N, D) features, weight and bias of shape (D,)."""

    def __init__(self, num_features, eps=1e-5, dtype=np.float32):
        super().__init__()
        D = _checks.positive_int("LayerNorm", "num_features", num_features)
        self.eps = _checks.number("LayerNorm", "eps", eps, above=0)
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
        self.G, self.eps = G, _checks.number("GroupNorm", "eps", eps, above=0)
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
    is_relu = True


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
