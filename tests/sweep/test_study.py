"""`Sweep`: trials are Solver runs reported to Optuna; pruning stops a lagging trial;
divergence is recorded and the sweep goes on; Ctrl-C and a second run resume without losing
a trial; the best trial retrained with its seed reproduces its accuracy; bad settings and
storages are refused in one line."""

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from dualnet.data import get_digits_data
from dualnet.models import TwoLayerNet
from dualnet.sweep import SpaceError, Sweep, open_storage


@pytest.fixture(scope="module")
def digits():
    return get_digits_data()


def _states(study):
    return [t.state for t in study.get_trials(deepcopy=False)]


def _sweep(digits, storage=None, **kwargs):
    kwargs.setdefault("space", {"lr": "1e-3:1e-2:log", "hidden": [20, 40]})
    kwargs.setdefault("fixed", {"optimizer": "adam", "batch_size": 50})
    kwargs.setdefault("trials", 3)
    kwargs.setdefault("epochs", 2)
    return Sweep("two-layer", digits, storage=storage, progress=False, **kwargs)


def test_trials_report_each_epoch_and_keep_their_seed(digits, tmp_path):
    sweep = _sweep(digits, tmp_path / "s.journal", seed=10)
    study = sweep.run()
    assert _states(study) == [TrialState.COMPLETE] * 3
    for t in study.trials:
        assert t.user_attrs["seed"] == 10 + t.number
        assert sorted(t.intermediate_values) == [1, 2]  # one report per epoch
        assert t.value == max(t.intermediate_values.values())  # the best val accuracy
        assert set(t.params) == {"lr", "hidden"}
    records = sweep.records()
    assert [r["state"] for r in records] == ["complete"] * 3
    assert records[0]["val_acc_per_epoch"].keys() == {"1", "2"}
    table = sweep.summary()
    assert table.startswith("best of 3 trials: 3 complete, 0 pruned, 0 diverged")
    assert "val_acc" in table and "hidden" in table


@pytest.mark.parametrize("sampler, pruner", [("random", "asha"), ("tpe", "none")])
def test_every_named_sampler_and_pruner_runs(digits, sampler, pruner):
    sweep = _sweep(digits, sampler=sampler, pruner=pruner, trials=2)
    assert len(sweep.run().trials) == 2
    expected = {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler}
    assert isinstance(sweep.study.sampler, expected[sampler])


def test_pruning_stops_a_lagging_trial(digits):
    # two good trials set the median; the third learns nothing (lr 1e-7) and must stop
    # after its first epoch of four
    sweep = _sweep(digits, space={"lr": [3e-3, 1e-7]}, trials=3, epochs=4,
                   pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for lr in (3e-3, 3e-3, 1e-7):
        sweep.study.enqueue_trial({"lr": lr})
    study = sweep.run()
    assert _states(study) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert sorted(study.trials[0].intermediate_values) == [1, 2, 3, 4]
    assert sorted(study.trials[2].intermediate_values) == [1]
    assert "1 pruned" in sweep.summary()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow, should the loss reach NaN
def test_a_diverging_trial_is_recorded_and_the_sweep_goes_on(digits, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = _sweep(digits, space={"lr": [1e3, 3e-3]}, fixed={"optimizer": "sgd"}, trials=3)
    for lr in (1e3, 3e-3, 3e-3):
        sweep.study.enqueue_trial({"lr": lr})
    study = sweep.run()
    assert _states(study) == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    # lr 1e3 sends the loss far beyond its start, which the Solver stops before any NaN
    reason = study.trials[0].user_attrs["diverged"]
    assert reason.startswith("the mean loss of the last 10 iterations")
    assert sweep.records()[0]["failure"] == reason
    assert "1 diverged" in sweep.summary()
    assert list(tmp_path.iterdir()) == []  # the Solver's diverged state went to scratch


class TwoLayerFactory:
    """A model callable. With `interrupt_in=k`, the k-th model built raises
    KeyboardInterrupt in its 20th training step, as Ctrl-C would."""

    def __init__(self, interrupt_in=None):
        self.built = 0
        self.interrupt_in = interrupt_in

    def __call__(self, input_dim, num_classes, hidden=20):
        self.built += 1
        net = TwoLayerNet(input_dim=int(np.prod(input_dim)), hidden_dim=hidden,
                          num_classes=num_classes)
        if self.built == self.interrupt_in:
            loss, steps = net.loss, []

            def interrupted_loss(X, y=None):
                if y is not None:
                    steps.append(1)
                    if len(steps) == 20:
                        raise KeyboardInterrupt
                return loss(X, y)

            net.loss = interrupted_loss
        return net


def test_interrupt_then_rerun_keeps_every_finished_trial(digits, tmp_path):
    journal = tmp_path / "s.journal"

    def sweep(model):
        return Sweep(model, digits, {"lr": "1e-3:1e-2:log", "hidden": [20, 40]}, trials=5,
                     epochs=2, storage=journal, fixed={"optimizer": "adam"}, progress=False)

    with pytest.raises(KeyboardInterrupt):
        sweep(TwoLayerFactory(interrupt_in=3)).run()
    first = optuna.load_study(study_name="dualnet-sweep", storage=open_storage(journal))
    assert _states(first) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    assert first.trials[2].user_attrs["interrupted"] is True
    kept = [(t.params, t.value) for t in first.trials[:2]]

    study = sweep(TwoLayerFactory()).run()
    states = _states(study)
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    assert [(t.params, t.value) for t in study.trials[:2]] == kept
    assert "1 interrupted" in Sweep(TwoLayerFactory(), digits, storage=journal,
                                    space={"lr": "1e-3:1e-2:log", "hidden": [20, 40]},
                                    trials=5, epochs=2, fixed={"optimizer": "adam"}).summary()
    # the resumed run's draws are its own, not a replay of the first run's
    assert study.trials[3].params != study.trials[0].params


def test_a_trial_left_running_by_a_killed_run_is_marked_and_replaced(digits, tmp_path):
    journal = tmp_path / "s.journal"
    sweep = _sweep(digits, journal, trials=2)
    sweep.study.ask()  # as if the process running it had been killed
    study = sweep.run()
    assert _states(study) == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["interrupted"] is True


def test_retraining_the_best_trial_with_its_seed_reproduces_its_accuracy(digits):
    sweep = Sweep("fc", digits, {"lr": "1e-3:1e-2:log", "dropout_keep_ratio": "0.6:1",
                                 "hidden": [16, 32]},
                  trials=3, epochs=2, fixed={"optimizer": "adam", "batch_size": 50},
                  progress=False, seed=3)
    best = sweep.run().best_trial
    solver = sweep.retrain()
    assert solver.best_val_acc == best.value
    assert solver.val_acc_history[1:] == [best.intermediate_values[e] for e in (1, 2)]
    assert sweep.hyperparameters() == {"optimizer": "adam", "batch_size": 50, **best.params}


def test_a_study_made_with_other_settings_is_refused(digits, tmp_path):
    journal = tmp_path / "s.journal"
    _sweep(digits, journal, trials=1).run()
    with pytest.raises(ValueError, match="made with other settings .*epochs 2 there, 3 here"):
        _sweep(digits, journal, trials=1, epochs=3).run()
    more = _sweep(digits, journal, trials=2)  # more trials of the same sweep: continued
    assert len(more.run().trials) == 2


@pytest.mark.parametrize("space, words", [
    ({"hiden": [10, 20]}, "model two-layer has no hyperparameter 'hiden'; it takes "
                          "optimizer, lr, lr_decay, reg, batch_size, hidden, weight_scale"),
    ({"optimizer": ["adam", "lbfgs"]}, "optimizer 'lbfgs' is not an update rule"),
    ({"optimizer": "1:2"}, "not a number range"),
    (["lr=1e-2:1e-4"], "low bound must be below"),
])
def test_spaces_that_do_not_fit_the_model_are_refused(digits, space, words):
    with pytest.raises(SpaceError, match="^Sweep: ") as info:
        Sweep("two-layer", digits, space)
    assert words in str(info.value)


def test_a_callable_model_is_checked_by_its_signature(digits):
    with pytest.raises(SpaceError, match="TwoLayerFactory has no hyperparameter 'depth'"):
        Sweep(TwoLayerFactory(), digits, {"depth": [1, 2]})


@pytest.mark.parametrize("kwargs, words", [
    ({"trials": 0}, "trials must be an integer >= 1, got 0"),
    ({"epochs": 1.5}, "epochs must be an integer >= 1"),
    ({"workers": 2}, "workers=2 share the study through a storage"),
    ({"sampler": "grid"}, "sampler must be one of"),
    ({"pruner": "hyperband"}, "pruner must be one of"),
    ({"threads": 0}, "threads must be an integer >= 1"),
])
def test_nonsense_settings_are_refused(digits, kwargs, words):
    with pytest.raises(ValueError, match="^Sweep: ") as info:
        Sweep("two-layer", digits, **kwargs)
    assert words in str(info.value)
