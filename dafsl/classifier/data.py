"""Face crops for the classifier: where the boxes come from, how faces are cut and
resized, the classic augmentation, and the per-epoch (optionally class-balanced) order.

Every face, real or generated, passes through the same resolution ``crop_size`` (the
GAN's output resolution) before being resized to the network's ``input_size``: if real
crops kept more detail than generated ones, "sharp" would be a shortcut for "male".

Crop source (``classifier.crops``): ``gt`` uses the annotated boxes; ``detector`` runs
the BDRP detector and takes, for every annotated face, the detection that matches it
(IoU >= 0.5, best score first); a face the detector misses keeps its annotated box, so
the Dlack class loses none of its few real faces and every run scores the same faces
(the augmenter follows the same rule for the faces its GAN learns from).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dafsl.data import Split, read_image
from dafsl.errors import DafslError
from dafsl.evaluate import iou_matrix
from dafsl.classifier.model import IMAGENET_MEAN, IMAGENET_STD

AUGMENTATIONS = ("none", "classic", "gan", "gan+classic")
IMBALANCE = ("none", "balanced_sampling", "weighted_loss")


@dataclass
class FaceSet:
    """Faces as one array: ``images`` (N, S, S, 3) uint8 RGB, ``labels`` (N,) int64 class
    indices, ``synthetic`` (N,) bool (True for generated faces)."""

    images: np.ndarray
    labels: np.ndarray
    synthetic: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)

    @staticmethod
    def concat(parts: Sequence["FaceSet"]) -> "FaceSet":
        return FaceSet(np.concatenate([p.images for p in parts]),
                       np.concatenate([p.labels for p in parts]),
                       np.concatenate([p.synthetic for p in parts]))


def crop_face(image: np.ndarray, bbox_xywh: Sequence[float], size: int, margin: float) -> np.ndarray:
    """Square (size, size, 3) crop of the xywh box, framed exactly as the augmenter frames
    the faces its GAN learns from (:func:`dafsl.augmenter.data.crop_face`: side = longer
    box side × (1 + margin), edge-replicated outside the scene, area downscaling), so
    real and generated faces differ in content, not in framing."""
    from dafsl.augmenter.data import crop_face as augmenter_crop_face

    x, y, w, h = (float(v) for v in bbox_xywh)
    return augmenter_crop_face(image, np.array([x, y, x + w, y + h], dtype=np.float32), size, margin)


def match_faces(gt_boxes: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                iou_threshold: float = 0.5) -> np.ndarray:
    """For each GT box (G, 4 xywh) the index of its matching detection (D, 4 xywh), or -1.

    Greedy by descending detection score; each detection matches at most one face (the
    free one it overlaps most, IoU >= threshold), the VOC convention.
    """
    match = np.full(len(gt_boxes), -1, dtype=np.int64)
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return match
    iou = iou_matrix(det_boxes, gt_boxes)
    for d in np.argsort(-np.asarray(det_scores), kind="stable"):
        free = np.where(match < 0, iou[d], -1.0)
        g = int(free.argmax())
        if free[g] >= iou_threshold:
            match[g] = d
    return match


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def split_faces(split: Split, classes: Sequence[str], size: int, margin: float,
                detections: dict[int, dict] | None = None, score_threshold: float = 0.5
                ) -> tuple[FaceSet, dict]:
    """Crop every annotated face of ``split``.

    ``detections`` {image_id: {"boxes": (N, 4) xyxy, "scores": (N,)}} switches the box of
    each face to its matching detection with score >= ``score_threshold``. Returns the
    faces and {"faces", "from_detector", "from_gt"} counts.
    """
    images, labels = [], []
    from_det = 0
    index = {c: i for i, c in enumerate(classes)}
    for image_id in split.image_ids:
        anns = split.annotations(image_id)
        if not anns:
            continue
        img = split.load_image(image_id)
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64)
        if detections is not None:
            det = detections.get(image_id, {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)})
            keep = np.asarray(det["scores"]) >= score_threshold
            det_xywh = xyxy_to_xywh(np.asarray(det["boxes"])[keep])
            match = match_faces(boxes, det_xywh, np.asarray(det["scores"])[keep])
            boxes = np.where(match[:, None] >= 0, det_xywh[np.maximum(match, 0)] if len(det_xywh)
                             else boxes, boxes)
            from_det += int((match >= 0).sum())
        for ann, box in zip(anns, boxes):
            images.append(crop_face(img, box, size, margin))
            labels.append(index[split.class_of(ann)])
    n = len(labels)
    if n == 0:
        raise DafslError(f"{split.label}: no annotated faces to crop")
    faces = FaceSet(np.stack(images), np.asarray(labels, dtype=np.int64), np.zeros(n, dtype=bool))
    return faces, {"faces": n, "from_detector": from_det, "from_gt": n - from_det}


def generated_faces(manifest_path: Path, folder: Path, classes: Sequence[str], size: int,
                    limit: int | None = None) -> FaceSet:
    """The augmenter's generated faces: its ``generated_manifest`` JSON ({"class",
    "images": [file names in ``folder``], ...}), the first ``limit`` resized to ``size``."""
    manifest_path, folder = Path(manifest_path), Path(folder)
    try:
        meta = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise DafslError(f"{manifest_path}: cannot read the generated-faces manifest") from None
    if meta.get("class") not in classes:
        raise DafslError(f"{manifest_path}: class {meta.get('class')!r} is not one of {list(classes)}")
    names = list(meta.get("images", []))[:limit]
    if not names:
        raise DafslError(f"{manifest_path}: lists no generated images")
    imgs = []
    for name in names:
        img = read_image(folder / name)
        if img.shape[:2] != (size, size):
            interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
            img = cv2.resize(img, (size, size), interpolation=interp)
        imgs.append(img)
    n = len(imgs)
    return FaceSet(np.stack(imgs), np.full(n, classes.index(meta["class"]), dtype=np.int64),
                   np.ones(n, dtype=bool))


def classic_augmentation(seed: int) -> A.Compose:
    """Flips, small shifts/scales/rotations (a crop jitter) and mild photometric changes.

    Colour changes stay mild on purpose: lip saturation and skin tone are gender cues.
    """
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-10, 10),
                 border_mode=cv2.BORDER_REFLECT_101, p=0.7),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.HueSaturationValue(hue_shift_limit=4, sat_shift_limit=10, val_shift_limit=0, p=0.3),
    ], seed=seed)


def to_input(images: np.ndarray | torch.Tensor, input_size: int) -> torch.Tensor:
    """uint8 (N, S, S, 3) → normalised float (N, 3, input_size, input_size)."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > input_size)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def epoch_order(labels: np.ndarray, epoch: int, seed: int, *, balanced: bool,
                epoch_size: int | None = None, synthetic: np.ndarray | None = None) -> np.ndarray:
    """Sample indices for one epoch, seeded by (seed, epoch) so a resumed run sees the same order.

    ``balanced``: ``epoch_size`` draws with replacement, each class equally likely
    (class-balanced sampling); within a class that has both real and generated faces
    (``synthetic`` (N,) bool), real and generated are equally likely too, so the few real
    Dlack faces are not drowned by a thousand generated ones. Else a permutation
    (truncated/repeated to ``epoch_size``).
    """
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    n = len(labels)
    size = int(epoch_size or n)
    if balanced:
        synthetic = np.zeros(n, dtype=bool) if synthetic is None else np.asarray(synthetic, dtype=bool)
        group = labels * 2 + synthetic  # (class, real/generated)
        group_count = np.bincount(group, minlength=2 * (labels.max() + 1))
        sources = (group_count.reshape(-1, 2) > 0).sum(axis=1)  # 1 or 2 per class
        weights = 1.0 / (sources[labels] * group_count[group])
        return torch.multinomial(torch.as_tensor(weights, dtype=torch.float64), size,
                                 replacement=True, generator=g).numpy()
    reps = -(-size // n)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[:size].numpy()


class EpochBatches:
    """The batches of one epoch: dicts {"image": (B, 3, I, I) float, "target": (B,) int64,
    "synthetic": (B,) bool} plus ``"views"`` (V, B, 3, I, I) when ``views`` > 1."""

    def __init__(self, faces: FaceSet, order: np.ndarray, batch_size: int, input_size: int,
                 augment: A.Compose | None, views: int = 1):
        self.faces, self.order = faces, order
        self.batch_size, self.input_size = batch_size, input_size
        self.augment, self.views = augment, views

    def __len__(self) -> int:
        return self.count(len(self.order), self.batch_size)

    @staticmethod
    def count(samples: int, batch_size: int) -> int:
        """Batches in an epoch of ``samples``: a last batch of one sample would break
        BatchNorm in train mode, so it is dropped."""
        full, rest = divmod(samples, batch_size)
        return full + (rest > 1)

    def _view(self, idx: np.ndarray) -> torch.Tensor:
        imgs = self.faces.images[idx]
        if self.augment is not None:
            imgs = np.stack([self.augment(image=im)["image"] for im in imgs])
        return to_input(imgs, self.input_size)

    def __iter__(self) -> Iterator[dict]:
        for b in range(len(self)):
            idx = self.order[b * self.batch_size:(b + 1) * self.batch_size]
            views = [self._view(idx) for _ in range(self.views)]
            batch = {"image": views[0], "target": torch.as_tensor(self.faces.labels[idx]),
                     "synthetic": torch.as_tensor(self.faces.synthetic[idx])}
            if self.views > 1:
                batch["views"] = torch.stack(views)
            yield batch
