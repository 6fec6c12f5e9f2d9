"""The CPU benchmark rows, each built for dualnet and for PyTorch eager: the kernels and the
course ConvNet of issue 3, and the networks students train of issue 11 (a fully connected net
with batchnorm and dropout, a VGG-style and a pre-activation residual ConvNet through
`dualnet.nn`, one-image latency).

A row is a `Workload`: `build[system]()` returns a zero-argument callable that runs one
iteration (forward and backward where the row says so) on inputs created once, outside the
timing. `items` turns a time into a rate (images per iteration), `flops` into GFLOP/s, and
`target` is the bound issue 11 (or, for the depthwise row, issue 12) sets on dualnet time /
PyTorch time, where the row has one.
Training rows of both systems take the same SGD step: weight decay on the weights only (the
dualnet models' and `nn.Sequential`'s `reg`, PyTorch's `weight_decay` on a parameter group
of the conv and linear weights). Only `worker.py` (and the Jupyter notebook it runs) imports
this module, in a process that holds one system, so numpy's BLAS threads and torch's OpenMP
threads never share a process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SEED = 0


@dataclass
class Workload:
    name: str
    build: dict = field(default_factory=dict)  # system name -> () -> callable
    items: int = 0  # images per iteration: reported as images/s when > 0
    flops: float = 0.0  # floating-point operations per iteration: GFLOP/s when > 0
    target: float | None = None  # the largest dualnet/PyTorch time that meets the bound


def _rng():
    return np.random.default_rng(SEED)


def _conv_flops(x_shape, w_shape, stride, pad, passes):
    """2*N*F*(C/groups)*HH*WW*Ho*Wo per GEMM-shaped pass (forward, dW, dX)."""
    N, _, H, W = x_shape
    F, C, HH, WW = w_shape
    Ho, Wo = (H + 2 * pad - HH) // stride + 1, (W + 2 * pad - WW) // stride + 1
    return 2.0 * N * F * C * HH * WW * Ho * Wo * passes


# -- convolution and pooling --------------------------------------------------------------
def _conv_dualnet(x_shape, w_shape, stride, pad, dtype, groups=1, naive=False):
    from dualnet import layers

    rng = _rng()
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    param = {"stride": stride, "pad": pad, "groups": groups}
    forward, backward = ((layers.conv_forward_naive, layers.conv_backward_naive) if naive
                         else (layers.conv_forward_fast, layers.conv_backward_fast))

    def step():
        out, cache = forward(x, w, b, param)
        backward(np.ones_like(out), cache)
    return step


def _conv_torch(x_shape, w_shape, stride, pad, dtype, groups=1):
    import torch

    rng = _rng()
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    x = torch.tensor(rng.standard_normal(x_shape), dtype=tdtype, requires_grad=True)
    w = torch.tensor(rng.standard_normal(w_shape), dtype=tdtype, requires_grad=True)
    b = torch.tensor(rng.standard_normal(w_shape[0]), dtype=tdtype, requires_grad=True)

    def step():
        out = torch.nn.functional.conv2d(x, w, b, stride=stride, padding=pad, groups=groups)
        out.backward(torch.ones_like(out))
    return step


def _conv(name, x_shape, w_shape, stride, pad, dtype, groups=1, target=None):
    args = (x_shape, w_shape, stride, pad, dtype, groups)
    return Workload(name, {"dualnet": lambda: _conv_dualnet(*args),
                           "torch": lambda: _conv_torch(*args)},
                    flops=_conv_flops(x_shape, w_shape, stride, pad, passes=3), target=target)


def _maxpool_dualnet(x_shape):
    from dualnet import layers

    x = _rng().standard_normal(x_shape).astype(np.float32)
    param = {"pool_height": 2, "pool_width": 2, "stride": 2}

    def step():
        out, cache = layers.max_pool_forward_fast(x, param)
        layers.max_pool_backward_fast(np.ones_like(out), cache)
    return step


def _maxpool_torch(x_shape):
    import torch

    x = torch.tensor(_rng().standard_normal(x_shape), dtype=torch.float32, requires_grad=True)

    def step():
        out = torch.nn.functional.max_pool2d(x, 2, 2)
        out.backward(torch.ones_like(out))
    return step


# -- ThreeLayerConvNet ----------------------------------------------------------------------
NET = {"num_filters": 32, "filter_size": 7, "hidden_dim": 100, "num_classes": 10}
LEARNING_RATE = 1e-3


def _data(batch):
    rng = _rng()
    X = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, NET["num_classes"], batch)
    return X, y


def _net_dualnet(batch, train):
    from dualnet.models import ThreeLayerConvNet

    model = ThreeLayerConvNet(input_dim=(3, 32, 32), weight_scale=1e-3, reg=0.0,
                              dtype=np.float32, **NET)
    X, y = _data(batch)
    lr = np.float32(LEARNING_RATE)

    def train_step():  # forward, backward and a plain SGD update, as the torch row does
        _, grads = model.loss(X, y)
        for name, dw in grads.items():
            model.params[name] -= lr * dw

    return train_step if train else (lambda: model.loss(X))


def _net_torch(batch, train):
    import torch
    from torch import nn

    F, fs = NET["num_filters"], NET["filter_size"]
    model = nn.Sequential(nn.Conv2d(3, F, fs, padding=(fs - 1) // 2), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(F * 16 * 16, NET["hidden_dim"]),
                          nn.ReLU(), nn.Linear(NET["hidden_dim"], NET["num_classes"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    X, y = _data(batch)
    X, y = torch.from_numpy(X), torch.from_numpy(y)

    def train_step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        optimizer.step()

    def infer():
        with torch.no_grad():
            model(X)

    return train_step if train else infer


def _net(name, batch, train, target=None):
    return Workload(name, {"dualnet": lambda: _net_dualnet(batch, train),
                           "torch": lambda: _net_torch(batch, train)}, items=batch,
                    target=target)


def _one_image(system):
    """ThreeLayerConvNet scores for one image (test mode), as an app or a demo asks for."""
    return _net_dualnet(1, train=False) if system == "dualnet" else _net_torch(1, train=False)


# -- issue 11: the networks students train ---------------------------------------------------
WEIGHT_DECAY = 5e-4


def _images(batch, shape=(3, 32, 32)):
    rng = _rng()
    return (rng.standard_normal((batch, *shape)).astype(np.float32),
            rng.integers(0, 10, batch))


def _fc_dualnet(batch):
    from dualnet.models import FullyConnectedNet

    np.random.seed(SEED)
    model = FullyConnectedNet([100] * 5, input_dim=3 * 32 * 32, dropout_keep_ratio=0.5,
                              normalization="batchnorm", reg=WEIGHT_DECAY, weight_scale=5e-2,
                              dtype=np.float32)
    X, y = _images(batch)
    lr = np.float32(LEARNING_RATE)

    def train_step():
        _, grads = model.loss(X, y)
        for name, dw in grads.items():
            model.params[name] -= lr * dw
    return train_step


def _fc_torch(batch):
    from torch import nn

    layers, dim = [nn.Flatten()], 3 * 32 * 32
    for _ in range(5):
        layers += [nn.Linear(dim, 100), nn.BatchNorm1d(100), nn.ReLU(), nn.Dropout(0.5)]
        dim = 100
    return _torch_train_step(nn.Sequential(*layers, nn.Linear(dim, 10)), batch)


def _torch_train_step(model, batch):
    """One SGD step of `model` on a fixed batch: weight decay on conv and linear weights."""
    import torch

    decayed = [p for name, p in model.named_parameters()
               if name.endswith("weight") and p.ndim > 1]
    others = [p for name, p in model.named_parameters()
              if not (name.endswith("weight") and p.ndim > 1)]
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": WEIGHT_DECAY},
                                 {"params": others, "weight_decay": 0.0}], lr=LEARNING_RATE)
    model.train()
    X, y = _images(batch)
    X, y = torch.from_numpy(X), torch.from_numpy(y)

    def train_step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        optimizer.step()
    return train_step


def _dualnet_nn_train_step(model, batch):
    """One SGD step of a `dualnet.nn.Sequential` (its `reg` decays the weights only)."""
    from dualnet import nn

    optimizer = nn.SGD(model, lr=LEARNING_RATE)
    X, y = _images(batch)

    def train_step():
        model.loss(X, y)
        optimizer.step()
    return train_step


#: The VGG-style network: [conv 3x3 pad 1 - batchnorm - ReLU] per number, 'M' a 2x2 max pool.
VGG = (64, 64, "M", 128, 128, "M", 256, "M")


def _vgg(nn, pool):
    """VGG's layers from module library `nn` (dualnet.nn or torch.nn), global average pool
    `pool` (a list of modules: (N, C, H, W) -> (N, C)) and a linear classifier."""
    layers, c = [], 3
    for v in VGG:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            c = v
    return [*layers, *pool, nn.Linear(c, 10)]


def _vgg_dualnet(batch):
    from dualnet import nn

    np.random.seed(SEED)
    return _dualnet_nn_train_step(
        nn.Sequential(*_vgg(nn, [nn.GlobalAvgPool2d()]), reg=WEIGHT_DECAY), batch)


def _vgg_torch(batch):
    from torch import nn

    return _torch_train_step(nn.Sequential(*_vgg(nn, [nn.AdaptiveAvgPool2d(1), nn.Flatten()])),
                             batch)


#: The pre-activation residual network: channels and residual blocks per stage.
RESNET_STAGES = ((64, 2), (128, 3), (256, 2))


def _resnet(nn, residual, pool):
    """From module library `nn`: stem conv 3->64; per stage, residual(body) blocks with body
    BN-ReLU-conv3x3-BN-ReLU-conv3x3; stages joined by 4x4 stride-2 pad-1 convolutions; head
    BN-ReLU-`pool`-dropout-linear. The convolutions have no bias: a batchnorm follows each."""
    def conv(c_in, c_out, k, stride=1):
        return nn.Conv2d(c_in, c_out, k, stride=stride, padding=1, bias=False)

    c = RESNET_STAGES[0][0]
    layers = [conv(3, c, 3)]
    for i, (width, blocks) in enumerate(RESNET_STAGES):
        if i:
            layers.append(conv(c, width, 4, stride=2))
            c = width
        layers += [residual(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), conv(c, c, 3),
                                          nn.BatchNorm2d(c), nn.ReLU(), conv(c, c, 3)))
                   for _ in range(blocks)]
    return [*layers, nn.BatchNorm2d(c), nn.ReLU(), *pool, nn.Dropout(0.5), nn.Linear(c, 10)]


def _resnet_dualnet(batch):
    from dualnet import nn

    np.random.seed(SEED)
    layers = _resnet(nn, nn.Residual, [nn.GlobalAvgPool2d()])
    return _dualnet_nn_train_step(nn.Sequential(*layers, reg=WEIGHT_DECAY), batch)


def _resnet_torch(batch):
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x) + x

    layers = _resnet(nn, Residual, [nn.AdaptiveAvgPool2d(1), nn.Flatten()])
    return _torch_train_step(nn.Sequential(*layers), batch)


def _train(name, batch, dualnet, torch, target):
    return Workload(name, {"dualnet": lambda: dualnet(batch), "torch": lambda: torch(batch)},
                    items=batch, target=target)


# -- reference points -----------------------------------------------------------------------
GEMM_N = 1024


def _gemm_numpy():
    rng = _rng()
    a = rng.standard_normal((GEMM_N, GEMM_N)).astype(np.float32)
    b = rng.standard_normal((GEMM_N, GEMM_N)).astype(np.float32)
    return lambda: a @ b


def _gemm_torch():
    import torch

    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    return lambda: a @ b


def _batchnorm(backward_name):
    def build():
        from dualnet import layers

        rng = _rng()
        x = rng.standard_normal((100, 500))
        gamma, beta = rng.standard_normal(500), rng.standard_normal(500)
        out, cache = layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
        dout = rng.standard_normal(out.shape)
        backward = getattr(layers, backward_name)
        return lambda: backward(dout, cache)
    return build


#: Issue 11's bounds on dualnet time / PyTorch time: 1.25x, 2x and 1x PyTorch's rate.
FASTER_1_25, FASTER_2, AS_FAST = 1 / 1.25, 1 / 2, 1.0

#: The row `worker.py --dualnet-first` also times, in a process that imports dualnet first.
IMPORT_ORDER_ROW = "ThreeLayerConvNet train step, batch 50"

WORKLOADS = [
    _conv("conv (a) 100x3x31x31 w25x3x3x3 s2 p1 f64 fwd+bwd", (100, 3, 31, 31), (25, 3, 3, 3),
          2, 1, np.float64),
    _conv("conv (b) 50x3x32x32 w32x3x7x7 s1 p3 f32 fwd+bwd", (50, 3, 32, 32), (32, 3, 7, 7),
          1, 3, np.float32),
    _conv("conv (c) 64x64x16x16 w64x64x3x3 s1 p1 f32 fwd+bwd", (64, 64, 16, 16),
          (64, 64, 3, 3), 1, 1, np.float32),
    _conv("depthwise conv 64x128x16x16 w128x1x3x3 s1 p1 f32 fwd+bwd", (64, 128, 16, 16),
          (128, 1, 3, 3), 1, 1, np.float32, groups=128, target=AS_FAST),
    Workload("max pool 2x2/2 50x32x32x32 f32 fwd+bwd",
             {"dualnet": lambda: _maxpool_dualnet((50, 32, 32, 32)),
              "torch": lambda: _maxpool_torch((50, 32, 32, 32))}),
    _net(IMPORT_ORDER_ROW, 50, train=True, target=FASTER_1_25),
    _net("ThreeLayerConvNet train step, batch 128", 128, train=True, target=FASTER_1_25),
    _net("ThreeLayerConvNet inference, batch 500", 500, train=False, target=FASTER_2),
    Workload("ThreeLayerConvNet scores, one image (latency)",
             {"dualnet": lambda: _one_image("dualnet"), "torch": lambda: _one_image("torch")},
             target=AS_FAST),
    _train("FullyConnectedNet 5x100 batchnorm+dropout train step, batch 200", 200, _fc_dualnet,
           _fc_torch, FASTER_1_25),
    _train("VGG-style batchnorm ConvNet (nn) train step, batch 64", 64, _vgg_dualnet,
           _vgg_torch, AS_FAST),
    _train("pre-activation residual ConvNet (nn) train step, batch 64", 64, _resnet_dualnet,
           _resnet_torch, AS_FAST),
    Workload(f"GEMM {GEMM_N}x{GEMM_N}x{GEMM_N} f32", {"dualnet": _gemm_numpy,
                                                       "torch": _gemm_torch},
             flops=2.0 * GEMM_N ** 3),
    Workload("batchnorm_backward (100, 500) f64", {"dualnet": _batchnorm("batchnorm_backward")}),
    Workload("batchnorm_backward_alt (100, 500) f64",
             {"dualnet": _batchnorm("batchnorm_backward_alt")}),
]

BY_NAME = {w.name: w for w in WORKLOADS}

#: The course notebook's naive-vs-fast comparison: slow (seconds), so timed once per run.
NAIVE_CONV = Workload("conv (a) naive fwd+bwd", {
    "dualnet": lambda: _conv_dualnet((100, 3, 31, 31), (25, 3, 3, 3), 2, 1, np.float64,
                                     naive=True)})
