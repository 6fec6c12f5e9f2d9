"""Time every workload of one system in this process and print the times as JSON.

    python bench/worker.py dualnet --repeat 7 [--naive]
    python bench/worker.py torch --repeat 7

Each workload runs twice untimed (allocator and BLAS warm-up, kernel dispatch caches), then
`--repeat` timed iterations; the median iteration time in seconds is reported.
`run_all.py` starts one worker per system and round, so the systems never share a process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# Measure the checkout this script belongs to, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workloads  # noqa: E402  (after the path is set)

WARMUP = 2


def median_seconds(fn, repeat):
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["dualnet", "torch"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--naive", action="store_true",
                        help="also time the naive convolution once (seconds)")
    args = parser.parse_args(argv)
    if args.system == "torch":
        import torch

        # one process per system: torch may use every core, as numpy's BLAS does
        info = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    else:
        import numpy as np

        from dualnet import backend

        info = {"numpy": np.__version__, "kernels": backend.get("numpy").kernels()}
    times = {}
    for work in workloads.WORKLOADS:
        if args.system in work.build:
            times[work.name] = median_seconds(work.build[args.system](), args.repeat)
    if args.naive and args.system in workloads.NAIVE_CONV.build:
        fn = workloads.NAIVE_CONV.build[args.system]()
        start = time.perf_counter()
        fn()
        times[workloads.NAIVE_CONV.name] = time.perf_counter() - start
    print(json.dumps({"info": info, "times": times}))


if __name__ == "__main__":
    main()
