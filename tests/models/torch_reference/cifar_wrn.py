"""An independent PyTorch WRN-d-k (RepDistiller's ``models/wrn.py``) for the tests of ``kdkeras.models.cifar_wrn``.

Written from the architecture, not copied; the module names (``conv1``,
``blockS.layer.i.{bn1,conv1,bn2,conv2,convShortcut}``, ``bn1``, ``fc``) are the
reference's, so ``state_dict`` keys match RepDistiller's checkpoints.
``residual=False`` builds the NR variant: no sums, no ``convShortcut``.
"""

import torch
from torch import nn

from tests.models.torch_reference.common import randomize_calibrated as randomize  # noqa: F401  (tests import it here)


class PreActBlock(nn.Module):
    """One pre-activation block; the shortcut projects the activated input where the width changes."""

    def __init__(self, cin, cout, stride, residual=True):
        super().__init__()
        self.residual = residual
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.project = residual and cin != cout
        if self.project:
            self.convShortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x):
        a = torch.relu(self.bn1(x))
        h = self.conv2(torch.relu(self.bn2(self.conv1(a))))
        if not self.residual:
            return h
        return (self.convShortcut(a) if self.project else x) + h


class Stage(nn.Module):
    """RepDistiller's ``NetworkBlock``: the blocks sit in ``self.layer``."""

    def __init__(self, n, cin, cout, stride, residual):
        super().__init__()
        self.layer = nn.Sequential(*[PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, residual)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class CifarWRN(nn.Module):
    def __init__(self, depth, width, num_classes=100, residual=True):
        super().__init__()
        n = (depth - 4) // 6
        widths = (16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.block1 = Stage(n, 16, widths[0], 1, residual)
        self.block2 = Stage(n, widths[0], widths[1], 2, residual)
        self.block3 = Stage(n, widths[1], widths[2], 2, residual)
        self.bn1 = nn.BatchNorm2d(widths[2])
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x, features=False):
        """Logits; with ``features=True`` also ``{tap: NCHW tensor}`` (RepDistiller's ``feat``, ``preact``)."""
        feats = {"stem": self.conv1(x)}
        feats["stage1"] = self.block1(feats["stem"])
        feats["stage2"] = self.block2(feats["stage1"])
        feats["stage3"] = self.block3(feats["stage2"])
        logits = self.fc(torch.relu(self.bn1(feats["stage3"])).mean(dim=(2, 3)))
        if not features:
            return logits
        feats["stage1_preact"] = self.block2.layer[0].bn1(feats["stage1"])
        feats["stage2_preact"] = self.block3.layer[0].bn1(feats["stage2"])
        feats["stage3_preact"] = self.bn1(feats["stage3"])
        return logits, feats


def build(name, num_classes=100):
    """``wrn_16_1`` ... ``wrn_40_2``, optionally with ``_NR``."""
    residual = not name.endswith("_NR")
    _, depth, width = name.removesuffix("_NR").split("_")
    return CifarWRN(int(depth), int(width), num_classes, residual)
