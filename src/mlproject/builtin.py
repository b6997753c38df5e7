"""The course reports' own small networks, built for any channel count, class count and image size.

    net = create_builtin("lenet5", in_chans=3, num_classes=10, img_size=32)

Every network ends in a Linear named `classifier` (so --head can replace it) and outputs logits
(the reports' trailing Softmax layers are left out: CrossEntropyLoss applies log-softmax itself).
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_features(features: nn.Module, in_chans: int, img_size: int, name: str) -> int:
    """Flattened feature count of `features` for one image, found by running it once."""
    features.eval()  # eval: the probe must not touch BatchNorm running statistics
    try:
        with torch.no_grad():
            return features(torch.zeros(1, in_chans, img_size, img_size)).flatten(1).shape[1]
    except (RuntimeError, ValueError):  # a kernel larger than the shrunk map
        raise ValueError(f"{name} cannot read {img_size}x{img_size} images; use --image-size "
                         f"{BUILTINS[name][1]} or larger") from None
    finally:
        features.train()


class _Net(nn.Module):
    def __init__(self, features: nn.Module, classifier: nn.Module, body: nn.Module | None = None):
        super().__init__()
        self.features = features
        self.body = body if body is not None else nn.Identity()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(self.body(self.features(x).flatten(1)))


def basecnn(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """Seed 001's BaseCNN: conv3x3(32) - ReLU - conv3x3(64) - maxpool2 - linear (MNIST, 28 px)."""
    features = nn.Sequential(
        nn.Conv2d(in_chans, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.MaxPool2d(2))
    return _Net(features, nn.Linear(_conv_features(features, in_chans, img_size, "basecnn"), num_classes))


def lenet5(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """Seed 002's base LeNet-5: conv5x5(6) - pool - conv5x5(16) - pool - 120 - 84 - classes (32 px)."""
    features = nn.Sequential(
        nn.Conv2d(in_chans, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
    n = _conv_features(features, in_chans, img_size, "lenet5")
    body = nn.Sequential(nn.Linear(n, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
    return _Net(features, nn.Linear(84, num_classes), body)


def smallcnn(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """Seed 004's Net: conv3x3(6) - pool - conv3x3(16) - BN - pool - 120 (BN) - 84 - classes,
    LeakyReLU activations (32 px)."""
    features = nn.Sequential(
        nn.Conv2d(in_chans, 6, 3), nn.LeakyReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 3), nn.BatchNorm2d(16), nn.LeakyReLU(), nn.MaxPool2d(2))
    n = _conv_features(features, in_chans, img_size, "smallcnn")
    body = nn.Sequential(nn.Linear(n, 120), nn.BatchNorm1d(120), nn.LeakyReLU(),
                         nn.Linear(120, 84), nn.LeakyReLU())
    return _Net(features, nn.Linear(84, num_classes), body)


def softmax(in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """Seed 003's softmax classifier: one linear layer on the raw pixels."""
    return _Net(nn.Identity(), nn.Linear(in_chans * img_size * img_size, num_classes))


def mlp(in_chans: int, num_classes: int, img_size: int, hidden: int = 256) -> nn.Module:
    """Seed 003's two-layer network: pixels - hidden (ReLU) - classes (its best hidden size was 250)."""
    body = nn.Sequential(nn.Linear(in_chans * img_size * img_size, hidden), nn.ReLU())
    return _Net(nn.Identity(), nn.Linear(hidden, num_classes), body)


# name -> (constructor, design input size in px or 0 for "any: the data's own")
BUILTINS = {
    "basecnn": (basecnn, 28),
    "lenet5": (lenet5, 32),
    "smallcnn": (smallcnn, 32),
    "softmax": (softmax, 0),
    "mlp": (mlp, 0),
}


def create_builtin(name: str, in_chans: int, num_classes: int, img_size: int) -> nn.Module:
    """Build built-in network `name` (a key of BUILTINS) for the given input and classes."""
    return BUILTINS[name][0](in_chans, num_classes, img_size)
