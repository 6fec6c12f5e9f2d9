"""Optimizer objects take exactly the steps of the functional update rules."""

import numpy as np
import pytest

from dualnet import nn, optim


def _net():
    np.random.seed(0)
    return nn.Sequential(nn.Linear(4, 3, dtype=np.float64), nn.ReLU(),
                         nn.Linear(3, 2, dtype=np.float64))


@pytest.mark.parametrize("make, rule, config", [
    (lambda m: nn.SGD(m, lr=0.1), optim.sgd, {"learning_rate": 0.1}),
    (lambda m: nn.SGD(m, lr=0.1, momentum=0.8), optim.sgd_momentum,
     {"learning_rate": 0.1, "momentum": 0.8}),
    (lambda m: nn.SGD(m, lr=0.1, momentum=0.8, nesterov=True), optim.nesterov,
     {"learning_rate": 0.1, "momentum": 0.8}),
    (lambda m: nn.RMSProp(m, lr=0.01), optim.rmsprop, {"learning_rate": 0.01}),
    (lambda m: nn.Adam(m, lr=0.01), optim.adam, {"learning_rate": 0.01}),
    (lambda m: nn.AdamW(m, lr=0.01, weight_decay=0.1), optim.adamw,
     {"learning_rate": 0.01, "weight_decay": 0.1}),
])
def test_object_optimizer_equals_functional_rule(make, rule, config):
    X, y = np.random.RandomState(1).randn(6, 4), np.array([0, 1, 1, 0, 1, 0])
    net, reference = _net(), _net()
    opt = make(net)
    ref_params = {k: v.copy() for k, v in reference.params.items()}
    ref_configs = {k: dict(config) for k in ref_params}
    for _ in range(3):
        net.loss(X, y)
        opt.step()
        reference.params = ref_params
        _, grads = reference.loss(X, y)
        for k in ref_params:
            ref_params[k], ref_configs[k] = rule(ref_params[k], grads[k], ref_configs[k])
    for k in ref_params:
        np.testing.assert_array_equal(net.params[k], ref_params[k])


def test_training_with_an_object_optimizer_lowers_the_loss():
    rng = np.random.RandomState(2)
    X = rng.randn(40, 4)
    y = (X[:, 0] > 0).astype(np.int64)
    net = _net()
    opt = nn.Adam(net, lr=0.05)
    first = float(net.loss(X, y)[0])
    for _ in range(60):
        net.loss(X, y)
        opt.step()
    assert float(net.loss(X, y)[0]) < 0.5 * first


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="SGD: nesterov=True needs momentum > 0"):
        nn.SGD(_net(), nesterov=True)
    with pytest.raises(ValueError, match="SGD: momentum must be >= 0"):
        nn.SGD(_net(), momentum=-0.5)
