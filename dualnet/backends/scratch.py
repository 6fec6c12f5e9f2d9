"""Reusable host scratch memory for the numpy backend's convolution algorithms.

Fresh large numpy arrays are mmapped and fault their pages in on every call, which cost about
as much as the copies themselves; the host paths therefore take their scratch arrays (patches
or transform coefficients, GEMM results, their gradients) as views into one buffer per thread
that lives from call to call. It grows to the largest request, and a request is one chunk's
scratch, which the convolution memory budget bounds, so that is also what stays held;
changing the budget (`conv.set_memory_budget`) drops it (`release`).
"""

from __future__ import annotations

import math
import threading

from . import conv

_ALIGN = 64  # bytes: each view starts on a cache line

#: Factor on a chunk's scratch when the pure-NumPy kernels fill it: they hold up to two more
#: scratch-sized temporaries (a padded or stacked copy of their input, their result) beside
#: the buffer they fill.
REFERENCE_OVERHEAD = 3
_scratch = threading.local()


def arrays(be, dtype, *shapes):
    """Uninitialized host arrays of `shapes` and `dtype`, as views into this thread's buffer.

    The views do not overlap each other; they stay valid until the next call.
    """
    dtype = be.xp.dtype(dtype)
    offsets, total = [], 0
    for shape in shapes:
        offsets.append(total)
        total += -(-math.prod(shape) * dtype.itemsize // _ALIGN) * _ALIGN
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.nbytes < total + _ALIGN:
        _scratch.buf = None
        del buf  # release the smaller buffer before the larger one is made
        # over-allocate by one line so the views can start on a line boundary
        _scratch.buf = buf = be.xp.empty(total + _ALIGN, dtype=be.xp.uint8)
    start = -buf.ctypes.data % _ALIGN
    return [buf[start + o:start + o + math.prod(s) * dtype.itemsize].view(dtype).reshape(s)
            for o, s in zip(offsets, shapes, strict=True)]


def held() -> int:
    """Bytes this thread holds for scratch."""
    buf = getattr(_scratch, "buf", None)
    return 0 if buf is None else buf.nbytes


def release():
    """Drop this thread's buffer."""
    _scratch.buf = None


conv._on_budget_change.append(release)
