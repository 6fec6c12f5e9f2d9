"""`dualnet sweep`: the command line around `Sweep` (its options: dualnet.cli).

Data and retraining are `dualnet train`'s own code: the data is loaded by its loader (with
`--subset N` as its `--num-train N`), the Solver settings a sweep does not search are its
per-dataset defaults, and the best trial is retrained by its command function, into
OUT/best-trial-K, with the trial's seed and hyperparameters.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path

from .. import training
from .plots import plot_history, plot_hyperparameters
from .space import SOLVER_HYPERPARAMETERS, SpaceError, format_dimension
from .study import Sweep

__all__ = ["run"]


def _train_arguments(args, train_defaults, **overrides):
    """`dualnet train`'s parsed options (`train_defaults`, a copy is made) for the sweep's
    model and data, with `overrides`."""
    train_args = copy.copy(train_defaults)
    for key in ("model", "dataset", "backend", "seed", "data_dir", "no_download",
                "image_size", "grayscale", "labels"):
        setattr(train_args, key, getattr(args, key))
    vars(train_args).update(overrides)
    return train_args


def _load_data(train_args) -> dict:
    """The data of every trial (module level, so that worker processes can unpickle it)."""
    return training.load_data(train_args)


def _model_slug(model: str) -> str:
    path, _, function = model.rpartition(":")
    return model if model in training.MODELS else f"{Path(path).stem}-{function}"


def _show(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run(args, train_defaults) -> int:
    """`dualnet sweep` (see the module docs); returns the exit status. `train_defaults`: the
    parsed options of a bare `dualnet train`, the base of every training run here."""
    defaults = training.DATASET_DEFAULTS[training.family(args.dataset)]
    epochs = args.epochs or defaults["epochs"]
    fixed = {k: v for k, v in defaults.items() if k != "epochs"}
    out = Path(args.out or f"runs/sweep-{_model_slug(args.model)}-{training.slug(args.dataset)}")
    storage = args.storage or out / "study.journal"
    data_args = _train_arguments(args, train_defaults, num_train=args.subset,
                                 batch_size=fixed["batch_size"])
    try:
        sweep = Sweep(args.model, functools.partial(_load_data, data_args), args.space,
                      trials=args.trials, epochs=epochs, workers=args.workers, storage=storage,
                      study_name=args.study_name, sampler=args.sampler, pruner=args.pruner,
                      fixed=fixed, seed=args.seed,
                      settings={"dataset": args.dataset, "subset": args.subset})
    except SpaceError as exc:
        raise training.CommandLineError(f"--space: {exc.detail}") from None
    if args.dataset.startswith("folder:") and "batch_size" in sweep.space:
        raise training.CommandLineError("--space: batch_size cannot be searched on a folder "
                                   "dataset (its loader's batches are made once)")
    data_args.batch_size = sweep.fixed.get("batch_size", fixed["batch_size"])
    training.prepare_out_dir(out)
    sweep.backend = training.choose_backend(args.backend).name

    _print_header(args, sweep, epochs)
    try:
        sweep.run()
    except KeyboardInterrupt:
        print(f"\nsweep interrupted: the finished trials are kept in {storage}; run the same "
              "command again to continue", file=sys.stderr)
        raise
    print(sweep.summary())
    written = _write_results(out, sweep, args)
    complete = [t for t in sweep.study.get_trials(deepcopy=False) if t.value is not None]
    if not complete:
        raise RuntimeError("no trial completed (see trials.json): lower the learning rate "
                           "range or prune less (--pruner none)")
    best = sweep.study.best_trial
    hyperparameters = sweep.hyperparameters(best)
    print(f"best: trial {best.number}, validation accuracy {best.value:.4f}, seed "
          f"{best.user_attrs['seed']}: "
          + " ".join(f"{k}={_show(v)}" for k, v in hyperparameters.items()))
    if not args.no_retrain:
        written.append(_retrain(out, args, train_defaults, best, hyperparameters, epochs))
    print(f"wrote to {out}:")
    for name, what in written:
        print(f"  {name:<26} {what}")
    return 0


def _print_header(args, sweep: Sweep, epochs: int) -> None:
    plural = "s" if sweep.threads > 1 else ""
    workers = "1 worker" if sweep.workers == 1 else \
        f"{sweep.workers} workers x {sweep.threads} BLAS/OpenMP thread{plural}"
    subset = f" (first {args.subset} training images)" if args.subset else ""
    print(f"dualnet sweep: {args.model} on {args.dataset}{subset}, {sweep.trials} trials of "
          f"{epochs} epochs, {workers}, backend {sweep.backend}, {args.sampler} sampler, "
          f"{args.pruner} pruner")
    print("  searching " + " ".join(f"{k}={format_dimension(v)}"
                                    for k, v in sweep.space.items()))
    if sweep.fixed:
        print("  fixed     " + " ".join(f"{k}={format_dimension(v)}"
                                        for k, v in sweep.fixed.items()))
    try:
        existing = len(sweep.study.trials)
    except ValueError as exc:  # the storage cannot be opened, or holds another sweep
        raise training.UsageError(str(exc).removeprefix("Sweep: ")) from None
    where = sweep.storage if args.storage is None else "--storage"
    print(f"  study {sweep.study_name!r} in {where}"
          + (f", continuing from {existing} trials" if existing else ""))


def _write_results(out: Path, sweep: Sweep, args) -> list[tuple[str, str]]:
    """trials.json and the two PNGs; returns [(name, description)]."""
    records = sweep.records()
    complete = [r for r in records if r["state"] == "complete"]
    best = max(complete, key=lambda r: r["value"]) if complete else None
    (out / "trials.json").write_text(json.dumps(
        {"settings": sweep.describe(), "best": best, "trials": records}, indent=1))
    title = f"{args.model} on {args.dataset}"
    plot_history(records, out / "optimization_history.png", title=title)
    plot_hyperparameters(records, sweep.space, out / "hyperparameters.png", title=title)
    written = [] if args.storage else [
        ("study.journal", "the Optuna study: the same command continues it")]
    return written + [
        ("trials.json", "every trial: state, hyperparameters, seed, accuracy per epoch"),
        ("optimization_history.png", "validation accuracy per trial, best so far"),
        ("hyperparameters.png", "validation accuracy against each hyperparameter")]


def _retrain(out: Path, args, train_defaults, best, hyperparameters: dict,
             epochs: int) -> tuple[str, str]:
    """Train the best trial again with `dualnet train`'s code, on the full training set,
    into OUT/best-trial-K (kept when it is there already)."""
    folder = out / f"best-trial-{best.number}"
    if (folder / "model.npz").is_file():
        print(f"trial {best.number} was retrained before: {folder}")
        return f"{folder.name}/", "the best trial, retrained (dualnet train's files)"
    solver_settings = {k: hyperparameters[k] for k in SOLVER_HYPERPARAMETERS
                       if k in hyperparameters}
    if "batch_size" in solver_settings:
        solver_settings["batch_size"] = int(solver_settings["batch_size"])
    train_args = _train_arguments(args, train_defaults, epochs=epochs, seed=best.user_attrs["seed"],
                                  out=str(folder), **solver_settings)
    print(f"\nretraining trial {best.number} on the full training set:")
    training.train(train_args, model_options={k: v for k, v in hyperparameters.items()
                                          if k not in SOLVER_HYPERPARAMETERS})
    return f"{folder.name}/", "the best trial, retrained (dualnet train's files)"

