"""Face crops for the classifier: where the boxes come from, how faces are cut and
resized, the classic augmentation, and the per-epoch (optionally class-balanced) order.

Every face, real or generated, passes through the same resolution ``crop_size`` (the
GAN's output resolution) before being resized to the network's ``input_size``: if real
crops kept more detail than generated ones, "sharp" would be a shortcut for "male".

Crop source, framing and the detection-to-face matching rule are :mod:`dafsl.faces`'s,
shared with the augmenter and the end-to-end evaluation.
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

from dafsl.config_schema import AUGMENTATIONS, IMBALANCE  # noqa: F401 (re-exported)
from dafsl.data import Split, read_image
from dafsl.errors import DafslError
from dafsl.faces import class_faces, crop_faces, face_boxes
from dafsl.classifier.model import IMAGENET_MEAN, IMAGENET_STD



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


def crop_size_of(cfg: dict) -> int:
    """The classifier's crop size: ``classifier.crop_size``, which must equal the GAN's
    resolution (``augmenter.resolution``); null follows it. Real and generated faces pass
    through the same resolution, so sharpness cannot tell them apart."""
    gan = int(cfg["augmenter"]["resolution"])
    size = cfg["classifier"]["crop_size"]
    if size is None:
        return gan
    if int(size) != gan:
        raise DafslError(f"classifier.crop_size: {size} differs from augmenter.resolution {gan}; "
                         f"real and generated faces must pass through the same resolution "
                         f"(set it to null to follow the GAN)")
    return int(size)


def split_faces(split: Split, classes: Sequence[str], size: int, faces_cfg: dict,
                detections: dict[int, dict] | None = None) -> tuple[FaceSet, dict]:
    """Crop every annotated face of ``split`` (:mod:`dafsl.faces`).

    ``detections`` {image_id: {"boxes": (N, 4) xyxy, "scores": (N,)}} switches the box of
    each face to its matching detection (``faces.score_threshold``, ``faces.match_iou``).
    Returns the faces and {"faces", "from_detector", "from_gt"} counts.
    """
    faces = class_faces(split, None)
    if not faces:
        raise DafslError(f"{split.label}: no annotated faces to crop")
    boxes = face_boxes(faces, detections, float(faces_cfg["score_threshold"]),
                       float(faces_cfg["match_iou"]))
    images = crop_faces(split, faces, size, float(faces_cfg["margin"]), boxes.boxes)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.asarray([index[split.class_of(ann)] for _, ann in faces], dtype=np.int64)
    n = len(labels)
    out = FaceSet(images, labels, np.zeros(n, dtype=bool))
    return out, {"faces": n, "from_detector": boxes.from_detector, "from_gt": n - boxes.from_detector}


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


def to_input(images: np.ndarray | torch.Tensor, input_size: int,
             device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (N, S, S, 3) → normalised float (N, 3, input_size, input_size), on ``device``
    (default: where ``images`` are; the uint8 array is moved first, 4x smaller than floats)."""
    x = torch.as_tensor(images)
    if device is not None:
        x = x.to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > input_size)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s parameters live (its inputs must go there)."""
    return next(model.parameters()).device


def epoch_order(labels: np.ndarray, epoch: int, seed: int, *, balanced: bool,
                epoch_size: int | None = None, synthetic: np.ndarray | None = None,
                real_share: float | None = None) -> np.ndarray:
    """Sample indices for one epoch, seeded by (seed, epoch) so a resumed run sees the same order.

    ``balanced``: ``epoch_size`` draws with replacement, each class equally likely
    (class-balanced sampling). Within a class that has both real and generated faces
    (``synthetic`` (N,) bool), a draw is a real face with probability ``real_share``
    (None: 0.5), the same in every class, so "real" and "generated" carry no class
    information and the few real Dlack faces are not drowned by a thousand generated ones.
    Not ``balanced``: a permutation (truncated/repeated to ``epoch_size``); but when
    ``real_share`` is given and some faces are generated, draws with replacement, each
    class as likely as its share of the training set, real/generated within it as above.
    """
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    n = len(labels)
    size = int(epoch_size or n)
    synthetic = np.zeros(n, dtype=bool) if synthetic is None else np.asarray(synthetic, dtype=bool)
    if balanced or (real_share is not None and synthetic.any()):
        share = 0.5 if real_share is None else float(real_share)
        group = labels * 2 + synthetic  # (class, real/generated)
        group_count = np.bincount(group, minlength=2 * (labels.max() + 1))
        present = group_count.reshape(-1, 2) > 0  # (C, [real, generated])
        real_part = np.where(present.all(axis=1), share, present[:, 0].astype(float))  # (C,)
        within = np.where(synthetic, 1.0 - real_part[labels], real_part[labels])
        class_weight = 1.0 if balanced else np.bincount(labels)[labels] / n
        weights = class_weight * within / group_count[group]
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
