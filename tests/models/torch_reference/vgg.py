"""An independent PyTorch CIFAR VGG with BN (RepDistiller's ``models/vgg.py``) for the tests of ``kdkeras.models.vgg``.

Written from the architecture, not copied; module names are the reference's
(``block{b}`` sequentials of conv, BN, ReLU without the last ReLU;
``classifier``), so ``state_dict`` keys match RepDistiller's ``vgg*_bn`` checkpoints.
"""

import torch
from torch import nn

from tests.models.torch_reference.common import randomize_calibrated as randomize  # noqa: F401  (tests import it here)

WIDTHS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256,) * 2, (512,) * 2, (512,) * 2),
    "vgg13": ((64,) * 2, (128,) * 2, (256,) * 2, (512,) * 2, (512,) * 2),
    "vgg16": ((64,) * 2, (128,) * 2, (256,) * 3, (512,) * 3, (512,) * 3),
    "vgg19": ((64,) * 2, (128,) * 2, (256,) * 4, (512,) * 4, (512,) * 4),
}


def _block(cin, widths):
    modules = []
    for cout in widths:
        modules += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    return nn.Sequential(*modules[:-1])


class CifarVGG(nn.Module):
    def __init__(self, widths, num_classes=100):
        super().__init__()
        cin = 3
        for b, w in enumerate(widths):
            setattr(self, f"block{b}", _block(cin, w))
            cin = w[-1]
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x, features=False):
        """Logits; with ``features=True`` also ``{tap: NCHW tensor}`` (RepDistiller's ``feat``, ``preact``)."""
        size = x.shape[2]
        feats = {}
        for b in range(5):
            pre = getattr(self, f"block{b}")(x)
            x = torch.relu(pre)
            feats["stem" if b == 0 else f"stage{b}"] = x
            if b:
                feats[f"stage{b}_preact"] = pre
            if b < 3 or (b == 3 and size == 64):
                x = nn.functional.max_pool2d(x, 2, 2)
        logits = self.classifier(x.mean(dim=(2, 3)))
        return (logits, feats) if features else logits


def build(name, num_classes=100):
    """``vgg8`` ... ``vgg19`` (RepDistiller's ``*_bn``)."""
    return CifarVGG(WIDTHS[name], num_classes)
