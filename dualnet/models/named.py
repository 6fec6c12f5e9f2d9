"""Models by name, as `dualnet train` and `dualnet sweep` build them.

A name is a preset (`MODELS`: the course models with a constructor config chosen for the
input size, and the CIFAR challenge networks) or 'FILE.py:FUNCTION', a function of the
user's that builds a model for `input_dim=(C, H, W)` and `num_classes=K`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import cnn, fc_net, resnet

__all__ = ["MODELS", "model_config", "user_function", "user_model", "build_model"]

MODELS = ("two-layer", "fc", "three-layer", "convnet", *resnet.PRESETS)


def model_config(name: str, input_dim) -> dict:
    """Constructor arguments of the model `name` for inputs (C, H, W)."""
    C, H, W = input_dim
    if name not in MODELS:  # FILE.py:FUNCTION decides its own architecture
        return {"input_dim": list(input_dim), "source": name}
    if name in resnet.PRESETS:  # the challenge networks take any image size
        return {"input_dim": list(input_dim)}
    small = max(H, W) <= 16  # the 8x8 digits: 3x3 filters, fewer layers
    if name == "two-layer":
        return {"input_dim": C * H * W, "hidden_dim": 100}
    if name == "fc":
        return {"hidden_dims": [100, 100], "input_dim": C * H * W,
                "normalization": "batchnorm"}
    if name == "three-layer":
        return {"input_dim": list(input_dim), "num_filters": 32,
                "filter_size": 3 if small else 7, "hidden_dim": 100}
    if small:  # tuned on digits: flattening the 2x2 maps beats global pooling there
        return {"input_dim": list(input_dim), "num_filters": [32, 64], "global_pool": False,
                "hidden_dims": [128]}
    return {"input_dim": list(input_dim), "num_filters": [32, 64, 128], "hidden_dims": []}


def user_function(spec: str):
    """FUNCTION from FILE.py for a 'FILE.py:FUNCTION' spec (this runs the user's file)."""
    import importlib.util

    path, _, function = spec.rpartition(":")
    if not Path(path).is_file():
        raise ValueError(f"model file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    build = getattr(module, function, None)
    if not callable(build):
        raise ValueError(f"{path} defines no function {function!r}")
    return build


def user_model(spec: str, input_dim, num_classes: int, reg: float, options=None):
    """Call FUNCTION from FILE.py (the user's own code) to build a model for these inputs;
    `options` are more keyword arguments for it (a sweep's model hyperparameters)."""
    build = user_function(spec)
    model = build(input_dim=tuple(input_dim), num_classes=num_classes, **(options or {}))
    if not (hasattr(model, "loss") and hasattr(model, "params")):
        raise ValueError(f"{spec} returned a {type(model).__name__}, not a model with "
                         "loss(X, y) and params (e.g. a dualnet.nn.Sequential)")
    model.reg = reg
    return model


def build_model(name: str, config: dict, num_classes: int, reg: float):
    """The model `name` (a preset or 'FILE.py:FUNCTION') from its `model_config`, float32."""
    if name not in MODELS:
        return user_model(name, config["input_dim"], num_classes, reg, config.get("options"))
    if name in resnet.PRESETS:
        return resnet.PRESETS[name](**{**config, "input_dim": tuple(config["input_dim"])},
                                    num_classes=num_classes, reg=reg, dtype=np.float32)
    cls = {"two-layer": fc_net.TwoLayerNet, "fc": fc_net.FullyConnectedNet,
           "three-layer": cnn.ThreeLayerConvNet, "convnet": cnn.ConvNet}[name]
    # a sweep's config may set weight_scale; He initialization otherwise
    return cls(**{"weight_scale": "he", **config}, num_classes=num_classes, reg=reg,
               dtype=np.float32)
