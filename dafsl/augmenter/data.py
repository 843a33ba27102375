"""The augmenter's images: tensors in the GAN's range and the Denough classes.

Cropping, matching detections to faces and the detector's cached boxes live in
:mod:`dafsl.faces` (one rule for every stage).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dafsl.data import Split, denough_dlack


def denough_classes(cfg: dict, split: Split) -> list[str]:
    """The Denough classes of ``split`` under the config's imbalance rule."""
    return denough_dlack(split.class_counts(), cfg["data"]["imbalance_threshold"],
                         origin=split.label)["denough"]


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] (clipped) -> (N, H, W, 3) uint8."""
    x = ((images.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


@dataclass
class DlackCrops:
    """The GAN's real images and where they came from."""

    images: np.ndarray                  # (N, r, r, 3) uint8
    source: str                         # "detector" or "gt"
    missed: list[int] = field(default_factory=list)   # annotation ids cropped at GT after a miss
    ious: list[float] = field(default_factory=list)   # IoU of each matched detection
