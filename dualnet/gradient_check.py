"""Numeric gradients by centered differences, with the course's names and semantics.

The functions perturb `x` in place, one element at a time, so they work on the arrays of
any backend; values are read back as Python floats.
"""

from __future__ import annotations

import random

import numpy as np

from . import backend


def _centered(f, x, ix, h):
    """(f(x + h e_ix), f(x - h e_ix)), perturbing x[ix] in place and restoring it."""
    def snapshot(value):
        # f may return a view of x (a reshape) or a buffer it reuses: freeze it now
        return value.copy() if hasattr(value, "copy") else value

    old = float(x[ix])
    x[ix] = old + h
    pos = snapshot(f(x))
    x[ix] = old - h
    neg = snapshot(f(x))
    x[ix] = old
    return pos, neg


def eval_numerical_gradient(f, x, verbose=True, h=0.00001):
    """Numeric gradient of a scalar function f at x (an array, modified and restored).

    Returns an array of x's shape, on x's backend.
    """
    grad = backend.of(x).xp.zeros_like(x)
    for ix in np.ndindex(*x.shape):
        fxph, fxmh = _centered(f, x, ix, h)
        grad[ix] = (float(fxph) - float(fxmh)) / (2 * h)
        if verbose:
            print(ix, float(grad[ix]))
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Numeric gradient of sum(f(x) * df) with respect to x, for array-valued f."""
    grad = backend.of(x).xp.zeros_like(x)
    for ix in np.ndindex(*x.shape):
        pos, neg = _centered(f, x, ix, h)
        grad[ix] = float(((pos - neg) * df).sum()) / (2 * h)
    return grad


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5):
    """Compare analytic_grad with numeric gradients at `num_checks` random elements of x.

    Prints one line per element, as the course does, and returns the relative errors.
    """
    errors = []
    for _ in range(num_checks):
        ix = tuple(random.randrange(m) for m in x.shape)
        fxph, fxmh = _centered(f, x, ix, h)
        numeric = (float(fxph) - float(fxmh)) / (2 * h)
        analytic = float(analytic_grad[ix])
        err = abs(numeric - analytic) / (abs(numeric) + abs(analytic) + 1e-300)
        errors.append(err)
        print(f"numerical: {numeric:f} analytic: {analytic:f}, relative error: {err:e}")
    return errors


def rel_error(x, y):
    """max |x - y| / max(1e-8, |x| + |y|), as a Python float; x, y of any backend."""
    x = backend.of(x).to_numpy(x) if hasattr(x, "shape") else np.asarray(x)
    y = backend.of(y).to_numpy(y) if hasattr(y, "shape") else np.asarray(y)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))
