"""Reusable host scratch buffers for the fast convolutions.

Fresh large numpy arrays are mmapped and fault their pages in on every call, which cost about
as much as the copies themselves; the host paths therefore reuse one buffer per role and
thread. Their total is bounded by the convolution memory budget: a chunk's scratch is sized
by it, and `conv.set_memory_budget` drops them (`release`).
"""

from __future__ import annotations

import math
import threading

_scratch = threading.local()


def buffer(be, role, shape, dtype):
    """A reusable, uninitialized host array of `shape` for `role` ('cols', 'dcols', ...)."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    dtype = be.xp.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buf = bufs.get(role)
    if buf is None or buf.nbytes < nbytes:
        bufs.pop(role, None)
        del buf  # release the smaller buffer before the larger one is made
        buf = bufs[role] = be.xp.empty(nbytes, dtype=be.xp.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def release():
    """Drop every buffer of this thread."""
    if getattr(_scratch, "bufs", None):
        _scratch.bufs.clear()
