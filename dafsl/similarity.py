"""Dataset similarity (seed 001, eq. 1): datasets as descriptor vectors compared with
the Minkowski distance.

Descriptor (:func:`describe_images`): the mean over a deterministic sample of images
of a fixed, non-learned feature bank — nothing is trained, so two datasets can be
compared without any checkpoint:

* colour: 8-bin histograms of R, G and B (24 values, each histogram sums to 1);
* gradients: 8-bin gradient-orientation histograms weighted by magnitude, at full
  and half resolution (16 values, each sums to 1), on the luminance image;
* texture energy: mean gradient magnitude at both scales, divided by 255 (2 values).

42 values in all, each in [0, 1]. Zoo entries store the descriptor of their source
data, so comparing against them does not need the source images.
"""
from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

DESCRIPTOR_SIZE = 42


def _orientation_hist(gray: np.ndarray) -> tuple[np.ndarray, float]:
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    mag, ang = cv2.cartToPolar(gx, gy)
    # Orientation modulo pi: a dark-to-light edge and its reverse are the same edge.
    bins = ((ang % np.pi) / np.pi * 8).astype(np.int64).clip(0, 7)
    hist = np.bincount(bins.ravel(), weights=mag.ravel(), minlength=8)
    total = hist.sum()
    return (hist / total if total > 0 else np.full(8, 1 / 8)), float(mag.mean())


def describe_image(img: np.ndarray) -> np.ndarray:
    """Feature-bank vector of one HxWx3 uint8 RGB image, shape (42,)."""
    colour = [np.bincount((img[..., c] >> 5).ravel(), minlength=8) / img[..., c].size
              for c in range(3)]
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h1, e1 = _orientation_hist(gray)
    h2, e2 = _orientation_hist(cv2.resize(gray, None, fx=0.5, fy=0.5,
                                          interpolation=cv2.INTER_AREA))
    return np.concatenate([*colour, h1, h2, [e1 / 255.0, e2 / 255.0]]).astype(np.float64)


def describe_images(images: Iterable[np.ndarray]) -> np.ndarray:
    """Mean descriptor of a set of images, shape (42,)."""
    vecs = [describe_image(im) for im in images]
    if not vecs:
        raise ValueError("cannot describe an empty set of images")
    return np.mean(vecs, axis=0)


def describe_split(split, n: int = 200) -> list[float]:
    """Descriptor of a :class:`dafsl.data.Split` from ``n`` evenly spaced images
    (deterministic: the same split always gives the same vector)."""
    ids = split.image_ids
    pick = np.linspace(0, len(ids) - 1, num=min(n, len(ids))).round().astype(int)
    return describe_images(split.load_image(ids[i]) for i in pick).tolist()
