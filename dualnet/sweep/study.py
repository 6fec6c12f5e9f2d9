"""`Sweep`: a hyperparameter search whose trials are Solver runs, on Optuna.

::

    from dualnet.sweep import Sweep
    from dualnet.data import get_digits_data

    sweep = Sweep("fc", get_digits_data(), {"lr": "1e-4:1e-2:log", "hidden": [100, 200]},
                  trials=20, epochs=5, storage="runs/fc-sweep.journal")
    sweep.run()                  # a bar over trials; Ctrl-C, then run() again, resumes
    print(sweep.summary())       # the best trials as a table
    solver = sweep.retrain()     # the best trial again: same seed, same validation accuracy

How a trial runs: its hyperparameters are the fixed values plus one draw of the space from
the sampler (TPE or random); its seed is `seed + trial.number`; `dualnet.sweep.trial.train`
trains it, reporting the validation accuracy after every epoch to the pruner, which stops a
trial that lags the others (median rule, or successive halving, 'asha'). The trial's value
is its best validation accuracy. A trial whose loss goes NaN or infinite is recorded as
failed (user attribute 'diverged' holds why) and counts as one of the `trials`; the sweep
goes on.

Storage and resuming: the study lives in `storage` (a journal file path, or a database URL
such as ``postgresql+psycopg://user:password@host/db``; in memory when None). A study that
exists there is continued when its settings (model, space, fixed values, epochs, and
`settings`) match, else refused. `run()` works until `trials` trials are finished or running:
finished trials are kept; a trial cut short by Ctrl-C is marked failed (user attribute
'interrupted') and run again with new values. On a journal file, `run()` holds an exclusive
lock (flock) on it, so a second sweep on the same file refuses to start, and trials that an
earlier, killed run left 'running' are marked failed. On a database, Optuna's heartbeat marks
a dead worker's trial failed after `grace_period` seconds.

Workers: `workers=W` runs W processes on this machine (the 'spawn' method: each imports
dualnet and loads the data itself, from `data` when it is a callable, else from a pickled
copy). They share the storage (the journal file is safe for several processes; prefer it to
SQLite, whose locking Optuna warns about); a lock makes counting the trials and starting the
next one one step, so together they run exactly `trials`. Processes on other machines share a
database URL; each machine's workers stop starting trials once the study holds `trials`, so
machines that start a trial at the same moment can exceed it by one trial each. Each worker
limits BLAS and OpenMP to `threads` threads (threadpoolctl; default: the cores available
divided by W, at least 1): W processes each using every core oversubscribe the machine.
Measured on 2 cores, 4 ConvNet trials on digits: 2 workers x 1 thread 4.8-5.4 s, 2 workers
x 2 threads 6.9-8.5 s, 1 worker x 2 threads 6.9-14.8 s (a shared machine, hence the
spread). A single worker runs in this process, with its threads as they are.
"""

from __future__ import annotations

import contextlib
import copy
import io
import multiprocessing
import os
import tempfile
import threading
import warnings

import numpy as np
import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from .. import backend as backends
from . import trial as trial_module
from .presets import default_space, model_hyperparameters
from .space import SOLVER_HYPERPARAMETERS, Choice, Range, SpaceError, format_dimension, parse_space
from .storage import exclusive_journal, is_journal, one_line, open_storage
from .workers import cores, run_workers

__all__ = ["Sweep", "open_storage", "SAMPLERS", "PRUNERS"]

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "asha", "none")
_SETTINGS_ATTR = "dualnet_settings"


class Sweep:
    """A hyperparameter search over Solver runs (see the module docs).

    Args:
        model: a preset name ('two-layer', 'fc', 'three-layer', 'convnet'), a
            'FILE.py:FUNCTION' spec, or a callable `f(input_dim=(C, H, W), num_classes=K,
            **hyperparameters)` returning a model (for workers > 1: a module-level function).
        data: a Solver data dict ('X_train', 'y_train' or a 'train' loader; 'X_val', 'y_val';
            optional 'class_names'), or a callable returning one (workers then load the data
            themselves instead of receiving a pickled copy).
        space: the searched hyperparameters: 'NAME=SPEC' strings or {name: SPEC}
            (`dualnet.sweep.space`); None for the model's default space. Single values in it
            are fixed.
        trials: trials to finish (pruned and diverged ones count; interrupted ones do not).
        epochs: epochs per trial.
        workers: processes on this machine (more than 1 needs a storage).
        storage: see `open_storage`.
        study_name: the study's name in the storage.
        sampler: 'tpe', 'random' or an Optuna sampler.
        pruner: 'median' (Optuna's MedianPruner after 5 complete trials), 'asha' (successive
            halving), 'none', or an Optuna pruner.
        fixed: {name: value} shared by every trial; Solver settings in neither `space` nor
            `fixed` keep the Solver's defaults.
        seed: trial k is seeded with seed + k; the samplers are seeded from it too.
        backend: the dualnet backend name the trials run on (None: the current default).
        threads: BLAS/OpenMP threads per worker process (default: cores // workers).
        progress: show a bar over trials.
        settings: more JSON values a continued study must have been made with (the command
            line records the dataset and the subset there).

    Raises:
        ValueError: (SpaceError) a malformed space or a hyperparameter the model does not
            take; nonsense counts; workers > 1 without a storage; a storage that cannot be
            opened (when the study is first used).
    """

    def __init__(self, model, data, space=None, trials=20, epochs=5, *, workers=1,
                 storage=None, study_name="dualnet-sweep", sampler="tpe", pruner="median",
                 fixed=None, seed=0, backend=None, threads=None, progress=True, settings=None):
        for name, value in (("trials", trials), ("epochs", epochs), ("workers", workers)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Sweep: {name} must be an integer >= 1, got {value!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"Sweep: threads must be an integer >= 1, got {threads!r}")
        if workers > 1 and storage is None:
            raise ValueError(f"Sweep: workers={workers} share the study through a storage; "
                             "pass storage= a journal file path or a database URL")
        if isinstance(sampler, str) and sampler not in SAMPLERS:
            raise ValueError(f"Sweep: sampler must be one of {SAMPLERS} or an Optuna "
                             f"sampler, got {sampler!r}")
        if isinstance(pruner, str) and pruner not in PRUNERS:
            raise ValueError(f"Sweep: pruner must be one of {PRUNERS} or an Optuna pruner, "
                             f"got {pruner!r}")
        if not (callable(model) or isinstance(model, str)):
            raise TypeError(f"Sweep: model must be a preset name, 'FILE.py:FUNCTION' or a "
                            f"callable, got {type(model).__name__}")
        if not (callable(data) or hasattr(data, "keys")):
            raise TypeError(f"Sweep: data must be a Solver data dict or a callable returning "
                            f"one, got {type(data).__name__}")
        self.model = model
        self.data = data
        self.space, space_fixed = parse_space(default_space(model) if space is None else space)
        self.fixed = {k: v for k, v in {**(fixed or {}), **space_fixed}.items()
                      if k not in self.space}  # a searched name is not fixed
        self._check_names()
        self.trials, self.epochs, self.workers = int(trials), int(epochs), int(workers)
        self.storage, self.study_name = storage, study_name
        self.sampler, self.pruner = sampler, pruner
        self.seed, self.backend, self.progress = int(seed), backend, progress
        self.threads = threads or max(1, cores() // self.workers)
        self.settings = dict(settings or {})
        self._study = None
        self._loaded = None

    # -- checks -------------------------------------------------------------------------
    def _check_names(self):
        """SpaceError for a hyperparameter that is neither the Solver's nor the model's."""
        accepted = model_hyperparameters(self.model)
        for name in [*self.space, *self.fixed]:
            if name in SOLVER_HYPERPARAMETERS or accepted is None or name in accepted:
                continue
            takes = ", ".join([*SOLVER_HYPERPARAMETERS, *accepted])
            raise SpaceError(f"model {_model_label(self.model)} has no hyperparameter "
                             f"{name!r}; it takes {takes}")
        optimizer = self.space.get("optimizer")
        values = optimizer.values if isinstance(optimizer, Choice) else \
            [self.fixed["optimizer"]] if "optimizer" in self.fixed else []
        if isinstance(optimizer, Range):
            raise SpaceError("optimizer is an update rule's name, not a number range")
        from .. import optim

        for value in values:
            if not (isinstance(value, str) and not value.startswith("_")
                    and callable(getattr(optim, value, None))):
                raise SpaceError(f"optimizer {value!r} is not an update rule of dualnet.optim "
                                 "(sgd, sgd_momentum, nesterov, rmsprop, adam, adamw, adagrad)")

    def describe(self) -> dict:
        """The settings a continued study must share: JSON values."""
        return {"model": _model_label(self.model), "epochs": self.epochs,
                "space": {k: format_dimension(v) for k, v in self.space.items()},
                "fixed": {k: format_dimension(v) for k, v in self.fixed.items()},
                **self.settings}

    # -- the study ------------------------------------------------------------------------
    @property
    def study(self) -> optuna.Study:
        """The Optuna study (created in the storage, or continued after a settings check)."""
        if self._study is None:
            self._study = self._open_study(worker=0)
        return self._study

    def _open_study(self, worker: int) -> optuna.Study:
        with _quiet_optuna():
            study = optuna.create_study(storage=open_storage(self.storage),
                                        study_name=self.study_name, direction="maximize",
                                        pruner=self._make_pruner(), load_if_exists=True)
        mine = self.describe()
        theirs = study.user_attrs.get(_SETTINGS_ATTR)
        if theirs is None:
            study.set_user_attr(_SETTINGS_ATTR, mine)
        elif theirs != mine:
            diff = "; ".join(f"{k} {theirs.get(k)!r} there, {mine.get(k)!r} here"
                             for k in sorted(set(theirs) | set(mine))
                             if theirs.get(k) != mine.get(k))
            raise ValueError(f"Sweep: study {self.study_name!r} in {self.storage} was made "
                             f"with other settings ({diff}); use another storage or study "
                             "name")
        # a sampler of its own for each process, seeded apart so that workers (and a
        # resumed run) do not repeat each other's draws
        study.sampler = self._make_sampler(worker, len(study.trials))
        return study

    def _make_sampler(self, worker: int, existing: int):
        if not isinstance(self.sampler, str):
            sampler = copy.deepcopy(self.sampler)
            if worker or existing:
                sampler.reseed_rng()
            return sampler
        seed = int(np.random.SeedSequence([self.seed, existing, worker]).generate_state(1)[0])
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        with warnings.catch_warnings():  # constant_liar is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # constant_liar: running trials count as bad guesses, so that parallel workers
            # do not all sample next to the same promising point
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def _make_pruner(self):
        if not isinstance(self.pruner, str):
            return self.pruner
        if self.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
        if self.pruner == "asha":
            return optuna.pruners.SuccessiveHalvingPruner()
        return optuna.pruners.NopPruner()

    # -- running --------------------------------------------------------------------------
    def _loaded_data(self) -> dict:
        if self._loaded is None:
            data = self.data() if callable(self.data) else self.data
            if data.get("train") is not None and "batch_size" in self.space:
                raise ValueError("Sweep: batch_size cannot be searched when data has a "
                                 "'train' loader (its batches are made by the loader)")
            self._loaded = data
        return self._loaded

    def _objective(self, trial: optuna.Trial) -> float:
        hyperparameters = {**self.fixed,
                           **{name: dim.suggest(trial, name) for name, dim in self.space.items()}}
        seed = self.seed + trial.number
        trial.set_user_attr("seed", seed)

        def report(solver):
            if solver.epoch == 0:  # the check after the first iteration: not an epoch
                return
            accuracy = solver.val_acc_history[-1]
            trial.report(accuracy, solver.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation accuracy {accuracy:.4f} after epoch "
                                         f"{solver.epoch}")

        # The Solver saves its state when it diverges or is interrupted, and says so on
        # stderr; for a trial that state is of no use (a trial restarts from scratch), so it
        # goes to a scratch folder and the message nowhere.
        with tempfile.TemporaryDirectory(prefix="dualnet-trial-") as scratch, \
                contextlib.redirect_stderr(io.StringIO()):
            try:
                solver = trial_module.train(
                    self.model, self._loaded_data(), hyperparameters, self.epochs, seed,
                    on_check=report, checkpoint_name=os.path.join(scratch, "solver"))
            except FloatingPointError as exc:
                # the Solver's DivergenceError says in `reason` what happened, in a few words
                trial.set_user_attr("diverged", (getattr(exc, "reason", None)
                                                 or one_line(exc))[:500])
                raise
        return float(solver.best_val_acc)

    def _work(self, study: optuna.Study, lock, on_trial=None) -> None:
        """Run trials in this process until the study counts `trials` of them.

        `lock` (shared by this machine's workers) is held from counting the trials until
        the next trial exists, so that together they never start more than `trials`.
        """
        parent = multiprocessing.parent_process()
        while parent is None or parent.is_alive():  # a worker whose sweep died stops
            lock.acquire()
            held = True

            def objective(trial):
                nonlocal held
                try:
                    lock.release()
                    held = False
                    return self._objective(trial)
                except KeyboardInterrupt:  # Ctrl-C, wherever in the trial it landed
                    trial.set_user_attr("interrupted", True)
                    raise

            try:
                if _count(study, running=True) >= self.trials:
                    return
                study.optimize(objective, n_trials=1, catch=(FloatingPointError,))
            finally:
                if held:
                    lock.release()
            if on_trial is not None:
                on_trial(study)

    def run(self) -> optuna.Study:
        """Run trials until `trials` of them are finished; returns the Optuna study.

        A KeyboardInterrupt (Ctrl-C) marks the running trials failed ('interrupted') and
        propagates; calling `run()` again (or rerunning the same command) continues.

        Raises:
            ValueError: the storage cannot be opened, holds a study made with other
                settings, or another sweep is running on the same journal file.
            RuntimeError: a worker process failed (its error is in the message).
        """
        study = self.study
        journal = exclusive_journal(self.storage, study) if is_journal(self.storage) else \
            contextlib.nullcontext()
        with journal, _quiet_optuna():
            bar = tqdm(total=self.trials, initial=min(_count(study), self.trials),
                       unit="trial", desc="sweep", disable=not self.progress,
                       dynamic_ncols=True)
            try:
                if self.workers == 1:
                    self._in_this_process(study, bar)
                else:
                    run_workers(self, lambda: _update(bar, study))
            finally:
                bar.close()
        return study

    def _in_this_process(self, study, bar):
        if self.backend is not None:
            backends.use(self.backend)
        self._work(study, threading.Lock(), on_trial=lambda s: _update(bar, s))

    def __getstate__(self):
        """What a worker process receives: no open study; no loaded data when it can load
        the data itself."""
        state = dict(self.__dict__, _study=None)
        if callable(self.data):
            state["_loaded"] = None
        return state

    # -- results --------------------------------------------------------------------------
    def hyperparameters(self, trial=None) -> dict:
        """{name: value} of `trial` (default: the best), fixed values included."""
        trial = self.study.best_trial if trial is None else trial
        return {**self.fixed, **trial.params}

    def retrain(self, trial=None, data=None, epochs=None):
        """Train `trial`'s hyperparameters again with its seed (default: the best trial).

        With the same data and epochs the validation accuracy equals the trial's value (on
        the CPU). Args: data: another Solver data dict (e.g. the full training set after a
        search on a subset); epochs: another epoch count. Returns the trained Solver.
        """
        trial = self.study.best_trial if trial is None else trial
        return trial_module.train(self.model, self._loaded_data() if data is None else data,
                                  self.hyperparameters(trial),
                                  self.epochs if epochs is None else epochs,
                                  trial.user_attrs["seed"])

    def records(self) -> list[dict]:
        """Every trial as JSON values: number, state, value, params, seed, the validation
        accuracy per epoch, seconds, and why it failed ('diverged' or 'interrupted')."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
                if t.datetime_complete and t.datetime_start else None
            # a failed trial that did not diverge was cut short (Ctrl-C, a killed process)
            failure = t.user_attrs.get("diverged", "interrupted") \
                if t.state == TrialState.FAIL else None
            out.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                        "params": t.params, "seed": t.user_attrs.get("seed"),
                        "val_acc_per_epoch": {str(k): v for k, v in
                                              sorted(t.intermediate_values.items())},
                        "seconds": seconds, "failure": failure})
        return out

    def summary(self, top=5) -> str:
        """A table of the `top` complete trials by validation accuracy, with the counts of
        complete, pruned, diverged and interrupted trials."""
        trials = self.study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        diverged = sum(1 for t in trials if "diverged" in t.user_attrs)
        counts = (f"{len(trials)} trials: {states.count(TrialState.COMPLETE)} complete, "
                  f"{states.count(TrialState.PRUNED)} pruned, {diverged} diverged, "
                  f"{states.count(TrialState.FAIL) - diverged} interrupted")
        complete = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                          key=lambda t: -t.value)[:top]
        if not complete:
            return f"{counts}; none complete"
        names = list(self.space)
        header = ["trial", "val_acc", *names, "seconds"]
        rows = [[str(t.number), f"{t.value:.4f}", *(_show(t.params.get(n)) for n in names),
                 f"{(t.datetime_complete - t.datetime_start).total_seconds():.1f}"]
                for t in complete]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
                 for r in [header, *rows]]
        return f"best of {counts}\n" + "\n".join(lines)


@contextlib.contextmanager
def _quiet_optuna():
    """Optuna logs only errors meanwhile: the sweep reports trials itself (its bar and
    table), and a failed trial's warning would print a traceback through the bar."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _model_label(model) -> str:
    """'fc', 'net.py:build', or module.qualname of a callable (of its class for an
    instance), to name the model in messages and in a study's settings."""
    if isinstance(model, str):
        return model
    named = model if hasattr(model, "__qualname__") else type(model)
    return f"{named.__module__}.{named.__qualname__}"


def _show(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _count(study: optuna.Study, running: bool = False) -> int:
    """Trials that count toward the target: complete, pruned and diverged ones (and running
    ones when `running`); interrupted trials do not (they are run again)."""
    count = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or \
                (running and t.state == TrialState.RUNNING) or \
                (t.state == TrialState.FAIL and "diverged" in t.user_attrs):
            count += 1
    return count


def _update(bar, study) -> None:
    done = min(_count(study), bar.total)
    if done > bar.n:
        bar.update(done - bar.n)
    complete = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if complete:
        bar.set_postfix(best=f"{max(complete):.4f}", refresh=False)
        bar.refresh()


