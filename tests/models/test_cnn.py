"""ThreeLayerConvNet and ConvNet: constructor contract, shapes, errors, gradient checks."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from dualnet.models import ConvNet, ThreeLayerConvNet


def test_three_layer_convnet_constructor_is_the_courses():
    # The benchmark helper and the course notebooks call it with exactly these defaults.
    params = inspect.signature(ThreeLayerConvNet).parameters
    assert {k: p.default for k, p in params.items()} == {
        "input_dim": (3, 32, 32), "num_filters": 32, "filter_size": 7, "hidden_dim": 100,
        "num_classes": 10, "weight_scale": 1e-3, "reg": 0.0, "dtype": np.float32}


def test_three_layer_convnet_shapes_and_initial_loss():
    np.random.seed(0)
    model = ThreeLayerConvNet()
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes == {"W1": (32, 3, 7, 7), "b1": (32,), "W2": (32 * 16 * 16, 100),
                      "b2": (100,), "W3": (100, 10), "b3": (10,)}
    assert model.num_params() == 32 * 3 * 49 + 32 + 8192 * 100 + 100 + 1000 + 10
    X = np.random.randn(4, 3, 32, 32)
    y = np.random.randint(10, size=4)
    loss, _ = model.loss(X, y)
    assert loss.dtype == np.float32
    assert abs(float(loss) - math.log(10)) < 0.01  # tiny weights: uniform scores
    model.reg = 0.5
    assert float(model.loss(X, y)[0]) > float(loss)


def test_three_layer_convnet_gradients(check_model_gradients):
    np.random.seed(231)
    X = np.random.randn(2, 3, 6, 6)
    y = np.array([1, 4])
    model = ThreeLayerConvNet(input_dim=(3, 6, 6), num_filters=3, filter_size=3, hidden_dim=7,
                              weight_scale=0.1, reg=0.3, dtype=np.float64)
    check_model_gradients(model, X, y)


@pytest.mark.parametrize("normalization", [None, "batchnorm", "groupnorm"])
@pytest.mark.parametrize("residual_blocks", [0, 1])
def test_convnet_gradients(check_model_gradients, normalization, residual_blocks):
    np.random.seed(7)
    X = np.random.randn(3, 2, 4, 6)  # non-square on purpose
    y = np.array([1, 0, 2])
    # Two stages without residual blocks, one stage with one (fewer parameters to check).
    stages = {"num_filters": (2,), "pool": True} if residual_blocks else {
        "num_filters": (2, 2), "pool": (True, False)}
    model = ConvNet(input_dim=(2, 4, 6), **stages,
                    normalization=normalization, num_groups=2,
                    residual_blocks=residual_blocks, hidden_dims=(3,), num_classes=3,
                    reg=0.1, dtype=np.float64)
    check_model_gradients(model, X, y)


def test_convnet_valid_convolutions_and_flatten(check_model_gradients):
    np.random.seed(8)
    X = np.random.randn(2, 1, 7, 9)
    y = np.array([1, 0])
    model = ConvNet(input_dim=(1, 7, 9), num_filters=(2, 3), filter_size=(3, 2),
                    padding="valid", pool=(False, True), global_pool=False,
                    normalization=None, num_classes=2, dtype=np.float64)
    # 7x9 -(3x3 valid)-> 5x7 -(2x2 valid)-> 4x6 -pool-> 2x3, flattened: 3 * 2 * 3 = 18.
    assert model.params["W3"].shape == (18, 2)
    check_model_gradients(model, X, y)


def test_convnet_for_8x8_digits():
    model = ConvNet(input_dim=(1, 8, 8), num_filters=(16, 32))
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes == {"W1": (16, 1, 3, 3), "b1": (16,), "gamma1": (16,), "beta1": (16,),
                      "W2": (32, 16, 3, 3), "b2": (32,), "gamma2": (32,), "beta2": (32,),
                      "W3": (32, 10), "b3": (10,)}
    assert model.params["W1"].dtype == np.float32
    assert len(model.bn_params) == 2
    scores = model.loss(np.random.randn(5, 1, 8, 8))
    assert scores.shape == (5, 10) and scores.dtype == np.float32


def test_convnet_for_non_square_eye_images():
    model = ConvNet(input_dim=(1, 36, 120), num_filters=(4, 8), filter_size=(5, 3),
                    padding="valid", pool=(True, False), normalization="groupnorm",
                    num_groups=4, hidden_dims=(16,), num_classes=2)
    assert model.params["gamma1"].shape == (1, 4, 1, 1)  # group norm's parameter layout
    scores = model.loss(np.random.randn(2, 1, 36, 120).astype(np.float32))
    assert scores.shape == (2, 2)


def test_convnet_he_initialization():
    np.random.seed(0)
    model = ConvNet(input_dim=(16, 8, 8), num_filters=(64,), normalization=None)
    assert model.params["W1"].std() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.05)


@pytest.mark.parametrize("kwargs, match", [
    ({"input_dim": (1, 6, 6), "num_filters": (2, 2)}, "conv layer 2 outputs 3x3"),
    ({"num_filters": (6,), "normalization": "groupnorm", "num_groups": 4}, "num_groups=4"),
    ({"filter_size": 2}, "odd filter_size"),
    ({"pool": (True, False, True)}, "3 entries for 1 conv layers"),
    ({"padding": "full"}, "padding"),
])
def test_convnet_bad_configurations_are_explained(kwargs, match):
    config = {"input_dim": (1, 8, 8), "num_filters": (4,)}
    config.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ConvNet(**config)


def test_three_layer_convnet_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        ThreeLayerConvNet(input_dim=(3, 7, 8))
