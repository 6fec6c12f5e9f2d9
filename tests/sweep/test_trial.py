"""One trial: the hyperparameters reach the Solver and the model, a seed reproduces a run
exactly, and a diverging run raises for the sweep to record."""

import numpy as np
import pytest

from dualnet.data import get_digits_data
from dualnet.models import TwoLayerNet
from dualnet.solver import DivergenceError, NonFiniteLossError
from dualnet.sweep import trial


@pytest.fixture(scope="module")
def digits():
    return get_digits_data()


def test_data_shape(digits):
    assert trial.data_shape(digits) == ((1, 8, 8), 10)
    flat = {"X_val": np.zeros((4, 6)), "y_val": np.array([0, 2, 1, 0]),
            "y_train": np.array([4, 0])}
    assert trial.data_shape(flat) == ((6,), 5)  # one more than the largest label


def test_settings_reach_the_solver_and_the_model(digits):
    solver = trial.train("two-layer", digits, {"optimizer": "sgd_momentum", "lr": 0.05,
                                               "lr_decay": 0.5, "batch_size": 50,
                                               "reg": 0.01, "hidden": 20}, 2, seed=0)
    assert solver.update_rule_name == "sgd_momentum" and solver.batch_size == 50
    assert solver.optim_config == {"learning_rate": 0.05} and solver.lr_decay == 0.5
    assert solver.model.reg == 0.01 and solver.model.params["W1"].shape == (64, 20)
    assert len(solver.loss_history) == 2 * (len(digits["y_train"]) // 50)
    assert solver.optim_configs["W1"]["learning_rate"] == pytest.approx(0.05 * 0.25)


def test_the_solver_defaults_stay_when_nothing_is_given(digits):
    solver = trial.train("two-layer", digits, {}, 1, seed=0)
    assert solver.update_rule_name == "sgd" and solver.batch_size == 100
    assert solver.model.reg == 0.0


def two_layer(input_dim, num_classes, hidden=10):
    return TwoLayerNet(input_dim=int(np.prod(input_dim)), hidden_dim=hidden,
                       num_classes=num_classes)


def test_a_callable_model_gets_its_options_and_reg(digits):
    model, config = trial.build_model(two_layer, {"hidden": 7, "reg": 0.5, "lr": 1.0},
                                      (1, 8, 8), 10)
    assert config is None and model.params["W1"].shape == (64, 7) and model.reg == 0.5


def test_the_same_seed_reproduces_a_run_and_another_does_not(digits):
    hyperparameters = {"optimizer": "adam", "lr": 3e-3, "hidden": 30,
                       "dropout_keep_ratio": 0.7}  # dropout: random masks too
    runs = [trial.train("fc", digits, hyperparameters, 2, seed=s) for s in (5, 5, 6)]
    assert runs[0].loss_history == runs[1].loss_history
    assert runs[0].val_acc_history == runs[1].val_acc_history
    assert runs[0].loss_history != runs[2].loss_history


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow that makes the NaN
def test_divergence_raises_a_floating_point_error(digits, tmp_path):
    with pytest.raises(DivergenceError, match="training diverged"):
        trial.train("two-layer", digits, {"optimizer": "sgd", "lr": 1e3}, 1, seed=0,
                    checkpoint_name=str(tmp_path / "t"))
    # what the sweep catches
    assert issubclass(DivergenceError, FloatingPointError)
    assert issubclass(NonFiniteLossError, DivergenceError)
