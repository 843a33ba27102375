"""Face crops cut the way the GAN's training faces are, for any split, and the snapshot
selection that uses them.

The GAN learns from Dlack faces cropped at the BDRP detector's boxes; the quality
reference (validation and test Dlack faces) and the real-vs-generated probe's real faces
must be cut the same way, or KID measures the crop difference. :func:`make_cropper`
loads the detector once and returns ``crop(split, faces) -> DlackCrops`` (detector boxes
matched by IoU, a missed face at its ground-truth box; ground-truth boxes throughout when
``augmenter.crops`` resolves to ``gt``).

:class:`BestSnapshot` keeps the EMA generator with the lowest periodic KID against the
**validation** reference (``augmenter.select: best_val_kid``) among the evaluations from
``augmenter.select_after`` x epochs on; the test reference only scores the final choice.
KID is blind to the class (docs/augmenter.md, Measured): an early snapshot, still close to
the source GAN's Denough faces, can score lowest, so the first part of the run is no
candidate.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch

from dafsl.augmenter.data import DlackCrops
from dafsl.data import Split
from dafsl.errors import DafslError
from dafsl.faces import crop_faces, crop_source, face_boxes, split_detections
from dafsl.log import get_logger
from dafsl.runs import load_checkpoint, save_checkpoint

SELECT_CHOICES = ("last", "best_val_kid", "best_val_tstr")
log = get_logger("augmenter")


def make_cropper(ctx) -> Callable[[Split, list], DlackCrops]:
    """``crop(split, faces) -> DlackCrops`` at ``augmenter.resolution``, framed and matched
    by :mod:`dafsl.faces` (``faces.crops``: the detector of this run or ``--from``, cached
    detections, a missed face at its annotated box; or annotated boxes)."""
    fcfg, size = ctx.cfg["faces"], int(ctx.cfg["augmenter"]["resolution"])
    checkpoint = ctx.optional_output("detector", "checkpoint")
    source = crop_source(fcfg["crops"], checkpoint is not None, "augmenter")
    if source == "detector" and not Path(checkpoint).is_file():
        raise DafslError(f"{checkpoint}: detector checkpoint named in the detector outputs not found")

    def crop(split: Split, faces: list) -> DlackCrops:
        detections = (split_detections(Path(checkpoint), split, ctx.device, ctx.cfg["data"]["cache_dir"])
                      if source == "detector" else None)
        boxes = face_boxes(faces, detections, float(fcfg["score_threshold"]), float(fcfg["match_iou"]))
        if source == "detector":
            log.info(f"crops ({split.label}): {len(faces) - len(boxes.missed)}/{len(faces)} faces cut "
                     f"at BDRP detections ({checkpoint}); the rest at their annotated boxes")
        images = crop_faces(split, faces, size, float(fcfg["margin"]), boxes.boxes)
        return DlackCrops(images, source, boxes.missed, boxes.ious)
    return crop


class BestSnapshot:
    """Keeps a copy of the generator whose periodic validation score was the lowest: KID
    (``best_val_kid``) or 1 - TSTR ROC-AUC (``best_val_tstr``, :mod:`dafsl.tstr`: a
    classifier trained on the generated faces of both classes, scored on the validation
    split's real faces). ``kid`` holds that score whichever it is."""

    def __init__(self, policy: str, path: Path | None = None, resume: bool = False, first_epoch: int = 0):
        """``path``: where the kept snapshot is written, so that ``--resume`` picks it up;
        ``first_epoch`` (0-based): earlier evaluations are not candidates."""
        if policy not in SELECT_CHOICES:
            raise DafslError(f"augmenter.select: expected one of {', '.join(SELECT_CHOICES)}, got {policy!r}")
        self.policy, self.path, self.first_epoch = policy, path, int(first_epoch)
        self.kid, self.epoch, self.state = float("inf"), None, None
        if resume and path is not None and Path(path).is_file():
            saved = load_checkpoint(Path(path))
            self.kid, self.epoch, self.state = float(saved["kid"]), int(saved["epoch"]), saved["model"]

    def offer(self, g: torch.nn.Module, kid: float, epoch: int) -> None:
        if self.policy != "last" and epoch >= self.first_epoch and kid < self.kid:
            self.kid, self.epoch, self.state = kid, epoch, copy.deepcopy(g.state_dict())
            if self.path is not None:
                save_checkpoint({"model": self.state, "kid": kid, "epoch": epoch}, Path(self.path))

    def restore(self, g: torch.nn.Module) -> int | None:
        """Load the kept snapshot into ``g`` (no-op for ``last``); returns its epoch (0-based)."""
        if self.state is not None:
            g.load_state_dict(self.state)
        return self.epoch
