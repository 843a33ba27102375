"""GAN losses: binary cross-entropy, as in the PyTorch DCGAN example and the paper's
Table 3 (which reports these cross-entropy values).

* D: ``BCE(D(x), 1) + BCE(D(G(z)), 0)`` — the real and fake terms summed (``loss_d``);
* G: the non-saturating ``BCE(D(G(z)), 1)`` (Goodfellow et al. 2014), whose gradient
  does not vanish when D confidently rejects the fakes early in training.

Logits in, so the sigmoid is folded into a numerically stable BCE-with-logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor
                       ) -> tuple[torch.Tensor, dict[str, float]]:
    """``real_logits`` (B,), ``fake_logits`` (B,) -> (loss_d, figures): figures holds the two
    terms and ``d_real``/``d_fake``, D's mean probability of "real" (DCGAN's D(x), D(G(z)))."""
    loss_real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    loss_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    with torch.no_grad():
        figures = {"loss_d_real": float(loss_real), "loss_d_fake": float(loss_fake),
                   "d_real": float(torch.sigmoid(real_logits).mean()),
                   "d_fake": float(torch.sigmoid(fake_logits).mean())}
    return loss_real + loss_fake, figures


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: ``fake_logits`` (B,) -> scalar ``BCE(D(G(z)), 1)``."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
