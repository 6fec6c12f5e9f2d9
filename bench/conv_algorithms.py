"""Winograd vs im2col + GEMM for 3x3 stride-1 convolutions on the numpy backend.

    python bench/conv_algorithms.py [--dtype float32]

Times forward + backward of each (batch, channels, size, filters) with
`conv.set_algorithm("winograd")` and `("im2col")`, alternating, and prints the median time
ratio per shape. `dualnet.backends.host_winograd.winograd_pays` (the 'auto' rule) is read off this
table; rerun it on a new kind of machine before changing that rule.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np

from dualnet import layers
from dualnet.layers import conv

CHANNELS = (3, 16, 32, 64, 128)
FILTERS = (32, 64, 128)
BATCH_AND_SIZE = ((32, 8), (8, 32), (64, 16), (128, 16), (32, 32))


def _time(x, w, b, param):
    start = time.perf_counter()
    out, cache = layers.conv_forward_fast(x, w, b, param)
    layers.conv_backward_fast(np.ones_like(out), cache)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    old = conv.get_algorithm()
    print("| N | C | H=W | F | N*H*W | im2col ms | winograd/im2col |")
    print("|---|---|---|---|---|---|---|")
    try:
        for C, F, (N, H) in itertools.product(CHANNELS, FILTERS, BATCH_AND_SIZE):
            x = rng.standard_normal((N, C, H, H)).astype(args.dtype)
            w = rng.standard_normal((F, C, 3, 3)).astype(args.dtype)
            b = np.zeros(F, args.dtype)
            param = {"stride": 1, "pad": 1}
            rounds = max(3, min(15, int(2e9 / (N * C * H * H * F * 54))))
            times = {"winograd": [], "im2col": []}
            for _ in range(rounds):
                for name, samples in times.items():
                    conv.set_algorithm(name)
                    _time(x, w, b, param)  # warm-up: buffers, page faults
                    samples.append(_time(x, w, b, param))
            im2col = statistics.median(times["im2col"])
            ratio = statistics.median(times["winograd"]) / im2col
            print(f"| {N} | {C} | {H} | {F} | {N * H * H} | {im2col * 1e3:.2f} | {ratio:.2f} |",
                  flush=True)
    finally:
        conv.set_algorithm(old)


if __name__ == "__main__":
    main()
