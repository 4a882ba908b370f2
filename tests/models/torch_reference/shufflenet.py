"""Independent PyTorch ShuffleNets (RepDistiller's ``models/ShuffleNetv1.py`` / ``ShuffleNetv2.py`` architectures).

Written for the tests: the module names (``conv1``, ``bn1``, ``layer{s}.{b}.conv{k}``,
``layer{s}.{b}.bn{k}``, ``conv2``, ``bn2``, ``linear``) are the reference's, so
the ``state_dict`` keys are those of a RepDistiller checkpoint. R only (these
nets have no NR variant). The channel shuffle is written as an index gather
(output channel ``j * g + i`` = input channel ``i * C / g + j``), not as the
reference's view/permute, so the two are checked against each other.
"""

import torch
import torch.nn.functional as F
from torch import nn

from tests.models.torch_reference.common import randomize  # noqa: F401  (tests import it here)


def shuffle(x, groups):
    """Channel shuffle of ``(N, C, H, W)`` by an explicit permutation."""
    c = x.shape[1]
    order = torch.arange(c).view(groups, c // groups).t().reshape(-1)
    return x[:, order]


def _dw(c, stride):
    return nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)


class V1Bottleneck(nn.Module):
    def __init__(self, cin, cout, stride, groups):
        super().__init__()
        mid = cout // 4
        self.g = 1 if cin == 24 else groups
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=self.g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = _dw(mid, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward(self, x):
        h = shuffle(F.relu(self.bn1(self.conv1(x))), self.g)
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        if self.stride == 2:
            pre = torch.cat([h, F.avg_pool2d(x, 3, 2, 1)], 1)  # count_include_pad=True, as the reference
        else:
            pre = h + x
        return F.relu(pre), pre


class ShuffleV1(nn.Module):
    """``forward(x, features=True)`` also returns ``([f0, f1, f2, f3], [f1_pre, f2_pre, f3_pre])``."""

    def __init__(self, num_classes=100, out_planes=(240, 480, 960), blocks=(4, 8, 4), groups=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for s, (cout, n) in enumerate(zip(out_planes, blocks), start=1):
            layer = []
            for b in range(n):
                layer.append(V1Bottleneck(cin, cout - (cin if b == 0 else 0), 2 if b == 0 else 1, groups))
                cin = cout
            setattr(self, f"layer{s}", nn.ModuleList(layer))
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x, features=False):
        x = F.relu(self.bn1(self.conv1(x)))
        feats, pres = [x], []
        for layer in (self.layer1, self.layer2, self.layer3):
            for block in layer:
                x, pre = block(x)
            feats.append(x)
            pres.append(pre)
        logits = self.linear(x.mean((2, 3)))
        return (logits, feats, pres) if features else logits


class V2Basic(nn.Module):
    def __init__(self, c):
        super().__init__()
        half = c // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = _dw(half, 1)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x):
        half = x.shape[1] // 2
        x1, x2 = x[:, :half], x[:, half:]
        h = F.relu(self.bn1(self.conv1(x2)))
        h = self.bn3(self.conv3(self.bn2(self.conv2(h))))
        return shuffle(torch.cat([x1, F.relu(h)], 1), 2), torch.cat([x1, h], 1)


class V2Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.conv1 = _dw(cin, 2)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = _dw(mid, 2)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        out = shuffle(torch.cat([left, right], 1), 2)
        return out, None


class ShuffleV2(nn.Module):
    """``forward(x, features=True)`` also returns ``([f0, f1, f2, f3], [f1_pre, f2_pre, f3_pre])``."""

    def __init__(self, num_classes=100, channels=(116, 232, 464), blocks=(3, 7, 3), head=1024):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for s, (c, n) in enumerate(zip(channels, blocks), start=1):
            setattr(self, f"layer{s}", nn.ModuleList([V2Down(cin, c)] + [V2Basic(c) for _ in range(n)]))
            cin = c
        self.conv2 = nn.Conv2d(cin, head, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(head)
        self.linear = nn.Linear(head, num_classes)

    def forward(self, x, features=False):
        x = F.relu(self.bn1(self.conv1(x)))
        feats, pres = [x], []
        for layer in (self.layer1, self.layer2, self.layer3):
            for block in layer:
                x, pre = block(x)
            feats.append(x)
            pres.append(pre)
        x = F.relu(self.bn2(self.conv2(x)))
        logits = self.linear(x.mean((2, 3)))
        return (logits, feats, pres) if features else logits
