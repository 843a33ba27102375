"""The augmenter's view of every class: the conditional GAN's real faces, the generated
faces of each class, and TSTR on them (does a generated "female" face teach a
classifier what a real female face looks like?).

* :func:`conditional_reals`: with ``augmenter.conditional`` the GAN learns from the real
  faces of every class, the Dlack class's few and the Denough classes' (up to
  ``augmenter.denough_faces`` each), cut the same way; their labels are the split's class
  indices.
* :class:`ClassFakes`: generated faces of each class. Conditional: one EMA generator
  draws every class (same weights, same artefacts; only the class embedding differs).
  Unconditional: the fine-tuned generator draws the Dlack class and the source GAN the
  Denough classes (:mod:`dafsl.augmenter.denough`), which is what the classifier
  receives in that setting.
* :class:`TstrProbe`: :func:`dafsl.tstr.tstr` with the small ConvNet, trained on those
  faces (degraded like the fill) and scored on the validation split's real faces of every
  class; the snapshot selection ``best_val_tstr`` uses its ROC-AUC.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from dafsl.augmenter.data import DlackCrops, to_tensor, to_uint8
from dafsl.augmenter.degrade import degrade_faces
from dafsl.augmenter.networks import Generator
from dafsl.augmenter.trainer import generate
from dafsl.data import Split
from dafsl.errors import DafslError
from dafsl.faces import class_faces
from dafsl.tstr import small_cnn, tstr


def conditional_reals(crop: Callable, train: Split, dlack: DlackCrops, classes: list[str], dlack_cls: str,
                      denough_faces: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The real faces of every class in ``[-1, 1]`` (N, 3, r, r) and their class indices (N,):
    the Dlack crops first, then each Denough class's first ``denough_faces`` (0: all)."""
    images, labels, counts = [dlack.images], [np.full(len(dlack.images), classes.index(dlack_cls))], {}
    counts[dlack_cls] = len(dlack.images)
    for c in classes:
        if c == dlack_cls:
            continue
        faces = class_faces(train, c, int(denough_faces))
        if not faces:
            raise DafslError(f"{train.label}: class '{c}' has no face for the conditional GAN")
        cut = crop(train, faces).images
        images.append(cut)
        labels.append(np.full(len(cut), classes.index(c)))
        counts[c] = len(cut)
    return (to_tensor(np.concatenate(images)), torch.as_tensor(np.concatenate(labels), dtype=torch.int64),
            counts)


@dataclass
class ClassFakes:
    """Draws generated faces of each class: ``conditional`` -> every class from the one
    generator passed to :meth:`draw`; else the Dlack class from it and the other classes
    from ``others`` (the source GAN's generator)."""

    classes: list[str]
    dlack: str
    conditional: bool
    others: Generator | None = None

    def draw(self, g: Generator, per_class: int, seed: int, level: int | None = None,
             alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(N, r, r, 3) uint8 faces and (N,) class indices, ``per_class`` of each class."""
        images, labels = [], []
        for i, c in enumerate(self.classes):
            z = torch.randn(per_class, g.latent_dim, generator=torch.Generator().manual_seed(seed * 100 + i))
            if self.conditional:
                x = generate(g, z, level, alpha, labels=i)
            elif c == self.dlack:
                x = generate(g, z, level, alpha)
            else:
                if self.others is None:
                    raise DafslError("augmenter: the unconditional TSTR needs the source generator")
                x = generate(self.others, z)
            images.append(to_uint8(x))
            labels.append(np.full(per_class, i, dtype=np.int64))
        return np.concatenate(images), np.concatenate(labels)


class TstrProbe:
    """TSTR of generated faces against one split's real faces of every class."""

    def __init__(self, real_images: np.ndarray, real_labels: np.ndarray, positive: int, *,
                 sides: np.ndarray, degrade: dict, faces_per_class: int, steps: int, batch_size: int,
                 lr: float, seed: int, device: torch.device | str = "cpu"):
        self.real_images, self.real_labels = real_images, np.asarray(real_labels, dtype=np.int64)
        self.positive, self.sides, self.degrade = int(positive), sides, degrade
        self.faces_per_class, self.steps, self.batch_size, self.lr = faces_per_class, steps, batch_size, lr
        self.seed, self.device = seed, device

    def score(self, images: np.ndarray, labels: np.ndarray, degrade_seed: int | None = None) -> dict:
        """TSTR of generated ``images`` (N, r, r, 3) uint8 with ``labels`` (N,); degraded first
        (the fill's chain) when ``degrade_seed`` is given."""
        if degrade_seed is not None:
            images = degrade_faces(images, self.sides, self.degrade, degrade_seed)
        num_classes = int(max(labels.max(), self.real_labels.max())) + 1
        return tstr(images, labels, self.real_images, self.real_labels,
                    make_model=lambda: small_cnn(num_classes), positive=self.positive, steps=self.steps,
                    batch_size=self.batch_size, lr=self.lr, seed=self.seed, device=self.device)


def real_faces_of(crop: Callable, split: Split, classes: list[str], per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` real faces of every class of ``split``, cut like the GAN's."""
    images, labels = [], []
    for i, c in enumerate(classes):
        faces = class_faces(split, c, per_class)
        if len(faces) < 2:
            raise DafslError(f"{split.label}: TSTR needs at least 2 real '{c}' faces")
        images.append(crop(split, faces).images)
        labels.append(np.full(len(faces), i, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)
