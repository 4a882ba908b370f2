"""An independent PyTorch ResNet50 (RepDistiller's ``models/resnetv2.py`` architecture), R or NR.

Written for the tests: the module names (``conv1``, ``bn1``, ``layer{s}.{b}.conv1..3``,
``layer{s}.{b}.shortcut.0``, ``linear``, ...) are the reference's, so its
``state_dict`` keys are those of a RepDistiller checkpoint. ``residual=False``
drops the skip connections and the projection shortcuts (kdkeras's NR).
"""

import torch
from torch import nn

from tests.models.torch_reference.cifar_resnet import randomize  # noqa: F401  (the same randomisation)

#: ``(planes, blocks, stride)`` per stage.
RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 (x4 channels), the shortcut added before the last ReLU."""

    def __init__(self, cin, planes, stride, residual):
        super().__init__()
        cout = 4 * planes
        self.residual = residual
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if residual and (stride != 1 or cin != cout):
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        if self.residual:
            h = h + self.shortcut(x)
        return torch.relu(h)


class ResNetBottleneck(nn.Module):
    """ResNet50 for CIFAR; returns logits (and the feature list with ``features=True``)."""

    def __init__(self, stages=RESNET50_STAGES, num_classes=100, residual=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for index, (planes, blocks, stride) in enumerate(stages, start=1):
            layers = []
            for b in range(blocks):
                layers.append(Bottleneck(cin, planes, stride if b == 0 else 1, residual))
                cin = 4 * planes
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        self.n_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x, features=False):
        x = torch.relu(self.bn1(self.conv1(x)))
        feats = [x]
        for index in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{index}")(x)
            feats.append(x)
        logits = self.linear(torch.flatten(self.avgpool(x), 1))
        return (logits, feats) if features else logits
