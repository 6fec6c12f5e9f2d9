"""Update rules against published and hand-computed values; schedules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dualnet import optim
from dualnet.gradient_check import rel_error

# Expected arrays for sgd_momentum, rmsprop and adam: the checks printed in the CS231n
# assignment 2 notebook FullyConnectedNets.ipynb ("SGD+Momentum", "RMSProp and Adam"), as
# published e.g. in github.com/Mazzanicolas/machinelearning,
# proyects/deep-learning/FullyConnectedNets.md. The notebook asks for errors below 1e-7.
N, D = 4, 5


def _linspace(a, b):
    return np.linspace(a, b, num=N * D).reshape(N, D)


def test_sgd_momentum_matches_course():
    v = _linspace(0.6, 0.9)
    config = {"learning_rate": 1e-3, "velocity": v}
    next_w, config = optim.sgd_momentum(_linspace(-0.4, 0.6), _linspace(-0.6, 0.4), config)
    expected_next_w = np.asarray([
        [0.1406, 0.20738947, 0.27417895, 0.34096842, 0.40775789],
        [0.47454737, 0.54133684, 0.60812632, 0.67491579, 0.74170526],
        [0.80849474, 0.87528421, 0.94207368, 1.00886316, 1.07565263],
        [1.14244211, 1.20923158, 1.27602105, 1.34281053, 1.4096]])
    expected_velocity = np.asarray([
        [0.5406, 0.55475789, 0.56891579, 0.58307368, 0.59723158],
        [0.61138947, 0.62554737, 0.63970526, 0.65386316, 0.66802105],
        [0.68217895, 0.69633684, 0.71049474, 0.72465263, 0.73881053],
        [0.75296842, 0.76712632, 0.78128421, 0.79544211, 0.8096]])
    assert rel_error(next_w, expected_next_w) < 1e-7
    assert rel_error(config["velocity"], expected_velocity) < 1e-7
    assert np.array_equal(v, _linspace(0.6, 0.9))  # the old state was not changed in place


def test_rmsprop_matches_course():
    config = {"learning_rate": 1e-2, "cache": _linspace(0.6, 0.9)}
    next_w, config = optim.rmsprop(_linspace(-0.4, 0.6), _linspace(-0.6, 0.4), config)
    expected_next_w = np.asarray([
        [-0.39223849, -0.34037513, -0.28849239, -0.23659121, -0.18467247],
        [-0.132737, -0.08078555, -0.02881884, 0.02316247, 0.07515774],
        [0.12716641, 0.17918792, 0.23122175, 0.28326742, 0.33532447],
        [0.38739248, 0.43947102, 0.49155973, 0.54365823, 0.59576619]])
    expected_cache = np.asarray([
        [0.5976, 0.6126277, 0.6277108, 0.64284931, 0.65804321],
        [0.67329252, 0.68859723, 0.70395734, 0.71937285, 0.73484377],
        [0.75037008, 0.7659518, 0.78158892, 0.79728144, 0.81302936],
        [0.82883269, 0.84469141, 0.86060554, 0.87657507, 0.8926]])
    assert rel_error(next_w, expected_next_w) < 1e-7
    assert rel_error(config["cache"], expected_cache) < 1e-7


def test_adam_matches_course():
    config = {"learning_rate": 1e-2, "m": _linspace(0.6, 0.9), "v": _linspace(0.7, 0.5), "t": 5}
    next_w, config = optim.adam(_linspace(-0.4, 0.6), _linspace(-0.6, 0.4), config)
    expected_next_w = np.asarray([
        [-0.40094747, -0.34836187, -0.29577703, -0.24319299, -0.19060977],
        [-0.1380274, -0.08544591, -0.03286534, 0.01971428, 0.0722929],
        [0.1248705, 0.17744702, 0.23002243, 0.28259667, 0.33516969],
        [0.38774145, 0.44031188, 0.49288093, 0.54544852, 0.59801459]])
    expected_v = np.asarray([
        [0.69966, 0.68908382, 0.67851319, 0.66794809, 0.65738853],
        [0.64683452, 0.63628604, 0.6257431, 0.61520571, 0.60467385],
        [0.59414753, 0.58362676, 0.57311152, 0.56260183, 0.55209767],
        [0.54159906, 0.53110598, 0.52061845, 0.51013645, 0.49966]])
    expected_m = np.asarray([
        [0.48, 0.49947368, 0.51894737, 0.53842105, 0.55789474],
        [0.57736842, 0.59684211, 0.61631579, 0.63578947, 0.65526316],
        [0.67473684, 0.69421053, 0.71368421, 0.73315789, 0.75263158],
        [0.77210526, 0.79157895, 0.81105263, 0.83052632, 0.85]])
    # The expected values have 8 decimals; a correct adam is ~1.1e-7 off (the notebook's
    # own printed result is 1.1395691798535431e-07).
    assert rel_error(next_w, expected_next_w) < 2e-7
    assert rel_error(config["v"], expected_v) < 1e-7
    assert rel_error(config["m"], expected_m) < 1e-7
    assert config["t"] == 6


# Hand-computed single-element cases (the arithmetic is in the comments).
def test_sgd_by_hand():
    next_w, config = optim.sgd(np.array([1.0]), np.array([0.5]), {"learning_rate": 0.1})
    assert next_w[0] == pytest.approx(0.95)  # 1 - 0.1 * 0.5


def test_nesterov_by_hand():
    config = {"learning_rate": 0.1, "momentum": 0.9, "velocity": np.array([0.2])}
    next_w, config = optim.nesterov(np.array([1.0]), np.array([0.5]), config)
    # v = 0.9 * 0.2 - 0.1 * 0.5 = 0.13; w = 1 - 0.9 * 0.2 + 1.9 * 0.13 = 1.067
    assert config["velocity"][0] == pytest.approx(0.13)
    assert next_w[0] == pytest.approx(1.067)


def test_adagrad_by_hand():
    config = {"learning_rate": 0.1, "cache": np.array([0.75])}
    next_w, config = optim.adagrad(np.array([1.0]), np.array([0.5]), config)
    # cache = 0.75 + 0.25 = 1; w = 1 - 0.1 * 0.5 / (1 + 1e-8)
    assert config["cache"][0] == pytest.approx(1.0)
    assert next_w[0] == pytest.approx(0.95)
    _, config = optim.adagrad(np.array([1.0]), np.array([2.0]), config)
    assert config["cache"][0] == pytest.approx(5.0)  # 1 + 4: adagrad never forgets


def test_adamw_first_step_by_hand():
    next_w, config = optim.adamw(np.array([2.0]), np.array([0.5]),
                                 {"learning_rate": 0.1, "weight_decay": 0.01})
    # t = 1: m_hat = 0.5, v_hat = 0.25, direction = 0.5 / 0.5 = 1;
    # w = 2 - 0.1 * (1 + 0.01 * 2) = 1.898
    assert config["t"] == 1
    assert next_w[0] == pytest.approx(1.898, abs=1e-7)


@pytest.mark.parametrize("rule, defaults", [
    (optim.sgd, {"learning_rate": 1e-2}),
    (optim.sgd_momentum, {"learning_rate": 1e-2, "momentum": 0.9}),
    (optim.nesterov, {"learning_rate": 1e-2, "momentum": 0.9}),
    (optim.rmsprop, {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8}),
    (optim.adam, {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}),
    (optim.adagrad, {"learning_rate": 1e-2, "epsilon": 1e-8}),
    (optim.adamw, {"learning_rate": 1e-3, "weight_decay": 1e-2}),
])
def test_defaults_dtype_and_no_in_place_changes(rule, defaults):
    w = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    dw = np.linspace(1, -1, 6, dtype=np.float32).reshape(2, 3)
    w0, dw0 = w.copy(), dw.copy()
    next_w, config = rule(w, dw)
    for key, value in defaults.items():
        assert config[key] == value, key
    assert next_w.dtype == np.float32 and next_w.shape == w.shape
    assert np.array_equal(w, w0) and np.array_equal(dw, dw0)
    # A NumPy float64 hyperparameter (10 ** np.random.uniform(...)) must not upcast.
    config["learning_rate"] = np.float64(1e-3)
    next_w, config = rule(next_w, dw, config)
    assert next_w.dtype == np.float32
    assert all(v.dtype == np.float32 for v in config.values() if isinstance(v, np.ndarray))


def test_schedules_by_hand():
    assert optim.step_decay(2, 0.5)(3.9, 10) == 0.5 and optim.step_decay(2, 0.5)(4.0, 10) == 0.25
    assert optim.cosine()(0, 10) == 1.0
    assert optim.cosine()(5, 10) == pytest.approx(0.5)
    assert optim.cosine(min_factor=0.1)(10, 10) == pytest.approx(0.1)
    ramp = optim.warmup(2, then=optim.cosine())
    assert ramp(0, 4) == pytest.approx(0.1)
    assert ramp(1, 4) == pytest.approx(0.55 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert optim.get_schedule("cosine")(5, 10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lr_schedule"):
        optim.get_schedule("exponential")


def test_schedule_descriptions_are_json():
    described = optim.describe_schedule(optim.warmup(1, then=optim.step_decay(3, 0.2)))
    assert json.loads(json.dumps(described)) == {
        "name": "warmup", "epochs": 1, "start_factor": 0.1,
        "then": {"name": "step_decay", "step_size": 3, "gamma": 0.2}}
    assert optim.describe_schedule(None) is None
    assert optim.describe_schedule(test_schedules_by_hand)["name"] == "callable"
