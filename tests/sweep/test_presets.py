"""Model hyperparameters change the presets' configs as documented; models of your own take
theirs as keyword arguments; every default space fits its model."""

import numpy as np
import pytest

from dualnet.models.named import build_model, model_config
from dualnet.sweep import Sweep
from dualnet.sweep.presets import (
    DEFAULT_SPACES,
    PRESET_HYPERPARAMETERS,
    configure,
    default_space,
    model_hyperparameters,
)
from dualnet.sweep.space import SOLVER_HYPERPARAMETERS, parse_space

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)


def _model(name, input_dim, **options):
    config = configure(name, model_config(name, input_dim), options)
    return build_model(name, config, 10, 0.0)


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.params.items()}


def test_fc_width_and_depth_compose_in_either_order():
    base = model_config("fc", DIGITS)
    assert base["hidden_dims"] == [100, 100]
    for options in ({"hidden": 32, "layers": 3}, {"layers": 3, "hidden": 32}):
        assert configure("fc", base, options)["hidden_dims"] == [32, 32, 32]
    assert base["hidden_dims"] == [100, 100], "the config given is not changed"
    shapes = _shapes(_model("fc", DIGITS, hidden=32, layers=3))
    assert [shapes[f"W{i}"] for i in range(1, 5)] == [(64, 32), (32, 32), (32, 32), (32, 10)]


def test_fc_dropout_and_normalization():
    model = _model("fc", DIGITS, dropout_keep_ratio=0.5, normalization=None)
    assert model.use_dropout and model.dropout_param["p"] == 0.5
    assert not any(k.startswith("gamma") for k in model.params)


def test_convnet_filters_double_per_stage_and_hidden_adds_a_layer():
    small = _model("convnet", DIGITS, filters=8, hidden=0)
    assert [v.shape[0] for k, v in small.params.items() if v.ndim == 4] == [8, 16]
    assert model_config("convnet", CIFAR)["hidden_dims"] == []
    config = configure("convnet", model_config("convnet", CIFAR), {"filters": 4, "hidden": 50})
    assert config["num_filters"] == [4, 8, 16] and config["hidden_dims"] == [50]


def test_two_and_three_layer_sizes():
    assert _shapes(_model("two-layer", DIGITS, hidden=20))["W1"] == (64, 20)
    shapes = _shapes(_model("three-layer", DIGITS, filters=6, filter_size=5, hidden=30))
    assert shapes["W1"] == (6, 1, 5, 5) and shapes["W3"] == (30, 10)


def test_weight_scale_replaces_he_initialization():
    np.random.seed(0)
    assert _model("two-layer", DIGITS, weight_scale=1e-3).params["W1"].std() == \
        pytest.approx(1e-3, rel=0.1)
    np.random.seed(0)
    he = np.sqrt(2 / 64)  # what dualnet train uses, and the sweep without weight_scale
    assert _model("two-layer", DIGITS).params["W1"].std() == pytest.approx(he, rel=0.1)


@pytest.mark.parametrize("name", ["cifar-resnet", "cifar-resnet-small"])
def test_the_challenge_presets_take_their_dropout(name):
    np.random.seed(0)
    net = _model(name, DIGITS, dropout=0.1)
    dropout = dict(dict(net.children())["head"].children())["dropout"]
    assert dropout.p == 0.1
    assert model_hyperparameters(name) == ("dropout",)


def test_a_model_of_your_own_keeps_its_options_in_the_config():
    config = configure("net.py:build", {"input_dim": [1, 8, 8], "source": "net.py:build"},
                       {"width": 3})
    assert config["options"] == {"width": 3}


def build(input_dim, num_classes, width=10, depth=2):
    """A model function as a user writes it (only its signature matters here)."""


def build_anything(input_dim, num_classes, **options):
    """One that takes any hyperparameter."""


def test_hyperparameters_of_a_callable_come_from_its_signature(tmp_path):
    assert model_hyperparameters(build) == ("depth", "width")
    assert model_hyperparameters(build_anything) is None
    source = tmp_path / "net.py"
    source.write_text("def make(input_dim, num_classes, width=4):\n    pass\n")
    assert model_hyperparameters(f"{source}:make") == ("width",)
    assert model_hyperparameters("fc") == tuple(sorted(PRESET_HYPERPARAMETERS["fc"]))


@pytest.mark.parametrize("name", sorted(DEFAULT_SPACES))
def test_every_default_space_parses_and_fits_its_model(name):
    space, fixed = parse_space(default_space(name))
    assert space and not fixed
    for hyperparameter in space:
        assert hyperparameter in SOLVER_HYPERPARAMETERS or \
            hyperparameter in PRESET_HYPERPARAMETERS[name]
    Sweep(name, {}, trials=1)  # the constructor checks the names against the model


def test_default_space_of_your_own_model_is_the_solver_part():
    assert set(default_space(build)) == {"lr", "reg"}
    assert set(default_space("net.py:build")) == {"lr", "reg"}
