"""Blocks of modern CNNs composed from the layer modules and containers.

`SqueezeExcitation` (Hu et al., "Squeeze-and-Excitation Networks", 2018) is a `Gate` whose
gate branch is an ordinary `Sequential`, so its parameters are plain `Linear` weights under
dotted names, trained, regularized and checkpointed like any other.
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from .layers import GlobalAvgPool2d, Linear, ReLU, Sigmoid
from .module import Gate, Sequential


class SqueezeExcitation(Gate):
    """x * sigmoid(fc2(relu(fc1(mean over H, W of x)))): each channel scaled by a gate
    computed from the whole image.

    x (N, C, H, W) -> (N, C, H, W), NCHW only. The gate branch is
    `Sequential(pool=GlobalAvgPool2d(), fc1=Linear(C, C // reduction), relu=ReLU(),
    fc2=Linear(C // reduction, C), sigmoid=Sigmoid())`; its (N, C) output scales the input
    per channel, so the parameters are `gate.fc1.weight` (C, C // reduction) in the
    (in, out) layout of `Linear`, `gate.fc1.bias`, `gate.fc2.weight`, `gate.fc2.bias`.
    """

    def __init__(self, channels, reduction=16, dtype=np.float32):
        C = _checks.positive_int("SqueezeExcitation", "channels", channels)
        r = _checks.positive_int("SqueezeExcitation", "reduction", reduction)
        hidden = C // r
        if hidden < 1:
            raise ValueError(f"SqueezeExcitation: reduction must be at most channels, so that "
                             f"the bottleneck channels // reduction is >= 1, got {C} // {r} "
                             f"= {hidden}")
        super().__init__(Sequential(pool=GlobalAvgPool2d(), fc1=Linear(C, hidden, dtype=dtype),
                                    relu=ReLU(), fc2=Linear(hidden, C, dtype=dtype),
                                    sigmoid=Sigmoid()))
