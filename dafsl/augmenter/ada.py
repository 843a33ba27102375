"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data").

Two pieces, plugged into the one GAN trainer:

* :class:`AdaAugment`, the module: every image D sees (real and fake, in the D step and
  the G step) goes through the same pipeline, each transform applied to each sample
  independently with probability ``p``. While ``p`` stays below about 0.8 the
  augmentations do not leak into G's output (ADA sec. 2.2, fig. 3): D still sees the
  clean distribution often enough that only the clean one fools it;
* :class:`AdaController`, the controller: it owns ``p`` and moves it from the overfitting
  heuristic ``r_t = E[sign(D(real))]`` (ADA sec. 3, eq. 1): up when D is too sure of
  the reals (``r_t`` > target), down otherwise.

Wiring, per step: ``D(ada(real, ctl.p))``, ``D(ada(fake, ctl.p))`` (G's fakes keep their
gradient through ``ada``), then ``ctl.update(real_logits)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dafsl import dist
from dafsl.errors import DafslError

# ADA's "bgc" pipeline reduced to what a 32 px face needs: x-flip and integer translation
# from the geometric group (no 90-degree rotations: an upside-down face is not a face of
# either class), brightness, contrast and saturation from the colour group.
TRANSFORMS = ("xflip", "translate", "brightness", "contrast", "saturation")
PADS = ("reflect", "zero")


def translate(x: torch.Tensor, shift: torch.Tensor, pad: str = "reflect") -> torch.Tensor:
    """Shift each image by a whole number of pixels: ``out[b, :, y, x] = x[b, :, y - dy, x - dx]``.

    ``x`` (B, C, H, W); ``shift`` (B, 2) int64 ``(dy, dx)``, each ``|d|`` < H and W;
    ``pad``: ``reflect`` (ADA's padding: no black border for D to spot) or ``zero``
    (DiffAugment's). Differentiable in ``x``.
    """
    b, _, h, w = x.shape
    s = int(shift.abs().max()) if shift.numel() else 0
    if s == 0:
        return x
    if s >= min(h, w):
        raise ValueError(f"shift {s} px needs an image larger than {h}x{w}")
    padded = F.pad(x, [s, s, s, s], mode="reflect" if pad == "reflect" else "constant")
    shift = shift.to(x.device)
    gy = (torch.arange(h, device=x.device) + s).view(1, h, 1) - shift[:, 0].view(b, 1, 1)
    gx = (torch.arange(w, device=x.device) + s).view(1, 1, w) - shift[:, 1].view(b, 1, 1)
    gb = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2).contiguous()


class AdaAugment(nn.Module):
    """ADA's augmentation pipeline for images (B, 3, H, W) in [-1, 1].

    ``forward(x, p, generator=None) -> (B, 3, H, W)``, differentiable in ``x``. In order,
    each transform is switched on for each sample with probability ``p``, independently
    of the other samples and the other transforms (ADA sec. 2.3):

    * ``xflip``: a random element of {identity, horizontal flip} (so a switched-on sample
      is flipped with probability 1/2, as in ADA);
    * ``translate``: an integer shift of ``round(U(-r, r) * size)`` px per axis,
      ``r = translate_max`` (ADA's 1/8), padded as ``pad`` says;
    * ``brightness``: ``x + N(0, brightness_std)`` (ADA: 0.2);
    * ``contrast``: ``x * 2**N(0, contrast_std)`` about mid-grey 0 (ADA: 0.5);
    * ``saturation``: the chroma ``x - mean_c(x)`` scaled by ``2**N(0, saturation_std)``
      (ADA: 1), i.e. ADA's scaling orthogonal to the luma axis (1, 1, 1)/sqrt(3).

    These are ADA's mild colour ranges, not DiffAugment's (``diffaug.color``: brightness
    +-0.5, saturation x U(0, 2)), and each transform is gated per sample, which
    DiffAugment's ops (always on) do not do; so they are written here, not imported.
    A sample a transform skips is passed through ``torch.where``: bit-for-bit unchanged.

    Randomness: from ``generator`` (a CPU ``torch.Generator``) when given, else torch's
    global CPU RNG (which the training loop checkpoints, so a resumed run draws the same
    augmentations); numbers are drawn on the CPU and moved to ``x``'s device, so a run
    draws the same augmentations on any device. The numbers drawn depend on the batch
    size only, not on ``p``; ``p == 0`` returns ``x`` itself and draws nothing.
    """

    def __init__(self, transforms: tuple[str, ...] | list[str] = TRANSFORMS, pad: str = "reflect",
                 translate_max: float = 0.125, brightness_std: float = 0.2,
                 contrast_std: float = 0.5, saturation_std: float = 1.0):
        super().__init__()
        bad = [t for t in transforms if t not in TRANSFORMS]
        if bad:
            raise DafslError(f"augmenter.target.ada_transforms: unknown transform '{bad[0]}' "
                             f"(choose from {', '.join(TRANSFORMS)})")
        if pad not in PADS:
            raise DafslError(f"augmenter.target.ada_pad: must be one of {', '.join(PADS)}, got {pad!r}")
        self.transforms = tuple(t for t in TRANSFORMS if t in transforms)  # always ADA's order
        self.pad = pad
        self.translate_max = float(translate_max)
        self.brightness_std = float(brightness_std)
        self.contrast_std = float(contrast_std)
        self.saturation_std = float(saturation_std)

    def sample(self, batch: int, size: int, p: float,
               generator: torch.Generator | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-sample parameters for a batch of ``batch`` images of side ``size``:
        ``{transform: (on (B,) bool, value)}``, with value (B,) bool for ``xflip`` (flip or
        not), (B, 2) int64 ``(dy, dx)`` for ``translate``, (B,) float otherwise; all on
        the CPU."""
        out = {}
        for name in self.transforms:
            on = torch.rand(batch, generator=generator) < p
            if name == "xflip":
                value = torch.rand(batch, generator=generator) < 0.5
            elif name == "translate":
                u = torch.rand(batch, 2, generator=generator) * 2 - 1
                value = torch.round(u * self.translate_max * size).long()
            else:
                std = getattr(self, f"{name}_std")
                value = torch.randn(batch, generator=generator) * std
                if name != "brightness":  # log2-normal scale factors
                    value = torch.exp2(value)
            out[name] = (on, value)
        return out

    def apply(self, x: torch.Tensor, params: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``x`` (B, 3, H, W) transformed by ``params`` from :meth:`sample`; deterministic."""
        b = x.shape[0]
        for name in self.transforms:
            on, value = params[name]
            if not bool(on.any()):  # checked before the move: no device sync
                continue
            on, value = on.to(x.device), value.to(x.device)
            if name == "xflip":
                y = torch.where(value.view(b, 1, 1, 1), x.flip(3), x)
            elif name == "translate":
                y = translate(x, value * on.view(b, 1), self.pad)
            elif name == "brightness":
                y = x + value.to(x.dtype).view(b, 1, 1, 1)
            elif name == "contrast":
                y = x * value.to(x.dtype).view(b, 1, 1, 1)
            else:  # saturation: the luma component stays, the chroma is scaled
                mean = x.mean(dim=1, keepdim=True)
                y = mean + (x - mean) * value.to(x.dtype).view(b, 1, 1, 1)
            x = torch.where(on.view(b, 1, 1, 1), y, x)
        return x

    def forward(self, x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, H, W), each transform on for each sample with probability ``p``."""
        if p <= 0 or not self.transforms:
            return x
        return self.apply(x, self.sample(x.shape[0], x.shape[-1], float(p), generator))


class AdaController:
    """Owns ADA's augmentation probability ``p`` and adjusts it from D's real logits.

    ``update(real_logits (B,))`` accumulates ``sign(D(real))``; every ``interval`` calls it
    sets ``r_t = E[sign(D(real))]`` over the images accumulated since the last adjustment
    and (the ``ada_interval``/``ada_kimg`` rule of ADA's official code)::

        p <- clamp(p + sign(r_t - target) * n / speed_imgs, 0, p_max)

    where ``n`` is the number of real logits accumulated (``batch_size * interval`` with
    full batches, summed over the ranks under torchrun, so every rank keeps the same ``p``).

    ``speed_imgs`` is the number of images over which ``p`` can go from 0 to 1 (ADA's
    ``ada_kimg`` = 500, i.e. 500 000 images, 2 % of a 25 M-image run). Here a target run
    is about 300 steps x 16 = 4 800 images: at 500 k, ``p`` could not pass 0.01 in a whole
    run. The default 2 000 lets ``p`` move 0.032 per adjustment (interval 4, batch 16), so
    it can reach the useful 0.2-0.6 within 25-75 steps (D memorises 10 faces in about 100)
    while each move stays small enough that the ``r_t`` feedback does not swing.

    ``p_max`` (default 0.8) caps ``p`` where ADA (fig. 3) saw augmentations start to leak.
    ADA itself only clamps at 0; with 10 reals ``r_t`` may stay above target whatever
    ``p`` is, and an uncapped ``p`` would then teach G the augmented distribution.
    """

    def __init__(self, target: float = 0.6, interval: int = 4, speed_imgs: float = 2000.0,
                 p_max: float = 0.8, p: float = 0.0):
        if not 0 < target < 1:
            raise DafslError(f"augmenter.target.ada_target: must lie in (0, 1), got {target}")
        if int(interval) < 1:
            raise DafslError(f"augmenter.target.ada_interval: must be >= 1, got {interval}")
        if speed_imgs <= 0:
            raise DafslError(f"augmenter.target.ada_speed_imgs: must be > 0, got {speed_imgs}")
        if not 0 <= p_max <= 1:
            raise DafslError(f"augmenter.target.ada_p_max: must lie in [0, 1], got {p_max}")
        self.target, self.interval, self.speed_imgs = float(target), int(interval), float(speed_imgs)
        self.p_max = float(p_max)
        self.p = min(max(float(p), 0.0), self.p_max)
        self.rt = float("nan")  # the last r_t (for logging); nan before the first adjustment
        self._signs = 0.0       # sum of sign(D(real)) since the last adjustment
        self._count = 0         # real logits since the last adjustment
        self._calls = 0         # update() calls since the last adjustment

    def update(self, real_logits: torch.Tensor) -> float:
        """Accumulate ``sign(real_logits)`` (B,) and, every ``interval`` calls, adjust ``p``.
        Returns the (possibly new) ``p``."""
        logits = real_logits.detach()
        self._signs += float(torch.sign(logits).sum())
        self._count += logits.numel()
        self._calls += 1
        if self._calls < self.interval:
            return self.p
        signs, count = self._signs, float(self._count)
        if dist.world_size() > 1:  # every rank adjusts by the global statistics
            mean = dist.mean_over_ranks({"signs": signs, "count": count})
            signs, count = mean["signs"] * dist.world_size(), mean["count"] * dist.world_size()
        self._signs, self._count, self._calls = 0.0, 0, 0
        if count == 0:
            return self.p
        self.rt = signs / count
        step = (self.rt > self.target) - (self.rt < self.target)  # sign(r_t - target)
        self.p = min(max(self.p + step * count / self.speed_imgs, 0.0), self.p_max)
        return self.p

    def state_dict(self) -> dict:
        """Everything :meth:`load_state_dict` needs for a resumed run to continue identically."""
        return {"p": self.p, "rt": self.rt, "signs": self._signs, "count": self._count,
                "calls": self._calls, "target": self.target, "interval": self.interval,
                "speed_imgs": self.speed_imgs, "p_max": self.p_max}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``p`` and the partial accumulation (the settings stay this controller's)."""
        self.p, self.rt = float(state["p"]), float(state["rt"])
        self._signs, self._count = float(state["signs"]), int(state["count"])
        self._calls = int(state["calls"])
