"""The CPU benchmark rows (issue 3), each built for dualnet and for PyTorch eager.

A row is a `Workload`: `build[system]()` returns a zero-argument callable that runs one
iteration (forward and backward where the row says so) on inputs created once, outside the
timing. `items` turns a time into a rate (images per iteration), `flops` into GFLOP/s.
Only `worker.py` imports this module, in a process that holds one system, so numpy's BLAS
threads and torch's OpenMP threads never share a process.
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


def _rng():
    return np.random.default_rng(SEED)


def _conv_flops(x_shape, w_shape, stride, pad, passes):
    """2*N*F*C*HH*WW*Ho*Wo per GEMM-shaped pass (forward, dW, dX)."""
    N, C, H, W = x_shape
    F, _, HH, WW = w_shape
    Ho, Wo = (H + 2 * pad - HH) // stride + 1, (W + 2 * pad - WW) // stride + 1
    return 2.0 * N * F * C * HH * WW * Ho * Wo * passes


# -- convolution and pooling --------------------------------------------------------------
def _conv_dualnet(x_shape, w_shape, stride, pad, dtype, naive=False):
    from dualnet import layers

    rng = _rng()
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    param = {"stride": stride, "pad": pad}
    forward, backward = ((layers.conv_forward_naive, layers.conv_backward_naive) if naive
                         else (layers.conv_forward_fast, layers.conv_backward_fast))

    def step():
        out, cache = forward(x, w, b, param)
        backward(np.ones_like(out), cache)
    return step


def _conv_torch(x_shape, w_shape, stride, pad, dtype):
    import torch

    rng = _rng()
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    x = torch.tensor(rng.standard_normal(x_shape), dtype=tdtype, requires_grad=True)
    w = torch.tensor(rng.standard_normal(w_shape), dtype=tdtype, requires_grad=True)
    b = torch.tensor(rng.standard_normal(w_shape[0]), dtype=tdtype, requires_grad=True)

    def step():
        out = torch.nn.functional.conv2d(x, w, b, stride=stride, padding=pad)
        out.backward(torch.ones_like(out))
    return step


def _conv(name, x_shape, w_shape, stride, pad, dtype):
    args = (x_shape, w_shape, stride, pad, dtype)
    return Workload(name, {"dualnet": lambda: _conv_dualnet(*args),
                           "torch": lambda: _conv_torch(*args)},
                    flops=_conv_flops(x_shape, w_shape, stride, pad, passes=3))


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


def _net(name, batch, train):
    return Workload(name, {"dualnet": lambda: _net_dualnet(batch, train),
                           "torch": lambda: _net_torch(batch, train)}, items=batch)


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


WORKLOADS = [
    _conv("conv (a) 100x3x31x31 w25x3x3x3 s2 p1 f64 fwd+bwd", (100, 3, 31, 31), (25, 3, 3, 3),
          2, 1, np.float64),
    _conv("conv (b) 50x3x32x32 w32x3x7x7 s1 p3 f32 fwd+bwd", (50, 3, 32, 32), (32, 3, 7, 7),
          1, 3, np.float32),
    _conv("conv (c) 64x64x16x16 w64x64x3x3 s1 p1 f32 fwd+bwd", (64, 64, 16, 16),
          (64, 64, 3, 3), 1, 1, np.float32),
    Workload("max pool 2x2/2 50x32x32x32 f32 fwd+bwd",
             {"dualnet": lambda: _maxpool_dualnet((50, 32, 32, 32)),
              "torch": lambda: _maxpool_torch((50, 32, 32, 32))}),
    _net("ThreeLayerConvNet train step, batch 50", 50, train=True),
    _net("ThreeLayerConvNet train step, batch 128", 128, train=True),
    _net("ThreeLayerConvNet inference, batch 500", 500, train=False),
    Workload(f"GEMM {GEMM_N}x{GEMM_N}x{GEMM_N} f32", {"dualnet": _gemm_numpy,
                                                       "torch": _gemm_torch},
             flops=2.0 * GEMM_N ** 3),
    Workload("batchnorm_backward (100, 500) f64", {"dualnet": _batchnorm("batchnorm_backward")}),
    Workload("batchnorm_backward_alt (100, 500) f64",
             {"dualnet": _batchnorm("batchnorm_backward_alt")}),
]

#: The course notebook's naive-vs-fast comparison: slow (seconds), so timed once per run.
NAIVE_CONV = Workload("conv (a) naive fwd+bwd", {
    "dualnet": lambda: _conv_dualnet((100, 3, 31, 31), (25, 3, 3, 3), 2, 1, np.float64,
                                     naive=True)})
