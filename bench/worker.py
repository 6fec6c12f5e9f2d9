"""Time every workload of one system in this process and print the times as JSON.

    python bench/worker.py dualnet --repeat 7 [--naive]
    python bench/worker.py torch --repeat 7

Each workload first runs untimed, at least twice and for at least WARMUP_SECONDS (allocator
and BLAS warm-up, kernel dispatch caches, the previous row's threads gone idle), then
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

if "dualnet" in sys.argv:
    # as a user's `import dualnet` first would: it tunes OpenBLAS before numpy loads
    import dualnet  # noqa: E402, F401
import workloads  # noqa: E402  (after the path is set)

WARMUP = 2
#: Each workload also warms up for at least this long, the same for both systems, so that no
#: row inherits the thread pools of the row before it: numpy's OpenBLAS workers busy-wait for
#: about 0.1 s after a GEMM (its THREAD_TIMEOUT, 2**28 cycles) and, on a 2-core machine, take
#: the core that the next row's OpenMP kernel needs (2x2 max pool: 9.5 ms per call during
#: the 0.1 s after conv (c), 4.8 ms after). Inside one row (a network step) that contention is
#: real and stays in the timing.
WARMUP_SECONDS = 0.25


def median_seconds(fn, repeat):
    start = time.perf_counter()
    warm = 0
    while warm < WARMUP or time.perf_counter() - start < WARMUP_SECONDS:
        fn()
        warm += 1
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _blas():
    """numpy's BLAS and the kernel family it runs, e.g. 'openblas 0.3.31 (SkylakeX)'.

    OPENBLAS_CORETYPE can pin an older family (AVX2 'Haswell' on an AVX-512 CPU halves the
    GEMM rate), so the table says which one ran.
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl is not installed)"
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i['internal_api']} {i.get('version') or ''} "
                     f"({i.get('architecture') or 'unknown'})" for i in libs) or "unknown"


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
        info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    else:
        import numpy as np

        from dualnet import backend

        info = {"numpy": np.__version__, "kernels": backend.get("numpy").kernels(),
                "blas": _blas()}
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
