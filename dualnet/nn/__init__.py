"""Object API: layer modules, `Sequential`, losses and optimizers over the functional layers.

>>> from dualnet import nn
>>> model = nn.Sequential(nn.Conv2d(3, 32, 7, padding=3), nn.ReLU(), nn.MaxPool2d(2),
...                       nn.Flatten(), nn.Linear(32 * 16 * 16, 100), nn.ReLU(),
...                       nn.Linear(100, 10))
>>> loss, grads = model.loss(X, y)      # the course model contract: Solver trains it
"""

from .blocks import SqueezeExcitation
from .layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    GroupNorm,
    LayerNorm,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
)
from .losses import CrossEntropyLoss, MultiMarginLoss
from .module import Gate, Module, Residual, Sequential
from .optim import SGD, Adam, AdamW, Optimizer, RMSProp
