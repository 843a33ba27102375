"""Fine-tuning on the few Dlack faces: settings that apply to the target run only.

The source GAN (zoo entry ``augmenter-gan``) is keyed on ``augmenter.lr_g``, ``lr_d``,
``ema_beta``, ... so tuning those for the 10-face run would rebuild it. The
``augmenter.target`` section overrides them for the target run alone (null = keep), and
adds two regularisers of D that only matter with few images:

* ``r1_gamma``: the R1 gradient penalty (Mescheder et al. 2018),
  ``gamma / 2 * E ||grad_x D(x)||^2`` on the real images (before DiffAugment, as in
  StyleGAN2-ADA); 0 = off. ``r1_every`` = k applies it every k-th D step with weight
  ``k * gamma`` (StyleGAN2's lazy regularisation: the same average, 1/k of the cost);
* ``d_bn``: ``train`` (BatchNorm in D uses each batch's statistics: the real batch and the
  fake batch are normalised separately, which lets D compare batch statistics) or
  ``frozen`` (D's BatchNorm keeps the source GAN's running statistics, eval mode).

:class:`TargetTrainer` is :class:`dafsl.augmenter.trainer.GanTrainer` with these two
additions; the source GAN keeps using the plain trainer (its cache key hashes that code).
"""
from __future__ import annotations

import torch
from torch import nn

from dafsl import dist
from dafsl.augmenter.diffaug import diff_augment
from dafsl.augmenter.loss import discriminator_loss
from dafsl.augmenter.trainer import GanTrainer, real_at
from dafsl.errors import DafslError

OVERRIDES = ("lr_g", "lr_d", "ema_beta", "steps_per_epoch")
D_BN = ("train", "frozen")


def target_config(aug: dict) -> dict:
    """``augmenter`` with the non-null ``augmenter.target`` overrides applied."""
    t = aug.get("target") or {}
    out = dict(aug)
    for key in OVERRIDES:
        if t.get(key) is not None:
            out[key] = t[key]
    if t.get("d_bn", "train") not in D_BN:
        raise DafslError(f"augmenter.target.d_bn: expected one of {', '.join(D_BN)}, got {t.get('d_bn')!r}")
    if float(t.get("r1_gamma", 0.0)) < 0:
        raise DafslError(f"augmenter.target.r1_gamma: must be >= 0, got {t.get('r1_gamma')!r}")
    return out


class TargetTrainer(GanTrainer):
    """:class:`GanTrainer` plus the R1 penalty and frozen BatchNorm statistics in D."""

    def __init__(self, *args, r1_gamma: float = 0.0, r1_every: int = 1, d_bn: str = "train", **kwargs):
        super().__init__(*args, **kwargs)
        self.r1_gamma, self.r1_every, self.d_bn = float(r1_gamma), max(1, int(r1_every)), d_bn
        if self.r1_gamma > 0 and dist.world_size() > 1:
            raise DafslError("augmenter.target.r1_gamma > 0 is not supported under torchrun "
                             "(the R1 penalty's double backward does not run through DDP); set it to 0")

    def train_step(self, idx: torch.Tensor) -> dict[str, float]:
        level, alpha = self.growth.at(self.step)
        G, D = self.G_train, self.D_train
        self.gan.train()
        if self.d_bn == "frozen":
            for m in self.gan.D.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        real = real_at(self.reals[idx.to(self.reals.device)], level, alpha)
        z = torch.randn(len(idx), self.gan.G.latent_dim).to(self.device)
        fake = G(z, level, alpha)

        r1_now = self.r1_gamma > 0 and self.step % self.r1_every == 0
        if r1_now:
            real = real.detach().requires_grad_(True)
        real_logits = D(diff_augment(real, self.policy), level, alpha)
        fake_logits = D(diff_augment(fake.detach(), self.policy), level, alpha)
        loss_d, figures = discriminator_loss(real_logits, fake_logits)
        bce_d = loss_d.item()  # logged as loss_d (the BCE terms); the penalty is logged as r1
        if r1_now:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grad.pow(2).sum(dim=(1, 2, 3)).mean()
            loss_d = loss_d + 0.5 * self.r1_gamma * self.r1_every * r1
            figures["r1"] = float(r1.detach())
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward(inputs=self.d_params)
        self.opt_d.step()
        self.sched_d.step()

        return {"loss_g": self.generator_step(fake, level, alpha), "loss_d": bce_d, **figures}
