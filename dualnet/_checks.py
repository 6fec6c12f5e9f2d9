"""Input validation shared by the layers: every message names the layer and the bad value."""

from __future__ import annotations

import numpy as np

from . import backend


def floating(layer: str, **arrays):
    """Backend of `arrays`; each must be a float32/float64 array and all of one dtype."""
    try:
        be = backend.of(*arrays.values())
    except TypeError as exc:  # arrays of two backends: say which layer was handed them
        raise TypeError(f"{layer}: {exc}") from None
    dtypes = {}
    for name, a in arrays.items():
        if not hasattr(a, "dtype") or not hasattr(a, "shape"):
            raise TypeError(f"{layer}: {name} must be an array, got {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{layer}: {name} must be float32 or float64, got {a.dtype}")
        dtypes[name] = a.dtype
    if len(set(dtypes.values())) > 1:
        found = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"{layer}: dtype mismatch ({found}); convert with .astype first")
    return be


def ndim(layer: str, name: str, a, expected: int, layout: str = ""):
    if a.ndim != expected:
        hint = f" {layout}" if layout else ""
        raise ValueError(f"{layer}: {name} must be {expected}-D{hint}, got shape {tuple(a.shape)}")


def shape(layer: str, name: str, a, expected: tuple):
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{layer}: {name} must have shape {tuple(expected)}, "
                         f"got {tuple(a.shape)}")


def positive_int(layer: str, name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{layer}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def window_output(layer: str, size: int, window: int, pad: int, stride: int, axis: str,
                  floor: bool = False) -> int:
    """Output length of a sliding window; raises unless the windows fit exactly, or, with
    `floor`, rounds down (PyTorch's rule: windows running past the padded input are dropped)."""
    span = size + 2 * pad - window
    if span < 0:
        raise ValueError(f"{layer}: window {window} is larger than the padded input "
                         f"{axis} ({size} + 2*{pad})")
    if span % stride and not floor:
        raise ValueError(f"{layer}: output {axis} is not integral: ({size} + 2*{pad} - {window})"
                         f" / {stride} + 1 = {span / stride + 1:g}; change pad or stride")
    return span // stride + 1


def labels(layer: str, y, N: int, C: int, xp):
    """y must be N integer class indices in [0, C)."""
    if not hasattr(y, "dtype") or y.dtype.kind not in "iu":
        kind = getattr(y, "dtype", type(y).__name__)
        raise TypeError(f"{layer}: labels y must be an integer array, got {kind}")
    if tuple(y.shape) != (N,):
        raise ValueError(f"{layer}: labels y must have shape ({N},), got {tuple(y.shape)}")
    if N and (int(y.min()) < 0 or int(y.max()) >= C):
        raise ValueError(f"{layer}: labels out of range [0, {C}): min {int(y.min())}, "
                         f"max {int(y.max())}")
