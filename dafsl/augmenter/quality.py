"""Sample quality without downloaded weights: KID and k-NN precision/recall in the
feature space of a small network the project trains itself.

Inception (FID/KID's usual feature space) cannot be downloaded here, so the features
come from :class:`dafsl.augmenter.featnet.FeatureNet` (zoo entry ``augmenter-featnet``),
trained self-supervised on the Denough training faces only. Its features are the
average-pooled activations of all four of its stages (240 values), so colour and edge
statistics count next to the shape-level ones.

Generated faces are compared with *held-out* real faces of the Dlack class, cropped the
way the GAN's training faces are (detector boxes, same margin): the validation split's
for the per-epoch curve and snapshot selection, the test split's for the final figure
only. Neither the GAN nor the feature net saw them.

* KID (Binkowski et al. 2018): the unbiased MMD^2 estimate with the cubic polynomial
  kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets (mean and std).
  Unlike FID it is unbiased for small sample counts, which is why a few hundred
  samples are enough for the per-epoch curve.
* Precision / recall (Kynkaanniemi et al. 2019): each real feature gets a ball whose
  radius is the distance to its k-th nearest real neighbour; precision is the share
  of generated samples inside at least one real ball (fidelity), recall the share of
  real samples inside at least one generated ball (built the same way; diversity).
"""
from __future__ import annotations

import numpy as np
import torch

from dafsl.augmenter.featnet import FeatureNet


@torch.no_grad()
def extract_features(net: FeatureNet, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, 3, r, r) in [-1, 1] -> (N, net.feature_dim) float64 on the CPU; ``net`` in eval mode."""
    net.eval()
    device = next(net.parameters()).device
    out = [net.features(images[i:i + batch_size].to(device)).double().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, net.feature_dim, dtype=torch.float64)


def polynomial_mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between feature sets ``x`` (m, d) and ``y`` (n, d), m, n >= 2, with the
    kernel ``(x.y / d + 1)^3``: mean off-diagonal k(x, x') + mean off-diagonal k(y, y')
    - 2 mean k(x, y)."""
    x, y = x.double(), y.double()
    d = x.shape[1]
    m, n = len(x), len(y)
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def kid(fake: torch.Tensor, real: torch.Tensor, subsets: int = 10, subset_size: int = 100,
        seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over ``subsets`` random subsets of ``subset_size`` from each set,
    drawn without replacement with a seeded RNG). ``fake`` (m, d), ``real`` (n, d)."""
    size = min(subset_size, len(fake), len(real))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(fake)} and {len(real)}")
    rng = np.random.default_rng(seed)
    vals = [polynomial_mmd2_unbiased(fake[rng.choice(len(fake), size, replace=False)],
                                     real[rng.choice(len(real), size, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of ``x`` (n, d) to its k-th nearest other row, (n,)."""
    dist = torch.cdist(x, x)
    # Column 0 of the sorted distances is the point itself (distance 0).
    return dist.sort(dim=1).values[:, min(k, len(x) - 1)]


def precision_recall(fake: torch.Tensor, real: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """k-NN manifold precision and recall of ``fake`` (m, d) against ``real`` (n, d)."""
    fake, real = fake.double(), real.double()
    real_r, fake_r = _knn_radii(real, k), _knn_radii(fake, k)
    d = torch.cdist(fake, real)  # (m, n)
    precision = (d <= real_r[None, :]).any(dim=1).double().mean()
    recall = (d.T <= fake_r[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


class QualityProbe:
    """Scores a generator against held-out real faces in the feature net's space.

    ``reference`` (N, 3, R, R) are the held-out real faces; a fixed latent bank (drawn
    once from ``seed``) makes the per-epoch KIDs of one run, and of runs in different
    modes, comparable and leaves the training RNG untouched.
    """

    def __init__(self, net: FeatureNet, reference: torch.Tensor, latent_dim: int, *,
                 eval_samples: int, final_samples: int, subsets: int, subset_size: int,
                 k: int, seed: int):
        self.net = net.eval()
        self.ref_features = extract_features(net, reference)
        gen = torch.Generator().manual_seed(seed + 7919)
        self.z_eval = torch.randn(eval_samples, latent_dim, generator=gen)
        self.z_final = torch.randn(final_samples, latent_dim, generator=gen)
        self.subsets, self.subset_size, self.k, self.seed = subsets, subset_size, k, seed

    def kid_of(self, images: torch.Tensor) -> tuple[float, float]:
        """KID (mean, std) of images (N, 3, R, R) against the reference faces."""
        return kid(extract_features(self.net, images), self.ref_features, self.subsets,
                   self.subset_size, self.seed)

    def full_report(self, images: torch.Tensor) -> dict:
        """KID (+ std), precision and recall of ``images`` (N, 3, R, R)."""
        feats = extract_features(self.net, images)
        kid_mean, kid_std = kid(feats, self.ref_features, self.subsets, self.subset_size, self.seed)
        precision, recall = precision_recall(feats, self.ref_features, self.k)
        return {"kid": kid_mean, "kid_std": kid_std, "precision": precision, "recall": recall}
