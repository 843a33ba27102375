"""Differentiable augmentation for data-efficient GAN training (DiffAugment, Zhao et
al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

With 10 real faces, D memorises them within a few hundred steps and its gradients
stop being useful to G. DiffAugment applies the *same kind* of random, differentiable
transform to every image D sees, real and fake, in both the D step and the G step, so
D cannot tell real from fake by the augmentation and G still receives gradients
through it. Policies (images in [-1, 1], shape (B, 3, H, W), one draw per image):

* ``color``: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5);
* ``translation``: integer shift up to 1/8 of the side, zero padding;
* ``cutout``: one zeroed square of half the side at a random centre.

Randomness comes from ``generator`` when given, else from torch's global RNG (which
:func:`dafsl.engine.fit` checkpoints, so a resumed run draws the same augmentations).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> list[str]:
    """``"color,translation"`` -> ["color", "translation"]; ``""`` -> [] (no augmentation)."""
    from dafsl.errors import DafslError

    names = [p.strip() for p in policy.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise DafslError(f"augmenter.diffaug: unknown policy '{bad[0]}' "
                         f"(choose from {', '.join(POLICIES)}, comma-separated, or empty)")
    return names


def _rand(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator, dtype=x.dtype).to(x.device)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    x = x + (_rand(x, generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, generator) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, generator) + 0.5) + mean


def translation(x: torch.Tensor, generator: torch.Generator | None = None,
                ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), generator=generator).to(x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=generator).to(x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    # Index into a 1-pixel zero border: shifted-out pixels read the border.
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, generator: torch.Generator | None = None,
           ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=generator).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=generator).to(x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gy, gx] = 0
    return x * mask.unsqueeze(1)


_FUNCS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: list[str],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the policies in order: (B, 3, H, W) -> (B, 3, H, W), differentiable in ``x``."""
    for name in policy:
        x = _FUNCS[name](x, generator)
    return x
