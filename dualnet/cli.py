"""The `dualnet` command: `dualnet train`, `dualnet sweep`, `dualnet doctor`, `dualnet bench`.

    dualnet train                                  # ConvNet on the bundled digits
    dualnet train --model fc --dataset cifar10 --epochs 5 --out runs/fc
    dualnet train --dataset folder:eyes/ --image-size 36x120 --grayscale
    dualnet train --resume runs/convnet-digits/checkpoint_epoch_3.npz
    dualnet sweep --model fc --space "lr=1e-4:1e-2:log" "hidden=100,200" --trials 20

Every user mistake (unknown name, missing data, unwritable output folder, corrupt
checkpoint, unavailable backend) ends in one line on stderr and exit status 2 (bad command
line) or 1 (anything else) - never a traceback. `DUALNET_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "DATASET_DEFAULTS", "MODELS"]

MODELS = ("two-layer", "fc", "three-layer", "convnet")
BACKENDS = ("auto", "numpy", "cupy", "cuda-emu")
OPTIMIZERS = ("sgd", "sgd_momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad")

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


class UsageError(Exception):
    """A mistake in what the user asked for; main() prints it as one line."""


class CommandLineError(UsageError):
    """A bad command line found after parsing (e.g. a sweep's space that does not fit its
    model); main() prints it as one line and exits 2, as argparse does."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line gives one line (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# -- datasets -------------------------------------------------------------------------------
def _dataset_spec(text: str) -> str:
    """Validate --dataset: digits, cifar10, cifar100, cifar100-coarse or folder:PATH."""
    if text in ("digits", "cifar10", "cifar100", "cifar100-coarse"):
        return text
    if text.startswith("folder:") and len(text) > len("folder:"):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown dataset {text!r}; choose digits, cifar10, cifar100, cifar100-coarse or "
        "folder:PATH")


def _family(spec: str) -> str:
    """The DATASET_DEFAULTS row of a dataset spec: 'digits', 'cifar' or 'folder'."""
    if spec.startswith("folder:"):
        return "folder"
    return "cifar" if spec.startswith("cifar") else spec


def _image_size(text: str) -> tuple[int, int]:
    """'32' -> (32, 32); '36x120' -> (36, 120) (height x width)."""
    try:
        sides = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        sides = ()
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {text!r}")
    return sides


def _load_data(args) -> dict:
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


def _input_dim(loaded: dict) -> tuple[int, int, int]:
    return tuple(int(d) for d in loaded["X_val"].shape[1:])


# -- models ---------------------------------------------------------------------------------
def _model_config(name: str, input_dim) -> dict:
    """Constructor arguments of the model `name` for inputs (C, H, W)."""
    C, H, W = input_dim
    if name not in MODELS:  # FILE.py:FUNCTION decides its own architecture
        return {"input_dim": list(input_dim), "source": name}
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


def _model_spec(text: str) -> str:
    """Validate --model: a built-in name or FILE.py:FUNCTION."""
    if text in MODELS:
        return text
    path, _, function = text.rpartition(":")
    if path.endswith(".py") and function.isidentifier():
        return text
    raise argparse.ArgumentTypeError(f"unknown model {text!r}: choose one of "
                                     f"{', '.join(MODELS)}, or give FILE.py:FUNCTION")


def _user_function(spec: str):
    """FUNCTION from FILE.py for a 'FILE.py:FUNCTION' spec (this runs the user's file)."""
    import importlib.util

    path, _, function = spec.rpartition(":")
    if not Path(path).is_file():
        raise UsageError(f"model file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    build = getattr(module, function, None)
    if not callable(build):
        raise UsageError(f"{path} defines no function {function!r}")
    return build


def _user_model(spec: str, input_dim, num_classes: int, reg: float, options=None):
    """Call FUNCTION from FILE.py (the user's own code) to build a model for these inputs;
    `options` are more keyword arguments for it (a sweep's model hyperparameters)."""
    build = _user_function(spec)
    model = build(input_dim=tuple(input_dim), num_classes=num_classes, **(options or {}))
    if not (hasattr(model, "loss") and hasattr(model, "params")):
        raise UsageError(f"{spec} returned a {type(model).__name__}, not a model with "
                         "loss(X, y) and params (e.g. a dualnet.nn.Sequential)")
    model.reg = reg
    return model


def _build_model(name: str, config: dict, num_classes: int, reg: float):
    from . import models

    if name not in MODELS:
        return _user_model(name, config["input_dim"], num_classes, reg, config.get("options"))
    cls = {"two-layer": models.TwoLayerNet, "fc": models.FullyConnectedNet,
           "three-layer": models.ThreeLayerConvNet, "convnet": models.ConvNet}[name]
    # a sweep's config may set weight_scale; He initialization otherwise
    return cls(**{"weight_scale": "he", **config}, num_classes=num_classes, reg=reg,
               dtype=np.float32)


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


# -- train ------------------------------------------------------------------------------------
def _prepare_out_dir(path: Path) -> Path:
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


def _choose_backend(name: str):
    from . import backend

    if name == "auto":
        name = "cupy" if backend.why_unavailable("cupy") is None else "numpy"
    backend.use(name)
    return backend.current()


def _train(args, model_options=None) -> int:
    """`dualnet train`; `model_options` (from `dualnet sweep`, retraining its best trial)
    changes the model's constructor config, see dualnet.sweep.presets."""
    from . import backend, checkpoint, vis
    from .solver import Solver

    family = _family(args.dataset)
    for key, value in DATASET_DEFAULTS[family].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.resume is not None and not Path(args.resume).is_file():
        raise UsageError(f"checkpoint {args.resume} does not exist")
    model_slug = args.model if args.model in MODELS else "{0}-{2}".format(
        Path(args.model.rpartition(":")[0]).stem, *args.model.rpartition(":")[1:])
    out = _prepare_out_dir(Path(args.out or f"runs/{model_slug}-{_slug(args.dataset)}"))
    be = _choose_backend(args.backend)
    backend.seed(args.seed)

    loaded = _load_data(args)
    input_dim, class_names = _input_dim(loaded), loaded["class_names"]
    config = _model_config(args.model, input_dim)
    if model_options:
        from .sweep.presets import configure

        config = configure(args.model, config, model_options)
    model = _build_model(args.model, config, len(class_names), args.reg)
    solver = Solver(model, {k: loaded[k] for k in ("X_train", "y_train", "train", "X_val",
                                                   "y_val") if k in loaded},
                    update_rule=args.optimizer, optim_config={"learning_rate": args.lr},
                    lr_decay=args.lr_decay, batch_size=args.batch_size,
                    num_epochs=args.epochs, checkpoint_name=str(out / "checkpoint"),
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


def _slug(spec: str) -> str:
    """A folder-name-friendly dataset name: 'digits', 'cifar10', or the image folder's name."""
    if spec.startswith("folder:"):
        return Path(spec[len("folder:"):]).name or "folder"
    return spec


def _write_outputs(out, args, solver, model, config, loaded, y_pred, test_acc,
                   images_per_s, seconds, checkpoint, vis) -> list[tuple[Path, str]]:
    """model.npz, history.json and the PNGs; returns [(path, description)]."""
    class_names = loaded["class_names"]
    input_dim = _input_dim(loaded)
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


# -- sweep --------------------------------------------------------------------------------------
def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _add_sweep_parser(commands) -> None:
    """`dualnet sweep`'s options; the command is dualnet.sweep.command.run."""
    sweep = commands.add_parser(
        "sweep", help="search hyperparameters (Optuna), then retrain the best trial",
        description="Run --trials trials of --epochs epochs each (Solver runs, pruned when "
        "they lag), print the best, plot the search, and retrain the best on the full "
        "training set into OUT/best-trial-K as dualnet train does. Rerun the same command to "
        "continue an interrupted sweep.")
    sweep.add_argument("--model", type=_model_spec, default="convnet",
                       help=f"{' | '.join(MODELS)} | FILE.py:FUNCTION (FUNCTION receives "
                       "the model hyperparameters as keyword arguments)")
    sweep.add_argument("--dataset", type=_dataset_spec, default="digits",
                       help="digits | cifar10 | cifar100 | cifar100-coarse | folder:PATH")
    sweep.add_argument("--space", nargs="+", metavar="NAME=SPEC",
                       help="e.g. lr=1e-4:1e-2:log reg=0:1e-2 hidden=100,200 "
                       "optimizer=sgd_momentum (fixed); default: the model's space")
    sweep.add_argument("--trials", type=_at_least_one, default=20)
    sweep.add_argument("--epochs", type=_at_least_one,
                       help="epochs per trial and for the retraining (default: the "
                       "dataset's, as dualnet train)")
    sweep.add_argument("--workers", type=_at_least_one, default=1,
                       help="parallel processes on this machine")
    sweep.add_argument("--out", help="output folder (default runs/sweep-MODEL-DATASET)")
    sweep.add_argument("--storage", metavar="URL",
                       help="database shared by several machines, e.g. "
                       "postgresql+psycopg://user:password@host/db (default: the journal "
                       "file OUT/study.journal)")
    sweep.add_argument("--study-name", default="dualnet-sweep",
                       help="the study's name in the storage")
    sweep.add_argument("--sampler", choices=("tpe", "random"), default="tpe")
    sweep.add_argument("--pruner", choices=("median", "asha", "none"), default="median")
    sweep.add_argument("--subset", type=_at_least_one, metavar="N",
                       help="search on the first N training images; retrain on all")
    sweep.add_argument("--seed", type=int, default=0, help="trial k is seeded with SEED + k")
    sweep.add_argument("--backend", choices=BACKENDS, default="auto")
    sweep.add_argument("--no-retrain", action="store_true",
                       help="stop after the search")
    sweep.add_argument("--data-dir", help="as for dualnet train")
    sweep.add_argument("--no-download", action="store_true", help="as for dualnet train")
    sweep.add_argument("--image-size", type=_image_size, metavar="HxW",
                       help="folder datasets, as for dualnet train")
    sweep.add_argument("--grayscale", action="store_true", help="folder datasets: 1 channel")
    sweep.add_argument("--labels", metavar="FILE", help="folder datasets: a labels file")
    sweep.set_defaults(func=_sweep)


def _sweep(args) -> int:
    from .sweep.command import run

    return run(args)


# -- doctor and bench -------------------------------------------------------------------------
def _doctor(args) -> int:
    from .doctor import doctor

    print(doctor())
    return 0


#: The benchmark suite's entry point, in the source checkout beside the package.
BENCH_ENTRY = "run_all.py"


def _bench_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "bench"


def _bench(args) -> int:
    """Run bench/run_all.py with this Python and the remaining arguments; its exit status."""
    import subprocess

    script = _bench_dir() / BENCH_ENTRY
    if not script.is_file():
        raise UsageError(f"the benchmark suite is not here ({script} is missing); it lives "
                         "in bench/ of a source checkout: git clone the repository and "
                         "pip install -e '.[bench]' there")
    # an argument list, never a shell string: nothing the user typed is interpreted
    return subprocess.run([sys.executable, str(script), *args.bench_args]).returncode


# -- entry point ------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dualnet", description="CS231n-style deep learning on NumPy+Cython "
                     "or CuPy+CUDA.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a model and write its pictures",
                                description="Train a model; options left out take the "
                                "dataset's defaults (dualnet.cli.DATASET_DEFAULTS).")
    train.add_argument("--model", type=_model_spec, default="convnet",
                       help=f"{' | '.join(MODELS)} | FILE.py:FUNCTION (your own model: "
                       "FUNCTION(input_dim=(C, H, W), num_classes=K) returns, e.g., a "
                       "dualnet.nn.Sequential)")
    train.add_argument("--dataset", type=_dataset_spec, default="digits",
                       help="digits | cifar10 | cifar100 | cifar100-coarse | folder:PATH")
    train.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="auto: cupy when a GPU works, else numpy")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--lr", type=float, help="learning rate")
    train.add_argument("--lr-decay", type=float, help="learning-rate factor per epoch")
    train.add_argument("--reg", type=float, help="L2 regularization strength")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="output folder (default runs/MODEL-DATASET)")
    train.add_argument("--resume", metavar="CHECKPOINT",
                       help="continue from a checkpoint_epoch_K.npz of the same settings")
    train.add_argument("--data-dir", help="folder holding (or receiving) the CIFAR files; "
                       "default $DUALNET_DATA or ~/.cache/dualnet")
    train.add_argument("--no-download", action="store_true",
                       help="fail instead of downloading CIFAR when it is missing")
    train.add_argument("--num-train", type=int, metavar="N",
                       help="train on the first N training images only (quick runs)")
    train.add_argument("--image-size", type=_image_size, metavar="HxW",
                       help="folder datasets: resize every image")
    train.add_argument("--grayscale", action="store_true", help="folder datasets: 1 channel")
    train.add_argument("--labels", metavar="FILE",
                       help="folder datasets: a labels file instead of class sub-folders")
    train.set_defaults(func=_train)
    _add_sweep_parser(commands)

    commands.add_parser("doctor", help="report versions, backends and why any is missing"
                        ).set_defaults(func=_doctor)
    commands.add_parser("bench", help="run the bench/ suite and print the ratio table; "
                        "further arguments go to the suite").set_defaults(func=_bench)
    return parser


def main(argv=None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); returns the exit status."""
    parser = _parser()
    # `dualnet bench ARGS...` hands ARGS to the suite; any other command takes none extra
    args, extra = parser.parse_known_args(argv)
    args.bench_args = extra
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .backend import BackendUnavailable

    expected = (UsageError, BackendUnavailable, OSError, ValueError, RuntimeError,
                FloatingPointError)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("dualnet: interrupted", file=sys.stderr)
        return 130
    except expected as exc:
        if os.environ.get("DUALNET_DEBUG"):
            raise
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        more = " (DUALNET_DEBUG=1 shows the rest)" if len(lines) > 1 else ""
        print(f"dualnet: error: {lines[0]}{more}", file=sys.stderr)
        return 2 if isinstance(exc, CommandLineError) else 1


if __name__ == "__main__":
    sys.exit(main())
