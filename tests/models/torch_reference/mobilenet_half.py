"""An independent PyTorch MobileNetV2 ``mobile_half`` (RepDistiller's ``models/mobilenetv2.py`` architecture), R or NR.

Written for the tests: the module names (``conv1.0``, ``blocks.{g}.{b}.conv.{k}``,
``conv2.1``, ``classifier.0``, ...) are the reference's, so its ``state_dict``
keys are those of a RepDistiller checkpoint. ``residual=False`` drops the
identity adds (kdkeras's NR; there is no projection shortcut to drop).
"""

import torch
from torch import nn

from tests.models.torch_reference.common import randomize  # noqa: F401  (tests import it here)

#: ``(t, c, n, s)`` at width 1; ``mobile_half`` uses ``t = 6`` (where ``t > 1``) and width 0.5.
ROWS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn_relu(cin, cout, kernel, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class InvertedResidual(nn.Module):
    """1x1 expand, BN, ReLU, depthwise 3x3, BN, ReLU, 1x1 project, BN; identity added where shapes allow (R)."""

    def __init__(self, cin, cout, stride, t, residual):
        super().__init__()
        hidden = cin * t
        self.add = residual and stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        return x + self.conv(x) if self.add else self.conv(x)


class MobileHalf(nn.Module):
    """``mobile_half(num_classes)``; ``forward(x, features=True)`` also returns ``[f0, f1, f2, f3, f4]``."""

    def __init__(self, num_classes=100, residual=True, t=6, width=0.5):
        super().__init__()
        cin = int(32 * width)
        self.conv1 = _conv_bn_relu(3, cin, 3, 2)
        self.blocks = nn.ModuleList()
        for row_t, c, n, s in ROWS:
            cout = int(c * width)
            group = []
            for b in range(n):
                group.append(InvertedResidual(cin, cout, s if b == 0 else 1, t if row_t > 1 else 1, residual))
                cin = cout
            self.blocks.append(nn.Sequential(*group))
        self.conv2 = _conv_bn_relu(cin, 1280, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(1280, num_classes))

    def forward(self, x, features=False):
        x = self.conv1(x)
        feats = [x]
        for g, group in enumerate(self.blocks):
            x = group(x)
            if g in (1, 2, 4, 6):
                feats.append(x)
        x = self.conv2(x)
        logits = self.classifier(torch.flatten(nn.functional.avg_pool2d(x, x.shape[-1], ceil_mode=True), 1))
        return (logits, feats) if features else logits
