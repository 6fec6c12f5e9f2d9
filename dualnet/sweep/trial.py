"""One trial of a sweep: the model for a set of hyperparameters, trained by the Solver.

`train` is what every trial runs and what `Sweep.retrain` runs again, so a trial's seed
and hyperparameters reproduce its validation accuracy exactly on the CPU. Its steps and
their order are those of `dualnet train` (seed, build the model, construct the Solver,
train), so `dualnet sweep`'s retraining through `dualnet train`'s code reproduces it too.
"""

from __future__ import annotations

import sys

import numpy as np

from .. import backend
from ..solver import Solver
from .presets import configure
from .space import SOLVER_HYPERPARAMETERS

__all__ = ["data_shape", "build_model", "train", "SOLVER_DATA_KEYS"]

#: The entries of a data dict that the Solver reads; others (X_test, class_names) stay out.
SOLVER_DATA_KEYS = ("X_train", "y_train", "train", "X_val", "y_val")


def data_shape(data: dict) -> tuple[tuple[int, ...], int]:
    """((C, H, W) or (D,), number of classes) of a Solver data dict.

    The classes are `len(data['class_names'])` when given, else one more than the largest
    label in y_val (and y_train when there is one).
    """
    input_dim = tuple(int(d) for d in data["X_val"].shape[1:])
    if data.get("class_names") is not None:
        return input_dim, len(data["class_names"])
    labels = [data[k] for k in ("y_val", "y_train") if data.get(k) is not None]
    return input_dim, int(max(np.max(backend.of(y).to_numpy(y)) for y in labels)) + 1


def build_model(model, hyperparameters: dict, input_dim, num_classes: int):
    """The model of one trial.

    Args:
        model: a preset name ('two-layer', 'fc', 'three-layer', 'convnet', built as
            `dualnet train` builds it, then changed by `presets.configure`), a
            'FILE.py:FUNCTION' spec, or a callable `f(input_dim=, num_classes=, **options)`.
        hyperparameters: {name: value}; the names outside SOLVER_HYPERPARAMETERS are the
            model's options, and 'reg' (when present) sets the model's L2 strength.
        input_dim: (C, H, W), or (D,) for flat inputs. num_classes: K.

    Returns:
        (model, constructor config or None for a callable).
    """
    options = {k: v for k, v in hyperparameters.items() if k not in SOLVER_HYPERPARAMETERS}
    reg = hyperparameters.get("reg")
    if callable(model):
        net = model(input_dim=tuple(input_dim), num_classes=num_classes, **options)
        if reg is not None:
            net.reg = reg
        return net, None
    from ..models.named import build_model, model_config

    dims = tuple(input_dim) if len(input_dim) == 3 else (int(np.prod(input_dim)), 1, 1)
    config = configure(model, model_config(model, dims), options)
    return build_model(model, config, num_classes, 0.0 if reg is None else reg), config


def train(model, data: dict, hyperparameters: dict, epochs: int, seed: int, *,
          on_check=None, checkpoint_name=None) -> Solver:
    """Seed, build the model, and train it for `epochs` epochs with the Solver.

    Solver settings absent from `hyperparameters` keep the Solver's defaults; the Solver is
    quiet (no bar, no lines) and keeps the best validation parameters, as `dualnet train`.

    Args:
        model: see `build_model`. data: a Solver data dict (see `dualnet.solver`).
        hyperparameters: {name: value} for the Solver (SOLVER_HYPERPARAMETERS) and the model.
        epochs: epochs to train. seed: `dualnet.seed(seed)` before the model is built.
        on_check: the Solver's `on_check(solver)` hook (a sweep reports and prunes there).
        checkpoint_name: the Solver's checkpoint prefix (see `dualnet.solver`).

    Returns:
        the trained Solver; `solver.model` holds the best parameters, `solver.best_val_acc`
        their validation accuracy.

    Raises:
        FloatingPointError: (the Solver's `DivergenceError`) the loss went NaN or infinite,
            or grew far beyond its start.
    """
    backend.seed(seed)
    input_dim, num_classes = data_shape(data)
    net, _ = build_model(model, hyperparameters, input_dim, num_classes)
    settings = {}
    if "optimizer" in hyperparameters:
        settings["update_rule"] = hyperparameters["optimizer"]
    if "lr" in hyperparameters:
        settings["optim_config"] = {"learning_rate": hyperparameters["lr"]}
    if "lr_decay" in hyperparameters:
        settings["lr_decay"] = hyperparameters["lr_decay"]
    if "batch_size" in hyperparameters:
        settings["batch_size"] = int(hyperparameters["batch_size"])
    solver = Solver(net, {k: data[k] for k in SOLVER_DATA_KEYS if k in data},
                    num_epochs=epochs, checkpoint_name=checkpoint_name,
                    print_every=sys.maxsize, verbose=False, progress=False,
                    on_check=on_check, **settings)
    solver.train()
    return solver
