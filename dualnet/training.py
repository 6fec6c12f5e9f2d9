"""One training run as `dualnet train` runs it: the data, the model (by name), the Solver
with the recipe's settings, and the files it writes; also what `dualnet sweep` reuses.

`train(args)` takes the parsed command line (`dualnet.cli`); `train_in_run_folder(args)` is
the command itself: the same run in a folder no other run uses. Mistakes raise `UsageError`
(one line from the command, exit status 1; `CommandLineError`: 2).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .models.named import MODELS, build_model, model_config

__all__ = ["DATASET_DEFAULTS", "MODEL_RECIPES", "SCHEDULES", "UsageError", "CommandLineError",
           "family", "load_data", "input_dim_of", "prepare_out_dir", "choose_backend", "train",
           "train_in_run_folder", "default_out", "slug"]


#: Training defaults per dataset family, used for every option left out on the command line.
#: The digits row is tuned so that the default run (ConvNet) reaches >= 97% test accuracy
#: in well under a minute on two CPU cores.
DATASET_DEFAULTS = {
    "digits": {"epochs": 15, "batch_size": 32, "optimizer": "adam", "lr": 3e-3,
               "lr_decay": 0.8, "reg": 0.0},
    "cifar": {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 1e-3,
              "lr_decay": 0.9, "reg": 1e-4},
    "folder": {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 1e-3,
               "lr_decay": 0.9, "reg": 1e-4},
}


#: Training recipes of the models that come with their own (`dualnet.models.resnet`): they
#: win over DATASET_DEFAULTS, and the command line wins over both.
_CHALLENGE_RECIPE = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "lr_decay": 1.0,
                     "reg": 0.0, "batch_size": 128, "schedule": "warmup-cosine",
                     "augment": True}


MODEL_RECIPES = {"cifar-resnet": _CHALLENGE_RECIPE, "cifar-resnet-small": _CHALLENGE_RECIPE}


#: What `--schedule` names, as `dualnet.optim` schedules (None: lr_decay alone).
SCHEDULES = ("none", "cosine", "warmup-cosine")


class UsageError(Exception):
    """A mistake in what the user asked for; main() prints it as one line."""


class CommandLineError(UsageError):
    """A bad command line found after parsing (e.g. a sweep's space that does not fit its
    model); main() prints it as one line and exits 2, as argparse does."""


def family(spec: str) -> str:
    """The DATASET_DEFAULTS row of a dataset spec: 'digits', 'cifar' or 'folder'."""
    if spec.startswith("folder:"):
        return "folder"
    return "cifar" if spec.startswith("cifar") else spec


def load_data(args) -> dict:
    """The Solver's data dict plus 'X_test', 'y_test', 'class_names', and 'raw_test' (the
    test images before normalization, for the pictures) for --dataset.

    Images are normalized with a per-channel mean/std fitted on the training split (for an
    image folder, on up to 1000 of its images). digits and CIFAR are held in memory; an
    image folder streams its training split through a loader ('train') and keeps val/test
    in memory.
    """
    from . import data

    spec = args.dataset
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"data directory {args.data_dir} does not exist")
    if spec == "digits":
        loaded = data.get_digits_data(subtract_mean=False)  # one fixed split for every run
    elif spec == "cifar10":
        loaded = data.get_CIFAR10_data(subtract_mean=False, root=args.data_dir,
                                       fetch=not args.no_download)
    elif spec.startswith("cifar100"):
        mode = "coarse" if spec.endswith("coarse") else "fine"
        loaded = data.get_CIFAR100_data(subtract_mean=False, label_mode=mode,
                                        root=args.data_dir, fetch=not args.no_download)
    else:
        return _load_folder(spec[len("folder:"):], args)
    if args.num_train is not None:
        loaded["X_train"] = loaded["X_train"][:args.num_train]
        loaded["y_train"] = loaded["y_train"][:args.num_train]
    norm = data.Normalizer().fit(loaded["X_train"])
    loaded["raw_test"] = loaded["X_test"]
    for key in ("X_train", "X_val", "X_test"):
        loaded[key] = norm(loaded[key])
    return loaded


def _load_folder(path: str, args) -> dict:
    from .data import ImageFolder, Normalizer

    folder = ImageFolder(path, labels_file=args.labels, grayscale=args.grayscale,
                         size=args.image_size)
    held_out = min(1000, max(1, len(folder) // 10))
    train, val, test = folder.split(held_out, held_out, seed=args.seed)
    if args.num_train is not None:
        train = train.subset(range(min(args.num_train, len(train))))
    sample = np.random.RandomState(args.seed).permutation(len(train))[:1000]
    norm = Normalizer().fit(train.load(sample)[0])
    X_val, y_val = val.load()
    X_test, y_test = test.load()
    return {"train": train.batches(args.batch_size, seed=args.seed, transform=norm),
            "X_val": norm(X_val), "y_val": y_val, "X_test": norm(X_test), "y_test": y_test,
            "raw_test": X_test, "class_names": folder.class_names}


def input_dim_of(loaded: dict) -> tuple[int, int, int]:
    return tuple(int(d) for d in loaded["X_val"].shape[1:])


def _first_layer_images(model, input_dim):
    """The first layer's weights as images (F, C, h, w): conv filters as they are, affine
    columns reshaped to the input image (the course's picture of a two-layer net)."""
    W1 = model.backend.to_numpy(next(iter(model.params.values())))
    return W1 if W1.ndim == 4 else W1.T.reshape(-1, *input_dim)


def _predict(model, X, batch_size=256) -> np.ndarray:
    """Predicted labels int64 (N,) for X, in batches, as host integers."""
    be = model.backend
    out = []
    for start in range(0, len(X), batch_size):
        scores = model.loss(be.asarray(X[start:start + batch_size], dtype=model.dtype))
        out.append(be.to_numpy(scores.argmax(axis=1)))
    return np.concatenate(out).astype(np.int64)


def prepare_out_dir(path: Path) -> Path:
    """Create `path` and prove it is writable, before any time is spent training."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".dualnet-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to output directory {path}: "
                         f"{exc.strerror or exc}") from None
    return path


def choose_backend(name: str):
    from . import backend

    if name == "auto":
        name = "cupy" if backend.why_unavailable("cupy") is None else "numpy"
    backend.use(name)
    return backend.current()


def train(args, model_options=None) -> int:
    """`dualnet train`; `model_options` (from `dualnet sweep`, retraining its best trial)
    changes the model's constructor config, see dualnet.sweep.presets."""
    from . import backend, checkpoint, vis
    from .solver import Solver

    defaults = {"schedule": "none", "augment": False, "weight_decay": None,
                **DATASET_DEFAULTS[family(args.dataset)], **MODEL_RECIPES.get(args.model, {})}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    optim_config = {"learning_rate": args.lr}
    if args.weight_decay is not None:
        if args.optimizer != "adamw":
            raise UsageError(f"--weight-decay is AdamW's decoupled weight decay; the optimizer "
                             f"is {args.optimizer} (use --reg for L2 regularization)")
        optim_config["weight_decay"] = args.weight_decay
    out = prepare_out_dir(Path(args.out or default_out(args)))
    be = choose_backend(args.backend)
    backend.seed(args.seed)

    loaded = load_data(args)
    input_dim, class_names = input_dim_of(loaded), loaded["class_names"]
    config = model_config(args.model, input_dim)
    if model_options:
        from .sweep.presets import configure

        config = configure(args.model, config, model_options)
    model = build_model(args.model, config, len(class_names), args.reg)
    solver = Solver(model, {k: loaded[k] for k in ("X_train", "y_train", "train", "X_val",
                                                   "y_val") if k in loaded},
                    update_rule=args.optimizer, optim_config=optim_config,
                    lr_schedule=schedule(args.schedule),
                    augment=augmentation(input_dim) if args.augment else None,
                    lr_decay=args.lr_decay, batch_size=args.batch_size,
                    num_epochs=args.epochs, checkpoint_name=str(out / "checkpoint"),
                    keep_checkpoints=args.keep_checkpoints,
                    print_every=sys.maxsize, verbose=True,
                    # a bar redrawn with \r is for terminals; in a log, epoch lines suffice
                    progress=sys.stderr.isatty())
    if args.resume is not None:
        solver.resume(args.resume)
    print(f"dualnet: {args.model} ({model.num_params():,} parameters) on {args.dataset} "
          f"{input_dim}, backend {be.name} ({be.kernels()}), {args.epochs} epochs of "
          f"{solver.iterations_per_epoch} batches of {args.batch_size}")

    start_iteration, started = solver.iteration, time.perf_counter()
    solver.train()
    be.synchronize()
    seconds = time.perf_counter() - started
    images_per_s = (solver.iteration - start_iteration) * args.batch_size / max(seconds, 1e-9)

    y_pred = _predict(model, loaded["X_test"])
    y_test = np.asarray(loaded["y_test"])
    test_acc = float(np.mean(y_pred == y_test))
    written = _write_outputs(out, args, solver, model, config, loaded, y_pred, test_acc,
                             images_per_s, seconds, checkpoint, vis)
    print(f"test accuracy: {test_acc:.2%} ({int((y_pred == y_test).sum())}/{len(y_test)}); "
          f"best val accuracy {solver.best_val_acc:.2%}")
    print(f"training: {seconds:.1f} s, {images_per_s:,.0f} images/s (backend {be.name})")
    print(f"wrote to {out}:")
    for path, what in written:
        print(f"  {path.name:<26} {what}")
    return 0


def schedule(name: str):
    """The `dualnet.optim` schedule `--schedule` names: cosine annealing, after a one-epoch
    linear warm-up for 'warmup-cosine'."""
    from . import optim

    if name == "none":
        return None
    if name == "cosine":
        return optim.cosine()
    return optim.warmup(1, then=optim.cosine())


def augmentation(input_dim):
    """Random crops (padding an eighth of the image, 4 pixels on CIFAR) and horizontal
    flips of each training batch."""
    from .data import augment

    pad = max(1, max(input_dim[1:]) // 8)
    return lambda x: augment(x, pad=pad)


def train_in_run_folder(args) -> int:
    """`dualnet train`: `train` in a run folder that no other run uses (`dualnet.rundir`).

    The folder is `--out`; without it, the folder of the `--resume` checkpoint (continuing
    that run), else a fresh `runs/MODEL-DATASET[-N]`. An `--out` already holding a run is
    refused unless `--resume` continues a checkpoint in it or `--overwrite` clears it. The
    folder is locked for the whole run. A diverging run ends in one line with a hint.
    """
    from . import rundir
    from .solver import DivergenceError

    if args.resume is not None and not Path(args.resume).is_file():
        raise UsageError(f"checkpoint {args.resume} does not exist")
    if args.out is None and args.resume is None:
        out = rundir.fresh(default_out(args))
    else:
        out = prepare_out_dir(Path(args.out or Path(args.resume).parent))
    with rundir.RunLock(out):
        continuing = args.resume is not None and Path(args.resume).resolve().parent == out.resolve()
        found = rundir.run_files(out)
        if found and not continuing:
            if not args.overwrite:
                latest = rundir.latest_checkpoint(out)
                resume = f"continue it with --resume {latest}, " if latest else ""
                raise UsageError(f"output folder {out} already holds a run ({', '.join(found[:3])}"
                                 f"{', ...' if len(found) > 3 else ''}); choose another --out, "
                                 f"{resume}or pass --overwrite to replace it")
            rundir.clear(out)
        args.out = str(out)
        try:
            return train(args)
        except DivergenceError as exc:
            saved = f"; the state before it is in {exc.checkpoint}" if exc.checkpoint else ""
            raise UsageError(f"training diverged: {exc.reason}; lower the learning rate "
                             f"(--lr {args.lr:g} now){saved}") from None


def default_out(args) -> Path:
    """runs/MODEL-DATASET: the model's name (FILE-FUNCTION for a user model) and dataset's."""
    model_slug = args.model if args.model in MODELS else "{0}-{2}".format(
        Path(args.model.rpartition(":")[0]).stem, *args.model.rpartition(":")[1:])
    return Path(f"runs/{model_slug}-{slug(args.dataset)}")


def slug(spec: str) -> str:
    """A folder-name-friendly dataset name: 'digits', 'cifar10', or the image folder's name."""
    if spec.startswith("folder:"):
        return Path(spec[len("folder:"):]).name or "folder"
    return spec


def _write_outputs(out, args, solver, model, config, loaded, y_pred, test_acc,
                   images_per_s, seconds, checkpoint, vis) -> list[tuple[Path, str]]:
    """model.npz, history.json and the PNGs; returns [(path, description)]."""
    class_names = loaded["class_names"]
    input_dim = input_dim_of(loaded)
    host = model.backend.to_numpy
    model_path = checkpoint.save(out / "model.npz", {
        "kind": "model", "model": type(model).__name__, "config": config,
        "num_classes": len(class_names), "class_names": class_names,
        "dataset": args.dataset, "test_accuracy": test_acc,
        "params": {k: host(v) for k, v in model.params.items()}})
    history = {k: getattr(solver, k) for k in ("loss_history", "train_acc_history",
                                               "val_acc_history")}
    history.update(test_accuracy=test_acc, best_val_accuracy=solver.best_val_acc,
                   images_per_second=images_per_s, train_seconds=seconds,
                   backend=model.backend.name,
                   arguments={k: v for k, v in vars(args).items() if k != "func"})
    (out / "history.json").write_text(json.dumps(history, indent=1, default=str))
    title = f"{args.model} on {args.dataset}"
    vis.plot_training_curves(solver, out / "curves.png", title=title)
    vis.plot_filters(_first_layer_images(model, input_dim), out / "filters.png")
    vis.plot_confusion_matrix(loaded["y_test"], y_pred, class_names,
                              out / "confusion_matrix.png",
                              title=f"{title}: test accuracy {test_acc:.1%}")
    vis.plot_misclassified(loaded["raw_test"], loaded["y_test"], y_pred, class_names,
                           out / "misclassified.png")
    last_checkpoint = out / f"checkpoint_epoch_{solver.epoch}.npz"
    return [(model_path, "best parameters + how to rebuild the model (JSON metadata)"),
            (last_checkpoint, "solver state: continue with --resume"),
            (out / "history.json", "loss/accuracy histories, test accuracy, settings"),
            (out / "curves.png", "loss per iteration, train/val accuracy per epoch"),
            (out / "filters.png", "first-layer weights as images"),
            (out / "confusion_matrix.png", "test-set confusion matrix"),
            (out / "misclassified.png", "misclassified test images")]
