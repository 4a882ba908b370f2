"""The same networks and KD step in PyTorch, for speed comparisons only.

Mirrors kdkeras's WRN (docs/models.md) layer for layer: grouped unit
``GConv3x3 -> BN -> Conv1x1``, pre-activation blocks, dropout 0.3, 1x1
projection shortcuts on shape changes (R) or none (NR). PyTorch is not a
dependency of kdkeras: ``pip install torch`` to run ``scripts/bench.py
--framework=torch``.
"""

from __future__ import annotations

import time

import torch
from torch import nn
import torch.nn.functional as F


def _groups(spec: str, channels: int) -> int:
    mode, value = spec[0], int(spec[1:])
    return value if mode == "g" else channels // value


class Unit(nn.Sequential):
    def __init__(self, cin, cout, stride, grouping):
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=_groups(grouping, cin), bias=False),
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 1, bias=False),
        )


class WRNBlock(nn.Module):
    def __init__(self, cin, cout, stride, grouping, residual, dropout):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.unit1 = Unit(cin, cout, stride, grouping)
        self.unit2 = Unit(cout, cout, 1, grouping)
        self.dropout = nn.Dropout(dropout)
        self.residual = residual
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if residual and (stride != 1 or cin != cout) else None)

    def forward(self, x):
        a = F.relu(self.bn1(x))
        h = self.unit2(self.dropout(F.relu(self.bn2(self.unit1(a)))))
        if not self.residual:
            return h
        return h + (self.shortcut(a) if self.shortcut is not None else x)


class WRN(nn.Module):
    def __init__(self, depth, width, grouping, residual, num_classes=100, dropout=0.3):
        super().__init__()
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        blocks, cin = [], 16
        for cout, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
            for i in range(n):
                blocks.append(WRNBlock(cin, cout, stride if i == 0 else 1, grouping, residual, dropout))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(name: str, num_classes: int = 100) -> nn.Module:
    """A WRN model from a kdkeras name (``wrn<d>x<k>_<R|NR>_<g|G><n>``)."""
    net, res, grouping = name.split("_")
    if not net.startswith("wrn"):
        raise ValueError(f"The PyTorch reference has WRN models only. Received: {name}.")
    depth, width = (int(v) for v in net[3:].split("x"))
    return WRN(depth, width, grouping, res == "R", num_classes)


def kd_loss(student_logits, teacher_logits, labels, temperature=4.0, alpha=0.9):
    ce = F.cross_entropy(student_logits, labels)
    kl = F.kl_div(F.log_softmax(student_logits / temperature, 1),
                  F.log_softmax(teacher_logits / temperature, 1), reduction="batchmean", log_target=True)
    return (1 - alpha) * ce + alpha * temperature**2 * kl


def benchmark(model_name, mode="train", teacher_name=None, batch_size=128, steps=10, warmup=2,
              threads=None, repeats=1):
    """Images/s of each of ``repeats`` windows of SGD training, a KD step or inference."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(model_name).train()
    teacher = build(teacher_name).eval() if mode == "distill" else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=4e-4)
    x = torch.randn(batch_size, 3, 32, 32)
    y = torch.randint(0, 100, (batch_size,))

    def step():
        if mode == "infer":
            with torch.no_grad():
                model.eval()(x)
            return
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = kd_loss(logits, teacher_logits, y)
        else:
            loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(batch_size * steps / (time.perf_counter() - start))
    return rates
