"""The CS231n 2025 CIFAR-10 challenge network: a small pre-activation ResNet with
squeeze-excitation and depthwise-separable transitions, built from `dualnet.nn` modules.

    stem        conv 3x3 C -> w0 (no bias) - BatchNorm - ReLU
    stage i     blocks[i] residual blocks at widths[i] channels, each
                  body:     BN - ReLU - conv 3x3 (no bias) - BN - ReLU - conv 3x3 (no bias)
                            - squeeze-excitation (channels // reduction in the bottleneck)
                  shortcut: identity, or conv 1x1 (no bias) + BN where the width changes
                            (the first block of each stage after the first)
    transition  between stages, a depthwise-separable convolution that halves the size:
                conv 3x3 stride 2 with groups = channels - BN - ReLU - conv 1x1 - BN - ReLU
                (keeping the width: the next stage's first block widens, with a projection)
    head        BN - ReLU - adaptive average pool to 1x1 - flatten - Dropout - Linear

Convolutions start from PyTorch's `kaiming_normal_(mode='fan_out')`, linear layers from He
with fan_in. The recipe it was published with, and `dualnet train --model cifar-resnet` uses:
AdamW (learning rate 1e-3, weight decay 0.05), a warm-up then cosine learning-rate schedule,
random crops (4-pixel padding) and horizontal flips; about 70% validation accuracy on
CIFAR-10 within 10 epochs is what the challenge asks for (not measured here: no CIFAR files
can be fetched in this workplace).
"""

from __future__ import annotations

import numpy as np

from .. import nn

__all__ = ["cifar_resnet", "cifar_resnet_small", "PRESETS"]


def _conv(c_in, c_out, size, dtype, stride=1, groups=1):
    return nn.Conv2d(c_in, c_out, size, stride=stride, padding=size // 2, groups=groups,
                     bias=False, init_mode="fan_out", dtype=dtype)


def _block(c_in, c_out, reduction, dtype):
    """One pre-activation residual block with squeeze-excitation, c_in -> c_out channels."""
    body = nn.Sequential(
        bn1=nn.BatchNorm2d(c_in, dtype=dtype), relu1=nn.ReLU(),
        conv1=_conv(c_in, c_out, 3, dtype),
        bn2=nn.BatchNorm2d(c_out, dtype=dtype), relu2=nn.ReLU(),
        conv2=_conv(c_out, c_out, 3, dtype),
        se=nn.SqueezeExcitation(c_out, reduction=reduction, dtype=dtype))
    shortcut = None
    if c_in != c_out:
        shortcut = nn.Sequential(conv=_conv(c_in, c_out, 1, dtype),
                                 bn=nn.BatchNorm2d(c_out, dtype=dtype))
    return nn.Residual(body, shortcut)


def _transition(channels, dtype):
    """Depthwise-separable downsampling: H, W halved (rounded up), channels kept."""
    return nn.Sequential(
        depthwise=_conv(channels, channels, 3, dtype, stride=2, groups=channels),
        bn1=nn.BatchNorm2d(channels, dtype=dtype), relu1=nn.ReLU(),
        pointwise=_conv(channels, channels, 1, dtype),
        bn2=nn.BatchNorm2d(channels, dtype=dtype), relu2=nn.ReLU())


def cifar_resnet(input_dim=(3, 32, 32), num_classes=10, widths=(64, 128, 256),
                 blocks=(2, 3, 2), reduction=16, dropout=0.3, reg=0.0, dtype=np.float32):
    """The challenge network as an `nn.Sequential` (see the module docstring).

    input_dim: (C, H, W) of one image; any H, W >= 2**(len(widths) - 1) works (the pool at
    the end is global). widths, blocks: channels and residual blocks per stage. reduction:
    squeeze-excitation's bottleneck ratio. dropout: the DROP probability before the
    classifier (PyTorch's meaning). reg: L2 on weights through the loss (0 when the
    optimizer decays the weights, as AdamW does).
    """
    if len(widths) != len(blocks) or not widths:
        raise ValueError(f"cifar_resnet: widths and blocks must have one entry per stage, got "
                         f"{widths!r} and {blocks!r}")
    C = input_dim[0]
    children = {"stem": nn.Sequential(conv=_conv(C, widths[0], 3, dtype),
                                      bn=nn.BatchNorm2d(widths[0], dtype=dtype), relu=nn.ReLU())}
    c_in = widths[0]
    for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        if i:
            children[f"down{i}"] = _transition(c_in, dtype)
        stage = {}
        for j in range(count):
            stage[f"block{j}"] = _block(c_in, width, reduction, dtype)
            c_in = width
        children[f"stage{i + 1}"] = nn.Sequential(**stage)
    children["head"] = nn.Sequential(
        bn=nn.BatchNorm2d(c_in, dtype=dtype), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(), dropout=nn.Dropout(dropout),
        fc=nn.Linear(c_in, num_classes, dtype=dtype))
    return nn.Sequential(**children, reg=reg)


def cifar_resnet_small(input_dim=(3, 32, 32), num_classes=10, dropout=0.3, reg=0.0,
                       dtype=np.float32):
    """The same design at 16/32/64 channels with one block per stage: about 1/30 of the
    work, for a 2-core CPU (and for tests)."""
    return cifar_resnet(input_dim, num_classes, widths=(16, 32, 64), blocks=(1, 1, 1),
                        reduction=4, dropout=dropout, reg=reg, dtype=dtype)


#: The presets `dualnet train --model NAME` builds, by name.
PRESETS = {"cifar-resnet": cifar_resnet, "cifar-resnet-small": cifar_resnet_small}
