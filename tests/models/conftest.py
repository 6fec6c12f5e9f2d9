"""Shared helpers for the model tests: a numeric gradient check of every parameter."""

from __future__ import annotations

import numpy as np
import pytest

from dualnet.gradient_check import eval_numerical_gradient, rel_error


def _check_model_gradients(model, X, y, tol=1e-6, h=1e-6):
    """Assert every analytic gradient of model.loss(X, y) matches centered differences.

    A gradient that is exactly zero analytically (a bias right before batchnorm) has only
    rounding noise numerically, so an absolute error below 1e-8 also passes.
    """
    _, grads = model.loss(X, y)
    assert sorted(grads) == sorted(model.params)
    for name in sorted(grads):
        assert grads[name].shape == model.params[name].shape, name
        assert grads[name].dtype == model.params[name].dtype, name
        numeric = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params[name],
                                          verbose=False, h=h)
        error = rel_error(numeric, grads[name])
        absolute = float(np.max(np.abs(numeric - grads[name])))
        assert error < tol or absolute < 1e-8, f"{name}: relative error {error:.2e}"


@pytest.fixture
def check_model_gradients():
    return _check_model_gradients
