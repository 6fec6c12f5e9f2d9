"""Optimizers as objects over a module's parameters, built on `dualnet.optim`'s update rules.

Each parameter keeps its own config dict (the rule's state: velocity, moments, step count),
exactly as the `Solver` does, so the object and functional styles take identical steps.
"""

from __future__ import annotations

from .. import _checks, optim


class Optimizer:
    """Applies `rule(w, dw, config) -> (next_w, config)` to every parameter of `module`."""

    def __init__(self, module, rule, **config):
        if "learning_rate" in config:
            _checks.number(type(self).__name__, "lr", config["learning_rate"], above=0)
        self.module = module
        self.rule = rule
        self.configs = {name: dict(config) for name, _ in module.parameters()}

    def step(self):
        """Update every parameter from the gradients of the last `backward`."""
        params, grads = self.module.params, self.module.grads
        for name, config in self.configs.items():
            params[name], self.configs[name] = self.rule(params[name], grads[name], config)


class SGD(Optimizer):
    """SGD; with momentum > 0, momentum SGD (v = momentum * v - lr * dw); with
    nesterov=True, Nesterov's variant."""

    def __init__(self, module, lr=1e-2, momentum=0.0, nesterov=False):
        if momentum < 0:
            raise ValueError(f"SGD: momentum must be >= 0, got {momentum!r}")
        if nesterov and not momentum > 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        if not momentum:
            super().__init__(module, optim.sgd, learning_rate=lr)
        else:
            rule = optim.nesterov if nesterov else optim.sgd_momentum
            super().__init__(module, rule, learning_rate=lr, momentum=momentum)


class RMSProp(Optimizer):
    def __init__(self, module, lr=1e-2, decay_rate=0.99, epsilon=1e-8):
        super().__init__(module, optim.rmsprop, learning_rate=lr, decay_rate=decay_rate,
                         epsilon=epsilon)


class Adam(Optimizer):
    def __init__(self, module, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(module, optim.adam, learning_rate=lr, beta1=beta1, beta2=beta2,
                         epsilon=epsilon)


class AdamW(Optimizer):
    def __init__(self, module, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 weight_decay=1e-2):
        super().__init__(module, optim.adamw, learning_rate=lr, beta1=beta1, beta2=beta2,
                         epsilon=epsilon, weight_decay=weight_decay)
