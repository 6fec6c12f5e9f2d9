"""SqueezeExcitation: numbers against a NumPy formula, gradients, parameters, errors, and a
small pre-activation residual network with squeeze-excitation that learns."""

import numpy as np
import pytest

from dualnet import checkpoint, nn

F64 = {"dtype": np.float64}


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_squeeze_excitation_matches_its_formula():
    np.random.seed(0)
    se = nn.SqueezeExcitation(8, reduction=4, **F64)
    se.params["gate.fc1.bias"] = np.random.randn(2)
    se.params["gate.fc2.bias"] = np.random.randn(8)
    x = np.random.randn(3, 8, 5, 4)
    p = se.params
    squeezed = x.mean(axis=(2, 3))                                            # (N, C)
    hidden = np.maximum(0, squeezed @ p["gate.fc1.weight"] + p["gate.fc1.bias"])
    scale = _sigmoid(hidden @ p["gate.fc2.weight"] + p["gate.fc2.bias"])      # (N, C)
    np.testing.assert_allclose(se.forward(x), x * scale[:, :, None, None], rtol=1e-12)


def test_squeeze_excitation_gradients(gradcheck):
    np.random.seed(231)
    se = nn.SqueezeExcitation(8, reduction=4, **F64)
    se.params["gate.fc1.bias"] = np.full(2, 0.3)  # away from ReLU's kink
    gradcheck(se, np.random.randn(2, 8, 3, 3))


def test_squeeze_excitation_parameters_are_plain_linear_layers():
    se = nn.SqueezeExcitation(64)  # reduction 16
    shapes = {name: tuple(p.shape) for name, p in se.parameters()}
    assert shapes == {"gate.fc1.weight": (64, 4), "gate.fc1.bias": (4,),
                      "gate.fc2.weight": (4, 64), "gate.fc2.bias": (64,)}
    assert isinstance(se.gate.children()[1][1], nn.Linear)
    assert se.regularized() == ["gate.fc1.weight", "gate.fc2.weight"]
    assert se.dtype == np.float32
    x = np.random.RandomState(0).randn(2, 64, 4, 4).astype(np.float32)
    assert se.forward(x).dtype == np.float32


@pytest.mark.parametrize("args, error, match", [
    ((8, 16), ValueError, r"SqueezeExcitation: reduction must be at most channels, so that the "
                          r"bottleneck channels // reduction is >= 1, got 8 // 16 = 0"),
    ((0,), ValueError, "SqueezeExcitation: channels must be an integer >= 1, got 0"),
    ((8, 0), ValueError, "SqueezeExcitation: reduction must be an integer >= 1, got 0"),
])
def test_squeeze_excitation_bad_construction(args, error, match):
    with pytest.raises(error, match=match):
        nn.SqueezeExcitation(*args)


def _preact_block(C):
    """BN - ReLU - conv - BN - ReLU - conv - squeeze-excitation, plus the identity."""
    return nn.Residual(nn.Sequential(
        nn.BatchNorm2d(C, **F64), nn.ReLU(), nn.Conv2d(C, C, 3, padding=1, bias=False, **F64),
        nn.BatchNorm2d(C, **F64), nn.ReLU(), nn.Conv2d(C, C, 3, padding=1, bias=False, **F64),
        nn.SqueezeExcitation(C, reduction=4, **F64)))


def _small_senet():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False, init_mode="fan_out", **F64),
        _preact_block(8),
        nn.Residual(nn.Sequential(nn.BatchNorm2d(8, **F64), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False, **F64)),
                    shortcut=nn.Conv2d(8, 16, 1, stride=2, bias=False, **F64)),
        nn.BatchNorm2d(16, **F64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.3, seed=0), nn.Linear(16, 4, **F64))


def test_small_senet_learns_and_round_trips_a_checkpoint(tmp_path):
    np.random.seed(0)
    net = _small_senet()
    X, y = np.random.randn(8, 3, 9, 9), np.arange(8) % 4
    optimizer = nn.AdamW(net, lr=1e-2, weight_decay=0.05)
    losses = []
    for _ in range(15):
        losses.append(float(net.loss(X, y)[0]))
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]
    checkpoint.save(tmp_path / "net.npz", {"model": net.state_dict()})
    state = checkpoint.load(tmp_path / "net.npz")["model"]
    # the bias-free convolutions saved their weights only
    assert {"0.weight", "2.shortcut.weight"} <= set(state)
    assert not {"0.bias", "1.body.2.bias", "1.body.5.bias", "2.body.2.bias",
                "2.shortcut.bias"} & set(state)
    other = _small_senet()
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.loss(X), net.loss(X))
