"""Time of one training epoch over 45,000 CIFAR-shaped images for the challenge presets
(`dualnet.models.cifar_resnet`, `cifar_resnet_small`), dualnet against PyTorch CPU.

    python bench/challenge_epoch.py                       # both presets, 3 rounds
    python bench/challenge_epoch.py --preset cifar-resnet-small --batches 20 --rounds 5

Method: each round starts one worker process per system, alternating which goes first (their
thread pools never share a process). A worker imports numpy and matplotlib first, as a
notebook does, builds the preset (PyTorch: the same network in torch.nn, the same
initialization rules), trains one warm-up batch, then times `--batches` training steps of
the recipe's batch size (128, float32): forward, backward and an AdamW update (learning rate
1e-3, weight decay 0.05) on random images and labels. Augmentation and data loading are left
out of both. The epoch time is the median time per image over the rounds times 45,000 (the
CIFAR-10 training split less the course's 5,000 validation images).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

EPOCH_IMAGES = 45_000
BATCH = 128
PRESETS = {"cifar-resnet": dict(widths=(64, 128, 256), blocks=(2, 3, 2), reduction=16),
           "cifar-resnet-small": dict(widths=(16, 32, 64), blocks=(1, 1, 1), reduction=4)}


def _dualnet_step(preset):
    import numpy as np

    from dualnet import optim
    from dualnet.models.resnet import PRESETS as BUILD

    np.random.seed(0)
    net = BUILD[preset]()
    configs = {name: {"learning_rate": 1e-3, "weight_decay": 0.05} for name in net.params}
    X = np.random.randn(BATCH, 3, 32, 32).astype(np.float32)
    y = np.random.randint(0, 10, BATCH)

    def step():
        _, grads = net.loss(X, y)
        for name, w in net.params.items():
            net.params[name], configs[name] = optim.adamw(w, grads[name], configs[name])
    return step


def _torch_network(widths, blocks, reduction):
    import torch
    from torch import nn

    class SqueezeExcitation(nn.Module):
        def __init__(self, c, r):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(c, c // r), nn.Linear(c // r, c)

        def forward(self, x):
            g = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
            return x * g[:, :, None, None]

    class Block(nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.body = nn.Sequential(
                nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                SqueezeExcitation(c_out, reduction))
            self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False),
                                           nn.BatchNorm2d(c_out)) if c_in != c_out else None)

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    layers = [nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
              nn.ReLU()]
    c_in = widths[0]
    for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        if i:
            layers += [nn.Conv2d(c_in, c_in, 3, stride=2, padding=1, groups=c_in, bias=False),
                       nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, c_in, 1, bias=False),
                       nn.BatchNorm2d(c_in), nn.ReLU()]
        for _ in range(count):
            layers.append(Block(c_in, width))
            c_in = width
    layers += [nn.BatchNorm2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Dropout(0.3), nn.Linear(c_in, 10)]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def _torch_step(preset):
    import torch

    torch.manual_seed(0)
    net = _torch_network(**PRESETS[preset])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    X = torch.randn(BATCH, 3, 32, 32)
    y = torch.randint(0, 10, (BATCH,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(X), y).backward()
        opt.step()
    return step


def worker(system, preset, batches):
    """Seconds per image of `batches` timed training steps (after one warm-up step)."""
    import matplotlib  # noqa: F401  (imported before dualnet, as a notebook does)
    import numpy  # noqa: F401

    step = (_dualnet_step if system == "dualnet" else _torch_step)(preset)
    step()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return (time.perf_counter() - start) / (batches * BATCH)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=[*PRESETS, "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=5, help="timed steps per worker")
    parser.add_argument("--worker", nargs=2, metavar=("SYSTEM", "PRESET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.batches)))
        return
    presets = list(PRESETS) if args.preset == "both" else [args.preset]
    print("| preset | dualnet epoch | PyTorch epoch | ratio (time) |\n|---|---|---|---|")
    for preset in presets:
        times = {"dualnet": [], "torch": []}
        for r in range(args.rounds):
            order = ("dualnet", "torch") if r % 2 == 0 else ("torch", "dualnet")
            for system in order:
                run = subprocess.run([sys.executable, __file__, "--worker", system, preset,
                                      "--batches", str(args.batches)], capture_output=True,
                                     text=True, check=True)
                times[system].append(json.loads(run.stdout.strip().splitlines()[-1]))
        epoch = {s: statistics.median(t) * EPOCH_IMAGES for s, t in times.items()}
        spread = {s: f"{min(t) * EPOCH_IMAGES / 60:.1f}-{max(t) * EPOCH_IMAGES / 60:.1f}"
                  for s, t in times.items()}
        print(f"| {preset} | {epoch['dualnet'] / 60:.1f} min ({spread['dualnet']}) | "
              f"{epoch['torch'] / 60:.1f} min ({spread['torch']}) | "
              f"{epoch['dualnet'] / epoch['torch']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
