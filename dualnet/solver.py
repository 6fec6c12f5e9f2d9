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
- `patience`: stop after this many accuracy checks without a better validation accuracy.
- `progress`: a tqdm bar with loss, accuracy, images/s and ETA (default: when `verbose`).
- `seed`: `dualnet.seed(seed)` before anything else, for exactly reproducible CPU runs.
- `on_check`: a callable `on_check(solver)`, called after each accuracy check once its
  histories are recorded and its checkpoint written (`solver.epoch` is 0 for the check after
  the first iteration). An exception it raises ends `train()`, as `dualnet.sweep` does to
  prune a trial whose validation accuracy lags (`optuna.TrialPruned`).

Reliability:

- A non-finite loss stops training with `NonFiniteLossError`, which names the first layer
  whose output went non-finite (models built on `dualnet.models.Model` can say) and the
  non-finite parameters. That step's update is not applied; `best_params` stays usable,
  and the state before the step is saved to `{checkpoint_name}_diverged.npz` (or
  `solver_diverged.npz`) so the run can resume, e.g. with a lower learning rate.
- Checkpoints (`checkpoint_name`) are written at every accuracy check to
  `{checkpoint_name}_epoch_{epoch}.npz` (host `.npz`, see `dualnet.checkpoint`). They hold
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
import sys
from collections import deque

import numpy as np
from tqdm.auto import tqdm

from . import backend, checkpoint, optim
from .checkpoint import CheckpointError

__all__ = ["Solver", "NonFiniteLossError", "CheckpointError"]

_RUNNING = ("running_mean", "running_var")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message says where it started."""


def _host(a):
    return backend.of(a).to_numpy(a)


class Solver:
    """Trains a classification model with minibatch gradient descent (see module docs)."""

    def __init__(self, model, data, update_rule="sgd", optim_config=None, lr_decay=1.0,
                 batch_size=100, num_epochs=10, num_train_samples=1000, num_val_samples=None,
                 checkpoint_name=None, print_every=10, verbose=True, *, lr_schedule=None,
                 patience=None, restore_best=True, progress=None, seed=None, on_check=None):
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

        if isinstance(update_rule, str):
            if update_rule.startswith("_") or not callable(getattr(optim, update_rule, None)):
                raise ValueError(f'Invalid update_rule "{update_rule}"')
            self.update_rule_name = update_rule
            update_rule = getattr(optim, update_rule)
        else:
            self.update_rule_name = getattr(update_rule, "__qualname__", repr(update_rule))
        self.update_rule = update_rule
        self.optim_config = dict(optim_config or {})
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.num_epochs = num_epochs
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.checkpoint_name = checkpoint_name
        self.print_every = print_every
        self.verbose = verbose

        self.lr_schedule = optim.get_schedule(lr_schedule)
        if self.lr_schedule is not None and "learning_rate" not in self.optim_config:
            raise ValueError("Solver: lr_schedule scales optim_config['learning_rate']; "
                             "please set it")
        self.patience = patience
        self.restore_best = restore_best
        self.progress = verbose if progress is None else progress
        self.on_check = on_check
        self._reset()

    def _reset(self):
        """Fresh bookkeeping (the course's `_reset`); `resume` overwrites it."""
        self.epoch = 0
        self.iteration = 0  # iterations finished
        self.best_val_acc = 0
        self.best_params = {}
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
        loss, grads = self.model.loss(X, y)
        loss = float(loss)
        if not math.isfinite(loss):
            raise NonFiniteLossError(self._nonfinite_message(loss, X, y))
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

    def _nonfinite_message(self, loss, X, y):
        xp = backend.of(X).xp
        where = (f"the loss is {loss} at iteration {self.iteration + 1} "
                 f"(epoch {self.epoch})")
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
                    if self.on_check is not None:
                        self.on_check(self)
                bar.update(self.batch_size)
                bar.set_postfix(self._postfix(), refresh=False)
                if stop:
                    self.stopped_early = True
                    self._say(f"Early stop: no better validation accuracy in {self.patience} "
                              f"checks; best {self.best_val_acc:f}")
                    break
        except (KeyboardInterrupt, NonFiniteLossError) as exc:
            # Nothing is lost: the state before the interrupted or diverging step is saved.
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "diverged"
            name = self.checkpoint_name or "solver"
            path = self._save(last_good, f"{name}_{what}.npz", always=True)
            print(f"\n{what.capitalize()}: state after iteration {last_good['iteration']} "
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
            "checks_since_best": state["checks_since_best"],
            "loss_history": np.asarray(self.loss_history[:n_loss], dtype=np.float64),
            "train_acc_history": np.asarray(self.train_acc_history[:n_acc], dtype=np.float64),
            "val_acc_history": np.asarray(self.val_acc_history[:n_acc], dtype=np.float64),
            "rng": {"name": rng_name, "keys": keys, "pos": pos, "has_gauss": has_gauss,
                    "gauss": gauss},
        })

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
