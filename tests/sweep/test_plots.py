"""The sweep's pictures: every kind of trial drawn where it belongs, real PNGs."""

import numpy as np
from PIL import Image

from dualnet.sweep.plots import plot_history, plot_hyperparameters
from dualnet.sweep.space import Choice, Range

RECORDS = [
    {"number": 0, "state": "complete", "value": 0.8, "params": {"lr": 1e-3, "hidden": 50},
     "val_acc_per_epoch": {"1": 0.7, "2": 0.8}, "failure": None},
    {"number": 1, "state": "pruned", "value": None, "params": {"lr": 1e-5, "hidden": 100},
     "val_acc_per_epoch": {"1": 0.2}, "failure": None},
    {"number": 2, "state": "fail", "value": None, "params": {"lr": 5e-2, "hidden": 50},
     "val_acc_per_epoch": {}, "failure": "the loss is nan at iteration 3"},
    {"number": 3, "state": "fail", "value": None, "params": {"lr": 2e-3, "hidden": None},
     "val_acc_per_epoch": {}, "failure": "interrupted"},
    {"number": 4, "state": "complete", "value": 0.9, "params": {"lr": 3e-3, "hidden": None},
     "val_acc_per_epoch": {"1": 0.9}, "failure": None},
]
SPACE = {"lr": Range(1e-5, 1e-1, log=True), "hidden": Choice((50, 100, None))}


def _points(ax):
    """{legend label: [(x, y), ...]} of the scatter plots on `ax`."""
    return {c.get_label(): [tuple(p) for p in np.asarray(c.get_offsets())]
            for c in ax.collections}


def _assert_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= 200
        assert np.asarray(im.convert("L"), dtype=float).std() > 10


def test_history_draws_each_trial_by_state_and_the_best_so_far(tmp_path):
    fig = plot_history(RECORDS, tmp_path / "h.png")
    ax = fig.axes[0]
    points = _points(ax)
    assert points["complete"] == [(0, 0.8), (4, 0.9)]
    assert points["pruned (last accuracy)"] == [(1, 0.2)]
    assert points["diverged (at 0)"] == [(2, 0.0)]  # the interrupted trial is not drawn
    (best,) = [line for line in ax.lines if line.get_label() == "best so far"]
    assert list(best.get_ydata()) == [0.8, 0.9, 0.9]
    _assert_png(tmp_path / "h.png")


def test_one_panel_per_hyperparameter_with_log_and_choice_axes(tmp_path):
    fig = plot_hyperparameters(RECORDS, SPACE, tmp_path / "p.png")
    lr, hidden = fig.axes[:2]
    assert lr.get_xscale() == "log" and lr.get_xlabel() == "lr"
    assert _points(lr)["complete"] == [(1e-3, 0.8), (3e-3, 0.9)]
    assert [t.get_text() for t in hidden.get_xticklabels()] == ["50", "100", "none"]
    assert _points(hidden)["complete"] == [(0, 0.8), (2, 0.9)]  # positions of the choices
    assert _points(hidden)["pruned (last accuracy)"] == [(1, 0.2)]
    _assert_png(tmp_path / "p.png")


def test_an_empty_sweep_still_draws():
    assert plot_history([]).axes
    assert plot_hyperparameters([], {}).axes
