"""softmax_loss and svm_loss: sanity values, numeric gradients, stability, label errors."""

import numpy as np
import pytest

from dualnet.gradient_check import eval_numerical_gradient, rel_error
from dualnet.layers import softmax_loss, svm_loss

LOSSES = [softmax_loss, svm_loss]


def _scores(num_classes=10, num_inputs=50, scale=0.001):
    rng = np.random.RandomState(231)
    return scale * rng.randn(num_inputs, num_classes), rng.randint(num_classes, size=num_inputs)


def test_small_random_scores_give_chance_level_losses():
    # With near-zero scores softmax is uniform (loss log C) and every hinge is active (C - 1).
    x, y = _scores()
    assert abs(float(softmax_loss(x, y)[0]) - np.log(10)) < 1e-2
    assert abs(float(svm_loss(x, y)[0]) - 9) < 1e-2


def test_softmax_loss_exact_value():
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = np.array([2, 0])
    expected = (-np.log(np.exp(3) / np.exp([1, 2, 3]).sum()) + np.log(3)) / 2
    assert abs(float(softmax_loss(x, y)[0]) - expected) < 1e-12


def test_svm_loss_exact_value():
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.5, -2.0]])
    y = np.array([0, 1])
    # row 0: max(0, 2-1+1) + max(0, 3-1+1) = 2 + 3; row 1: max(0, 0-0.5+1) + 0 = 0.5
    assert abs(float(svm_loss(x, y)[0]) - 5.5 / 2) < 1e-12


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_numeric_gradient(loss_fn):
    x, y = _scores()  # the course's check: 0.001-scale scores, errors around 1e-8
    _, dx = loss_fn(x, y)
    dx_num = eval_numerical_gradient(lambda v: loss_fn(v, y)[0], x, verbose=False)
    assert rel_error(dx_num, dx) < 1e-7


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_huge_logits_are_finite(loss_fn):
    x = np.array([[1e4, 0.0, -1e4], [-1e30, 1e30, 0.0]])
    y = np.array([1, 2])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, dx = loss_fn(x, y)
    assert np.isfinite(loss) and np.all(np.isfinite(dx))
    assert float(loss) > 1e3  # the wrong class wins by a mile in both rows


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_float32_stays_float32(loss_fn):
    x, y = _scores()
    loss, dx = loss_fn(x.astype(np.float32), y)
    assert loss.dtype == np.float32 and dx.dtype == np.float32


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("y, error, match", [
    (np.array([0, 3]), ValueError, r"labels out of range \[0, 3\): min 0, max 3"),
    (np.array([-1, 0]), ValueError, r"labels out of range \[0, 3\): min -1"),
    (np.array([0.0, 1.0]), TypeError, r"labels y must be an integer array, got float64"),
    (np.array([0, 1, 2]), ValueError, r"labels y must have shape \(2,\), got \(3,\)"),
])
def test_bad_labels_name_the_layer(loss_fn, y, error, match):
    with pytest.raises(error, match=f"{loss_fn.__name__}: {match}"):
        loss_fn(np.zeros((2, 3)), y)


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_scores_must_be_2d(loss_fn):
    with pytest.raises(ValueError, match=rf"{loss_fn.__name__}: x must be 2-D"):
        loss_fn(np.zeros((2, 3, 1)), np.array([0, 1]))
