"""Fully connected classifiers: the course's TwoLayerNet and FullyConnectedNet."""

from __future__ import annotations

import numpy as np

from .. import _checks
from ..layers import (
    affine_backward,
    affine_forward,
    affine_norm_relu_backward,
    affine_norm_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
    dropout_backward,
    dropout_forward,
)
from .base import Model

__all__ = ["FullyConnectedNet", "TwoLayerNet"]

_NORMALIZATIONS = (None, "batchnorm", "layernorm")


class FullyConnectedNet(Model):
    """{affine - [batchnorm | layernorm] - relu - [dropout]} x (L - 1) - affine - softmax.

    Args:
        hidden_dims: sizes of the L - 1 hidden layers.
        input_dim: D, the size of one flattened input (inputs may be (N, d1, ..., dk)).
        num_classes: C.
        dropout_keep_ratio: probability of KEEPING a unit; 1 disables dropout.
        normalization: None, 'batchnorm' or 'layernorm'.
        reg: L2 strength on W1 ... WL.
        weight_scale: std of the normal weight init, or 'he' / 'xavier'.
        dtype: float32 (fast) or float64 (numeric gradient checks).
        seed: makes dropout deterministic (the same masks every call), for gradient checks.
        dropout: the 2019-2020 notebooks' name for `dropout_keep_ratio` (same meaning).

    Parameters: W{i} (dims[i-1], dims[i]), b{i}; gamma{i}, beta{i} (dims[i],) for the
    normalized hidden layers. Weights are drawn W1, W2, ... from numpy's global RNG.
    """

    blas_threads_in_step = True  # dense layers only (see Model)

    def __init__(self, hidden_dims, input_dim=3 * 32 * 32, num_classes=10,
                 dropout_keep_ratio=1, normalization=None, reg=0.0, weight_scale=1e-2,
                 dtype=np.float32, seed=None, *, dropout=None):
        super().__init__(reg=reg, weight_scale=weight_scale, dtype=dtype)
        name = type(self).__name__
        if dropout is not None:
            dropout_keep_ratio = dropout
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"{name}: normalization must be one of "
                             f"{_NORMALIZATIONS}, got {normalization!r}")
        if not 0 < dropout_keep_ratio <= 1:
            raise ValueError(f"{name}: dropout_keep_ratio is the probability of "
                             f"KEEPING a unit, in (0, 1]; got {dropout_keep_ratio!r}")
        hidden_dims = _checks.sizes(name, "hidden_dims", hidden_dims,
                                      "for one hidden layer of 50 units write [50]")
        self.normalization = normalization
        self.use_dropout = dropout_keep_ratio != 1
        self.num_layers = 1 + len(hidden_dims)

        dims = [_checks.positive_int(name, "input_dim", input_dim), *hidden_dims,
                _checks.positive_int(name, "num_classes", num_classes)]
        for i in range(1, self.num_layers + 1):
            self._add_weight(f"W{i}", (dims[i - 1], dims[i]), fan_in=dims[i - 1])
            self._add_zeros(f"b{i}", dims[i])
            if normalization is not None and i < self.num_layers:
                self._add_ones(f"gamma{i}", dims[i])
                self._add_zeros(f"beta{i}", dims[i])

        # As in the course: one shared dropout_param, one bn_param per hidden layer.
        self.dropout_param = {}
        if self.use_dropout:
            self.dropout_param = {"mode": "train", "p": dropout_keep_ratio}
            if seed is not None:
                self.dropout_param["seed"] = seed
        if normalization is not None:
            self.bn_params = [{"mode": "train"} for _ in range(self.num_layers - 1)]

    def _scores(self, X):
        out = X
        norm = self.normalization
        for i in range(1, self.num_layers):
            affine = (f"W{i}", f"b{i}")
            if norm is None:
                out = self._layer(f"affine_relu{i}", affine_relu_forward, affine_relu_backward,
                                  out, affine)
            else:
                out = self._layer(f"affine_{norm}_relu{i}", affine_norm_relu_forward,
                                  affine_norm_relu_backward, out,
                                  (*affine, f"gamma{i}", f"beta{i}"), self.bn_params[i - 1], norm)
            if self.use_dropout:
                out = self._layer(f"dropout{i}", dropout_forward, dropout_backward, out, (),
                                  self.dropout_param)
        L = self.num_layers
        return self._layer(f"affine{L}", affine_forward, affine_backward, out, (f"W{L}", f"b{L}"))


class TwoLayerNet(FullyConnectedNet):
    """affine - relu - affine - softmax, with the course's constructor.

    The course builds this net in float64 (its weights come straight from np.random.randn),
    so `dtype` defaults to float64 here; pass np.float32 for speed.
    """

    def __init__(self, input_dim=3 * 32 * 32, hidden_dim=100, num_classes=10, weight_scale=1e-3,
                 reg=0.0, dtype=np.float64):
        hidden_dim = _checks.positive_int(type(self).__name__, "hidden_dim", hidden_dim)
        super().__init__([hidden_dim], input_dim=input_dim, num_classes=num_classes, reg=reg,
                         weight_scale=weight_scale, dtype=dtype)
