"""bench/workloads.py builds the same networks for dualnet and PyTorch (nothing is timed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the optional 'bench' extra")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import workloads  # noqa: E402


def _torch_params(model):
    return sum(p.numel() for p in model.parameters())


def test_the_vgg_and_residual_networks_have_the_same_parameters_in_both_systems():
    from torch import nn as tnn

    from dualnet import nn

    vgg = nn.Sequential(*workloads._vgg(nn, [nn.GlobalAvgPool2d()]))
    tvgg = tnn.Sequential(*workloads._vgg(tnn, [tnn.AdaptiveAvgPool2d(1), tnn.Flatten()]))
    assert vgg.num_params() == _torch_params(tvgg)

    res = nn.Sequential(*workloads._resnet(nn, nn.Residual, [nn.GlobalAvgPool2d()]))

    class Residual(tnn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x) + x

    tres = tnn.Sequential(*workloads._resnet(tnn, Residual, [tnn.AdaptiveAvgPool2d(1),
                                                             tnn.Flatten()]))
    assert res.num_params() == _torch_params(tres)
    # 7 residual blocks of two convolutions, a stem and two joining convolutions
    assert sum(isinstance(m, nn.Residual) for _, m in res.children()) == 7
    x = torch.zeros(2, 3, 32, 32)
    assert tres(x).shape == (2, 10) and tvgg(x).shape == (2, 10)
