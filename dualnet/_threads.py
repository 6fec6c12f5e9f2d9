"""Who computes dualnet's host work: its own OpenMP kernels, and BLAS on one thread at a time.

The numpy backend's compiled kernels (fused convolutions, pooling, im2col) run on OpenMP
threads; its matrix products run in the BLAS library NumPy loaded (OpenBLAS in NumPy's
wheels). Each library keeps a pool of worker threads, and OpenBLAS's workers busy-wait for
about 0.1 s after every product (its THREAD_TIMEOUT, 2**28 cycles) before they sleep. On a
2-core machine that spin takes the core the next OpenMP kernel needs, which then runs at the
speed of one thread. OpenBLAS reads its timeout once, when NumPy loads it, so nothing that
runs after `import numpy` can shorten it; and every course notebook imports numpy first.
Measured (2-core EPYC, ThreeLayerConvNet train step, batch 50, float32): 47% of the
process's CPU time in OpenBLAS's spinning workers with numpy imported first.

So dualnet never wakes BLAS's pool: every product dualnet computes on the host goes through
`matmul` (the numpy backend's `matmul`, and convolutions run whole under the limit), which
holds each BLAS library NumPy loaded at one thread (`blas_one_thread`; the models hold it
over a whole `loss`) and, for products large enough to pay for it, splits the product into
blocks of rows, columns or the inner dimension, one per thread, computed at once on
dualnet's own helper threads (`ThreadPoolExecutor`). Those threads sleep on a lock when
idle, so nothing spins while the OpenMP kernels run. Measured on three products of the
benchmark networks (50x8192 @ 8192x100, 200x3072 @ 3072x100, 128x8192 @ 8192x100): 0.75,
0.86 and 1.50 ms split in two, 0.81, 0.71 and 1.35 ms on OpenBLAS's own two threads, 1.08,
1.38 and 2.81 ms on one.

A model of dense layers only (FullyConnectedNet, TwoLayerNet) is the exception: nothing in
its step runs on OpenMP threads but its batchnorm kernels, so its step runs inside
`blas_own_threads`, where the products go to BLAS on its own (warm, spinning) threads and
those kernels run on one thread; see there for the figures.

Outside dualnet's calls nothing is left changed: the outermost `blas_one_thread` restores
every library's thread count as it found it and hands threadpoolctl's control of OpenBLAS
back, so the user's own limits (`threadpoolctl.threadpool_limits`, `OPENBLAS_NUM_THREADS`)
keep working, and a limit the user set is also what dualnet splits its products into: a
user who limits BLAS to one thread gets unsplit products. The helper threads are started on
the first large product and reused; `describe()` says what is in effect (`dualnet doctor`).
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

#: A product is split only when each block keeps at least this many multiply-adds
#: (m*n*k / blocks): handing a block to a helper thread costs 20-50 us on a quiet machine
#: and more on a busy one (a 5.5-million product took 150 us whole, 230 us split, on a
#: loaded 2-core VM), while a block of 8 million takes about 100 us on one core.
MIN_BLOCK_MACS = 8_000_000

_local = threading.local()  # .depth: open `blas_one_thread` contexts in this thread
_lock = threading.Lock()  # guards the fields below
_depth = 0                # Python threads with a `blas_one_thread` context open
_saved = []               # (library controller, thread count it had) while _depth > 0
_libraries = None         # threadpoolctl controllers of the BLAS libraries, found once
_threads = 1              # most blocks a product is split into: BLAS's threads, <= cores
_pool = None              # helper threads, started on the first split product
_pool_size = 0


def _blas_libraries():
    """threadpoolctl's controllers of the BLAS libraries loaded now (NumPy's among them);
    an empty list when threadpoolctl is missing or fails."""
    global _libraries
    if _libraries is None:
        try:
            from threadpoolctl import ThreadpoolController

            _libraries = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # threadpoolctl absent or unable to read a library: limit nothing
            _libraries = []
    return _libraries


@functools.lru_cache(maxsize=1)
def _cores() -> int:
    """The cores this process may run on (read once)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class blas_one_thread:  # noqa: N801 (used like a function: `with blas_one_thread():`)
    """Context manager: while one is open (in any Python thread), every BLAS library NumPy
    loaded runs on one thread. Reentrant; the outermost exit restores each library's thread
    count as it was on entry and releases threadpoolctl's control of OpenBLAS.

    Nested entries in one thread only count (a few hundred nanoseconds): the models hold one
    around a whole `loss`, so their layers' products pay for the limit once per step."""

    __slots__ = ()

    def __enter__(self):
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        if depth == 0:
            _limit()
        return self

    def __exit__(self, *exc):
        _local.depth -= 1
        if _local.depth == 0:
            _restore()
        return False


class blas_own_threads:  # noqa: N801 (used like a function: `with blas_own_threads():`)
    """Context manager for work whose only parallel parts are matrix products (a dense
    model's training step): in it, in this Python thread, `matmul` gives each product to
    BLAS on the threads BLAS has (the user's settings, not changed), and `kernels_serial()`
    tells dualnet's OpenMP kernels to run on one thread, so that none shares a core with
    BLAS's workers, which spin between the products. A `blas_one_thread` opened inside
    takes precedence. Reentrant.

    Why: with nothing else on the other cores, BLAS's own warm workers are the fastest way
    to run a chain of small products; dualnet's helper threads sleep between them, and
    waking one cost as much as the product it was given (FullyConnectedNet 5x100 batchnorm
    + dropout train step, batch 200, 2-core EPYC: 6.5 -> 5.0 ms, medians of 6 alternating
    processes; 5 layers of 500: 35 -> 31-40 ms, its batchnorm kernels then on one thread).
    With convolutions in the step it is the reverse (ThreeLayerConvNet, batch 50: 20 ->
    35 ms), so models choose (`Model.blas_threads_in_step`)."""

    __slots__ = ()

    def __enter__(self):
        _local.own = getattr(_local, "own", 0) + 1
        return self

    def __exit__(self, *exc):
        _local.own -= 1
        return False


def kernels_serial() -> bool:
    """Whether this Python thread is inside `blas_own_threads` (and not inside a
    `blas_one_thread`): dualnet's OpenMP kernels should then run on one thread."""
    return getattr(_local, "own", 0) > 0 and getattr(_local, "depth", 0) == 0


def _limit():
    """A thread's outermost entry: the first one open in the process limits BLAS."""
    global _depth, _threads
    with _lock:
        if _depth == 0:
            _saved.clear()
            found = 1
            for lib in _blas_libraries():
                n = lib.get_num_threads()
                if n is not None and n > 1:
                    _saved.append((lib, n))
                    _set_threads(lib, 1)
                    found = max(found, n)
            _threads = min(found, _cores())
        _depth += 1


def _restore():
    """A thread's outermost exit: the last one open in the process restores BLAS."""
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0:
            for lib, n in _saved:
                _set_threads(lib, n)
            _saved.clear()


def _set_threads(lib, n):
    """Set `lib`'s thread count from whichever Python thread this is. threadpoolctl lets
    one Python thread at a time set OpenBLAS's count and ignores the others silently, so the
    control is taken for the call and released after it, as `threadpool_limits` does."""
    clear = getattr(lib, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
    lib.set_num_threads(n)
    if clear is not None:
        clear()


def _helpers(n):
    """A pool of at least n helper threads."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="dualnet-blas"), n
        return _pool


def _blocks(macs):
    """How many blocks to split a product of `macs` multiply-adds into: up to the BLAS
    thread count found on entry (at most the cores), each block at least `MIN_BLOCK_MACS`."""
    return max(1, min(_threads, macs // MIN_BLOCK_MACS))


def matmul(a, b, out=None):
    """`numpy.matmul(a, b, out=out)` with BLAS held to one thread, split over threads when
    large (inside `blas_own_threads`: on BLAS's own threads). a (..., m, k), b (..., k, n)
    float arrays; returns out (..., m, n).

    Stacked products are split along their leading axis (when it has a block per thread).
    A 2-D product is split along the axis that makes the blocks read the least twice
    (`_split_axis`): rows of a, columns of b, or the inner dimension k, whose blocks' partial
    products are then added. Each block is a BLAS product of slices, so the values match the
    unsplit product's to rounding (a k split adds its partial sums in a fixed order).
    """
    if kernels_serial():  # inside blas_own_threads: BLAS's own threads
        return np.matmul(a, b, out=out)
    with blas_one_thread():
        if a.ndim < 2 or b.ndim < 2:
            return np.matmul(a, b, out=out)
        m, k = a.shape[-2:]
        n = b.shape[-1]
        stacked = a.ndim > 2 or b.ndim > 2
        batch = int(np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))) if stacked else 1
        parts = _blocks(batch * m * n * k)
        if parts == 1 or (stacked and (a.ndim != b.ndim or a.shape[0] != b.shape[0]
                                       or a.shape[0] < parts)):
            return np.matmul(a, b, out=out)
        if out is None:
            shape = (*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), m, n)
            out = np.empty(shape, dtype=np.result_type(a, b))
        axis = "batch" if stacked else _split_axis(m, n, k)
        if axis == "batch":
            blocks = [(a[s], b[s], out[s]) for s in _spans(a.shape[0], parts)]
        elif axis == "rows":
            blocks = [(a[s], b, out[s]) for s in _spans(m, parts)]
        elif axis == "columns":
            blocks = [(a, b[:, s], out[:, s]) for s in _spans(n, parts)]
        else:  # k: the first block writes out, the others partial products added after
            spans = _spans(k, parts)
            blocks = [(a[:, spans[0]], b[spans[0]], out)]
            blocks += [(a[:, s], b[s], np.empty_like(out)) for s in spans[1:]]
        _run(blocks)
        if axis == "k":
            for _, _, partial in blocks[1:]:
                out += partial
        return out


def _split_axis(m, n, k):
    """'rows', 'columns' or 'k': the split of an (m, k) @ (k, n) product whose blocks read
    or write the fewest elements beyond the unsplit product's: a rows split reads b once
    per block, a columns split a, a k split writes and adds an (m, n) partial product."""
    extra = {"rows": k * n, "columns": m * k, "k": 2 * m * n}
    return min(extra, key=extra.get)


def _run(blocks):
    """np.matmul(a, b, out=o) for every (a, b, o) block: the first here, the others on the
    helper threads, all at once."""
    futures = [_helpers(len(blocks) - 1).submit(np.matmul, ai, bi, out=oi)
               for ai, bi, oi in blocks[1:]]
    try:
        np.matmul(*blocks[0][:2], out=blocks[0][2])
    finally:  # no block may still be writing into its output when this returns or raises
        wait(futures)
    for future in futures:
        future.result()  # raises a block's error here


def _spans(size, parts):
    """`parts` slices that tile range(size) in nearly equal lengths."""
    edges = [size * i // parts for i in range(parts + 1)]
    return [slice(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def describe() -> str:
    """One line for `dualnet doctor`: the BLAS libraries found and how dualnet runs them."""
    libs = _blas_libraries()
    if not libs:
        return ("BLAS thread counts cannot be read (threadpoolctl missing or failing): "
                "dualnet's matrix products run as BLAS is set")
    counts = [lib.get_num_threads() or 1 for lib in libs]
    names = ", ".join(f"{lib.internal_api} {lib.version or '?'} ({n} threads)"
                      for lib, n in zip(libs, counts, strict=True))
    split = min(max(counts), _cores())
    return (f"{names} outside dualnet's calls, as set; inside them 1 thread, products of at "
            f"least {2 * MIN_BLOCK_MACS * 2 / 1e6:g} MFLOP split into up to {split} blocks "
            f"computed at once; dense models' steps (FullyConnectedNet, TwoLayerNet) leave "
            f"BLAS its threads and run dualnet's kernels on one")


def _after_fork_in_child():
    """A forked child has none of the parent's threads: start from scratch."""
    global _local, _lock, _depth, _pool, _pool_size
    _local, _lock = threading.local(), threading.Lock()
    _depth, _pool, _pool_size = 0, None, 0
    _saved.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
