"""The challenge network presets (`dualnet.models.resnet`): the architecture the issue
describes, and a few training steps with a falling loss on every available backend."""

import numpy as np
import pytest

from dualnet import backend, nn, optim
from dualnet.data import augment
from dualnet.models import cifar_resnet, cifar_resnet_small
from dualnet.solver import Solver


def _modules(module, kind):
    found = [module] if isinstance(module, kind) else []
    for _, child in module.children():
        found += _modules(child, kind)
    return found


def _child(module, *path):
    """The descendant of `module` at the child names `path`."""
    for name in path:
        module = dict(module.children())[name]
    return module


def test_the_challenge_network_has_the_published_architecture():
    np.random.seed(0)
    net = cifar_resnet()
    names = [name for name, _ in net.children()]
    assert names == ["stem", "stage1", "down1", "stage2", "down2", "stage3", "head"]
    blocks = [len(_child(net, name)) for name in ("stage1", "stage2", "stage3")]
    assert blocks == [2, 3, 2]
    convs = _modules(net, nn.Conv2d)
    assert all("bias" not in conv.params for conv in convs)  # every conv is bias-free
    depthwise = [conv for conv in convs if conv.conv_param["groups"] > 1]
    assert [conv.params["weight"].shape for conv in depthwise] == [(64, 1, 3, 3),
                                                                    (128, 1, 3, 3)]
    assert all(conv.conv_param["stride"] == 2 for conv in depthwise)
    projections = [block.shortcut for block in _modules(net, nn.Residual)
                   if block.shortcut is not None]
    assert len(projections) == 2  # where a stage's first block widens 64->128, 128->256
    assert len(_modules(net, nn.SqueezeExcitation)) == 7
    se = _modules(net, nn.SqueezeExcitation)[-1]
    assert se.params["gate.fc1.weight"].shape == (256, 16)  # reduction 16
    assert _child(net, "head", "dropout").p == 0.3
    assert _child(net, "head", "fc").params["weight"].shape == (256, 10)


def test_convolutions_start_from_kaiming_normal_fan_out():
    np.random.seed(1)
    net = cifar_resnet()
    w = _child(net, "stage3", "block0", "body", "conv2").params["weight"]  # (256, 256, 3, 3)
    expected = np.sqrt(2.0 / (256 * 9))
    assert abs(w.std() - expected) < 4 * expected / np.sqrt(2 * w.size)


@pytest.mark.parametrize("input_dim", [(3, 32, 32), (1, 8, 8), (3, 17, 15)])
def test_scores_for_any_image_size(input_dim):
    np.random.seed(2)
    net = cifar_resnet_small(input_dim=input_dim, num_classes=7)
    scores = net.loss(np.random.randn(2, *input_dim).astype(np.float32))
    assert scores.shape == (2, 7) and scores.dtype == np.float32


def test_mismatched_stages_are_refused():
    with pytest.raises(ValueError, match="cifar_resnet: widths and blocks must have one entry "
                                         "per stage"):
        cifar_resnet(widths=(16, 32), blocks=(1,))


@pytest.mark.parametrize("name", backend.available())
def test_the_preset_trains_with_the_recipe_on_every_backend(name):
    """A few AdamW steps with warm-up + cosine and augmentation on one small batch: the loss
    falls on every backend this machine has."""
    rng = np.random.default_rng(3)
    y = np.arange(16) % 4
    templates = rng.standard_normal((4, 3, 16, 16))  # each class its own picture, plus noise
    X = (templates[y] + 0.5 * rng.standard_normal((16, 3, 16, 16))).astype(np.float32)
    with backend.use(name):
        np.random.seed(4)
        net = cifar_resnet_small(input_dim=(3, 16, 16), num_classes=4)
        _child(net, "head", "dropout").p = 0.0  # about learning, not dropout noise
        solver = Solver(net, {"X_train": X, "y_train": y, "X_val": X, "y_val": y},
                        update_rule="adamw", optim_config={"learning_rate": 1e-2,
                                                           "weight_decay": 0.05},
                        lr_schedule=optim.warmup(1, then=optim.cosine()),
                        augment=lambda x: augment(x, pad=2), batch_size=16, num_epochs=20,
                        verbose=False, divergence=None)
        solver.train()
    losses = solver.loss_history
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
