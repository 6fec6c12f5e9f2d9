"""Time dualnet's conv/pool layers and a ThreeLayerConvNet training step on each backend.

    python bench/gpu_conv.py                          # every available backend
    python bench/gpu_conv.py --backend cupy --batch 128

Method: inputs are created on the backend first; each operation runs `--warmup` times
(this is where CuPy compiles conv.cu with NVRTC and cuBLAS picks its kernels, so compile
time is excluded), then `--repeat` timed runs, each ended by `backend.synchronize()` so
queued GPU work is counted. The median is reported. On the `cupy` backend, the same
operations in PyTorch on the same GPU (cuDNN) are timed the same way when PyTorch with CUDA
is installed, and the ratio dualnet / PyTorch is printed. On CPU backends (`numpy`,
`cuda-emu`) there is no PyTorch CUDA to compare with; they run so the script is checked here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from dualnet import backend, layers
from dualnet.models import ThreeLayerConvNet

CONV = {"stride": 1, "pad": 3}                      # the course net: 7x7 filters, "same"
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def median_ms(fn, sync, warmup, repeat):
    """Median wall time of fn() in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def dualnet_ops(be, N, dtype):
    """name -> zero-argument callable running that operation on backend `be`."""
    rng = np.random.default_rng(0)
    x = be.asarray(rng.standard_normal((N, 3, 32, 32)), dtype=dtype)
    w = be.asarray(rng.standard_normal((32, 3, 7, 7)) * 0.1, dtype=dtype)
    b = be.asarray(np.zeros(32), dtype=dtype)
    a = be.asarray(rng.standard_normal((N, 32, 32, 32)), dtype=dtype)
    _, conv_cache = layers.conv_forward_fast(x, w, b, CONV)
    pooled, pool_cache = layers.max_pool_forward_fast(a, POOL)
    dconv, dpool = be.xp.ones_like(a), be.xp.ones_like(pooled)
    np.random.seed(0)
    model = ThreeLayerConvNet(dtype=dtype)
    y = be.asarray(rng.integers(0, 10, size=N))
    return {
        "conv forward 7x7": lambda: layers.conv_forward_fast(x, w, b, CONV),
        "conv backward 7x7": lambda: layers.conv_backward_fast(dconv, conv_cache),
        "max pool forward 2x2": lambda: layers.max_pool_forward_fast(a, POOL),
        "max pool backward 2x2": lambda: layers.max_pool_backward_fast(dpool, pool_cache),
        "ThreeLayerConvNet loss+grads": lambda: model.loss(x, y),
    }


def torch_ops(N, dtype):
    """The same operations in PyTorch on the current CUDA device, or (None, reason)."""
    try:
        import torch
    except ImportError as exc:
        return None, f"PyTorch is not installed ({exc})"
    if not torch.cuda.is_available():
        return None, "PyTorch sees no CUDA device"
    F = torch.nn.functional
    dev, tdtype = "cuda", getattr(torch, np.dtype(dtype).name)
    x = torch.randn(N, 3, 32, 32, device=dev, dtype=tdtype, requires_grad=True)
    w = torch.randn(32, 3, 7, 7, device=dev, dtype=tdtype, requires_grad=True)
    b = torch.zeros(32, device=dev, dtype=tdtype, requires_grad=True)
    a = torch.randn(N, 32, 32, 32, device=dev, dtype=tdtype, requires_grad=True)
    conv_out = F.conv2d(x, w, b, padding=3)
    pool_out = F.max_pool2d(a, 2, 2)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 7, padding=3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 16 * 16, 100), torch.nn.ReLU(),
        torch.nn.Linear(100, 10)).to(dev, tdtype)
    y = torch.randint(0, 10, (N,), device=dev)

    def train_step():
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    ops = {
        "conv forward 7x7": lambda: F.conv2d(x, w, b, padding=3),
        "conv backward 7x7": lambda: torch.autograd.grad(conv_out, (x, w, b),
                                                         torch.ones_like(conv_out),
                                                         retain_graph=True),
        "max pool forward 2x2": lambda: F.max_pool2d(a, 2, 2),
        "max pool backward 2x2": lambda: torch.autograd.grad(pool_out, a,
                                                             torch.ones_like(pool_out),
                                                             retain_graph=True),
        "ThreeLayerConvNet loss+grads": train_step,
    }
    return (ops, torch.cuda.synchronize), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=backend.names(),
                        help="backend to time (repeatable; default: every available one)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (64)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    names = args.backend or backend.available()
    N, dtype = args.batch, np.dtype(args.dtype)
    print(f"batch {N}, {dtype}, median of {args.repeat} after {args.warmup} warm-up runs")
    for name in names:
        be = backend.get(name)
        print(f"\n== {name}: {be.kernels()}")
        with backend.use(name):
            ours = {op: median_ms(fn, be.synchronize, args.warmup, args.repeat)
                    for op, fn in dualnet_ops(be, N, dtype).items()}
        theirs, why_not = torch_ops(N, dtype) if name == "cupy" else (None, None)
        if theirs is not None:
            ops, sync = theirs
            theirs = {op: median_ms(fn, sync, args.warmup, args.repeat) for op, fn in ops.items()}
        for op, ms in ours.items():
            line = f"{op:<30} {ms:9.2f} ms  {N / ms * 1e3:10.0f} images/s"
            if theirs:
                line += f"   PyTorch {theirs[op]:8.2f} ms  ratio {ms / theirs[op]:5.2f}x"
            print(line)
        if why_not:
            print(f"(no PyTorch comparison: {why_not})")


if __name__ == "__main__":
    main()
