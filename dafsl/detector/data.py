"""Detector data: in-memory scenes, bbox-aware augmentation, seeded batches.

The scenes are small (128 px), so a split is decoded once into memory; an epoch is a
permutation from ``torch.Generator().manual_seed(seed * 1000 + epoch)`` and the
albumentations pipeline is reseeded from the same pair, so a resumed run sees exactly
the batches an uninterrupted one would.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dafsl.data import Split

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # offline: no version check at import


@dataclass
class Scene:
    image_id: int
    image: np.ndarray        # (H, W, 3) uint8 RGB
    boxes: np.ndarray        # (N, 4) float32 xyxy pixels
    labels: np.ndarray       # (N,) int64, 1..K (0 is background)


def category_labels(split: Split) -> dict[int, int]:
    """COCO category id → contiguous detector label 1..K (sorted by id)."""
    return {cid: i + 1 for i, cid in enumerate(sorted(split.category_names))}


def load_scenes(split: Split, exclude_classes: set[str] = frozenset(),
                limit: int | None = None) -> tuple[list[Scene], int]:
    """Decode ``split`` into memory. Scenes with an object whose class (``split.class_of``,
    e.g. gender) is in ``exclude_classes`` are left out: the BDRP learns from Denough only.
    Returns ``(scenes, number left out)``."""
    labels = category_labels(split)
    scenes, left_out = [], 0
    for image_id in split.image_ids:
        anns = [a for a in split.annotations(image_id) if not a.get("iscrowd", 0)]
        if exclude_classes and any(split.class_of(a) in exclude_classes for a in anns):
            left_out += 1
            continue
        if limit is not None and len(scenes) >= limit:
            break
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]] for a in anns], np.float32).reshape(-1, 4)
        scenes.append(Scene(image_id, split.load_image(image_id), boxes,
                            np.array([labels[a["category_id"]] for a in anns], np.int64)))
    return scenes, left_out


def build_augment(aug_cfg: dict):
    """Horizontal flip + light colour jitter, boxes kept in step (albumentations)."""
    import albumentations as A

    ops = []
    if aug_cfg["hflip"] > 0:
        ops.append(A.HorizontalFlip(p=float(aug_cfg["hflip"])))
    if aug_cfg["colour_jitter"] > 0:
        j = float(aug_cfg["colour_jitter"])
        ops.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 10, p=0.8))
    if not ops:
        return None
    return A.Compose(ops, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                   min_visibility=0.3))


def seed_augment(augment, seed: int) -> None:
    """Reseed an albumentations pipeline (2.x has its own generator; 1.x draws from the
    global ``random``/``numpy`` state, which the engine checkpoints)."""
    if hasattr(augment, "set_random_seed"):
        augment.set_random_seed(seed)
    else:
        import random

        random.seed(seed)
        np.random.seed(seed % 2**32)


def to_tensor(image: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 → (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


class EpochBatches:
    """One epoch of training batches: ``len()`` steps, each ``(images, targets)`` with
    images a list of (3, H, W) floats and targets ``{"boxes": (N, 4), "labels": (N,)}``."""

    def __init__(self, scenes: list[Scene], batch_size: int, seed: int, epoch: int, augment):
        self.scenes, self.batch_size, self.augment = scenes, batch_size, augment
        self.epoch_seed = seed * 1000 + epoch
        # The last partial batch is dropped: a 1-image batch makes BatchNorm noisy.
        self.steps = max(1, len(scenes) // batch_size)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        order = torch.randperm(len(self.scenes),
                               generator=torch.Generator().manual_seed(self.epoch_seed)).tolist()
        if self.augment is not None:
            seed_augment(self.augment, self.epoch_seed)
        for step in range(self.steps):
            chunk = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield self.collate([self.scenes[i] for i in chunk])

    def collate(self, scenes: list[Scene]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        images, targets = [], []
        for s in scenes:
            img, boxes, labels = s.image, s.boxes, s.labels
            if self.augment is not None:
                out = self.augment(image=img, bboxes=boxes, labels=labels)
                img = out["image"]
                boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
                labels = np.asarray(out["labels"], np.int64).reshape(-1)
            images.append(to_tensor(img))
            targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
        return images, targets
