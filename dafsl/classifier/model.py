"""The gender classifier: a timm backbone with a new linear head, its freezing plan per
transfer mode, and its checkpoint format.

Module names follow timm's ResNet (``conv1``, ``bn1``, ``layer1`` … ``layer4``, ``fc``),
which are also torchvision's, so the BDRP detector's backbone
(:func:`dafsl.detector.model.backbone_state`) loads by name. The head (``fc``) is new
in every transfer mode: the source never has a two-class gender head.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dafsl.classifier.plain_cnn import build_plain_cnn, is_plain_cnn
from dafsl.config_schema import CLASSIFIER_STEMS
from dafsl.errors import DafslError
from dafsl.runs import load_checkpoint, save_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# classifier.stem: "imagenet" = the backbone's own stem (resnet: 7x7 stride-2 conv + max-pool,
# a 32 px face is 8x8 after it); "small" = 3x3 stride-1 conv + the max-pool (16x16);
# "cifar" = 3x3 stride-1 conv, no max-pool (32x32, as CIFAR ResNets; ~3x slower than small)
STEMS = CLASSIFIER_STEMS


def build_classifier(backbone: str, num_classes: int = 2, stem: str = "imagenet") -> nn.Module:
    """A randomly initialised timm model ``backbone`` with a ``num_classes`` head.

    Input (B, 3, H, W) normalised with ImageNet mean/std; output logits (B, num_classes).
    ``resnet10`` is resnet18 with one block per stage (the detector's tiny backbone).
    ``stem`` (:data:`STEMS`) swaps a ResNet's ``conv1`` (and ``maxpool``) for small inputs.
    Weights are never downloaded here (:func:`dafsl.transfer.resolve_source` reads caches).
    """
    if stem not in STEMS:
        raise DafslError(f"classifier.stem: expected one of {', '.join(STEMS)}, got {stem!r}")
    if is_plain_cnn(backbone):  # cnn2..cnn10 (dafsl/classifier/plain_cnn.py); no stem to swap
        return build_plain_cnn(backbone, num_classes)
    kwargs = {}
    if backbone == "resnet10":  # one BasicBlock per stage, as the detector's smoke backbone
        backbone, kwargs = "resnet18", {"layers": [1, 1, 1, 1]}
    try:
        model = timm.create_model(backbone, pretrained=False, num_classes=num_classes, **kwargs)
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise DafslError(f"classifier.backbone: {str(err).splitlines()[0]}") from None
    if stem != "imagenet":
        conv1 = getattr(model, "conv1", None)
        if not isinstance(conv1, nn.Conv2d) or not isinstance(getattr(model, "maxpool", None), nn.Module):
            raise DafslError(f"classifier.stem {stem}: needs a ResNet-like backbone with conv1 "
                             f"and maxpool, {backbone} has none")
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
        if stem == "cifar":
            model.maxpool = nn.Identity()
    return model


def adapt_stem(model: nn.Module, state: dict) -> dict:
    """``state`` with its ``conv1.weight`` resized to ``model``'s kernel when only the kernel
    size differs (a 7x7 stride-2 source into a 3x3 stride-1 ``small``/``cifar`` stem).

    The kernel is area-resampled and rescaled to keep its sum: on a 32 px crop, the
    stride-1 3x3 filter then responds as the source's 7x7 one did on the crop upsampled
    twice, so ``fixed``/``finetune``/``pretrained`` keep the source's first-layer features.
    Any other mismatch is left to :func:`dafsl.transfer.load_matching` to report.
    """
    src, here = state.get("conv1.weight"), model.state_dict().get("conv1.weight")
    if not isinstance(src, torch.Tensor) or here is None or src.shape == here.shape \
            or src.shape[:2] != here.shape[:2]:
        return state
    k = here.shape[-2:]
    w = torch.nn.functional.interpolate(src.float(), size=tuple(k), mode="area")
    w = w * (src.shape[-1] * src.shape[-2]) / (k[0] * k[1])
    return {**state, "conv1.weight": w.to(src.dtype)}


def head_name(model: nn.Module) -> str:
    """Name of the classification head module (``fc`` for ResNets)."""
    return model.pretrained_cfg.get("classifier", "fc") if hasattr(model, "pretrained_cfg") else "fc"


def backbone_blocks(model: nn.Module) -> list[list[str]]:
    """Top-level module names grouped as [stem, stage1, stage2, …] from timm's
    ``feature_info`` (resnet: [[conv1, bn1, act1], [maxpool, layer1], [layer2], …]).

    This is the unit of ``transfer.freeze_at`` (detectron2 FREEZE_AT: 1 = stem,
    2 = stem + first stage, …).
    """
    children = [name for name, _ in model.named_children()]
    stage_ends = [f["module"] for f in getattr(model, "feature_info", [])]
    if not stage_ends or any("." in s or s not in children for s in stage_ends):
        raise DafslError(f"classifier.backbone: {type(model).__name__} has no top-level stages "
                         f"in feature_info; finetune needs a ResNet-like model (e.g. resnet18)")
    blocks, current = [], []
    for name in children:
        current.append(name)
        if name == stage_ends[len(blocks)]:
            blocks.append(current)
            current = []
            if len(blocks) == len(stage_ends):
                break
    return blocks


def frozen_modules(model: nn.Module, mode: str, freeze_at: int) -> list[str]:
    """Top-level modules to freeze for ``mode``: ``fixed`` → everything but the head
    (a frozen feature extractor); ``finetune`` → the first ``freeze_at`` blocks of
    :func:`backbone_blocks`; ``vanilla``/``pretrained`` → nothing."""
    if mode == "fixed":
        head = head_name(model)
        return [name for name, m in model.named_children()
                if name != head and any(True for _ in m.parameters())]
    if mode == "finetune":
        blocks = backbone_blocks(model)
        if not 0 <= freeze_at < len(blocks):
            raise DafslError(f"transfer.freeze_at: {freeze_at} would freeze every stage of the "
                             f"classifier (it has {len(blocks)} blocks incl. the stem); use "
                             f"0..{len(blocks) - 1} or mode fixed")
        return [name for block in blocks[:freeze_at] for name in block]
    return []


def backbone_prefixes(model: nn.Module) -> list[str]:
    """Parameter-holding top-level modules except the head: the part of the network a
    pretrained source must provide (a missing or mis-shaped layer there is an error)."""
    head = head_name(model)
    return [f"{name}." for name, m in model.named_children()
            if name != head and any(True for _ in m.parameters())]


def save_classifier(model: nn.Module, path: Path, *, backbone: str, classes: list[str],
                    input_size: int, crop_size: int, stem: str = "imagenet") -> None:
    """Write the final classifier: {"model", "backbone", "stem", "classes", "input_size",
    "crop_size"}."""
    save_checkpoint({"model": model.state_dict(), "backbone": backbone, "stem": stem,
                     "classes": list(classes), "input_size": int(input_size),
                     "crop_size": int(crop_size)}, path)


class NCMHead(nn.Linear):
    """SimpleShot's CL2N nearest-class-mean rule as a head: ``z = n(f - centre)``, then
    ``score_c = 2 mu_c . z - |mu_c|^2 - 1 = -|z - mu_c|^2`` (``|z| = 1``)."""

    def __init__(self, centre: Tensor, centroids: Tensor):
        super().__init__(centroids.shape[1], centroids.shape[0])
        self.register_buffer("centre", centre.clone().float())
        with torch.no_grad():
            self.weight.copy_(2 * centroids)
            self.bias.copy_(-(centroids ** 2).sum(dim=1) - 1)

    def forward(self, features: Tensor) -> Tensor:
        return super().forward(F.normalize(features - self.centre, dim=1))


def install_ncm_head(model: nn.Module, centre: Tensor | None = None,
                     centroids: Tensor | None = None) -> None:
    """Replace the model's head by an :class:`NCMHead` (zeros when only its shape is
    wanted, before a checkpoint's state is loaded)."""
    name = head_name(model)
    fc = getattr(model, name)
    if centre is None:
        centre, centroids = torch.zeros(fc.in_features), torch.zeros(fc.out_features, fc.in_features)
    setattr(model, name, NCMHead(centre, centroids).to(fc.weight.device))


class CalibratedHead(nn.Linear):
    """Distribution calibration's head (``classifier.imbalance: calibration``): Tukey's
    ladder of powers, then a linear layer: ``logits = W max(f, 0)**lam + b``.

    ``features`` (N, D) -> logits (N, C). ``lam`` is a buffer, so the checkpoint carries it
    and :func:`load_classifier` rebuilds the head from the state dict alone."""

    def __init__(self, weight: Tensor, bias: Tensor, lam: float):
        super().__init__(weight.shape[1], weight.shape[0])
        self.register_buffer("tukey_lambda", torch.tensor(float(lam)))
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(bias)

    def forward(self, features: Tensor) -> Tensor:
        # the clamp: the statistics were computed on max(f, 0) (post-ReLU features are
        # non-negative; the clamp guards a backbone whose pooled features are not)
        return super().forward(features.clamp(min=0) ** self.tukey_lambda)


def install_calibrated_head(model: nn.Module, weight: Tensor | None = None,
                            bias: Tensor | None = None, lam: float = 1.0) -> None:
    """Replace the model's head by a :class:`CalibratedHead` (``weight`` (C, D), ``bias``
    (C,); zeros when only its shape is wanted, before a checkpoint's state is loaded)."""
    name = head_name(model)
    fc = getattr(model, name)
    if weight is None:
        weight, bias = torch.zeros(fc.out_features, fc.in_features), torch.zeros(fc.out_features)
    setattr(model, name, CalibratedHead(weight, bias, lam).to(fc.weight.device))


def load_classifier(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a classifier saved by :func:`save_classifier`; returns (model in eval mode, meta)."""
    ckpt = load_checkpoint(path)
    missing = [k for k in ("model", "backbone", "classes") if k not in ckpt]
    if missing:
        raise DafslError(f"{path}: not a classifier checkpoint (lacks '{missing[0]}')")
    model = build_classifier(ckpt["backbone"], len(ckpt["classes"]), ckpt.get("stem", "imagenet"))
    if f"{head_name(model)}.centre" in ckpt["model"]:  # classifier.imbalance: ncm
        install_ncm_head(model)
    elif f"{head_name(model)}.tukey_lambda" in ckpt["model"]:  # classifier.imbalance: calibration
        install_calibrated_head(model)
    elif f"{head_name(model)}.support" in ckpt["model"]:  # classifier.head: a few-shot head
        from dafsl.fewshot.head import empty_head

        setattr(model, head_name(model), empty_head(ckpt["model"], f"{head_name(model)}."))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise DafslError(f"{path}: weights do not fit {ckpt['backbone']} "
                         f"({str(err).splitlines()[0][:160]})") from None
    meta = {k: v for k, v in ckpt.items() if k != "model"}
    return model.to(device).eval(), meta
