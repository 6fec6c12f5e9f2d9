"""First-order update rules and learning-rate schedules, with the CS231n interface.

Every update rule has the course's signature::

    next_w, config = rule(w, dw, config=None)

- w, dw: arrays of one shape and float dtype, on any backend; next_w has w's dtype.
- config: dict of hyperparameters (missing keys get the course's defaults) and of the
  rule's state (velocity, moving averages, step count). The rule stores its new state in
  `config` and returns it; pass the returned dict to the next call.

The rules never change `w`, `dw` or a state array in place: they return new arrays. The
Solver relies on this to keep a consistent snapshot of the last finished iteration (what a
KeyboardInterrupt saves). State arrays are created with `xp.zeros_like(w)`, so they live on
w's backend and no host copy is ever made.

Schedules (`step_decay`, `cosine`, `warmup`) are callables `schedule(epoch, num_epochs) ->
factor` that the Solver multiplies into the base learning rate before every step; `epoch` is
fractional (iteration / iterations per epoch). They are plain data (`.describe()` is JSON),
so a checkpoint can record which schedule produced it.
"""

from __future__ import annotations

import math

import numpy as np

from . import backend

#: Names of the update rules, for `Solver(update_rule=name)`.
UPDATE_RULES = ("sgd", "sgd_momentum", "nesterov", "rmsprop", "adam", "adagrad", "adamw")

__all__ = [
    *UPDATE_RULES, "UPDATE_RULES", "config_keys",
    "step_decay", "cosine", "warmup", "get_schedule", "describe_schedule",
]


def _setup(w, dw, config, **defaults):
    """The config dict with defaults filled in, and the array module of w and dw.

    Hyperparameters become Python numbers of their default's type: a NumPy float64 scalar
    (what `10 ** np.random.uniform(...)` gives) would otherwise upcast float32 weights.
    """
    if config is None:
        config = {}
    for key, default in defaults.items():
        config[key] = type(default)(config.get(key, default))
    return config, backend.of(w, dw).xp


def _state(xp, config, key, w):
    """config[key], or zeros like w on w's backend the first time."""
    value = config.get(key)
    return xp.zeros_like(w) if value is None else value


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: w - learning_rate * dw.

    config: learning_rate (1e-2).
    """
    config, _ = _setup(w, dw, config, learning_rate=1e-2)
    return w - config["learning_rate"] * dw, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: v = momentum * v - learning_rate * dw; w + v.

    config: learning_rate (1e-2), momentum (0.9; 0 gives sgd), velocity (w's shape; zeros).
    """
    config, xp = _setup(w, dw, config, learning_rate=1e-2, momentum=0.9)
    v = config["momentum"] * _state(xp, config, "velocity", w) - config["learning_rate"] * dw
    config["velocity"] = v
    return w + v, config


def nesterov(w, dw, config=None):
    """Nesterov momentum in the "look-ahead" form of the CS231n notes.

    v_prev = v; v = momentum * v - learning_rate * dw; w - momentum * v_prev + (1 + momentum) * v.
    config: learning_rate (1e-2), momentum (0.9), velocity (zeros).
    """
    config, xp = _setup(w, dw, config, learning_rate=1e-2, momentum=0.9)
    mu = config["momentum"]
    v_prev = _state(xp, config, "velocity", w)
    v = mu * v_prev - config["learning_rate"] * dw
    config["velocity"] = v
    return w - mu * v_prev + (1 + mu) * v, config


def rmsprop(w, dw, config=None):
    """RMSProp: a moving average of squared gradients scales each parameter's step.

    cache = decay_rate * cache + (1 - decay_rate) * dw**2;
    w - learning_rate * dw / (sqrt(cache) + epsilon).
    config: learning_rate (1e-2), decay_rate (0.99), epsilon (1e-8), cache (zeros).
    """
    config, xp = _setup(w, dw, config, learning_rate=1e-2, decay_rate=0.99, epsilon=1e-8)
    decay = config["decay_rate"]
    cache = decay * _state(xp, config, "cache", w) + (1 - decay) * (dw * dw)
    config["cache"] = cache
    return w - config["learning_rate"] * dw / (xp.sqrt(cache) + config["epsilon"]), config


def _adam_direction(xp, dw, config):
    """Advance Adam's moments in config; returns the bias-corrected step direction.

    t is incremented *before* use, as in the course, so the first step uses t = 1.
    """
    beta1, beta2 = config["beta1"], config["beta2"]
    config["t"] = t = config["t"] + 1
    m = beta1 * _state(xp, config, "m", dw) + (1 - beta1) * dw
    v = beta2 * _state(xp, config, "v", dw) + (1 - beta2) * (dw * dw)
    config["m"], config["v"] = m, v
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return m_hat / (xp.sqrt(v_hat) + config["epsilon"])


def adam(w, dw, config=None):
    """Adam with bias correction (Kingma and Ba, 2015).

    config: learning_rate (1e-3, the course's default for Adam), beta1 (0.9),
    beta2 (0.999), epsilon (1e-8), m and v (zeros), t (0).
    """
    config, xp = _setup(w, dw, config, learning_rate=1e-3, beta1=0.9, beta2=0.999,
                        epsilon=1e-8, t=0)
    return w - config["learning_rate"] * _adam_direction(xp, dw, config), config


def adamw(w, dw, config=None):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019).

    w - learning_rate * (adam_direction + weight_decay * w): the decay is not part of the
    gradient, so it is not rescaled by the moving averages.
    config: as `adam`, plus weight_decay (1e-2).
    """
    config, xp = _setup(w, dw, config, learning_rate=1e-3, beta1=0.9, beta2=0.999,
                        epsilon=1e-8, t=0, weight_decay=1e-2)
    step = _adam_direction(xp, dw, config) + config["weight_decay"] * w
    return w - config["learning_rate"] * step, config


def adagrad(w, dw, config=None):
    """Adagrad: every squared gradient so far scales the step.

    cache = cache + dw**2; w - learning_rate * dw / (sqrt(cache) + epsilon).
    config: learning_rate (1e-2), epsilon (1e-8), cache (zeros).
    """
    config, xp = _setup(w, dw, config, learning_rate=1e-2, epsilon=1e-8)
    cache = _state(xp, config, "cache", w) + dw * dw
    config["cache"] = cache
    return w - config["learning_rate"] * dw / (xp.sqrt(cache) + config["epsilon"]), config


def config_keys(rule) -> frozenset[str]:
    """Every config key that update rule `rule` (one of UPDATE_RULES) reads or keeps:
    its hyperparameters and its state (velocity, moments, step count).

    Found by one step on a one-element host array: each rule fills in its defaults and
    returns its state in config, so the answer cannot drift from the rule's code.
    """
    w = np.zeros(1)
    return frozenset(rule(w, w, {})[1])


# -- learning-rate schedules ----------------------------------------------------------------
class _Schedule:
    """A learning-rate factor as a function of (fractional epoch, number of epochs)."""

    name = "schedule"

    def describe(self) -> dict:
        """JSON-able description; equal descriptions mean equal schedules."""
        return {"name": self.name, **vars(self)}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{self.name}({args})"


class step_decay(_Schedule):
    """Multiply the learning rate by `gamma` every `step_size` epochs."""

    name = "step_decay"

    def __init__(self, step_size: float, gamma: float = 0.1):
        if step_size <= 0:
            raise ValueError(f"step_decay: step_size must be > 0 epochs, got {step_size!r}")
        self.step_size = step_size
        self.gamma = gamma

    def __call__(self, epoch: float, num_epochs: int) -> float:
        return self.gamma ** math.floor(epoch / self.step_size)


class cosine(_Schedule):
    """Cosine annealing from 1 down to `min_factor` at the end of training."""

    name = "cosine"

    def __init__(self, min_factor: float = 0.0):
        self.min_factor = min_factor

    def __call__(self, epoch: float, num_epochs: int) -> float:
        progress = min(epoch / max(num_epochs, 1), 1.0)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class warmup(_Schedule):
    """Linear warm-up from `start_factor` to 1 over `epochs`, then `then` (or constant 1)."""

    name = "warmup"

    def __init__(self, epochs: float, then: _Schedule | None = None, start_factor: float = 0.1):
        if epochs <= 0:
            raise ValueError(f"warmup: epochs must be > 0, got {epochs!r}")
        self.epochs = epochs
        self.then = then
        self.start_factor = start_factor

    def describe(self) -> dict:
        return {"name": self.name, "epochs": self.epochs, "start_factor": self.start_factor,
                "then": describe_schedule(self.then)}

    def __call__(self, epoch: float, num_epochs: int) -> float:
        after = 1.0 if self.then is None else self.then(epoch, num_epochs)
        ramp = min(1.0, epoch / self.epochs)
        return after * (self.start_factor + (1 - self.start_factor) * ramp)


def describe_schedule(schedule) -> dict | None:
    """The JSON-able description a checkpoint stores for `schedule` (None for none).

    Built-in schedules describe their parameters; any other callable is named by its
    qualified name, which is all that can be compared without executing code.
    """
    if schedule is None:
        return None
    if isinstance(schedule, _Schedule):
        return schedule.describe()
    return {"name": "callable", "qualname": getattr(schedule, "__qualname__", repr(schedule))}


_NAMED_SCHEDULES = {"cosine": cosine}


def get_schedule(schedule):
    """None, a callable `(epoch, num_epochs) -> factor`, or the name 'cosine'."""
    if schedule is None or callable(schedule):
        return schedule
    if schedule in _NAMED_SCHEDULES:
        return _NAMED_SCHEDULES[schedule]()
    raise ValueError(f"unknown lr_schedule {schedule!r}: pass a callable (epoch, num_epochs) "
                     f"-> factor such as optim.step_decay(5), or one of "
                     f"{sorted(_NAMED_SCHEDULES)}")
