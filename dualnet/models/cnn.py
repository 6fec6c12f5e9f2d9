"""Convolutional classifiers: the course's ThreeLayerConvNet and a configurable ConvNet."""

from __future__ import annotations

import numpy as np

from .. import _checks
from ..layers import (
    affine_backward,
    affine_forward,
    affine_relu_backward,
    affine_relu_forward,
    conv_backward_fast,
    conv_forward_fast,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    max_pool_backward_fast,
    max_pool_forward_fast,
    relu_backward,
    relu_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)
from .base import Model

__all__ = ["ConvNet", "ThreeLayerConvNet"]

_POOL_2X2 = {"pool_height": 2, "pool_width": 2, "stride": 2}


def _odd_filter(model, size):
    if size < 1 or size % 2 == 0:
        raise ValueError(f"{model}: 'same' padding needs an odd filter_size, got {size}")


class ThreeLayerConvNet(Model):
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax (the course's net).

    The convolution has stride 1 and "same" zero padding (filter_size - 1) // 2, so H and W
    are only halved by the pool.

    Args:
        input_dim: (C, H, W) of one input; H and W must be even.
        num_filters: F. filter_size: odd side of the square filters.
        hidden_dim: units of the hidden affine layer. num_classes: C.
        weight_scale: std of the normal weight init (or 'he' / 'xavier'). reg: L2 strength.
        dtype: float32 or float64.

    Parameters: W1 (F, C, fs, fs), b1 (F,), W2 (F * H/2 * W/2, hidden_dim), b2,
    W3 (hidden_dim, num_classes), b3; weights drawn W1, W2, W3 from numpy's global RNG.
    """

    def __init__(self, input_dim=(3, 32, 32), num_filters=32, filter_size=7, hidden_dim=100,
                 num_classes=10, weight_scale=1e-3, reg=0.0, dtype=np.float32):
        super().__init__(reg=reg, weight_scale=weight_scale, dtype=dtype)
        name = "ThreeLayerConvNet"
        C, H, W = _checks.image_dim(name, input_dim)
        fs = _checks.positive_int(name, "filter_size", filter_size)
        _odd_filter(name, fs)
        if H % 2 or W % 2:
            raise ValueError(f"ThreeLayerConvNet: the 2x2 pool needs an even height and width, "
                             f"got input_dim {tuple(input_dim)}")
        F = _checks.positive_int(name, "num_filters", num_filters)
        hidden_dim = _checks.positive_int(name, "hidden_dim", hidden_dim)
        num_classes = _checks.positive_int(name, "num_classes", num_classes)
        pooled = F * (H // 2) * (W // 2)
        self._add_weight("W1", (F, C, fs, fs), fan_in=C * fs * fs)
        self._add_zeros("b1", F)
        self._add_weight("W2", (pooled, hidden_dim), fan_in=pooled)
        self._add_zeros("b2", hidden_dim)
        self._add_weight("W3", (hidden_dim, num_classes), fan_in=hidden_dim)
        self._add_zeros("b3", num_classes)
        self.conv_param = {"stride": 1, "pad": (fs - 1) // 2}
        self.pool_param = dict(_POOL_2X2)

    def _scores(self, X):
        out = self._layer("conv_relu_pool1", conv_relu_pool_forward, conv_relu_pool_backward, X,
                          ("W1", "b1"), self.conv_param, self.pool_param)
        out = self._layer("affine_relu2", affine_relu_forward, affine_relu_backward, out,
                          ("W2", "b2"))
        return self._layer("affine3", affine_forward, affine_backward, out, ("W3", "b3"))


def _per_layer(name, value, n):
    """`value` repeated n times, or checked to be a sequence of n values."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"ConvNet: {name} has {len(value)} entries for {n} conv layers")
        return list(value)
    return [value] * n


class ConvNet(Model):
    """A configurable deep convolutional net for the "beat 65-70% on CIFAR-10" exercises.

    [conv - norm - relu - (residual block) x R - (2x2 max pool)] x N
    - (global average pool | flatten) - [affine - relu] x (M - 1) - affine - softmax

    A residual block is conv - norm - relu - conv - norm, plus its input, then relu; its
    convolutions keep the shape (stride 1, "same" padding, C -> C channels).

    Args:
        input_dim: (C, H, W) of one input; H != W is fine (e.g. (1, 36, 120) eye images).
        num_filters: channels of each of the N conv layers, e.g. (32, 64, 128).
        filter_size: odd int, or one per conv layer.
        pool: whether a 2x2 max pool follows each conv layer: one bool or one per layer.
            Pooled maps must have even sizes; the constructor names the layer that does not.
        normalization: 'batchnorm' (spatial), 'groupnorm' or None.
        num_groups: groups for 'groupnorm'; must divide every layer's channels.
        residual_blocks: R, residual blocks after each conv layer (0 for none).
        padding: 'same' ((fs - 1) // 2, keeps H and W) or 'valid' (0, shrinks by fs - 1).
        global_pool: average each channel over space before the affine layers (True), or
            flatten the last maps (False).
        hidden_dims: sizes of the M - 1 hidden affine layers.
        num_classes, reg, dtype: as for the other models.
        weight_scale: 'he' (default, sqrt(2 / fan_in)), 'xavier', or a fixed std.

    Parameters are numbered in layer order: conv layers, residual convolutions and affine
    layers each get W{k}, b{k}; normalized conv layers also gamma{k}, beta{k} ((C,) for
    batchnorm, (1, C, 1, 1) for groupnorm, as the layers expect).

    For the 8x8 digits (1, 8, 8): ``ConvNet(input_dim=(1, 8, 8), num_filters=(16, 32))``.
    """

    def __init__(self, input_dim=(3, 32, 32), num_filters=(32, 64, 128), filter_size=3,
                 pool=True, normalization="batchnorm", num_groups=8, residual_blocks=0,
                 padding="same", global_pool=True, hidden_dims=(), num_classes=10,
                 weight_scale="he", reg=0.0, dtype=np.float32):
        super().__init__(reg=reg, weight_scale=weight_scale, dtype=dtype)
        if normalization not in (None, "batchnorm", "groupnorm"):
            raise ValueError(f"ConvNet: normalization must be None, 'batchnorm' or "
                             f"'groupnorm', got {normalization!r}")
        if padding not in ("same", "valid"):
            raise ValueError(f"ConvNet: padding must be 'same' or 'valid', got {padding!r}")
        if isinstance(num_filters, int):
            num_filters = (num_filters,)
        num_filters = [int(f) for f in num_filters]
        n = len(num_filters)
        filter_sizes = _per_layer("filter_size", filter_size, n)
        pools = _per_layer("pool", pool, n)
        self.normalization = normalization
        self.num_groups = num_groups
        self.global_pool = global_pool
        self._norm_params = {}   # weight index -> its bn_param / gn_param dict
        self._stages = []        # (conv k, conv_param, residual [(k1, k2)], block_param, pool)
        self._affines = []       # weight indices of the affine layers, last one = scores

        C, H, W = _checks.image_dim("ConvNet", input_dim)
        k = 0
        layers = zip(num_filters, filter_sizes, pools, strict=True)
        for i, (F, fs, pooled) in enumerate(layers, start=1):
            if padding == "same" or residual_blocks:
                _odd_filter("ConvNet", fs)
            pad = (fs - 1) // 2 if padding == "same" else 0
            H, W = H + 2 * pad - fs + 1, W + 2 * pad - fs + 1
            if H < 1 or W < 1:
                raise ValueError(f"ConvNet: conv layer {i} ({fs}x{fs}, {padding}) leaves no "
                                 f"output; its input is too small")
            k += 1
            conv_k = k
            self._add_conv(k, C, F, fs)
            blocks = []
            block_param = {"stride": 1, "pad": (fs - 1) // 2}  # residual convs keep the shape
            for _ in range(residual_blocks):
                self._add_conv(k + 1, F, F, fs)
                self._add_conv(k + 2, F, F, fs)
                blocks.append((k + 1, k + 2))
                k += 2
            if pooled and (H % 2 or W % 2):
                raise ValueError(f"ConvNet: conv layer {i} outputs {H}x{W} maps, which a 2x2 "
                                 f"max pool cannot tile; use even sizes or pool=False there")
            if pooled:
                H, W = H // 2, W // 2
            self._stages.append((conv_k, {"stride": 1, "pad": pad}, blocks, block_param, pooled))
            C = F

        dims = [C if global_pool else C * H * W, *(int(h) for h in hidden_dims), num_classes]
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            k += 1
            self._add_weight(f"W{k}", (d_in, d_out), fan_in=d_in)
            self._add_zeros(f"b{k}", d_out)
            self._affines.append(k)
        self.bn_params = list(self._norm_params.values())
        self.pool_param = dict(_POOL_2X2)

    def _add_conv(self, k, C, F, fs):
        """W{k} (F, C, fs, fs), b{k}, and gamma{k}, beta{k} with their norm param dict."""
        self._add_weight(f"W{k}", (F, C, fs, fs), fan_in=C * fs * fs)
        self._add_zeros(f"b{k}", F)
        if self.normalization is None:
            return
        if self.normalization == "groupnorm":
            if F % self.num_groups:
                raise ValueError(f"ConvNet: num_groups={self.num_groups} does not divide the "
                                 f"{F} channels of conv layer W{k}")
            shape = (1, F, 1, 1)
        else:
            shape = (F,)
        self._add_ones(f"gamma{k}", shape)
        self._add_zeros(f"beta{k}", shape)
        self._norm_params[k] = {"mode": "train"}

    def _conv_norm(self, out, k, conv_param, relu=True):
        """conv k - norm k (when the net is normalized) - relu (when asked)."""
        out = self._layer(f"conv{k}", conv_forward_fast, conv_backward_fast, out,
                          (f"W{k}", f"b{k}"), conv_param)
        affine = (f"gamma{k}", f"beta{k}")
        if self.normalization == "batchnorm":
            out = self._layer(f"spatial_batchnorm{k}", spatial_batchnorm_forward,
                              spatial_batchnorm_backward, out, affine, self._norm_params[k])
        elif self.normalization == "groupnorm":
            out = self._layer(f"spatial_groupnorm{k}", spatial_groupnorm_forward,
                              spatial_groupnorm_backward, out, affine, self.num_groups,
                              self._norm_params[k])
        if relu:
            out = self._layer(f"relu{k}", relu_forward, relu_backward, out)
        return out

    def _scores(self, X):
        out = X
        for k, conv_param, blocks, block_param, pooled in self._stages:
            out = self._conv_norm(out, k, conv_param)
            for k1, k2 in blocks:
                skip = out
                self._fork()
                out = self._conv_norm(out, k1, block_param)
                out = self._conv_norm(out, k2, block_param, relu=False)
                out = self._layer(f"residual_relu{k2}", relu_forward, relu_backward,
                                  self._join(out, skip))
            if pooled:
                out = self._layer(f"max_pool{k}", max_pool_forward_fast, max_pool_backward_fast,
                                  out, (), self.pool_param)
        if self.global_pool:
            out = self._layer("global_avg_pool", global_avg_pool_forward,
                              global_avg_pool_backward, out)
        *hidden, last = self._affines
        for k in hidden:
            out = self._layer(f"affine_relu{k}", affine_relu_forward, affine_relu_backward, out,
                              (f"W{k}", f"b{k}"))
        return self._layer(f"affine{last}", affine_forward, affine_backward, out,
                           (f"W{last}", f"b{last}"))
