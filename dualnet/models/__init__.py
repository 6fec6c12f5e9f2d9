"""Classifiers with the course's contract: `params`, `loss(X)` -> scores, `loss(X, y)` ->
(loss, grads).

TwoLayerNet and FullyConnectedNet (fc_net), ThreeLayerConvNet and the configurable ConvNet
(cnn), and the CIFAR challenge network as `dualnet.nn` presets (resnet: `cifar_resnet`,
`cifar_resnet_small`). The course models' shared behaviour - initialization, L2
regularization, the backward tape, moving between backends, locating non-finite layers -
lives in `Model` (base).
"""

from .base import Model, init_scale
from .cnn import ConvNet, ThreeLayerConvNet
from .fc_net import FullyConnectedNet, TwoLayerNet
from .resnet import cifar_resnet, cifar_resnet_small

__all__ = ["ConvNet", "FullyConnectedNet", "Model", "ThreeLayerConvNet", "TwoLayerNet",
           "cifar_resnet", "cifar_resnet_small", "init_scale"]
