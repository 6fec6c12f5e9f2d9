"""Shared by the module tests: the numeric gradient check of a whole module."""

import numpy as np
import pytest

from dualnet.gradient_check import eval_numerical_gradient_array, rel_error


def check_module(module, x, tol=1e-7):
    """Numeric vs analytic gradient (float64) for the input and every parameter of `module`;
    also that its grads are keyed exactly like its params."""
    rng = np.random.RandomState(1)
    out = module.forward(x)
    dout = rng.randn(*out.shape)
    module.forward(x)
    dx = module.backward(dout)
    assert dx.shape == x.shape
    numeric_dx = eval_numerical_gradient_array(lambda v: module.forward(v), x, dout)
    assert rel_error(dx, numeric_dx) < tol, "input"
    grads = module.grads
    assert set(grads) == set(module.params)
    for name, p in module.parameters():
        numeric = eval_numerical_gradient_array(lambda _: module.forward(x), p, dout)
        assert grads[name].shape == p.shape
        assert rel_error(grads[name], numeric) < tol, name


@pytest.fixture
def gradcheck():
    """`gradcheck(module, x, tol=1e-7)`: see `check_module`."""
    return check_module
