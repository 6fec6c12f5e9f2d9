"""Module machinery: names, the live parameter view, modes, state_dict, loss(), backends."""

import numpy as np
import pytest

from dualnet import backend, checkpoint, nn
from dualnet.gradient_check import eval_numerical_gradient, rel_error

F64 = {"dtype": np.float64}


def small_net(**kwargs):
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, **F64), nn.BatchNorm2d(2, **F64),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3, **F64),
                         **kwargs)


def test_dotted_names_positional_and_keyword():
    net = small_net()
    assert list(net.params) == ["0.weight", "0.bias", "1.weight", "1.bias", "5.weight",
                                "5.bias"]
    named = nn.Sequential(conv1=nn.Conv2d(1, 2, 3), relu=nn.ReLU(),
                          body=nn.Residual(nn.Sequential(nn.Linear(2, 2))))
    assert list(named.params) == ["conv1.weight", "conv1.bias", "body.body.0.weight",
                                  "body.body.0.bias"]
    assert named.num_params() == 2 * 9 + 2 + 4 + 2


def test_parameter_view_writes_through_to_the_leaves():
    net = small_net()
    new = np.zeros((8, 3))
    net.params["5.weight"] = new
    assert net[5].params["weight"] is new
    with pytest.raises(KeyError, match="Sequential has no parameter '5.gamma'"):
        net.params["5.gamma"]
    net.params = {"5.bias": np.ones(3)}  # the course Solver's `model.params = best_params`
    np.testing.assert_array_equal(net[5].params["bias"], np.ones(3))


def test_train_and_eval_reach_every_module():
    net = nn.Sequential(nn.Residual(nn.Sequential(nn.Dropout(0.5))), nn.BatchNorm1d(2))
    net.eval()
    assert not net[0].body[0].training and not net[1].training
    net.train()
    assert net[0].body[0].training and net[1].training


def test_state_dict_round_trips_through_a_checkpoint_file(tmp_path):
    np.random.seed(0)
    net = small_net()
    net.forward(np.random.randn(4, 1, 4, 4))  # moves the batchnorm running statistics
    state = net.state_dict()
    assert {"1.running_mean", "1.running_var"} <= set(state)
    checkpoint.save(tmp_path / "ckpt.npz", {"model": state})
    loaded = checkpoint.load(tmp_path / "ckpt.npz")["model"]
    np.random.seed(1)
    other = small_net()
    other.load_state_dict(loaded)
    x = np.random.randn(3, 1, 4, 4)
    np.testing.assert_array_equal(other.eval().forward(x), net.eval().forward(x))


def test_load_state_dict_names_missing_unexpected_and_misshapen_keys():
    net = small_net()
    state = net.state_dict()
    del state["0.bias"]
    state["9.weight"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['0.bias'\], unexpected keys "
                                       r"\['9.weight'\]"):
        net.load_state_dict(state)
    state = net.state_dict()
    state["5.weight"] = np.zeros((3, 8))
    with pytest.raises(ValueError, match=r"5.weight has shape \(3, 8\), the module expects "
                                         r"\(8, 3\)"):
        net.load_state_dict(state)


def test_loss_regularizes_weights_only_and_checks_numerically():
    np.random.seed(231)
    net = small_net(reg=0.7)
    X, y = np.random.randn(4, 1, 4, 4), np.array([0, 2, 1, 2])
    loss, grads = net.loss(X, y)
    data_loss = nn.Sequential(*[m for _, m in net.children()]).loss(X, y)[0]
    weights = [net.params[k] for k in ("0.weight", "5.weight")]
    assert abs(float(loss - data_loss) - 0.35 * sum((w ** 2).sum() for w in weights)) < 1e-10
    assert net.regularized() == ["0.weight", "5.weight"]  # not biases, not batchnorm scales
    for name in net.params:
        numeric = eval_numerical_gradient(lambda _: net.loss(X, y)[0], net.params[name],
                                          verbose=False)
        # a bias before batchnorm has no effect: its gradient is 0 up to rounding, where a
        # relative error means nothing
        assert (rel_error(grads[name], numeric) < 1e-6
                or np.abs(grads[name] - numeric).max() < 1e-9), name


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_then_relu_run_as_one_with_the_values_of_each_module(training):
    """A Sequential runs BatchNorm -> ReLU in one pass (`forward_relu`, the ReLU skipped both
    ways): outputs, input gradient, parameter gradients and running statistics are those of
    running every child on its own."""
    import copy

    rng = np.random.default_rng(0)
    net = nn.Sequential(nn.ReLU(), nn.Conv2d(2, 4, 3, padding=1, **F64), nn.BatchNorm2d(4, **F64),
                        nn.ReLU(), nn.Flatten(), nn.Linear(64, 6, **F64), nn.BatchNorm1d(6, **F64),
                        nn.ReLU(), nn.Linear(6, 5, **F64), nn.BatchNorm1d(5, **F64))
    net.train(training)
    state = net.state_dict()  # running statistics that test mode can use
    for name in state:
        if "running" in name:
            state[name] = rng.random(state[name].shape) + (0.5 if name.endswith("var") else 0)
    net.load_state_dict(state)
    x, dout = rng.standard_normal((7, 2, 4, 4)), rng.standard_normal((7, 5))
    separate = copy.deepcopy(net)

    out = net.forward(x)
    dx = net.backward(dout)
    assert net._absorbed == {3, 7}

    y = x
    for _, module in separate.children():
        y = module.forward(y)
    g = dout
    for _, module in reversed(separate.children()):
        g = module.backward(g)
    np.testing.assert_allclose(out, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, g, rtol=1e-10, atol=1e-12)
    for name, grad in separate.grads.items():
        np.testing.assert_allclose(net.grads[name], grad, rtol=1e-10, atol=1e-12, err_msg=name)
    for name, value in separate.state_dict().items():
        np.testing.assert_allclose(net.state_dict()[name], value, rtol=1e-12, err_msg=name)


def test_loss_without_labels_returns_scores_in_eval_mode():
    net = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 2, **F64))
    X = np.ones((3, 4))
    scores = net.loss(X)
    assert scores.shape == (3, 2) and not net[0].training
    np.testing.assert_allclose(scores, X @ net.params["1.weight"])


def test_multimargin_criterion():
    net = nn.Sequential(nn.Linear(4, 3, **F64), criterion=nn.MultiMarginLoss())
    X, y = np.random.RandomState(0).randn(5, 4), np.array([0, 1, 2, 0, 1])
    loss, _ = net.loss(X, y)
    scores = X @ net.params["0.weight"]
    margins = np.maximum(0, scores - scores[np.arange(5), y][:, None] + 1)
    margins[np.arange(5), y] = 0
    assert abs(float(loss) - margins.sum() / 5) < 1e-12


@pytest.mark.parametrize("name", backend.names())
def test_to_moves_parameters_and_buffers(name):
    if name not in backend.available():
        pytest.skip(f"{name} unavailable here: {backend.why_unavailable(name)}")
    net = small_net().to(name)
    target = backend.get(name)
    for value in net.state_dict().values():
        assert isinstance(value, np.ndarray)  # state_dict is always host arrays
    for _, p in net.parameters():
        assert target.owns(p)


# -- Residual and Gate: two branches added or multiplied ----------------------------------------

def _projection_block():
    """A ResNet downsampling block: the body halves the size and widens, the shortcut (a
    strided 1x1 convolution without bias, then batchnorm) projects x to match."""
    body = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False, **F64),
                         nn.BatchNorm2d(3, **F64), nn.Tanh(),
                         nn.Conv2d(3, 3, 3, padding=1, **F64))
    shortcut = nn.Sequential(nn.Conv2d(2, 3, 1, stride=2, bias=False, **F64),
                             nn.BatchNorm2d(3, **F64))
    return nn.Residual(body, shortcut)


def test_residual_with_projection_shortcut(gradcheck):
    np.random.seed(231)
    block = _projection_block()
    assert [name for name, _ in block.children()] == ["body", "shortcut"]
    assert "shortcut.0.weight" in block.params and "shortcut.0.bias" not in block.params
    x = np.random.randn(2, 2, 5, 5)
    out = block.forward(x)
    assert out.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(out, block.body.forward(x) + block.shortcut.forward(x),
                               rtol=1e-12)
    gradcheck(block, x)


def test_residual_identity_shortcut_gradient(gradcheck):
    np.random.seed(1)
    block = nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False, **F64),
                                      nn.Tanh()))
    assert [name for name, _ in block.children()] == ["body"]
    gradcheck(block, np.random.randn(2, 2, 4, 4))


def test_residual_branches_that_disagree():
    block = nn.Residual(nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 1, stride=2))
    with pytest.raises(ValueError, match=r"Residual: body maps \(1, 2, 5, 5\) to \(1, 3, 5, 5\) "
                                         r"but the shortcut maps it to \(1, 3, 3, 3\)"):
        block.forward(np.zeros((1, 2, 5, 5), np.float32))
    with pytest.raises(TypeError, match="Residual: shortcut must be a dualnet.nn.Module or "
                                        "None, got str"):
        nn.Residual(nn.ReLU(), "identity")


GATES = [
    # (N, C) gate scaling each channel of a body's output
    ("per-channel", lambda: nn.Gate(nn.Sequential(nn.GlobalAvgPool2d(), nn.Linear(2, 3, **F64),
                                                  nn.Sigmoid()),
                                    body=nn.Conv2d(2, 3, 3, padding=1, **F64))),
    # (N, C, 1, 1) gate on the input itself
    ("per-channel-4d", lambda: nn.Gate(nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                                     nn.Conv2d(2, 2, 1, **F64), nn.Sigmoid()))),
    # (N, 1, H, W) spatial attention
    ("per-position", lambda: nn.Gate(nn.Sequential(nn.Conv2d(2, 1, 3, padding=1, **F64),
                                                   nn.Sigmoid()))),
    # elementwise, both branches with parameters: x * tanh(conv(x)) style
    ("elementwise", lambda: nn.Gate(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, **F64),
                                                  nn.Tanh()),
                                    body=nn.Conv2d(2, 2, 1, **F64))),
]


@pytest.mark.parametrize("name, make", GATES, ids=[g[0] for g in GATES])
def test_gate_gradients_through_both_branches(name, make, gradcheck):
    np.random.seed(231)
    gradcheck(make(), np.random.randn(2, 2, 4, 4))


def test_gate_multiplies_the_branches_with_broadcasting():
    np.random.seed(0)
    gate = nn.Gate(nn.GlobalAvgPool2d(), body=nn.Tanh())
    x = np.random.randn(2, 3, 4, 5)
    np.testing.assert_allclose(gate.forward(x), np.tanh(x) * x.mean(axis=(2, 3))[:, :, None, None],
                               rtol=1e-12)
    assert [name for name, _ in gate.children()] == ["body", "gate"]
    named = nn.Gate(nn.Sequential(nn.GlobalAvgPool2d(), nn.Linear(3, 3)))
    assert list(named.params) == ["gate.1.weight", "gate.1.bias"]


def test_gate_output_that_does_not_broadcast():
    gate = nn.Gate(nn.Sequential(nn.GlobalAvgPool2d(), nn.Linear(2, 5, **F64)))
    with pytest.raises(ValueError, match=r"Gate: the gate's output \(1, 5\) does not broadcast "
                                         r"over the body's output \(1, 2, 4, 4\)"):
        gate.forward(np.zeros((1, 2, 4, 4)))
    longer = nn.Gate(nn.Tanh(), body=nn.GlobalAvgPool2d())
    with pytest.raises(ValueError, match=r"Gate: the gate's output \(1, 2, 4, 4\) does not "
                                         r"broadcast over the body's output \(1, 2\)"):
        longer.forward(np.zeros((1, 2, 4, 4)))
    with pytest.raises(TypeError, match="Gate: gate must be a dualnet.nn.Module, got NoneType"):
        nn.Gate(None)
