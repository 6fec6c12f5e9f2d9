"""TwoLayerNet and FullyConnectedNet: the course's published numbers and gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

from dualnet.models import FullyConnectedNet, TwoLayerNet

# The expected numbers below are the outputs printed in the CS231n assignment 2 notebooks
# (FullyConnectedNets.ipynb, Dropout.ipynb, BatchNormalization.ipynb), as published in
# students' solution write-ups, e.g. github.com/Mazzanicolas/machinelearning
# (proyects/deep-learning/FullyConnectedNets.md) and github.com/ctttt1119/cs231n. They
# depend on the course's weight initialization order and its global RNG use, which is what
# these tests pin down.


def _course_inputs():
    np.random.seed(231)
    N, D, C = 2, 15, 10
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))
    return X, y


@pytest.mark.parametrize("normalization, expected", [
    (None, [2.3004790897684924, 7.052114776533016]),
    ("batchnorm", [2.2611955101340957, 6.996533220108303]),
])
def test_initial_losses_match_course_notebooks(normalization, expected):
    X, y = _course_inputs()
    losses = []
    for reg in (0, 3.14):  # as in the notebooks: the second model continues the RNG stream
        model = FullyConnectedNet([20, 30], input_dim=15, num_classes=10, reg=reg,
                                  weight_scale=5e-2, dtype=np.float64,
                                  normalization=normalization)
        losses.append(float(model.loss(X, y)[0]))
    assert losses == pytest.approx(expected, abs=1e-10)


def test_dropout_initial_losses_match_course_notebook():
    X, y = _course_inputs()
    # The notebook builds the keep=1 model first, then keep=0.75 from the same RNG stream.
    FullyConnectedNet([20, 30], input_dim=15, num_classes=10, weight_scale=5e-2,
                      dtype=np.float64, dropout=1, seed=123)
    model = FullyConnectedNet([20, 30], input_dim=15, num_classes=10, weight_scale=5e-2,
                              dtype=np.float64, dropout=0.75, seed=123)
    assert abs(float(model.loss(X, y)[0]) - 2.302371489704412) < 1e-10
    # The course's dropout_forward re-seeds the *global* RNG with 123 and draws the masks of
    # both layers (2x20, then 2x30); the keep=0.5 model was drawn after that.
    np.random.seed(123)
    np.random.rand(2, 30)
    model = FullyConnectedNet([20, 30], input_dim=15, num_classes=10, weight_scale=5e-2,
                              dtype=np.float64, dropout_keep_ratio=0.5, seed=123)
    assert abs(float(model.loss(X, y)[0]) - 2.3042759220785896) < 1e-10


def test_two_layer_net_matches_course_notebook():
    N, D, H, C = 3, 5, 50, 7
    std = 1e-3
    np.random.seed(0)
    model = TwoLayerNet(input_dim=D, hidden_dim=H, num_classes=C, weight_scale=std)
    assert abs(model.params["W1"].std() - std) < std / 10
    assert abs(model.params["W2"].std() - std) < std / 10
    assert not model.params["b1"].any() and not model.params["b2"].any()

    model.params["W1"] = np.linspace(-0.7, 0.3, num=D * H).reshape(D, H)
    model.params["b1"] = np.linspace(-0.1, 0.9, num=H)
    model.params["W2"] = np.linspace(-0.3, 0.4, num=H * C).reshape(H, C)
    model.params["b2"] = np.linspace(-0.9, 0.1, num=C)
    X = np.linspace(-5.5, 4.5, num=N * D).reshape(D, N).T
    correct_scores = np.asarray(
        [[11.53165108, 12.2917344, 13.05181771, 13.81190102, 14.57198434, 15.33206765, 16.09215096],
         [12.05769098, 12.74614105, 13.43459113, 14.1230412, 14.81149128, 15.49994135, 16.18839143],
         [12.58373087, 13.20054771, 13.81736455, 14.43418138, 15.05099822, 15.66781506, 16.2846319]])
    assert np.abs(model.loss(X) - correct_scores).sum() < 1e-6
    y = np.asarray([0, 5, 1])
    assert abs(float(model.loss(X, y)[0]) - 3.4702243556) < 1e-10
    model.reg = 1.0
    assert abs(float(model.loss(X, y)[0]) - 26.5948426952) < 1e-10


def test_weights_come_from_the_global_numpy_rng():
    np.random.seed(5)
    model = FullyConnectedNet([4], input_dim=3, num_classes=2, weight_scale=0.1,
                              dtype=np.float64)
    np.random.seed(5)
    assert np.array_equal(model.params["W1"], 0.1 * np.random.randn(3, 4))
    assert np.array_equal(model.params["W2"], 0.1 * np.random.randn(4, 2))


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("reg", [0.0, 3.14])
def test_gradients(check_model_gradients, normalization, reg):
    np.random.seed(1)
    X = np.random.randn(3, 6)
    y = np.array([0, 3, 1])
    model = FullyConnectedNet([7, 5], input_dim=6, num_classes=4, reg=reg, weight_scale=5e-1,
                              dtype=np.float64, normalization=normalization)
    check_model_gradients(model, X, y)


def test_gradients_with_seeded_dropout(check_model_gradients):
    np.random.seed(2)
    X = np.random.randn(3, 6)
    y = np.array([2, 0, 1])
    model = FullyConnectedNet([8, 8], input_dim=6, num_classes=3, weight_scale=5e-1,
                              dtype=np.float64, dropout_keep_ratio=0.5, seed=123,
                              normalization="batchnorm", reg=0.1)
    check_model_gradients(model, X, y)


def test_float32_in_float32_out_even_for_float64_inputs():
    model = FullyConnectedNet([5], input_dim=4, num_classes=3, normalization="layernorm")
    X = np.random.randn(2, 4)  # float64: the model computes in its own dtype
    assert model.loss(X).dtype == np.float32
    model.reg = np.float64(0.5)  # a NumPy scalar must not upcast the gradients either
    loss, grads = model.loss(X, np.array([0, 2]))
    assert loss.dtype == np.float32
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}


def test_regularization_is_on_weights_only():
    np.random.seed(3)
    X = np.random.randn(4, 5)
    y = np.array([0, 1, 2, 1])
    model = FullyConnectedNet([6], input_dim=5, num_classes=3, normalization="batchnorm",
                              dtype=np.float64, weight_scale=0.3)
    # Non-trivial gamma/beta/biases: if they were regularized, the sums would differ.
    for name in ("b1", "b2", "gamma1", "beta1"):
        model.params[name] = model.params[name] + 0.7
    loss0, grads0 = model.loss(X, y)
    model.reg = 0.25
    loss1, grads1 = model.loss(X, y)
    W1, W2 = model.params["W1"], model.params["W2"]
    expected = 0.5 * 0.25 * ((W1 ** 2).sum() + (W2 ** 2).sum())
    assert float(loss1 - loss0) == pytest.approx(expected, rel=1e-12)
    assert np.allclose(grads1["W1"] - grads0["W1"], 0.25 * W1)
    for name in ("b1", "b2", "gamma1", "beta1"):
        assert np.array_equal(grads1[name], grads0[name]), name


def test_modes_follow_labels():
    model = FullyConnectedNet([5], input_dim=4, num_classes=3, normalization="batchnorm",
                              dropout_keep_ratio=0.5)
    X = np.random.randn(6, 4).astype(np.float32)
    scores = model.loss(X)
    assert scores.shape == (6, 3)
    assert model.bn_params[0]["mode"] == "test" and model.dropout_param["mode"] == "test"
    assert np.array_equal(scores, model.loss(X))  # test mode: no dropout noise
    model.loss(X, np.zeros(6, dtype=np.int64))
    assert model.bn_params[0]["mode"] == "train" and model.dropout_param["mode"] == "train"


def test_course_keys_and_counts():
    model = FullyConnectedNet([20, 30], input_dim=15, num_classes=10, normalization="batchnorm")
    assert sorted(model.params) == ["W1", "W2", "W3", "b1", "b2", "b3",
                                    "beta1", "beta2", "gamma1", "gamma2"]
    assert model.num_params() == 15 * 20 + 20 + 20 * 30 + 30 + 30 * 10 + 10 + 2 * (20 + 30)
    assert not model.use_dropout and len(model.bn_params) == 2
    assert TwoLayerNet().params["W1"].dtype == np.float64  # as the course's TwoLayerNet


@pytest.mark.parametrize("kwargs, match", [
    ({"normalization": "groupnorm"}, "normalization"),
    ({"dropout_keep_ratio": 0}, "KEEPING"),
    ({"weight_scale": "lecun"}, "weight_scale"),
    ({"dtype": np.int32}, "dtype"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        FullyConnectedNet([3], input_dim=2, **kwargs)
