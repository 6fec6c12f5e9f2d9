"""Model behaviour shared by every model: init scales, non-finite diagnosis, backend moves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dualnet import backend
from dualnet.models import ConvNet, FullyConnectedNet, init_scale


def test_init_scale():
    assert init_scale(0.01, 100) == 0.01
    assert init_scale("he", 50) == math.sqrt(2 / 50)
    assert init_scale("xavier", 50) == math.sqrt(1 / 50)
    with pytest.raises(ValueError, match="weight_scale"):
        init_scale("glorot", 50)


def test_first_nonfinite_layer_names_the_layer_and_changes_nothing():
    model = FullyConnectedNet([4, 4], input_dim=3, num_classes=2, normalization="batchnorm",
                              dtype=np.float64)
    X = np.random.randn(5, 3)
    y = np.array([0, 1, 1, 0, 1])
    model.loss(X, y)  # creates running statistics
    running = {k: v.copy() for k, v in model.bn_params[1].items() if k.startswith("running")}
    assert model.first_nonfinite_layer(X, y) is None
    model.params["W2"][0, 0] = np.inf
    assert model.first_nonfinite_layer(X, y) == "affine_batchnorm_relu2"
    for key, value in running.items():
        assert np.array_equal(model.bn_params[1][key], value), key


def test_first_nonfinite_layer_in_a_convnet():
    model = ConvNet(input_dim=(1, 4, 4), num_filters=(2,), residual_blocks=1,
                    normalization=None, dtype=np.float64)
    X = np.random.randn(2, 1, 4, 4)
    model.params["b3"][:] = np.nan  # second convolution of the residual block
    assert model.first_nonfinite_layer(X) == "conv3"


def test_to_moves_parameters_and_running_statistics():
    model = FullyConnectedNet([3], input_dim=2, num_classes=2, normalization="batchnorm")
    model.loss(np.random.randn(4, 2), np.array([0, 1, 0, 1]))
    assert model.to("numpy") is model
    assert model.backend.name == "numpy"
    with pytest.raises(ValueError, match="unknown backend"):
        model.to("tpu")


@pytest.mark.parametrize("name", [n for n in backend.names() if n != "numpy"])
def test_to_another_backend_and_back(name):
    reason = backend.why_unavailable(name)
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable: {reason}")
    model = FullyConnectedNet([3], input_dim=2, num_classes=2, normalization="batchnorm",
                              dtype=np.float64)
    X = np.random.randn(4, 2)
    y = np.array([0, 1, 0, 1])
    expected = float(model.loss(X, y)[0])
    # Host arrays belong to the default host backend, so cuda-emu needs use() as well.
    with backend.use(name) as be:
        model.to(name)
        loss, grads = model.loss(be.asarray(X), be.asarray(y))
        assert float(loss) == pytest.approx(expected, rel=1e-10)
        assert all(backend.of(g) is be for g in grads.values())
    model.to("numpy")
    assert all(isinstance(v, np.ndarray) for v in model.params.values())


def test_repr_mentions_size_dtype_and_backend():
    text = repr(FullyConnectedNet([3], input_dim=2, num_classes=2))
    assert "FullyConnectedNet" in text and "float32" in text and "'numpy'" in text
    assert "17 parameters" in text  # W1 2x3, b1 3, W2 3x2, b2 2
