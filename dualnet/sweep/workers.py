"""A sweep's worker processes on one machine: start them, watch them, stop them on Ctrl-C.

Each worker is a fresh interpreter ('spawn': forking a process whose BLAS and OpenMP
threads exist is unsafe) that receives the pickled `Sweep`, limits BLAS and OpenMP to
`sweep.threads` threads (threadpoolctl), and runs trials until the study has enough.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time

import optuna

from .. import backend as backends
from .storage import one_line

__all__ = ["run_workers", "cores"]


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_workers(sweep, on_progress) -> None:
    """Run `sweep.workers` processes until the study has `sweep.trials` trials, calling
    `on_progress()` about twice a second meanwhile.

    Raises:
        KeyboardInterrupt: after the workers have marked their trials and ended.
        RuntimeError: 'Sweep: worker K: ...', the first worker's error.
    """
    context = multiprocessing.get_context("spawn")
    lock, errors = context.Lock(), context.SimpleQueue()
    processes = [context.Process(target=_worker, args=(sweep, k, lock, errors),
                                 name=f"dualnet-sweep-worker-{k}", daemon=True)
                 for k in range(sweep.workers)]
    for process in processes:
        process.start()
    try:
        while any(p.is_alive() for p in processes):
            multiprocessing.connection.wait([p.sentinel for p in processes], timeout=0.5)
            on_progress()
    except BaseException:  # Ctrl-C, or this process failing: no worker outlives it
        _stop(processes)
        raise
    on_progress()
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    failures += [f"worker {k} ended with exit status {p.exitcode}"
                 for k, p in enumerate(processes) if p.exitcode not in (0, None)
                 and not any(f.startswith(f"worker {k}:") for f in failures)]
    if failures:
        raise RuntimeError(f"Sweep: {failures[0]}")


def _worker(sweep, index: int, lock, errors) -> None:
    """A worker process: limit its threads, then run trials until the study has enough."""
    from threadpoolctl import threadpool_limits

    try:
        if sweep.backend is not None:
            backends.use(sweep.backend)
        backends.get("numpy")  # loads the compiled kernels, so that their OpenMP is limited
        threadpool_limits(limits=sweep.threads)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        sweep._work(sweep._open_study(worker=index), lock)
    except KeyboardInterrupt:  # Optuna has marked the trial failed; the parent reports
        sys.exit(130)
    except Exception as exc:
        errors.put(f"worker {index}: {type(exc).__name__}: {one_line(exc)}")
        sys.exit(1)


def _stop(processes) -> None:
    """After Ctrl-C: give the workers (which got it too, from the terminal) a moment to mark
    their trials; interrupt those that did not get it; end any still running after that."""
    deadline = time.monotonic() + 5
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    deadline = time.monotonic() + 10
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.terminate()
