"""Pictures of a sweep: the optimization history and accuracy against each hyperparameter.

Like `dualnet.vis`, each function builds a matplotlib Figure without pyplot (headless-safe,
nothing left open), writes a PNG when given `path`, and returns the Figure. Both take the
trial records of `Sweep.records()` (or trials.json), so a finished sweep can be drawn again
without Optuna.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ..vis import save_figure

__all__ = ["plot_history", "plot_hyperparameters"]

_STYLE = {"complete": {"marker": "o", "color": "C0", "label": "complete"},
          "pruned": {"marker": "x", "color": "C1", "label": "pruned (last accuracy)"},
          "diverged": {"marker": "v", "color": "C3", "label": "diverged (at 0)"}}


def _outcome(record: dict) -> tuple[str, float] | None:
    """('complete' | 'pruned' | 'diverged', accuracy to draw) of a trial record, or None
    for a trial with nothing to draw (running, interrupted, pruned before any epoch)."""
    if record["state"] == "complete":
        return "complete", record["value"]
    per_epoch = record.get("val_acc_per_epoch") or {}
    if record["state"] == "pruned" and per_epoch:
        return "pruned", per_epoch[max(per_epoch, key=int)]
    if record["state"] == "fail" and record.get("failure") not in (None, "interrupted"):
        return "diverged", 0.0
    return None


def plot_history(records, path=None, title="sweep") -> Figure:
    """Each trial's validation accuracy against its number, and the best so far.

    records: [{'number', 'state', 'value', 'val_acc_per_epoch', 'failure', ...}] as
    `Sweep.records()` returns. Pruned trials show their last reported accuracy.
    """
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    points = {kind: [] for kind in _STYLE}
    for record in sorted(records, key=lambda r: r["number"]):
        drawn = _outcome(record)
        if drawn is not None:
            points[drawn[0]].append((record["number"], drawn[1]))
    for kind, style in _STYLE.items():
        if points[kind]:
            x, y = zip(*points[kind], strict=True)
            ax.scatter(x, y, s=22, linewidths=1.2, **style)
    if points["complete"]:
        x, y = zip(*points["complete"], strict=True)
        last = max(r["number"] for r in records)  # the line runs on to the latest trial
        best = np.maximum.accumulate(y)
        ax.step([*x, last], [*best, best[-1]], where="post", color="C2", label="best so far")
    ax.set(xlabel="trial", ylabel="validation accuracy", title=f"{title}: optimization history")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")
    return save_figure(fig, path)


def plot_hyperparameters(records, space: dict, path=None, title="sweep") -> Figure:
    """Validation accuracy against each searched hyperparameter, one panel each.

    records: as for `plot_history`. space: {name: Range | Choice} (`Sweep.space`): a log
    range gets a log axis, a choice one position per value.
    """
    from .space import Choice, Range

    names = list(space) or ["(nothing searched)"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[len(names):]:
        ax.set_axis_off()
    for ax, name in zip(axes, names, strict=False):
        dim = space.get(name)
        labels = None
        if isinstance(dim, Choice):
            labels = ["none" if v is None else str(v) for v in dim.values]
        for kind, style in _STYLE.items():
            xs, ys = [], []
            for record in records:
                drawn = _outcome(record)
                if drawn is None or drawn[0] != kind or name not in record["params"]:
                    continue
                value = record["params"][name]
                xs.append(labels.index("none" if value is None else str(value))
                          if labels else value)
                ys.append(drawn[1])
            if xs:
                ax.scatter(xs, ys, s=22, linewidths=1.2, **style)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        elif isinstance(dim, Range):
            if dim.log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # labels at decades only
            margin = 0.0 if dim.log else 0.03 * (dim.high - dim.low)
            ax.set_xlim(dim.low / 1.2 if dim.log else dim.low - margin,
                        dim.high * 1.2 if dim.log else dim.high + margin)
        ax.set(xlabel=name, ylabel="validation accuracy")
        ax.grid(alpha=0.3)
    handles, legend_labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, legend_labels, fontsize="small", loc="lower center",
                   ncol=len(handles), bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"{title}: accuracy against each hyperparameter")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, path)
