"""Argument checks shared by layers, kernels' launch code, models, the Solver, nn modules and
the command line.

Every check takes the public function or class the user called (`"TwoLayerNet"`,
`"conv_forward_fast"`), and raises a ValueError/TypeError whose message starts with it,
names the argument, shows the value or shape it got and says what was expected. Checks
return the value in canonical form (a Python int, a float, a tuple). All are O(1) in the
data size (shapes and scalars, never scans of arrays), cheap enough for hot paths.

Neutral ground: besides NumPy it imports only `dualnet.backend`, which imports nothing of
dualnet, so any module may use it without an import circle.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from . import backend

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def floating(layer: str, **arrays):
    """Backend of `arrays`; each must be a float32/float64 array and all of one dtype."""
    dtype = None
    for a in arrays.values():  # the common case first: NumPy arrays of one float dtype
        if type(a) is not np.ndarray or (dtype is not None and a.dtype != dtype):
            break
        dtype = a.dtype
    else:
        if dtype in _FLOATS:
            return backend.of(*arrays.values())
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


def number(owner: str, name: str, value, *, above=None, at_least=None) -> float:
    """`value` as a float: a finite real number (not a bool), > above and/or >= at_least."""
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))
    bounds = []
    if above is not None:
        bounds.append(f"> {above:g}")
        ok = ok and value > above
    if at_least is not None:
        bounds.append(f">= {at_least:g}")
        ok = ok and value >= at_least
    if not ok:
        expected = " and ".join(["a finite number", *bounds])
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return float(value)


def sizes(owner: str, name: str, value, example: str = "") -> list[int]:
    """A list or tuple of integers >= 1 (layer widths), as a list of ints."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        hint = f"; {example}" if example else ""
        raise TypeError(f"{owner}: {name} must be a list of layer sizes, got "
                        f"{value!r} ({type(value).__name__}){hint}")
    return [positive_int(owner, f"{name}[{i}]", v) for i, v in enumerate(value)]


def image_dim(owner: str, value) -> tuple[int, int, int]:
    """input_dim of an image model: (C, H, W), three integers >= 1."""
    if (isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray))
            or len(value) != 3):
        raise ValueError(f"{owner}: input_dim must be (C, H, W) of one image, got {value!r}")
    return tuple(positive_int(owner, f"input_dim[{i}]", v) for i, v in enumerate(value))


def weight_scale(owner: str, value):
    """A positive finite number, 'he' or 'xavier' (see `dualnet.models.init_scale`)."""
    if value in ("he", "xavier"):
        return value
    if isinstance(value, str):
        raise ValueError(f"{owner}: weight_scale must be a positive number, 'he' or 'xavier', "
                         f"got {value!r}")
    return number(owner, "weight_scale", value, above=0)


def tuple_cache(owner: str, cache, size: int, made_by: str) -> tuple:
    """A layer cache that must be the `size`-tuple returned by forward function `made_by`."""
    if not isinstance(cache, tuple) or len(cache) != size:
        raise TypeError(f"{owner}: cache must be the {size}-tuple {made_by} returned, got "
                        f"{_describe(cache)}")
    return cache


def dict_cache(owner: str, cache, keys: tuple[str, ...], made_by: str) -> dict:
    """A layer cache that must be the dict (holding `keys`) returned by `made_by`."""
    if not isinstance(cache, dict) or not all(k in cache for k in keys):
        raise TypeError(f"{owner}: cache must be the dict {made_by} returned, got "
                        f"{_describe(cache)}")
    return cache


def dout(owner: str, value, expected_shape: tuple, made_by: str):
    """The upstream gradient: an array shaped like the forward output it belongs to."""
    if not hasattr(value, "shape"):
        raise TypeError(f"{owner}: dout must be an array, got {type(value).__name__}")
    if tuple(value.shape) != tuple(expected_shape):
        raise ValueError(f"{owner}: dout must have the shape of {made_by}'s output "
                         f"{tuple(expected_shape)}, got {tuple(value.shape)}")
    return value


def same_length(owner: str, names: tuple[str, str], a, b) -> int:
    """Two arrays that must hold one row per example (X and its labels y)."""
    if len(a) != len(b):
        raise ValueError(f"{owner}: {names[0]} has {len(a)} rows but {names[1]} has {len(b)}; "
                         f"they must hold one row per example")
    return len(a)


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"
