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
import math
import os
import sys
from pathlib import Path

from .models.named import MODELS
from .training import SCHEDULES, CommandLineError, UsageError, train_in_run_folder

__all__ = ["main"]

BACKENDS = ("auto", "numpy", "cupy", "cuda-emu")
OPTIMIZERS = ("sgd", "sgd_momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad")


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


# -- models ---------------------------------------------------------------------------------


def _model_spec(text: str) -> str:
    """Validate --model: a built-in name or FILE.py:FUNCTION."""
    if text in MODELS:
        return text
    path, _, function = text.rpartition(":")
    if path.endswith(".py") and function.isidentifier():
        return text
    raise argparse.ArgumentTypeError(f"unknown model {text!r}: choose one of "
                                     f"{', '.join(MODELS)}, or give FILE.py:FUNCTION")


# -- sweep --------------------------------------------------------------------------------------
def _add_data_options(command) -> None:
    """The dataset and where its files come from: the same options for train and sweep."""
    command.add_argument("--dataset", type=_dataset_spec, default="digits",
                         help="digits | cifar10 | cifar100 | cifar100-coarse | folder:PATH")
    command.add_argument("--data-dir", help="folder holding (or receiving) the CIFAR files; "
                         "default $DUALNET_DATA or ~/.cache/dualnet")
    command.add_argument("--no-download", action="store_true",
                         help="fail instead of downloading CIFAR when it is missing")
    command.add_argument("--image-size", type=_image_size, metavar="HxW",
                         help="folder datasets: resize every image")
    command.add_argument("--grayscale", action="store_true",
                         help="folder datasets: 1 channel")
    command.add_argument("--labels", metavar="FILE",
                         help="folder datasets: a labels file instead of class sub-folders")


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
    sweep.add_argument("--space", nargs="+", metavar="NAME=SPEC",
                       help="e.g. lr=1e-4:1e-2:log reg=0:1e-2 hidden=100,200 "
                       "optimizer=sgd_momentum (fixed); default: the model's space")
    sweep.add_argument("--trials", type=_count, default=20)
    sweep.add_argument("--epochs", type=_count,
                       help="epochs per trial and for the retraining (default: the "
                       "dataset's, as dualnet train)")
    sweep.add_argument("--workers", type=_count, default=1,
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
    sweep.add_argument("--subset", type=_count, metavar="N",
                       help="search on the first N training images; retrain on all")
    sweep.add_argument("--seed", type=int, default=0, help="trial k is seeded with SEED + k")
    sweep.add_argument("--backend", choices=BACKENDS, default="auto")
    sweep.add_argument("--no-retrain", action="store_true",
                       help="stop after the search")
    _add_data_options(sweep)
    sweep.set_defaults(func=_sweep)


def _sweep(args) -> int:
    from .sweep.command import run

    return run(args, _parser().parse_args(["train"]))


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
def _count(text: str) -> int:
    """An integer >= 1 (epochs, batch size, ...)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _number(text: str, minimum: float, strict: bool) -> float:
    """A finite number > minimum (strict) or >= minimum."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
    return value


def _positive(text: str) -> float:
    """A finite number > 0 (learning rate, its decay)."""
    return _number(text, 0, strict=True)


def _non_negative(text: str) -> float:
    """A finite number >= 0 (regularization strength)."""
    return _number(text, 0, strict=False)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dualnet", description="CS231n-style deep learning on NumPy+Cython "
                     "or CuPy+CUDA.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a model and write its pictures",
                                description="Train a model; options left out take the "
                                "model's recipe (dualnet.training.MODEL_RECIPES: the cifar-resnet "
                                "presets), else the dataset's defaults "
                                "(dualnet.training.DATASET_DEFAULTS).")
    train.add_argument("--model", type=_model_spec, default="convnet",
                       help=f"{' | '.join(MODELS)} | FILE.py:FUNCTION (your own model: "
                       "FUNCTION(input_dim=(C, H, W), num_classes=K) returns, e.g., a "
                       "dualnet.nn.Sequential)")
    train.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="auto: cupy when a GPU works, else numpy")
    train.add_argument("--epochs", type=_count)
    train.add_argument("--batch-size", type=_count)
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--lr", type=_positive, help="learning rate")
    train.add_argument("--lr-decay", type=_positive, help="learning-rate factor per epoch")
    train.add_argument("--reg", type=_non_negative, help="L2 regularization strength")
    train.add_argument("--weight-decay", type=_non_negative,
                       help="AdamW's decoupled weight decay (--optimizer adamw)")
    train.add_argument("--schedule", choices=SCHEDULES,
                       help="learning-rate schedule: cosine annealing, after a one-epoch "
                       "warm-up for warmup-cosine (on top of --lr-decay)")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction,
                       help="random crops and horizontal flips of the training images")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="output folder (default runs/MODEL-DATASET, or "
                       "runs/MODEL-DATASET-2, -3, ... when that exists); one that holds a run "
                       "is refused unless --resume continues it or --overwrite is given")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run in --out (its outputs and checkpoints)")
    train.add_argument("--resume", metavar="CHECKPOINT",
                       help="continue from a checkpoint_epoch_K.npz of the same settings "
                       "(in its own folder unless --out is given)")
    train.add_argument("--keep-checkpoints", type=_count, default=1, metavar="N",
                       help="keep the N most recent epoch checkpoints and the best one "
                       "(default 1)")
    train.add_argument("--num-train", type=_count, metavar="N",
                       help="train on the first N training images only (quick runs)")
    _add_data_options(train)
    train.set_defaults(func=train_in_run_folder)
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
