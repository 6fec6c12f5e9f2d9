"""Time the workloads of one system in this process and print the times as JSON.

    python bench/worker.py dualnet --repeat 7 [--naive]
    python bench/worker.py torch --repeat 7
    python bench/worker.py dualnet --dualnet-first --only "ThreeLayerConvNet train step, batch 50"
    python bench/worker.py dualnet --jupyter --only "ThreeLayerConvNet train step, batch 50"

The process imports numpy and matplotlib before anything else, as course notebooks and most
scripts do (`--dualnet-first` imports dualnet before them instead, for the one row that
shows the import order no longer matters). With `--jupyter` the rows run inside a real
Jupyter kernel: nbclient executes `train_step.ipynb` beside this file, whose first cell
imports numpy and matplotlib with `%matplotlib inline`, and the notebook prints the times.

Each workload first runs untimed, at least twice and for at least WARMUP_SECONDS (allocator
and BLAS warm-up, kernel dispatch caches, the previous row's threads gone idle), then
`--repeat` timed iterations, more for fast rows (for at least MIN_TIMED_SECONDS), fewer for
slow ones (at least MIN_REPEAT, none started after TIME_BUDGET seconds: the residual network
takes seconds per step); the median iteration time in seconds is reported. `run_all.py`
starts one worker per row, system and round, so the systems never share a process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Measure the checkout this script belongs to, installed or not; nothing here imports numpy
# or dualnet before `_import_as_users_do` has run.
sys.path[:0] = [str(HERE), str(HERE.parent)]

WARMUP = 2
#: Each workload also warms up for at least this long, the same for both systems, so that no
#: row inherits the thread pools of the row before it (a pool that spins after its last job
#: would take a core from the next row's first iterations).
WARMUP_SECONDS = 0.25
#: Timed iterations go on for at least MIN_TIMED_SECONDS (fast rows: many samples) and at
#: most TIME_BUDGET seconds once MIN_REPEAT of them ran (the residual net takes seconds).
MIN_TIMED_SECONDS = 0.5
TIME_BUDGET = 6.0
MIN_REPEAT = 3
MAX_REPEAT = 1000
NOTEBOOK = HERE / "train_step.ipynb"


def median_seconds(fn, repeat):
    start = time.perf_counter()
    warm = 0
    while warm < WARMUP or time.perf_counter() - start < WARMUP_SECONDS:
        fn()
        warm += 1
    times = []
    start = time.perf_counter()
    while len(times) < MAX_REPEAT:
        elapsed = time.perf_counter() - start
        if len(times) >= MIN_REPEAT and elapsed >= TIME_BUDGET:
            break
        if len(times) >= repeat and elapsed >= MIN_TIMED_SECONDS:
            break
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
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


def system_info(system):
    if system == "torch":
        import torch

        # one process per system: torch may use every core, as numpy's BLAS does
        return {"torch": torch.__version__, "threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    import numpy as np

    from dualnet import backend

    return {"numpy": np.__version__, "kernels": backend.get("numpy").kernels(),
            "blas": _blas()}


def time_rows(system, names, repeat):
    """{row name: median seconds} of the named rows (every row of `system` if names is None)."""
    import workloads

    times = {}
    for work in workloads.WORKLOADS:
        if system in work.build and (names is None or work.name in names):
            times[work.name] = median_seconds(work.build[system](), repeat)
    return times


def _in_jupyter(system, names, repeat):
    """Run `time_rows` in a fresh Jupyter kernel executing NOTEBOOK; returns its JSON."""
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["DUALNET_BENCH"] = json.dumps({"system": system, "names": names,
                                              "repeat": repeat, "bench": str(HERE)})
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.get("outputs", []) if o.get("name") == "stdout"]
    return json.loads(outputs[-1]["text"].strip().splitlines()[-1])


def _import_as_users_do(dualnet_first):
    """numpy, then matplotlib (as course notebooks start), then dualnet; or dualnet first."""
    if dualnet_first:
        import dualnet  # noqa: F401
    import matplotlib
    import numpy  # noqa: F401

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["dualnet", "torch"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", action="append", metavar="ROW",
                        help="time only this row (repeatable)")
    parser.add_argument("--dualnet-first", action="store_true",
                        help="import dualnet before numpy and matplotlib")
    parser.add_argument("--jupyter", action="store_true",
                        help="run the rows inside a Jupyter kernel (train_step.ipynb)")
    parser.add_argument("--naive", action="store_true",
                        help="also time the naive convolution once (seconds)")
    args = parser.parse_args(argv)
    if args.jupyter:  # the kernel imports numpy and matplotlib itself
        print(json.dumps(_in_jupyter(args.system, args.only, args.repeat)))
        return
    _import_as_users_do(args.dualnet_first)
    times = time_rows(args.system, args.only, args.repeat)
    import workloads

    if args.naive and args.system in workloads.NAIVE_CONV.build:
        fn = workloads.NAIVE_CONV.build[args.system]()
        start = time.perf_counter()
        fn()
        times[workloads.NAIVE_CONV.name] = time.perf_counter() - start
    print(json.dumps({"info": system_info(args.system), "times": times}))


if __name__ == "__main__":
    main()
