"""The search space of a sweep: what each hyperparameter may be, written as short text.

One entry per hyperparameter, as on the command line (`--space "lr=1e-4:1e-2:log" ...`):

=========================  =============================================================
``lr=1e-4:1e-2:log``       log-uniform float in [1e-4, 1e-2]
``reg=0:1e-2``             uniform float in [0, 1e-2]
``dropout_keep_ratio=0.5:1:0.1``  floats 0.5, 0.6, ..., 1 (third part: a step)
``hidden=50:500:50``       integers 50, 100, ..., 500 (both bounds written as integers)
``filters=8:64:log``       log-uniform integer
``hidden=100,200``         one of the listed values (numbers, words, ``none`` for None)
``optimizer=sgd_momentum`` a single value: fixed for every trial, not searched
=========================  =============================================================

`parse_space` turns entries into `Range` and `Choice` objects (plus the fixed values);
`Range.suggest` / `Choice.suggest` ask an Optuna trial for a value. Nothing here imports
Optuna: the trial is handed in.

The hyperparameters every model takes are the Solver's (`SOLVER_HYPERPARAMETERS`, named as
`dualnet train`'s options); each preset model adds its own (`dualnet.sweep.presets`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Range", "Choice", "SpaceError", "SOLVER_HYPERPARAMETERS", "FLOAT_HYPERPARAMETERS",
           "parse_dimension",
           "parse_space", "format_dimension"]

#: The hyperparameters of the Solver, named as `dualnet train`'s options: update rule
#: (`optimizer`), learning rate, its factor per epoch, L2 strength and minibatch size.
SOLVER_HYPERPARAMETERS = ("optimizer", "lr", "lr_decay", "reg", "batch_size")

#: Hyperparameters that are real numbers even when a range is written with integer bounds
#: ("reg=0:1" means any float in [0, 1], not the integers 0 and 1).
FLOAT_HYPERPARAMETERS = ("lr", "lr_decay", "reg", "dropout_keep_ratio", "weight_scale")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INTEGER = re.compile(r"[+-]?\d+\Z")
_SYNTAX = "NAME=LOW:HIGH, NAME=LOW:HIGH:log, NAME=LOW:HIGH:STEP, NAME=A,B,... or NAME=VALUE"


class SpaceError(ValueError):
    """A search space that cannot be used: malformed text or a hyperparameter the model lacks.

    `detail` is the message without the leading 'Sweep: ' (the command line prefixes the
    option's name instead).
    """

    def __init__(self, detail: str):
        super().__init__(f"Sweep: {detail}")
        self.detail = detail


@dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high` (both included): integers when `integer`, spaced by
    `step` when given, drawn log-uniformly when `log`."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial, name: str):
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class Choice:
    """One of `values` (numbers, strings or None)."""

    values: tuple

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.values))


def _literal(text: str) -> Any:
    """'100' -> 100, '1e-3' -> 0.001, 'none' -> None, anything else: the string itself."""
    text = text.strip()
    if _INTEGER.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return None if text.lower() == "none" else text


def _number(text: str, what: str, entry: str) -> float | int:
    value = _literal(text)
    if isinstance(value, (int, float)):
        return value
    raise SpaceError(f"space entry {entry!r}: {what} {text!r} is not a number")


def parse_dimension(text: str, name: str = "") -> Range | Choice | Any:
    """The part after '=' of a space entry: a `Range`, a `Choice`, or a fixed value.

    Raises SpaceError naming the entry when the text is malformed (bounds that are not
    numbers or in the wrong order, a log range reaching 0, a step that does not fit).
    """
    entry = f"{name}={text}" if name else text
    if not text.strip():
        raise SpaceError(f"space entry {entry!r} has no value; write {_SYNTAX}")
    if "," in text:
        values = tuple(_literal(part) for part in text.split(","))
        if any(value == "" for value in values):
            raise SpaceError(f"space entry {entry!r} has an empty choice")
        if len(set(map(repr, values))) < len(values):
            raise SpaceError(f"space entry {entry!r} lists a value twice")
        return Choice(values)
    if ":" not in text:
        return _literal(text)
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise SpaceError(f"space entry {entry!r} has {len(parts) - 1} colons; write {_SYNTAX}")
    low = _number(parts[0], "the low bound", entry)
    high = _number(parts[1], "the high bound", entry)
    if not low < high:
        raise SpaceError(f"space entry {entry!r}: the low bound must be below the high one "
                         "(for a fixed value write NAME=VALUE)")
    integer = isinstance(low, int) and isinstance(high, int)
    log, step = False, None
    if len(parts) == 3:
        if parts[2].strip().lower() == "log":
            log = True
            if low <= 0:
                raise SpaceError(f"space entry {entry!r}: a log range needs a low bound > 0")
        else:
            step = _number(parts[2], "the step", entry)
            integer = integer and isinstance(step, int)
            if not 0 < step <= high - low:
                raise SpaceError(f"space entry {entry!r}: the step must be > 0 and at most "
                                 f"high - low = {high - low:g}")
    return Range(low, high, log=log, step=step, integer=integer)


def parse_space(entries) -> tuple[dict[str, Range | Choice], dict[str, Any]]:
    """Parse space entries into (searched dimensions, fixed values).

    Args:
        entries: 'NAME=SPEC' strings (see the module docs), or a mapping {name: SPEC text,
            list of choices, Range, Choice, or a fixed number/string}.

    Returns:
        ({name: Range | Choice}, {name: fixed value}), in the order given.

    Raises:
        SpaceError: an entry without '=', a name that is not an identifier or appears twice,
            or a malformed value (see `parse_dimension`).
    """
    if isinstance(entries, str):
        entries = [entries]
    if hasattr(entries, "items"):
        items = list(entries.items())
    else:
        items = []
        for entry in entries:
            name, sep, text = str(entry).partition("=")
            if not sep:
                raise SpaceError(f"space entry {entry!r} has no '='; write {_SYNTAX}")
            items.append((name.strip(), text))
    space, fixed = {}, {}
    for name, spec in items:
        if not _NAME.match(name):
            raise SpaceError(f"space entry for {name!r}: the name must be an identifier "
                             "such as lr or hidden")
        if name in space or name in fixed:
            raise SpaceError(f"space names {name!r} twice")
        if isinstance(spec, str):
            spec = parse_dimension(spec, name)
            if isinstance(spec, Range) and name in FLOAT_HYPERPARAMETERS:
                spec = replace(spec, integer=False)
        elif isinstance(spec, (list, tuple)):
            spec = Choice(tuple(spec))
        if isinstance(spec, (Range, Choice)):
            space[name] = spec
        else:
            fixed[name] = spec
    return space, fixed


def format_dimension(dim: Range | Choice | Any) -> str:
    """The text `parse_dimension` reads back as `dim` (for headers and saved settings)."""
    if isinstance(dim, Choice):
        return ",".join("none" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
                        for v in dim.values)
    if isinstance(dim, Range):
        def bound(x):
            return str(int(x)) if dim.integer else repr(float(x))
        third = ":log" if dim.log else f":{bound(dim.step)}" if dim.step is not None else ""
        return f"{bound(dim.low)}:{bound(dim.high)}{third}"
    return "none" if dim is None else str(dim)
