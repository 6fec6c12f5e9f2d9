"""affine_forward/backward: the course's published values, gradients, errors, dtypes."""

import numpy as np
import pytest

from dualnet.gradient_check import eval_numerical_gradient_array, rel_error
from dualnet.layers import affine_backward, affine_forward


def test_affine_forward_matches_course_values():
    # Inputs and expected output from the CS231n assignment's FullyConnectedNets notebook.
    num_inputs, input_shape, output_dim = 2, (4, 5, 6), 3
    input_size = num_inputs * np.prod(input_shape)
    weight_size = output_dim * np.prod(input_shape)
    x = np.linspace(-0.1, 0.5, num=input_size).reshape(num_inputs, *input_shape)
    w = np.linspace(-0.2, 0.3, num=weight_size).reshape(np.prod(input_shape), output_dim)
    b = np.linspace(-0.3, 0.1, num=output_dim)
    out, _ = affine_forward(x, w, b)
    correct_out = np.array([[1.49834967, 1.70660132, 1.91485297],
                            [3.25553199, 3.5141327, 3.77273342]])
    assert rel_error(out, correct_out) < 1e-8


def test_affine_backward_numeric_gradients():
    rng = np.random.RandomState(231)
    x, w, b = rng.randn(10, 2, 3), rng.randn(6, 5), rng.randn(5)
    dout = rng.randn(10, 5)
    _, cache = affine_forward(x, w, b)
    dx, dw, db = affine_backward(dout, cache)
    assert dx.shape == x.shape
    assert rel_error(dx, eval_numerical_gradient_array(lambda v: affine_forward(v, w, b)[0], x, dout)) < 1e-8
    assert rel_error(dw, eval_numerical_gradient_array(lambda v: affine_forward(x, v, b)[0], w, dout)) < 1e-8
    assert rel_error(db, eval_numerical_gradient_array(lambda v: affine_forward(x, w, v)[0], b, dout)) < 1e-8


def test_affine_keeps_float32():
    rng = np.random.RandomState(0)
    x, w, b = (rng.randn(*s).astype(np.float32) for s in [(4, 3), (3, 2), (2,)])
    out, cache = affine_forward(x, w, b)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in affine_backward(np.ones_like(out), cache))


@pytest.mark.parametrize("x_shape, w_shape, b_shape, match", [
    ((4, 3), (5, 2), (2,), r"affine_forward: x of shape \(4, 3\) flattens to D=3"),
    ((4,), (4, 2), (2,), r"affine_forward: x must be \(N, d1, \.\.\., dk\)"),
    ((4, 3), (3, 2), (3,), r"affine_forward: b must have shape \(2,\)"),
    ((4, 3), (3, 2, 1), (2,), r"affine_forward: w must be 2-D"),
])
def test_affine_bad_shapes_name_layer_and_shape(x_shape, w_shape, b_shape, match):
    with pytest.raises(ValueError, match=match):
        affine_forward(np.zeros(x_shape), np.zeros(w_shape), np.zeros(b_shape))


def test_affine_dtype_mismatch():
    with pytest.raises(TypeError, match=r"affine_forward: dtype mismatch \(x=float32, w=float64"):
        affine_forward(np.zeros((2, 3), np.float32), np.zeros((3, 2)), np.zeros(2))


class FakeCupyArray:
    """Stands in for a cupy.ndarray (no GPU here): backends are told apart by type module."""

    __module__ = "cupy._core.core"
    shape, ndim, dtype = (3, 2), 2, np.dtype(np.float64)


def test_arrays_from_two_backends_name_the_layer_and_both_backends():
    with pytest.raises(TypeError, match=r"affine_forward: arrays from two backends were mixed: "
                                        r"host \(numpy\.ndarray\) and cupy"):
        affine_forward(np.zeros((2, 3)), FakeCupyArray(), np.zeros(2))
