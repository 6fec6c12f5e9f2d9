"""The model hyperparameters a sweep can search, per model, and the default search spaces.

A preset model (`dualnet train --model two-layer | fc | three-layer | convnet`) is built from
a constructor config (`dualnet.models.named.model_config`, chosen for the input size). A sweep's
model hyperparameters change that config:

===============  ============================  =============================================
preset           hyperparameter                config change
===============  ============================  =============================================
course presets   ``weight_scale``              init std (a number) or 'he' / 'xavier'
two-layer        ``hidden``                    hidden_dim
fc               ``hidden``, ``layers``        hidden_dims = [hidden] * layers
fc               ``dropout_keep_ratio``        probability of keeping a unit (1: no dropout)
fc, convnet      ``normalization``             none | batchnorm | layernorm (fc) /
                                               groupnorm (convnet)
three-layer      ``filters``, ``filter_size``, num_filters, filter_size, hidden_dim
                 ``hidden``
convnet          ``filters``                   first stage's filters, doubled per stage
convnet          ``hidden``                    one hidden affine layer of this size (0: none)
cifar-resnet*    ``dropout``                   drop probability before the classifier
                                               (both cifar-resnet presets)
===============  ============================  =============================================

A model of your own (`FILE.py:FUNCTION`, or a callable in Python) receives its
hyperparameters as keyword arguments after `input_dim` and `num_classes`; its signature says
which it takes (any, with ``**kwargs``).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["PRESET_HYPERPARAMETERS", "DEFAULT_SPACES", "configure", "model_hyperparameters",
           "default_space"]


def _setter(key: str, cast=None) -> Callable[[dict, Any], None]:
    def apply(config: dict, value) -> None:
        config[key] = value if cast is None else cast(value)
    return apply


def _fc_width(config: dict, value) -> None:
    config["hidden_dims"] = [int(value)] * len(config["hidden_dims"])


def _fc_depth(config: dict, value) -> None:
    config["hidden_dims"] = [config["hidden_dims"][0]] * int(value)


def _convnet_filters(config: dict, value) -> None:
    stages = len(config["num_filters"])
    config["num_filters"] = [int(value) * 2 ** k for k in range(stages)]


def _convnet_hidden(config: dict, value) -> None:
    config["hidden_dims"] = [int(value)] if value else []


_WEIGHT_SCALE = {"weight_scale": _setter("weight_scale")}

#: {preset: {hyperparameter: apply(config, value)}}; see the table in the module docs.
PRESET_HYPERPARAMETERS: dict[str, dict[str, Callable[[dict, Any], None]]] = {
    "two-layer": {"hidden": _setter("hidden_dim", int), **_WEIGHT_SCALE},
    "fc": {"hidden": _fc_width, "layers": _fc_depth,
           "dropout_keep_ratio": _setter("dropout_keep_ratio", float),
           "normalization": _setter("normalization"), **_WEIGHT_SCALE},
    "three-layer": {"filters": _setter("num_filters", int),
                    "filter_size": _setter("filter_size", int),
                    "hidden": _setter("hidden_dim", int), **_WEIGHT_SCALE},
    "convnet": {"filters": _convnet_filters, "hidden": _convnet_hidden,
                "normalization": _setter("normalization"), **_WEIGHT_SCALE},
    "cifar-resnet": {"dropout": _setter("dropout", float)},
    "cifar-resnet-small": {"dropout": _setter("dropout", float)},
}

#: Searched when no space is given: the course's learning rate and regularization on a log
#: scale, plus the preset's main size (its own code for models of your own: Solver only).
_SOLVER_SPACE = {"lr": "1e-4:1e-2:log", "reg": "1e-6:1e-2:log"}
DEFAULT_SPACES = {
    "two-layer": {**_SOLVER_SPACE, "hidden": "50,100,200"},
    "fc": {**_SOLVER_SPACE, "hidden": "64,128,256", "dropout_keep_ratio": "0.5:1"},
    "three-layer": {**_SOLVER_SPACE, "filters": "16,32", "hidden": "100,200"},
    "convnet": {**_SOLVER_SPACE, "filters": "16,32"},
    "cifar-resnet": {"lr": "1e-4:3e-3:log", "dropout": "0:0.5"},
    "cifar-resnet-small": {"lr": "1e-4:3e-3:log", "dropout": "0:0.5"},
}


def default_space(model) -> dict[str, str]:
    """The space searched for `model` (preset name, 'FILE.py:FUNCTION' or callable) when
    none is given, as {name: entry text}."""
    return dict(DEFAULT_SPACES.get(model, _SOLVER_SPACE)) if isinstance(model, str) else \
        dict(_SOLVER_SPACE)


def configure(model: str, config: dict, options: dict) -> dict:
    """A copy of the constructor `config` of model `model` with the model hyperparameters
    `options` applied: presets change their config (module docs); 'FILE.py:FUNCTION' keeps
    them under 'options', passed to FUNCTION as keyword arguments."""
    config = copy.deepcopy(config)
    if model not in PRESET_HYPERPARAMETERS:
        if options:
            config["options"] = dict(options)
        return config
    appliers = PRESET_HYPERPARAMETERS[model]
    for name in sorted(options):  # fixed order: the fc width and depth setters compose
        appliers[name](config, options[name])
    return config


def model_hyperparameters(model) -> tuple[str, ...] | None:
    """The model hyperparameter names `model` takes, sorted; None when it takes any.

    Args:
        model: a preset name, 'FILE.py:FUNCTION', or a callable
            `f(input_dim=(C, H, W), num_classes=K, **hyperparameters)`.
    """
    if isinstance(model, str) and model in PRESET_HYPERPARAMETERS:
        return tuple(sorted(PRESET_HYPERPARAMETERS[model]))
    if isinstance(model, str):
        from ..models.named import user_function

        function = user_function(model)
    else:
        function = model
    names = []
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            return None
        if parameter.kind is not parameter.VAR_POSITIONAL and \
                name not in ("input_dim", "num_classes"):
            names.append(name)
    return tuple(sorted(names))
