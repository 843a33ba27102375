"""Generated faces of the Denough class, so that "generated" carries no class information.

The Dlack fill is the only generated class unless the Denough class gets generated faces
too: then a classifier can call every generated face Dlack and be right. The source GAN
(zoo entry ``augmenter-gan``) was trained on the Denough faces; its EMA generator draws
Denough faces with the same architecture, the same artefacts and, here, the same
degradation chain. ``augmenter.denough_fill`` sets how many: ``match`` (as many as the
Dlack fill, default), an integer, or 0 (none). They are written to
``<run>/augmenter/generated_denough/`` with a manifest ``generated_denough.json`` of the
same format as the Dlack one (``"class"`` is the Denough class).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dafsl import transfer
from dafsl.augmenter.data import to_uint8
from dafsl.augmenter.degrade import degrade_faces
from dafsl.augmenter.networks import Generator, build_gan
from dafsl.augmenter.samples import write_generated
from dafsl.augmenter.trainer import generate
from dafsl.errors import DafslError


def denough_count(value, n_fill: int) -> int:
    """``augmenter.denough_fill`` -> a count: ``match`` = ``n_fill``, an int >= 0 as is."""
    if value == "match":
        return n_fill
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DafslError(f"augmenter.denough_fill: expected 'match' or an integer >= 0, got {value!r}")
    return value


def denough_generator(cfg: dict) -> Generator:
    """The source GAN's EMA generator (zoo entry ``augmenter.zoo_entry``), in eval mode."""
    state, _ = transfer.resolve_source(cfg, str(cfg["augmenter"]["zoo_entry"]))
    g = build_gan(cfg["augmenter"]).G
    g.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("G.")})
    return g.eval()


def write_denough_fill(cfg: dict, out_dir: Path, cls: str, count: int, sides: np.ndarray,
                       degrade: dict, generator: tuple | None = None) -> Path | None:
    """Draw ``count`` faces from the source GAN's generator, or from ``generator`` = (the
    conditional EMA G, the class's label, level, alpha), degrade them like the Dlack fill,
    write them as class ``cls``; returns the manifest path (None when ``count`` is 0)."""
    if count == 0:
        return None
    seed = int(cfg["seed"])
    z = torch.randn(count, int(cfg["augmenter"]["latent_dim"]),
                    generator=torch.Generator().manual_seed(seed * 1000 + 996))
    if generator is None:
        images, origin = generate(denough_generator(cfg), z), {"mode": "source",
                                                             "generator": f"zoo:{cfg['augmenter']['zoo_entry']}"}
    else:
        g, label, level, alpha = generator
        images = generate(g, z, level, alpha, labels=int(label))
        origin = {"mode": "conditional", "generator": "generator_ema.pt", "label": int(label)}
    faces = degrade_faces(to_uint8(images), sides, degrade, seed * 1000 + 995)
    return write_generated(out_dir / "generated_denough", faces, cls, out_dir / "generated_denough.json",
                           extra=origin)
