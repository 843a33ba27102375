"""The shared feature extractor of the few-shot methods.

``conv4`` is the 4-block ConvNet of Vinyals et al. and Snell et al.: four times
(conv 3x3, ``width`` channels, BatchNorm, ReLU, max-pool 2), then flattened. On 28 px
Omniglot-sized images it gives 64 x 1 x 1 = 64 features. Any timm model name also
works (``timm.create_model(name, pretrained=False, num_classes=0, in_chans=...)``:
pooled features, random initialisation; nothing is downloaded).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dafsl.errors import DafslError


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), nn.MaxPool2d(2))


def conv4(in_chans: int = 1, width: int = 64) -> nn.Sequential:
    """(B, in_chans, S, S) -> (B, width * (S // 16)^2) features."""
    return nn.Sequential(conv_block(in_chans, width), conv_block(width, width),
                         conv_block(width, width), conv_block(width, width), nn.Flatten())


def build_backbone(name: str = "conv4", in_chans: int = 1, width: int = 64) -> nn.Module:
    """``conv4`` or a timm model name; returns a module mapping images (B, C, S, S) to
    features (B, D). A timm model is built without weights and without a head."""
    if name == "conv4":
        return conv4(in_chans, width)
    import timm

    if not timm.is_model(name):
        raise DafslError(f"fewshot.backbone: expected conv4 or a timm model name, got {name!r}")
    return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)


@torch.no_grad()
def feature_dim(backbone: nn.Module, in_chans: int, image_size: int) -> int:
    """D of ``backbone``'s features for (in_chans, image_size, image_size) inputs."""
    was = backbone.training
    backbone.eval()
    d = backbone(torch.zeros(2, in_chans, image_size, image_size)).shape[1]
    backbone.train(was)
    return int(d)


def embed(backbone: nn.Module, images: Tensor, batch_size: int = 512) -> Tensor:
    """Features (N, D) of ``images`` (N, C, S, S) in batches (the caller sets train/eval
    mode and grad)."""
    return torch.cat([backbone(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
