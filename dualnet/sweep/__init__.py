"""Hyperparameter sweeps: the courses' search over learning rates, regularization and sizes,
as Optuna studies whose trials are Solver runs.

- `Sweep` (study.py): the search, its trials, resuming and results.
- storage.py: the journal file or database holding the study; a journal's exclusive lock.
- workers.py: the worker processes on one machine.
- space.py: the search-space text ('lr=1e-4:1e-2:log', 'hidden=100,200').
- presets.py: the hyperparameters of each preset model, and the default spaces.
- trial.py: one trial: seed, build the model, train it with the Solver.
- plots.py: the optimization history and accuracy against each hyperparameter.
- command.py: `dualnet sweep`.
"""

from .presets import DEFAULT_SPACES, PRESET_HYPERPARAMETERS
from .space import SOLVER_HYPERPARAMETERS, Choice, Range, SpaceError, parse_space
from .storage import open_storage
from .study import Sweep

__all__ = ["Sweep", "open_storage", "parse_space", "Range", "Choice", "SpaceError",
           "SOLVER_HYPERPARAMETERS", "PRESET_HYPERPARAMETERS", "DEFAULT_SPACES"]
