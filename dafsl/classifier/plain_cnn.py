"""Plain CNNs of 2 to 10 conv layers (``cnn2`` ... ``cnn10``), the model family of the
teacher-assistant papers (Mirzadeh et al. 2020's plain CNNs; seed 004: CNN-10 -> CNN-2).

``cnnN``: N blocks conv 3x3 -> BatchNorm -> ReLU in three stages of widths
``widths`` (default 16, 32, 64), a 2x2 max-pool after stages 1 and 2, average pooling
to a 2x2 grid, flattened (4 x the last width: the features; a plain CNN's flattened map,
which keeps where strokes are, unlike global pooling), and a linear head ``fc``. The N layers are spread over the stages as evenly as
possible, the first stage taking the remainder: cnn2 = (1, 1, 0), cnn4 = (2, 1, 1),
cnn6 = (2, 2, 2), cnn8 = (4, 2, 2)... cnn10 = (4, 3, 3). The interface is timm's
(``forward_features``, ``forward_head(pre_logits=True)``, ``get_classifier``), so the
classifier stage, its freezing plan and DDGSD's feature term treat it as any backbone.
"""
from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from dafsl.config_schema import PLAIN_CNNS
from dafsl.errors import DafslError

_NAME = re.compile(r"^cnn(\d+)$")


def stage_depths(depth: int) -> tuple[int, int, int]:
    """Conv layers per stage for a ``depth``-layer plain CNN (2..10)."""
    if not 2 <= depth <= 10:
        raise DafslError(f"plain CNN depth must be 2..10, got {depth}")
    if depth == 2:
        return (1, 1, 0)
    base = depth // 3
    return (depth - 2 * base, base, base)


class PlainCNN(nn.Module):
    """A plain CNN; input (B, in_chans, H, W), logits (B, num_classes)."""

    def __init__(self, depth: int, num_classes: int, in_chans: int = 3,
                 widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_chans
        for stage, n in enumerate(stage_depths(depth)):
            if stage > 0 and n > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(n):
                layers += [nn.Conv2d(c_in, widths[stage], 3, padding=1, bias=False),
                           nn.BatchNorm2d(widths[stage]), nn.ReLU(inplace=True)]
                c_in = widths[stage]
        self.features = nn.Sequential(*layers)
        self.num_features = 4 * c_in
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def is_plain_cnn(name: str) -> bool:
    return name in PLAIN_CNNS


def build_plain_cnn(name: str, num_classes: int, in_chans: int = 3,
                    widths: tuple[int, int, int] = (16, 32, 64)) -> PlainCNN:
    """``cnn2`` ... ``cnn10`` (:data:`PLAIN_CNNS`), randomly initialised."""
    m = _NAME.match(name)
    if not m or name not in PLAIN_CNNS:
        raise DafslError(f"model name: expected one of {', '.join(PLAIN_CNNS)}, got {name!r}")
    return PlainCNN(int(m.group(1)), num_classes, in_chans, widths)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

