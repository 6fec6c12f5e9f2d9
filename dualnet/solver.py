"""The Solver: trains any model with the course's contract, on any backend.

The constructor, attributes and training loop are the CS231n Solver's, so notebooks run
unchanged::

    solver = Solver(model, data, update_rule='sgd', optim_config={'learning_rate': 1e-3},
                    lr_decay=0.95, num_epochs=10, batch_size=100, print_every=100)
    solver.train()
    solver.loss_history, solver.train_acc_history, solver.val_acc_history

- Each iteration samples a minibatch *with replacement* (`np.random.choice(num_train,
  batch_size)`), computes `model.loss(X_batch, y_batch)` and updates every parameter with the
  update rule and its own config (`optim_configs[name]`).
- Accuracy is checked after the first iteration, at each epoch end and after the last
  iteration, on `num_train_samples` training and `num_val_samples` validation examples
  (subsampled with `np.random.choice`); `lr_decay` multiplies every parameter's learning rate
  at each epoch end. The parameters with the best validation accuracy are kept in
  `best_params` and put into the model at the end of `train()` (`restore_best=False` keeps
  the last ones instead).

The model need not know about backends: each minibatch is moved once per step to the backend
that holds `model.params`, cast to `model.dtype` when the model has one. Histories hold
Python floats.

Beyond the course (keyword-only arguments):

- **Loader mode.** `data` may be ``{'train': loader, 'X_val': ..., 'y_val': ...}`` where
  `loader` is a *sized iterable*: `len(loader)` is the number of batches per epoch, and
  each `iter(loader)` yields one epoch of `(X_batch, y_batch)` arrays (host or device), for
  datasets that do not fit in memory. Training accuracy is then measured on the last
  `num_train_samples` (default 1000) training examples of the current epoch.
- `lr_schedule`: a callable `(epoch, num_epochs) -> factor` (see `dualnet.optim.step_decay`,
  `cosine`, `warmup`) or 'cosine'; the learning rate of each step is
  `optim_config['learning_rate'] * lr_decay**epoch * factor` (epoch fractional for the
  factor).
- `augment`: a callable `X_batch -> X_batch` applied to every training minibatch on the
  model's backend before the loss (e.g. `lambda x: dualnet.data.augment(x, pad=4)` for
  random crops and flips); accuracy checks see the data unchanged. With NumPy's global
  RNG (as `augment` uses without a seed), a resumed run still repeats an uninterrupted one.
- `patience`: stop after this many accuracy checks without a better validation accuracy.
- `progress`: a tqdm bar with loss, accuracy, images/s and ETA (default: when `verbose`).
- `seed`: `dualnet.seed(seed)` before anything else, for exactly reproducible CPU runs.
- `on_check`: a callable `on_check(solver)`, called after each accuracy check once its
  histories are recorded and its checkpoint written (`solver.epoch` is 0 for the check after
  the first iteration). An exception it raises ends `train()`, as `dualnet.sweep` does to
  prune a trial whose validation accuracy lags (`optuna.TrialPruned`).

Every argument is checked at construction (`ValueError`/`TypeError` starting "Solver: "):
positive batch size, epochs and sample counts, a learning rate > 0, lr_decay > 0, X and y
of equal lengths, an update rule that exists, optim_config keys that the chosen rule of
`dualnet.optim` uses (its hyperparameters and its own state keys), and an existing,
writable folder for `checkpoint_name`.

Reliability:

- A diverging run stops with `DivergenceError` (a FloatingPointError) before the step's
  update is applied, when either
  - the loss is NaN or inf (`NonFiniteLossError`, a DivergenceError): the message names the
    first layer whose output went non-finite (models built on `dualnet.models.Model` can
    say) and the non-finite parameters; or
  - the mean loss of the last `iterations` iterations is above `factor` times the first
    iteration's loss, with `divergence=(factor, iterations)`, default (10, 10): the loss
    has grown far beyond its start and stayed there (a mean, rather than every one of the
    losses, so that a loss jumping between 0 and 1e7 counts too; one loss alone does it
    only when above factor * iterations times the start, 100x by default).
    `divergence=None` turns this rule off (a loss whose first value is <= 0 is never
    judged by it).
  `best_params` stays usable, and the state after the last good iteration is saved to
  `{checkpoint_name}_diverged.npz` (or `solver_diverged.npz`); the exception's message and
  its `checkpoint` attribute give the path, `reason` says what happened in a few words.
- Checkpoints (`checkpoint_name`) are written at every accuracy check to
  `{checkpoint_name}_epoch_{epoch}.npz` (host `.npz`, see `dualnet.checkpoint`);
  `keep_checkpoints=N` deletes all but the N most recent of them and the one of the best
  validation accuracy (default None: keep every one, as the course does). They hold
  parameters, running statistics, update-rule state, the schedule, NumPy's RNG state,
  epoch/iteration, histories and the best parameters, so `solver.resume(path)` followed by
  `train()` continues exactly: on the CPU an interrupted-then-resumed run produces the same
  histories as an uninterrupted one.
- Ctrl-C (KeyboardInterrupt) saves the state of the last finished iteration to
  `{checkpoint_name}_interrupted.npz` (`solver_interrupted.npz` without a checkpoint name)
  and re-raises.

Exact resumption relies on update rules that return new arrays instead of changing their
inputs in place (every rule in `dualnet.optim` does) and, in loader mode, on a loader that
yields the same batches when iterated again. On a GPU, device-side random numbers (dropout
masks) are not part of the checkpoint.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections import deque
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import _checks, backend, checkpoint, numerics, optim
from .checkpoint import CheckpointError

__all__ = ["Solver", "DivergenceError", "NonFiniteLossError", "CheckpointError"]

_RUNNING = ("running_mean", "running_var")


class DivergenceError(FloatingPointError):
    """Training diverged and was stopped (see the module docs for the rule).

    Attributes:
        reason: what happened, in a few words ("the loss is nan", ...).
        checkpoint: path of the saved state before the failing step (set by `train`).
        saved_iteration: the iteration that saved state ends with.
    """

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason
        self.checkpoint = None
        self.saved_iteration = None

    def __str__(self):
        text = super().__str__()
        if self.checkpoint is not None:
            text += (f" The state after iteration {self.saved_iteration} is saved in "
                     f"{self.checkpoint}; Solver.resume('{self.checkpoint}') continues from "
                     f"there.")
        return text


class NonFiniteLossError(DivergenceError):
    """The training loss became NaN or infinite; the message says where it started."""


def _host(a):
    return backend.of(a).to_numpy(a)


class Solver:
    """Trains a classification model with minibatch gradient descent (see module docs)."""

    def __init__(self, model, data, update_rule="sgd", optim_config=None, lr_decay=1.0,
                 batch_size=100, num_epochs=10, num_train_samples=1000, num_val_samples=None,
                 checkpoint_name=None, print_every=10, verbose=True, *, lr_schedule=None,
                 patience=None, restore_best=True, progress=None, seed=None,
                 divergence=(10.0, 10), keep_checkpoints=None, augment=None,
                 on_check=None):
        if seed is not None:
            backend.seed(seed)
        self.model = model
        self.loader = data.get("train")
        self.X_train = data.get("X_train")
        self.y_train = data.get("y_train")
        self.X_val = data.get("X_val")
        self.y_val = data.get("y_val")
        if self.X_val is None or self.y_val is None:
            raise ValueError("Solver: data needs 'X_val' and 'y_val'")
        if self.loader is None and (self.X_train is None or self.y_train is None):
            raise ValueError("Solver: data needs 'X_train' and 'y_train', or a 'train' loader "
                             "(a sized iterable of (X_batch, y_batch) per epoch)")
        if self.loader is not None and not hasattr(self.loader, "__len__"):
            raise TypeError("Solver: the 'train' loader must define len() (batches per epoch)")
        if self.loader is None:
            _checks.same_length("Solver", ("data['X_train']", "data['y_train']"),
                                  self.X_train, self.y_train)
        _checks.same_length("Solver", ("data['X_val']", "data['y_val']"), self.X_val, self.y_val)

        self.update_rule_name, self.update_rule = _update_rule(update_rule)
        self.optim_config = _optim_config(update_rule, self.update_rule, optim_config)
        self.lr_decay = _checks.number("Solver", "lr_decay", lr_decay, above=0)
        self.batch_size = _checks.positive_int("Solver", "batch_size", batch_size)
        self.num_epochs = _checks.positive_int("Solver", "num_epochs", num_epochs)
        self.num_train_samples = _optional_count("num_train_samples", num_train_samples)
        self.num_val_samples = _optional_count("num_val_samples", num_val_samples)
        self.checkpoint_name = _checkpoint_name(checkpoint_name)
        self.print_every = _checks.positive_int("Solver", "print_every", print_every)
        self.verbose = verbose

        self.lr_schedule = optim.get_schedule(lr_schedule)
        if self.lr_schedule is not None and "learning_rate" not in self.optim_config:
            raise ValueError("Solver: lr_schedule scales optim_config['learning_rate']; "
                             "please set it")
        self.patience = _optional_count("patience", patience)
        self.divergence = _divergence(divergence)
        self.keep_checkpoints = _optional_count("keep_checkpoints", keep_checkpoints)
        self.restore_best = restore_best
        if augment is not None and not callable(augment):
            raise TypeError(f"Solver: augment must be a callable X_batch -> X_batch or None, "
                            f"got {type(augment).__name__}")
        self.augment = augment
        self.progress = verbose if progress is None else progress
        self.on_check = on_check
        self._reset()

    def _reset(self):
        """Fresh bookkeeping (the course's `_reset`); `resume` overwrites it."""
        self.epoch = 0
        self.iteration = 0  # iterations finished
        self.best_val_acc = 0
        self.best_params = {}
        self._best_epoch = None  # epoch of the check that found best_params (its checkpoint)
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self.stopped_early = False
        self._checks_since_best = 0
        self.optim_configs = {p: dict(self.optim_config) for p in self.model.params}
        self._recent = deque()  # loader mode: the latest training batches, for train accuracy

    # -- sizes and devices ------------------------------------------------------------------
    @property
    def iterations_per_epoch(self) -> int:
        if self.loader is not None:
            return max(len(self.loader), 1)
        return max(self.X_train.shape[0] // self.batch_size, 1)

    def _to_model(self, X, y=None):
        """X (cast to the model's dtype when it has one) and y on the model's backend."""
        be = backend.of(*self.model.params.values())
        X = be.asarray(X, dtype=getattr(self.model, "dtype", None))
        return X if y is None else (X, be.asarray(y))

    # -- one iteration ----------------------------------------------------------------------
    def _batches(self):
        """(X_batch, y_batch) for iteration self.iteration, self.iteration + 1, ..."""
        return self._sampled_batches() if self.loader is None else self._loader_batches()

    def _sampled_batches(self):
        num_train = self.X_train.shape[0]
        while True:
            batch_mask = np.random.choice(num_train, self.batch_size)
            yield self.X_train[batch_mask], self.y_train[batch_mask]

    def _loader_batches(self):
        per_epoch = self.iterations_per_epoch
        done = self.iteration % per_epoch  # batches of this epoch already trained on (resume)
        while True:
            count = 0
            self._recent.clear()  # train accuracy is measured on this epoch's examples
            for count, batch in enumerate(itertools.islice(self.loader, per_epoch), start=1):
                if count > done:
                    yield batch
                else:
                    self._remember(*batch)
            if count < per_epoch:
                raise ValueError(f"Solver: the train loader yielded {count} batches in an "
                                 f"epoch but len(loader) is {per_epoch}")
            done = 0

    def _learning_rate(self):
        """This step's learning rate when a schedule is set, else None (config's own)."""
        if self.lr_schedule is None:
            return None
        epoch = self.iteration / self.iterations_per_epoch
        return (self.optim_config["learning_rate"] * self.lr_decay ** self.epoch
                * self.lr_schedule(epoch, self.num_epochs))

    def _step(self, X_batch, y_batch):
        """Loss, gradients and one update of every parameter, as the course's `_step`."""
        X, y = self._to_model(X_batch, y_batch)
        if self.augment is not None:
            X = self.augment(X)
        try:
            loss, grads = self.model.loss(X, y)
        except numerics.NonFiniteValueError as exc:  # dualnet.debug() found it first
            raise NonFiniteLossError(f"{self._where()}: {exc}", exc.reason) from exc
        loss = float(loss)
        if not math.isfinite(loss):
            raise NonFiniteLossError(self._nonfinite_message(loss, X, y), f"the loss is {loss}")
        self._check_growth(loss)
        self.loss_history.append(loss)
        lr = self._learning_rate()
        for p, w in self.model.params.items():
            # A copy of the config, so the state saved after the last iteration stays intact.
            config = dict(self.optim_configs[p])
            if lr is not None:
                config["learning_rate"] = lr
            self.model.params[p], self.optim_configs[p] = self.update_rule(w, grads[p], config)
        if self.loader is not None:
            self._remember(X_batch, y_batch)

    def _remember(self, X_batch, y_batch):
        """Keep the latest training examples (about num_train_samples) for train accuracy."""
        self._recent.append((X_batch, y_batch))
        limit = self.num_train_samples or self.batch_size * self.iterations_per_epoch
        while sum(len(y) for _, y in self._recent) - len(self._recent[0][1]) >= limit:
            self._recent.popleft()

    def _where(self):
        return f"Solver: iteration {self.iteration + 1} (epoch {self.epoch})"

    def _check_growth(self, loss):
        """Raise DivergenceError when the mean of this loss and the `iterations` - 1 before
        it is above `factor` times the first loss (`divergence=(factor, iterations)`).

        Computed from loss_history alone, so a resumed run judges exactly as an
        uninterrupted one.
        """
        if self.divergence is None or not self.loss_history or self.loss_history[0] <= 0:
            return
        factor, iterations = self.divergence
        first = self.loss_history[0]
        window = [*self.loss_history[len(self.loss_history) - iterations + 1:], loss]
        mean = sum(window) / len(window)
        if len(window) < iterations or mean <= factor * first:
            return
        reason = (f"the mean loss of the last {iterations} iterations ({mean:.4g}) is above "
                  f"{factor:g} x the first loss ({first:.4g})")
        raise DivergenceError(
            f"{self._where()}: training diverged: {reason}. Training stopped before this "
            f"step's update (solver.best_params holds the best parameters so far); lower the "
            f"learning rate, or tune this check with Solver(divergence=(factor, iterations)) "
            f"or turn it off with divergence=None.", reason)

    def _nonfinite_message(self, loss, X, y):
        xp = backend.of(X).xp
        where = f"{self._where()}: the loss is {loss}"
        if not bool(xp.isfinite(X).all()):
            return f"{where}: the input batch itself contains NaN or inf"
        bad = [p for p, w in self.model.params.items()
               if not bool(backend.of(w).xp.isfinite(w).all())]
        locate = getattr(self.model, "first_nonfinite_layer", None)
        if locate is None:
            cause = "this model cannot name its layers (it has no first_nonfinite_layer)"
        else:
            layer = locate(X, y)
            cause = ("the first layer with a non-finite output is " + repr(layer) if layer
                     else "every layer output is finite, so the loss function produced it")
        params = f"; non-finite parameters: {', '.join(bad)}" if bad else ""
        return (f"{where}: {cause}{params}. Training stopped before this step's update "
                f"(solver.best_params holds the best parameters so far); try a smaller "
                f"learning rate or weight scale.")

    # -- accuracy ---------------------------------------------------------------------------
    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of (a random subsample of num_samples of) X classified as y.

        Args:
            X: (N, ...) inputs, host or device. y: (N,) integer labels.
            num_samples: subsample this many examples (with np.random.choice) when N is
                larger, as the course does.
            batch_size: examples per forward pass.

        Returns:
            accuracy as a Python float.
        """
        N = X.shape[0]
        if num_samples is not None and N > num_samples:
            mask = np.random.choice(N, num_samples)
            N = num_samples
            X = X[mask]
            y = y[mask]
        y_pred = []
        for start in range(0, N, batch_size):
            scores = self.model.loss(self._to_model(X[start:start + batch_size]))
            y_pred.append(_host(scores.argmax(axis=1)))
        return float(np.mean(np.concatenate(y_pred) == _host(y)))

    def _train_examples(self):
        if self.loader is None:
            return self.X_train, self.y_train
        if not self._recent:
            raise RuntimeError("Solver: no training batch seen yet")
        xs, ys = zip(*self._recent, strict=True)
        return np.concatenate([_host(x) for x in xs]), np.concatenate([_host(y) for y in ys])

    def _check(self):
        """Record train/val accuracy, track the best parameters; True to stop early."""
        X, y = self._train_examples()
        train_acc = self.check_accuracy(X, y, num_samples=self.num_train_samples)
        val_acc = self.check_accuracy(self.X_val, self.y_val, num_samples=self.num_val_samples)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        self._say(f"(Epoch {self.epoch} / {self.num_epochs}) train acc: {train_acc:f}; "
                  f"val_acc: {val_acc:f}")
        if val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            self.best_params = {k: v.copy() for k, v in self.model.params.items()}
            self._best_epoch = self.epoch
            self._checks_since_best = 0
        else:
            self._checks_since_best += 1
        return self.patience is not None and self._checks_since_best >= self.patience

    # -- the loop ---------------------------------------------------------------------------
    def train(self):
        """Run the optimization until num_epochs (or early stopping); see module docs."""
        per_epoch = self.iterations_per_epoch
        num_iterations = self.num_epochs * per_epoch
        bar = tqdm(total=num_iterations * self.batch_size, initial=self.iteration * self.batch_size,
                   unit="img", unit_scale=True, disable=not self.progress, dynamic_ncols=True)
        last_good = self._state()
        try:
            batches = self._batches()
            for t in range(self.iteration, num_iterations):
                self._step(*next(batches))
                if self.verbose and t % self.print_every == 0:
                    self._say(f"(Iteration {t + 1} / {num_iterations}) loss: "
                              f"{self.loss_history[-1]:f}")
                epoch_end = (t + 1) % per_epoch == 0
                if epoch_end:
                    self.epoch += 1
                    if self.lr_schedule is None:
                        for config in self.optim_configs.values():
                            if "learning_rate" in config:  # a custom rule may have none
                                config["learning_rate"] *= self.lr_decay
                check = t == 0 or t == num_iterations - 1 or epoch_end
                stop = self._check() if check else False
                self.iteration = t + 1
                last_good = self._state()
                if check:
                    self._save(last_good, f"{self.checkpoint_name}_epoch_{self.epoch}.npz")
                    self._prune_checkpoints()
                    if self.on_check is not None:
                        self.on_check(self)
                bar.update(self.batch_size)
                bar.set_postfix(self._postfix(), refresh=False)
                if stop:
                    self.stopped_early = True
                    self._say(f"Early stop: no better validation accuracy in {self.patience} "
                              f"checks; best {self.best_val_acc:f}")
                    break
        except (KeyboardInterrupt, DivergenceError) as exc:
            # Nothing is lost: the state before the interrupted or diverging step is saved.
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "diverged"
            name = self.checkpoint_name or "solver"
            path = self._save(last_good, f"{name}_{what}.npz", always=True)
            if isinstance(exc, DivergenceError):  # its message says where the state went
                exc.checkpoint, exc.saved_iteration = path, last_good["iteration"]
            else:
                print(f"\nInterrupted: state after iteration {last_good['iteration']} "
                      f"saved to {path}; Solver.resume('{path}') continues from there.",
                      file=sys.stderr)
            raise
        finally:
            bar.close()
        if self.restore_best and self.best_params:
            self.model.params = dict(self.best_params)

    def _say(self, message):
        if self.verbose:
            tqdm.write(message, file=sys.stdout)

    def _postfix(self):
        out = {"loss": f"{self.loss_history[-1]:.3f}"}
        if self.val_acc_history:
            out["train"] = f"{self.train_acc_history[-1]:.3f}"
            out["val"] = f"{self.val_acc_history[-1]:.3f}"
        return out

    # -- checkpoints ------------------------------------------------------------------------
    def _bn_params(self):
        return getattr(self.model, "bn_params", None) or []

    def _state(self):
        """The solver's state now, by reference (cheap; taken after every iteration)."""
        return {
            "iteration": self.iteration,
            "epoch": self.epoch,
            "params": dict(self.model.params),
            "running": [{k: p[k] for k in _RUNNING if k in p} for p in self._bn_params()],
            "optim": dict(self.optim_configs),
            "histories": (len(self.loss_history), len(self.train_acc_history)),
            "best_val_acc": self.best_val_acc,
            "best_params": self.best_params,
            "best_epoch": self._best_epoch,
            "checks_since_best": self._checks_since_best,
            "rng": np.random.get_state(legacy=True),
        }

    def _save(self, state, filename, always=False):
        """Write `state` (from `_state`) as a host checkpoint; returns the path or None."""
        if self.checkpoint_name is None and not always:
            return None
        n_loss, n_acc = state["histories"]
        rng_name, keys, pos, has_gauss, gauss = state["rng"]

        def host_tree(tree):
            return {k: _host(v) if hasattr(v, "shape") else v for k, v in tree.items()}

        return checkpoint.save(filename, {
            "kind": "solver",
            "model": type(self.model).__name__,
            "update_rule": self.update_rule_name,
            "lr_schedule": optim.describe_schedule(self.lr_schedule),
            "lr_decay": self.lr_decay,
            "batch_size": self.batch_size,
            "num_epochs": self.num_epochs,
            "iterations_per_epoch": self.iterations_per_epoch,
            "iteration": state["iteration"],
            "epoch": state["epoch"],
            "params": host_tree(state["params"]),
            "running": [host_tree(r) for r in state["running"]],
            "optim": {p: host_tree(c) for p, c in state["optim"].items()},
            "best_val_acc": state["best_val_acc"],
            "best_params": host_tree(state["best_params"]),
            "best_epoch": state["best_epoch"],
            "checks_since_best": state["checks_since_best"],
            "loss_history": np.asarray(self.loss_history[:n_loss], dtype=np.float64),
            "train_acc_history": np.asarray(self.train_acc_history[:n_acc], dtype=np.float64),
            "val_acc_history": np.asarray(self.val_acc_history[:n_acc], dtype=np.float64),
            "rng": {"name": rng_name, "keys": keys, "pos": pos, "has_gauss": has_gauss,
                    "gauss": gauss},
        })

    def _prune_checkpoints(self):
        """Delete epoch checkpoints beyond the `keep_checkpoints` most recent, sparing the one
        of the best validation accuracy. Files of later epochs than the current one (left by
        the run this one resumed) are not touched: training rewrites them as it gets there.
        """
        if self.keep_checkpoints is None or self.checkpoint_name is None:
            return
        folder, prefix = os.path.split(self.checkpoint_name)
        prefix += "_epoch_"
        epochs = sorted(int(name[len(prefix):-4]) for name in os.listdir(folder or ".")
                        if name.startswith(prefix) and name.endswith(".npz")
                        and name[len(prefix):-4].isdigit())
        done = [e for e in epochs if e <= self.epoch]
        keep = {*done[-self.keep_checkpoints:], self._best_epoch}
        for epoch in done:
            if epoch not in keep:
                Path(folder or ".", f"{prefix}{epoch}.npz").unlink(missing_ok=True)

    def resume(self, path):
        """Restore the state saved in checkpoint `path`; `train()` then continues from it.

        Raises CheckpointError when the file is unreadable or does not fit this solver and
        model (parameter names, shapes, dtypes, batch size, epoch length, update rule,
        schedule); nothing is changed in that case.
        """
        state = checkpoint.load(path)
        self._check_fits(path, state)
        be = backend.of(*self.model.params.values())

        def device_tree(tree):
            return {k: be.asarray(v) if isinstance(v, np.ndarray) else v
                    for k, v in tree.items()}

        self.model.params.update(device_tree(state["params"]))
        for bn_param, running in zip(self._bn_params(), state["running"], strict=True):
            bn_param.update(device_tree(running))
        self.optim_configs = {p: device_tree(c) for p, c in state["optim"].items()}
        self.best_params = device_tree(state["best_params"])
        self.best_val_acc = state["best_val_acc"]
        self._best_epoch = state.get("best_epoch")  # absent from older checkpoints
        self._checks_since_best = state["checks_since_best"]
        self.iteration = state["iteration"]
        self.epoch = state["epoch"]
        self.loss_history = state["loss_history"].tolist()
        self.train_acc_history = state["train_acc_history"].tolist()
        self.val_acc_history = state["val_acc_history"].tolist()
        rng = state["rng"]
        np.random.set_state((rng["name"], rng["keys"], rng["pos"], rng["has_gauss"],
                             rng["gauss"]))
        self.stopped_early = False
        self._recent.clear()

    def _check_fits(self, path, state):
        """Raise CheckpointError unless checkpoint `state` can continue this training."""
        problems = []
        if state.get("kind") != "solver":
            raise CheckpointError(f"checkpoint {path} was not written by a Solver")
        for key, mine in (("update_rule", self.update_rule_name),
                          ("batch_size", self.batch_size),
                          ("iterations_per_epoch", self.iterations_per_epoch),
                          ("lr_schedule", optim.describe_schedule(self.lr_schedule))):
            if state.get(key) != mine:
                problems.append(f"{key} is {state.get(key)!r} there but {mine!r} here")
        saved = state["params"]
        for name in sorted(set(saved) | set(self.model.params)):
            if name not in saved or name not in self.model.params:
                where = "checkpoint" if name in saved else "model"
                problems.append(f"parameter {name} exists only in the {where}")
                continue
            a, w = saved[name], self.model.params[name]
            if tuple(a.shape) != tuple(w.shape) or a.dtype != w.dtype:
                problems.append(f"{name} is {a.dtype}{tuple(a.shape)} there but "
                                f"{w.dtype}{tuple(w.shape)} here")
        if len(state["running"]) != len(self._bn_params()):
            problems.append(f"{len(state['running'])} normalization layers there but "
                            f"{len(self._bn_params())} here")
        if problems:
            raise CheckpointError(f"checkpoint {path} does not fit this solver and model: "
                                  + "; ".join(problems))


# -- constructor checks -------------------------------------------------------------------------
def _update_rule(rule):
    """(name recorded in checkpoints, callable) for Solver's update_rule argument."""
    if isinstance(rule, str):
        if rule not in optim.UPDATE_RULES:
            raise ValueError(f'Solver: Invalid update_rule "{rule}"; choose one of '
                             f'{", ".join(optim.UPDATE_RULES)} or pass a callable')
        return rule, getattr(optim, rule)
    if not callable(rule):
        raise TypeError(f"Solver: update_rule must be the name of a rule in dualnet.optim "
                        f"({', '.join(optim.UPDATE_RULES)}) or a callable (w, dw, config) -> "
                        f"(next_w, config), got {rule!r}")
    return getattr(rule, "__qualname__", repr(rule)), rule


def _optim_config(rule_arg, rule, config) -> dict:
    """A copy of optim_config, checked: a dict, learning_rate > 0 and, for the rules of
    dualnet.optim, only keys the rule uses (hyperparameters and its own state, so a config
    taken from a checkpoint is accepted). A custom rule's keys are its own business."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise TypeError(f"Solver: optim_config must be a dict, got {type(config).__name__}")
    config = dict(config)
    if "learning_rate" in config:
        _checks.number("Solver", "optim_config['learning_rate']", config["learning_rate"],
                       above=0)
    name = rule_arg if isinstance(rule_arg, str) else getattr(rule, "__name__", None)
    if name in optim.UPDATE_RULES and getattr(optim, name) is rule:
        known = optim.config_keys(rule)
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"Solver: optim_config key(s) {', '.join(map(repr, unknown))} "
                             f"are not used by update rule {name!r}, which knows "
                             f"{', '.join(sorted(known))}")
    return config


def _optional_count(name, value):
    return None if value is None else _checks.positive_int("Solver", name, value)


def _checkpoint_name(name):
    """checkpoint_name as a str; its folder must exist and be writable right now, not only
    when the first checkpoint is written after an epoch of training."""
    if name is None:
        return None
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"Solver: checkpoint_name must be a path prefix (str), got "
                        f"{type(name).__name__}")
    folder = Path(name).parent
    if not folder.is_dir():
        raise ValueError(f"Solver: checkpoint_name {str(name)!r} puts checkpoints in {folder}, "
                         f"which does not exist; create the folder first")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"Solver: checkpoint_name {str(name)!r} puts checkpoints in {folder}, "
                         f"which is not writable")
    return str(name)


def _divergence(value):
    """divergence: None, or (factor > 1, iterations >= 1)."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"Solver: divergence must be (factor, iterations) or None, got "
                        f"{value!r}")
    factor = _checks.number("Solver", "divergence factor", value[0], above=1)
    return factor, _checks.positive_int("Solver", "divergence iterations", value[1])
