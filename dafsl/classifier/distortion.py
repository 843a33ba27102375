"""DDGSD's data distortion (seed 002) as a configurable albumentations pipeline.

``classifier.distill_params.ddgsd.distortion`` is a list of transforms, each a mapping
``{name: <albumentations transform class>, <its keyword arguments>...}``, e.g.::

    distortion:
      - {name: HorizontalFlip, p: 0.5}
      - {name: Affine, scale: [0.9, 1.1], translate_percent: [-0.1, 0.1], rotate: [-10, 10], p: 1.0}

Lists become tuples (albumentations' ranges). The data pipeline applies the stage's own
augmentation first, then this pipeline, independently for each of the two views, reseeded
per epoch by the trainer (a resumed run distorts as an uninterrupted one).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import albumentations as A
import cv2

from dafsl.errors import DafslError

KEY = "classifier.distill_params.ddgsd.distortion"
# random crop-like jitter, flips and mild photometric change (the paper's CIFAR distortions
# are random crops and flips; colour stays mild here, skin tone and lips are gender cues)
DEFAULT_DISTORTION = (
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "Affine", "scale": [0.9, 1.1], "translate_percent": [-0.1, 0.1], "rotate": [-10, 10],
     "border_mode": cv2.BORDER_REFLECT_101, "p": 1.0},
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
)


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def build_distortion(spec: Sequence[dict], seed: int | None = 0, key: str = KEY) -> A.Compose:
    """An ``A.Compose`` of the transforms in ``spec``; a bad entry is one DafslError line."""
    if not isinstance(spec, (list, tuple)) or not spec:
        raise DafslError(f"{key}: expected a non-empty list of {{name: Transform, ...}}, got {spec!r}")
    transforms = []
    for i, item in enumerate(spec):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise DafslError(f"{key}[{i}]: expected a mapping with a 'name', got {item!r}")
        name = item["name"]
        cls = getattr(A, name, None)
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            raise DafslError(f"{key}[{i}]: '{name}' is not an albumentations transform")
        kwargs = {k: _tuples(v) for k, v in item.items() if k != "name"}
        try:
            with warnings.catch_warnings():  # albumentations only warns on an unknown argument
                warnings.simplefilter("error", UserWarning)
                transforms.append(cls(**kwargs))
        except Exception as err:  # pydantic validation / unexpected keyword
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DafslError(f"{key}[{i}]: {name}({kwargs}): {first[:160]}") from None
    return A.Compose(transforms, seed=seed)
