"""An independent PyTorch CIFAR ResNet (RepDistiller's ``models/resnet.py`` architecture), R or NR.

Written for the tests: the module names (``conv1``, ``bn1``, ``layer{s}.{b}.conv1``,
``layer{s}.{b}.downsample.0``, ``fc``, ...) are the reference's, so its
``state_dict`` keys are those of a RepDistiller checkpoint. ``residual=False``
drops the skip connections and the ``downsample`` projections (kdkeras's NR).
"""

import torch
from torch import nn

from tests.models.torch_reference.common import randomize  # noqa: F401  (tests import it here)

#: ``net: (depth, (c0, c1, c2, c3))``.
CONFIGS = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


class Block(nn.Module):
    """Post-activation basic block: two 3x3 convs, the shortcut added before the last ReLU."""

    def __init__(self, cin, cout, stride, residual):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if residual and (stride != 1 or cin != cout):
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            h = h + (x if self.downsample is None else self.downsample(x))
        return torch.relu(h)


class CifarResNet(nn.Module):
    """The CIFAR ResNet ``net`` of :data:`CONFIGS`; returns logits (and the feature list with ``features=True``)."""

    def __init__(self, net, num_classes=100, residual=True):
        super().__init__()
        depth, channels = CONFIGS[net]
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, channels[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        cin = channels[0]
        for stage, (cout, stride) in enumerate(zip(channels[1:], (1, 2, 2)), start=1):
            blocks = [Block(cin if b == 0 else cout, cout, stride if b == 0 else 1, residual) for b in range(n)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            cin = cout
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(channels[3], num_classes)

    def forward(self, x, features=False):
        x = torch.relu(self.bn1(self.conv1(x)))
        feats = [x]
        for stage in (self.layer1, self.layer2, self.layer3):
            x = stage(x)
            feats.append(x)
        logits = self.fc(torch.flatten(self.avgpool(x), 1))
        return (logits, feats) if features else logits
