"""Zoo entry ``augmenter-gan-related``: the source GAN trained on every face of a related
face set (``zoo.gan_related_manifest``, default ``synthfaces_related``: other scenes and
identities, both genders, shifted nuisances), without reading a label.

It is the embedded stand-in for the GAN a user actually starts from: a generator
pretrained on faces of every kind (FFHQ's StyleGAN), not on the abundant class alone. The
strict entry ``augmenter-gan`` has seen male faces only, so a female face is out of its
distribution; this one already draws long hair, lips and earrings somewhere in its
latent space, and the class-conditional fine-tuning only has to find where. Select it
with ``augmenter.zoo_entry: augmenter-gan-related``.

Built once with seed 0 whatever the run's seed, like a downloaded checkpoint. The
builder is :func:`dafsl.augmenter.zoo.build_source_gan` with every class of that set
counted as Denough (imbalance threshold 1e-9), so every face trains it and no class label
enters the training (each face is only an image to it).
"""
from __future__ import annotations

from pathlib import Path

import torch

from dafsl.augmenter import zoo as gan_zoo
from dafsl.config import thaw

ENTRY = "augmenter-gan-related"
SOURCE_SEED = 0


def _as_source(cfg: dict) -> dict:
    """The config the source-GAN builder reads: the related manifest, every class taken."""
    out = thaw(cfg)
    out["data"]["manifest"] = cfg["zoo"]["gan_related_manifest"]
    # no class is "lacking" (a count below 1e-9 x the largest): every face trains the GAN
    out["data"]["imbalance_threshold"] = 1e-9
    out["seed"] = SOURCE_SEED
    return out


def entry_key(cfg: dict) -> dict:
    return gan_zoo.entry_key(_as_source(cfg))


def build_related_gan(cfg: dict, out_dir: Path, device: torch.device) -> dict:
    """Train the source GAN on the related set's faces; writes ``out_dir/checkpoint.pt``."""
    return {**gan_zoo.build_source_gan(_as_source(cfg), out_dir, device), "seed": SOURCE_SEED}
