"""Classifiers with the course's contract: `params`, `loss(X)` -> scores, `loss(X, y)` ->
(loss, grads).

TwoLayerNet and FullyConnectedNet (fc_net), ThreeLayerConvNet and the configurable ConvNet
(cnn); their shared behaviour - initialization, L2 regularization, the backward tape, moving
between backends, locating non-finite layers - lives in `Model` (base).
"""

from .base import Model, init_scale
from .cnn import ConvNet, ThreeLayerConvNet
from .fc_net import FullyConnectedNet, TwoLayerNet

__all__ = ["ConvNet", "FullyConnectedNet", "Model", "ThreeLayerConvNet", "TwoLayerNet",
           "init_scale"]
