"""The BDRP detector: torchvision Faster R-CNN on a ResNet + FPN, sized for small faces.

Everything that shapes the network comes from the ``detector:`` config section, so the
same function builds our CPU-fast default, the paper's resnet50 GPU configuration and,
through :data:`STOCK_HEADS`, torchvision's stock heads for the benchmark.

Parameter names (stable, the transfer modes and zoo rely on them)::

    backbone.body.{conv1,bn1,layer1..layer4}.*   ResNet (torchvision or timm)
    backbone.fpn.*                               feature pyramid
    rpn.head.*                                   region proposal head
    roi_heads.box_head.*, roi_heads.box_predictor.*
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from dafsl.errors import DafslError
from dafsl.runs import load_checkpoint

BODY = "backbone.body"
# FREEZE_AT order (detectron2): 1 = stem, 2 = stem + layer1, ... 5 = the whole ResNet.
BLOCKS = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
LAYER_INDEX = {"layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4}

# torchvision's own FasterRCNN defaults (COCO, 800-px images): the "stock" model of the
# benchmark keeps our backbone and image size and swaps these back in.
STOCK_HEADS = {
    "fpn_channels": 256, "fpn_layers": ["layer1", "layer2", "layer3", "layer4"],
    "fpn_extra_pool": True, "anchor_sizes": [[32], [64], [128], [256], [512]],
    "anchor_ratios": [0.5, 1.0, 2.0], "rpn_pre_nms_train": 2000, "rpn_post_nms_train": 2000,
    "rpn_pre_nms_test": 1000, "rpn_post_nms_test": 1000, "rpn_batch_per_image": 256,
    "roi_batch_per_image": 512, "roi_output_size": 7, "roi_sampling_ratio": 2,
    "roi_canonical_scale": 224, "box_head_width": 1024, "box_detections_per_img": 100,
}


class ResNetFPN(nn.Module):
    """ResNet body + feature pyramid; ``forward(x (B,3,H,W))`` → OrderedDict of
    (B, out_channels, H/s, W/s) maps, one per level, finest first."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int,
                 extra_pool: bool, timm_body: bool):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels,
                                         extra_blocks=LastLevelMaxPool() if extra_pool else None)
        self.out_channels = out_channels
        self._timm_body = timm_body

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        feats = self.body(x)
        if self._timm_body:  # timm features_only returns a list
            feats = OrderedDict((str(i), f) for i, f in enumerate(feats))
        return self.fpn(feats)


class SizedTransform(GeneralizedRCNNTransform):
    """GeneralizedRCNNTransform that skips the bilinear resize when the image already has
    the configured size (every synthfaces scene): torchvision always interpolates, even
    at scale 1.0, once per image per step."""

    def resize(self, image: Tensor, target: dict | None = None):
        h, w = image.shape[-2:]
        size = float(self.min_size[-1])
        scale = min(size / min(h, w), float(self.max_size) / max(h, w))
        if abs(scale - 1.0) < 1e-6:
            return image, target
        return super().resize(image, target)


def _resnet_body(name: str, layers: list[str]) -> tuple[nn.Module, list[int], bool]:
    """(body, channels of the returned layers, is_timm) for a backbone name."""
    bad = [lay for lay in layers if lay not in LAYER_INDEX]
    if bad or not layers:
        raise DafslError(f"detector.fpn_layers: expected names from layer1..layer4, got {layers}")
    if name.startswith("timm/"):
        import timm

        try:
            body = timm.create_model(name[5:], pretrained=False, features_only=True,
                                     out_indices=[LAYER_INDEX[lay] for lay in layers])
        except RuntimeError as err:
            raise DafslError(f"detector.backbone: timm cannot build '{name[5:]}' "
                             f"({str(err).splitlines()[0]})") from None
        if not hasattr(body, "layer4") or not hasattr(body, "conv1"):
            raise DafslError(f"detector.backbone: {name} is not a ResNet (no conv1/layer1..4); "
                             f"the freeze levels and backbone_state need ResNet stages")
        return body, list(body.feature_info.channels()), True
    if name == "resnet10":  # one BasicBlock per stage: the tiny smoke-test backbone
        net = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    elif name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        net = getattr(torchvision.models, name)(weights=None)
    else:
        raise DafslError(f"detector.backbone: unknown backbone '{name}' (resnet10/18/34/50/101 "
                         f"or timm/<resnet name>)")
    expansion = 4 if isinstance(net.layer1[0], torchvision.models.resnet.Bottleneck) else 1
    channels = [64 * 2 ** (LAYER_INDEX[lay] - 1) * expansion for lay in layers]
    body = IntermediateLayerGetter(net, return_layers={lay: str(i) for i, lay in enumerate(layers)})
    return body, channels, False


def build_detector(det_cfg: dict, num_classes: int = 1) -> FasterRCNN:
    """Faster R-CNN + FPN from the ``detector:`` config; ``num_classes`` object classes
    (1 = face) plus background. Randomly initialised (transfer modes load weights).

    Input: list of (3, H, W) float images in [0, 1]; output in eval mode: per image
    ``{"boxes": (N, 4) xyxy pixels, "labels": (N,), "scores": (N,)}``.
    """
    c = det_cfg
    layers = list(c["fpn_layers"])
    body, in_ch, is_timm = _resnet_body(str(c["backbone"]), layers)
    backbone = ResNetFPN(body, in_ch, int(c["fpn_channels"]), bool(c["fpn_extra_pool"]), is_timm)
    n_levels = len(layers) + int(bool(c["fpn_extra_pool"]))
    sizes = [tuple(int(s) for s in level) for level in c["anchor_sizes"]]
    if len(sizes) != n_levels:
        raise DafslError(f"detector.anchor_sizes: {len(sizes)} levels given, the FPN has "
                         f"{n_levels} ({layers}{' + pool' if c['fpn_extra_pool'] else ''})")
    if len({len(s) for s in sizes}) != 1:
        raise DafslError("detector.anchor_sizes: every level needs the same number of sizes "
                         "(one RPN head is shared by all levels)")
    ratios = tuple(float(r) for r in c["anchor_ratios"])
    anchors = AnchorGenerator(tuple(sizes), (ratios,) * n_levels)
    rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0])
    size = int(c["image_size"])
    pool = MultiScaleRoIAlign([str(i) for i in range(len(layers))], int(c["roi_output_size"]),
                              int(c["roi_sampling_ratio"]),
                              canonical_scale=int(c["roi_canonical_scale"]))
    width = int(c["box_head_width"])
    model = FasterRCNN(
        backbone, num_classes=None, min_size=size, max_size=size,
        rpn_anchor_generator=anchors, rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=int(c["rpn_pre_nms_train"]),
        rpn_post_nms_top_n_train=int(c["rpn_post_nms_train"]),
        rpn_pre_nms_top_n_test=int(c["rpn_pre_nms_test"]),
        rpn_post_nms_top_n_test=int(c["rpn_post_nms_test"]),
        rpn_batch_size_per_image=int(c["rpn_batch_per_image"]),
        box_roi_pool=pool,
        box_head=TwoMLPHead(backbone.out_channels * int(c["roi_output_size"]) ** 2, width),
        box_predictor=FastRCNNPredictor(width, num_classes + 1),
        box_batch_size_per_image=int(c["roi_batch_per_image"]),
        box_score_thresh=float(c["box_score_thresh"]),
        box_detections_per_img=int(c["box_detections_per_img"]),
    )
    t = model.transform
    model.transform = SizedTransform(size, size, t.image_mean, t.image_std)
    return model


def stock_config(det_cfg: dict) -> dict:
    """``det_cfg`` with torchvision's stock heads (same backbone and image size)."""
    return {**det_cfg, **STOCK_HEADS}


def freeze_names(mode: str, freeze_at: int) -> list[str]:
    """Submodules a mode freezes: ``fixed`` the whole ResNet body (FPN, RPN and ROI heads
    train), ``finetune`` the first ``freeze_at`` blocks (1 = stem, 2 = stem + layer1, ...)."""
    if mode == "fixed":
        return [BODY]
    if mode == "finetune":
        if not 0 <= freeze_at <= len(BLOCKS):
            raise DafslError(f"transfer.freeze_at: expected 0..{len(BLOCKS)}, got {freeze_at}")
        return [f"{BODY}.{m}" for block in BLOCKS[:freeze_at] for m in block]
    return []


def backbone_state(model_or_state: nn.Module | dict) -> dict[str, Tensor]:
    """The detector's ResNet weights with plain resnet names (``conv1.weight``,
    ``layer1.0.bn1.running_mean``, ...) so a timm/torchvision ResNet can load them."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    prefix = BODY + "."
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise DafslError("backbone_state: no 'backbone.body.*' tensors; not a dafsl detector state")
    return out


def as_detector_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A source state in detector naming: plain ResNet weights (an ImageNet or classifier
    checkpoint) are moved under ``backbone.body.``; detector states pass through."""
    if any(k.startswith(BODY + ".") for k in state):
        return state
    return {f"{BODY}.{k}": v for k, v in state.items() if not k.startswith("fc.")}


def load_detector(path: str | Path, device: torch.device | str = "cpu") -> FasterRCNN:
    """Rebuild a detector from the stage's final checkpoint
    (``{"model": state_dict, "detector_cfg": dict, "num_classes": int}``), in eval mode."""
    obj = load_checkpoint(path)
    if "model" not in obj or "detector_cfg" not in obj:
        raise DafslError(f"{path}: not a dafsl detector checkpoint (needs 'model' and "
                         f"'detector_cfg')")
    model = build_detector(obj["detector_cfg"], int(obj.get("num_classes", 1)))
    try:
        model.load_state_dict(obj["model"])
    except RuntimeError as err:
        raise DafslError(f"{path}: weights do not fit its detector_cfg "
                         f"({str(err).splitlines()[0][:200]})") from None
    return model.to(device).eval()
