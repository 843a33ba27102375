"""Cross-domain correspondence (CDC; Ojha et al. 2021, "Few-shot Image Generation via
Cross-domain Correspondence").

The source generator stays frozen beside the one being fine-tuned. For a batch of N
latents, each sample's similarities to the N - 1 others, in G's intermediate features,
form a distribution; the target generator is pulled to keep the source's distributions,
so latents that gave different faces before the adaptation still give different faces
after it (the diversity of the source survives 10 target images). The term is added to
G's loss in the one GAN trainer, with a weight (the official code's ``kl_wt``).

Also here, for the paper's relaxed realism (sec. 3.2): :func:`anchor_latents`, the anchor
region (the latents on which the image-level adversarial loss applies), and
:class:`PatchD`, the patch-level discriminator for every other latent: a 1x1 head on D's
intermediate map, so each logit judges one patch (its receptive field), and a generated
face away from the anchors must only be made of realistic patches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dafsl.augmenter.networks import Discriminator, Generator
from dafsl.errors import DafslError


def default_layers(num_levels: int) -> list[int]:
    """The intermediate blocks, neither the first (4x4, little more than the latent) nor
    the last (the image itself), as the official code draws its layer from: for the
    default 32 px G (4 levels) ``[1, 2]`` (8 and 16 px)."""
    inner = list(range(1, num_levels - 1))
    return inner or list(range(num_levels))


def generator_features(G: Generator, z: torch.Tensor, labels: torch.Tensor | None,
                       layers: list[int]) -> list[torch.Tensor]:
    """The outputs of ``G.blocks[l]`` for each ``l`` in ``layers`` (in that order), G at
    full growth (alpha = 1): ``z`` (N, latent_dim), ``labels`` (N,) int64 for a
    class-conditional G, else None -> [(N, channels[l], 4 * 2**l, 4 * 2**l), ...].
    Only the blocks up to ``max(layers)`` run."""
    bad = [int(l) for l in layers if not 0 <= int(l) < G.num_levels]
    if not layers or bad:
        raise DafslError(f"augmenter.target.cdc_layers: need block indices in 0..{G.num_levels - 1}, "
                         f"got {list(layers)}")
    wanted = {int(l) for l in layers}
    x = G.latent(z, labels)
    out: dict[int, torch.Tensor] = {}
    for i in range(max(wanted) + 1):
        x = G.blocks[i](x)
        if i in wanted:
            out[i] = x
    return [out[int(l)] for l in layers]


def _log_similarity_distribution(feat: torch.Tensor, tau: float) -> torch.Tensor:
    """(N, ...) -> (N, N - 1): row i is log softmax_j(cos(f_i, f_j) / tau) over j != i,
    the j in increasing order."""
    n = feat.shape[0]
    f = F.normalize(feat.reshape(n, -1), dim=1, eps=1e-8)
    sim = f @ f.t()
    off_diag = ~torch.eye(n, dtype=torch.bool, device=feat.device)
    return F.log_softmax(sim[off_diag].view(n, n - 1) / tau, dim=1)


def cdc_loss(src_feats: list[torch.Tensor], tgt_feats: list[torch.Tensor], tau: float = 1.0) -> torch.Tensor:
    """The cross-domain distance consistency loss (Ojha et al. 2021, sec. 3.1, eqs. 1-3).

    ``src_feats``, ``tgt_feats``: per layer, the source and target generators' features
    (N, ...) for the same N >= 3 latents (:func:`generator_features`). Per layer l and
    sample i, ``p_i = softmax_{j != i}(cos(f_i, f_j) / tau)`` over the N - 1 others, for
    the source (``p^s``, no gradient: the source is the reference) and the target
    (``p^t``); the loss is ``sum_l mean_i KL(p_i^s || p_i^t)`` -> scalar tensor.

    KL(p^s || p^t) is what the official code computes (``nn.KLDivLoss()(log p^t, p^s)``).
    Its reduction differs from this one, so its ``kl_wt`` does not carry over as is: it
    draws one random layer per anchor sample (an unbiased estimate of the *mean* over
    layers, where this *sums* the layers given) and ``KLDivLoss``'s default ``mean``
    divides by N (N - 1) elements (here by N: the mean over i of a whole KL). The
    official ``kl_wt`` w therefore corresponds to a weight ``w / ((N - 1) * L)`` on this
    loss, L = the number of layers (w = 1000, N = 4 and L = 2: about 167).
    """
    if len(src_feats) != len(tgt_feats) or not src_feats:
        raise DafslError(f"cdc_loss: need the same non-zero number of source and target layers, "
                         f"got {len(src_feats)} and {len(tgt_feats)}")
    if tau <= 0:
        raise DafslError(f"augmenter.target.cdc_tau: must be > 0, got {tau}")
    total = tgt_feats[0].new_zeros(())
    for s, t in zip(src_feats, tgt_feats):
        if s.shape != t.shape:
            raise DafslError(f"cdc_loss: source features {tuple(s.shape)} and target features "
                             f"{tuple(t.shape)} differ")
        if s.shape[0] < 3:
            raise DafslError(f"cdc_loss: needs a batch of N >= 3 latents (each sample against "
                             f">= 2 others), got {s.shape[0]}")
        log_ps = _log_similarity_distribution(s.detach(), tau)
        log_pt = _log_similarity_distribution(t, tau)
        total = total + (log_ps.exp() * (log_ps - log_pt)).sum(dim=1).mean()
    return total


def cdc_term(source: Generator, target: Generator, z: torch.Tensor, labels: torch.Tensor | None = None,
             layers: list[int] | None = None, tau: float = 1.0) -> torch.Tensor:
    """:func:`cdc_loss` of ``target`` against the frozen ``source`` on latents ``z`` (N, latent_dim)
    -> scalar tensor, with gradients into ``target`` only (the source runs under no_grad).

    ``labels`` (N,) go to whichever generator is class-conditional: a conditional target
    transferred from an unconditional source is compared with the source's face for the
    same ``z``. ``layers``: None = :func:`default_layers`."""
    layers = default_layers(target.num_levels) if layers is None else list(layers)
    with torch.no_grad():
        src = generator_features(source, z, labels if source.num_classes else None, layers)
    tgt = generator_features(target, z, labels if target.num_classes else None, layers)
    return cdc_loss(src, tgt, tau)


def anchors(k: int, dim: int, seed: int = 0) -> torch.Tensor:
    """The k anchor latents (k, dim): N(0, 1), fixed by ``seed`` (the official code draws
    them once per run, k = the number of target images)."""
    return torch.randn(k, dim, generator=torch.Generator().manual_seed(int(seed)))


def anchor_latents(n: int, dim: int, k_anchors: int, gen: torch.Generator | None = None,
                   sigma: float = 0.05, seed: int = 0) -> torch.Tensor:
    """n latents (n, dim) from the anchor region (Ojha et al. sec. 3.2): each an anchor of
    :func:`anchors` (``k_anchors``, ``seed``) drawn uniformly, plus N(0, sigma^2) noise.
    Randomness from ``gen`` when given, else torch's global RNG; on the CPU."""
    if k_anchors < 1:
        raise DafslError(f"augmenter.target.cdc_anchors: must be >= 1, got {k_anchors}")
    which = torch.randint(0, k_anchors, (n,), generator=gen)
    return anchors(k_anchors, dim, seed)[which] + sigma * torch.randn(n, dim, generator=gen)


def is_anchor_step(step: int, every: int) -> bool:
    """The official schedule: every ``every``-th G step (``step % every == 0``) samples the
    anchor region and uses the image-level adversarial loss; the others sample N(0, 1)
    and use the patch-level one only."""
    return every > 0 and step % every == 0


def d_patch_map(D: Discriminator, img: torch.Tensor, map_level: int) -> torch.Tensor:
    """D's intermediate map at resolution ``4 * 2**map_level``, D at full growth:
    ``img`` (B, 3, r, r) -> (B, channels[map_level], 4 * 2**map_level, same), the input
    that ``D.blocks[map_level]`` (or ``D.final`` for level 0) would take."""
    top = D.num_levels - 1
    if not 0 <= map_level <= top:
        raise DafslError(f"augmenter.target.patch_level: need 0..{top}, got {map_level}")
    x = D.from_rgb[top](img)
    for i in range(top, map_level, -1):
        x = D.blocks[i](x)
    return x


class PatchD(nn.Module):
    """The patch-level discriminator: a 1x1 convolution on :func:`d_patch_map`, one logit
    per position. ``forward(D, img (B, 3, r, r)) -> logits (B, m * m)``, m = ``4 *
    2**map_level``; these go to :func:`dafsl.augmenter.loss.discriminator_loss` and
    ``generator_loss`` as they are (BCE averages over the patches).

    D's layers are shared (the official code adds an ``extra`` head to the same D, not a
    second D); only the head is new, so its parameters must join D's optimiser. D is
    passed in, not held: the head's state dict stays the head's. Call it on the bare
    D (``gan.D``), not a DDP wrapper (not supported under torchrun, like R1)."""

    def __init__(self, channels: list[int], map_level: int):
        super().__init__()
        self.map_level = int(map_level)
        if not 0 <= self.map_level < len(channels):
            raise DafslError(f"augmenter.target.patch_level: need 0..{len(channels) - 1}, got {map_level}")
        self.head = nn.Conv2d(int(channels[self.map_level]), 1, 1)

    def forward(self, D: Discriminator, img: torch.Tensor) -> torch.Tensor:
        return self.head(d_patch_map(D, img, self.map_level)).flatten(1)
