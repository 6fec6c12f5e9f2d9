"""Numeric gradients against functions whose derivatives are known in closed form."""

import numpy as np

from dualnet.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    grad_check_sparse,
    rel_error,
)


def test_eval_numerical_gradient_of_a_cubic():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    grad = eval_numerical_gradient(lambda v: (v ** 3).sum(), x, verbose=False)
    np.testing.assert_allclose(grad, 3 * x ** 2, rtol=1e-8)
    np.testing.assert_array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # restored after perturbing


def test_eval_numerical_gradient_array_is_a_vector_jacobian_product():
    x = np.array([0.1, 0.7, -1.2])
    df = np.array([2.0, -1.0, 0.5])
    grad = eval_numerical_gradient_array(np.sin, x, df)
    np.testing.assert_allclose(grad, np.cos(x) * df, rtol=1e-8)


def test_grad_check_sparse_reports_small_errors_for_a_right_gradient(capsys):
    x = np.random.RandomState(0).randn(4, 5)
    errors = grad_check_sparse(lambda v: (v ** 2).sum(), x, 2 * x, num_checks=5)
    assert len(errors) == 5 and max(errors) < 1e-8
    assert capsys.readouterr().out.count("relative error") == 5


def test_grad_check_sparse_catches_a_wrong_gradient():
    x = np.random.RandomState(0).randn(4, 5) + 3
    errors = grad_check_sparse(lambda v: (v ** 2).sum(), x, 3 * x, num_checks=3)
    assert min(errors) > 0.1


def test_rel_error():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert abs(rel_error(np.array([1.0]), np.array([1.1])) - 0.1 / 2.1) < 1e-15
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0


def test_array_gradient_of_a_function_returning_a_view_of_its_input():
    x = np.arange(6.0).reshape(2, 3)
    df = np.array([1.0, -2.0, 0.5, 3.0, 0.0, 1.5])
    grad = eval_numerical_gradient_array(lambda v: v.reshape(-1), x, df)
    np.testing.assert_allclose(grad, df.reshape(2, 3), rtol=1e-8)
