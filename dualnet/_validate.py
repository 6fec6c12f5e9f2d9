"""Argument checks shared by models, the Solver, nn modules and the command line.

Every check takes `owner`, the public function or class the user called (`"TwoLayerNet"`,
`"Solver"`, `"affine_backward"`), and raises a ValueError/TypeError whose message starts with
it, names the argument, shows the value or shape it got and says what was expected. A check
returns the value in canonical form (a Python int, a float, a tuple), so callers write
`self.batch_size = _validate.integer("Solver", "batch_size", batch_size)`.

This module is neutral ground: it imports only the standard library and NumPy, so every
subpackage may use it without import circles. All checks are O(1) in the data size (they
look at shapes and scalars, never scan arrays), so they are cheap enough for hot paths.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np


def integer(owner: str, name: str, value, minimum: int = 1) -> int:
    """`value` as an int, which must be an integer (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


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
    return [integer(owner, f"{name}[{i}]", v) for i, v in enumerate(value)]


def image_dim(owner: str, value) -> tuple[int, int, int]:
    """input_dim of an image model: (C, H, W), three integers >= 1."""
    if (isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray))
            or len(value) != 3):
        raise ValueError(f"{owner}: input_dim must be (C, H, W) of one image, got {value!r}")
    return tuple(integer(owner, f"input_dim[{i}]", v) for i, v in enumerate(value))


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
