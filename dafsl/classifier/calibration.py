"""Distribution calibration (``classifier.imbalance: calibration``): Yang, Liu & Xu,
"Free Lunch for Few-shot Learning: Distribution Calibration", ICLR 2021.

Feature-level augmentation for one abundant *base* class (the class with the most real
training faces: male, ~1,000) and the scarce classes (every other class: female, 10).
On the features ``f`` (D,) of the real training faces (generated ones are left out of
every statistic and of the head's training set):

* Tukey's ladder of powers (eq. 3, ``lam > 0``): ``x = max(f, 0) ** lam``;
* base statistics (eq. 1-2): ``mu_b`` (D,) and the unbiased covariance ``Sigma_b`` (D, D)
  of the base class's transformed features;
* calibrated distribution(s) of a scarce class with support features ``x_1..x_n``:
  ``Sigma' = Sigma_b + alpha I`` (eq. 6 with k = 1 base class) and the mean by
  ``dc_mean``:

  - ``support``: one Gaussian at the support mean, ``mu' = (1/n) sum_i x_i``;
  - ``paper``: one Gaussian per support sample, ``mu'_i = (mu_b + x_i) / 2`` (eq. 6,
    ``(sum of the top-k base means + x_i) / (k + 1)`` with k = 1). With a single base
    class the rule pulls every scarce feature half-way to the base class's mean, which
    is why it is not the default here;

* ``dc_samples`` features drawn from ``N(mu', Sigma')`` per scarce class (split evenly
  over the support samples for ``paper``) with a generator seeded by the run seed;
* a logistic-regression head on [the real transformed features + the sampled ones],
  each class weighted equally (sklearn's ``class_weight="balanced"`` with ``C = 1``,
  the paper's classifier), fitted by full-batch L-BFGS from zeros: deterministic.

The head is :class:`~dafsl.classifier.model.CalibratedHead` (Tukey, then the linear
layer), so ``model(x)``, the saved checkpoint and the system evaluation all see it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dafsl.config_schema import CALIBRATION_MEANS
from dafsl.errors import DafslError

# sklearn's LogisticRegression(C=1): sum_i w_i l_i + |W|^2 / 2, with the class weights
# summing to the sample count; the paper fits the head with it
L2_C = 1.0
MAX_ITER = 1000            # the paper's max_iter
JITTER_TRIES = 8           # Cholesky retries, each with 10x the diagonal jitter


def check_params(params: dict) -> None:
    """One-line errors for the ``dc_*`` keys of ``classifier.imbalance_params``."""
    for key in ("dc_lambda", "dc_alpha", "dc_mean", "dc_samples"):
        if key not in params:
            raise DafslError(f"classifier.imbalance_params.{key}: missing")
    if not float(params["dc_lambda"]) > 0:
        raise DafslError(f"classifier.imbalance_params.dc_lambda must be > 0, got {params['dc_lambda']}")
    if not float(params["dc_alpha"]) >= 0:
        raise DafslError(f"classifier.imbalance_params.dc_alpha must be >= 0, got {params['dc_alpha']}")
    if params["dc_mean"] not in CALIBRATION_MEANS:
        raise DafslError(f"classifier.imbalance_params.dc_mean: expected one of "
                         f"{', '.join(CALIBRATION_MEANS)}, got {params['dc_mean']!r}")
    if params["dc_samples"] is not None and int(params["dc_samples"]) < 1:
        raise DafslError(f"classifier.imbalance_params.dc_samples must be null or >= 1, "
                         f"got {params['dc_samples']}")


def tukey(features: Tensor, lam: float) -> Tensor:
    """Tukey's ladder of powers (eq. 3, ``lam > 0``): ``max(f, 0) ** lam``, same shape.

    ``lam = 0`` (the paper's ``log``) is not offered: post-ReLU features have exact zeros."""
    return features.clamp(min=0) ** lam


def base_statistics(base: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of the base class's features ``base`` (N, D),
    in float64 (a 512 x 512 covariance from ~1,000 faces is near-singular in float32)."""
    if len(base) < 2:
        raise DafslError(f"classifier.imbalance calibration: the base class needs >= 2 real "
                         f"training faces for a covariance, got {len(base)}")
    base = base.double()
    return base.mean(dim=0), torch.cov(base.T).reshape(base.shape[1], base.shape[1])


def calibrated_distributions(support: Tensor, mu_b: Tensor, sigma_b: Tensor, alpha: float,
                             mean_rule: str) -> list[tuple[Tensor, Tensor]]:
    """The Gaussians ``(mu' (D,), Sigma' (D, D))`` to sample a scarce class from, given its
    support features ``support`` (n, D) and the base statistics: one at the support mean
    (``support``) or one per support sample at ``(mu_b + x_i) / 2`` (``paper``, eq. 6)."""
    sigma = sigma_b.double() + alpha * torch.eye(len(sigma_b), dtype=torch.float64)
    support = support.double()
    if mean_rule == "support":
        return [(support.mean(dim=0), sigma)]
    if mean_rule == "paper":
        return [((mu_b.double() + x) / 2, sigma) for x in support]
    raise DafslError(f"classifier.imbalance_params.dc_mean: expected one of "
                     f"{', '.join(CALIBRATION_MEANS)}, got {mean_rule!r}")


def safe_cholesky(cov: Tensor) -> tuple[Tensor, float]:
    """Lower Cholesky factor (D, D) of ``cov`` (D, D), and the diagonal jitter it needed:
    none first, then ``1e-10 * mean(diag)`` growing 10x per try (``alpha = 0`` with fewer
    base faces than dimensions leaves ``cov`` singular)."""
    cov = cov.double()
    scale = float(cov.diagonal().mean().clamp(min=1e-12))
    jitter = 0.0
    for attempt in range(JITTER_TRIES + 1):
        chol, info = torch.linalg.cholesky_ex(cov + jitter * torch.eye(len(cov), dtype=cov.dtype))
        if int(info) == 0 and torch.isfinite(chol).all():
            return chol, jitter
        jitter = scale * 1e-10 * 10 ** attempt
    raise DafslError(f"classifier.imbalance calibration: covariance not positive definite even "
                     f"with jitter {jitter:.3g}; raise classifier.imbalance_params.dc_alpha")


def sample_gaussian(mean: Tensor, cov: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, float]:
    """``n`` draws (n, D) from ``N(mean (D,), cov (D, D))`` as ``mean + z L^T`` with
    ``z ~ N(0, I)`` from ``generator``; float64. Also returns the Cholesky jitter."""
    chol, jitter = safe_cholesky(cov)
    z = torch.randn(n, len(mean), generator=generator, dtype=torch.float64)
    return mean.double() + z @ chol.T, jitter


def fit_balanced_logistic(features: Tensor, labels: Tensor, num_classes: int,
                          max_iter: int = MAX_ITER) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression on ``features`` (N, D) and ``labels`` (N,): weight
    (C, D) and bias (C,), float32. Each class weighs the same in total (sample weight
    ``N / (C n_c)``); ``|W|^2 / (2 C_L2 N)`` on the weights only, as sklearn. Full-batch
    L-BFGS from zeros, so the same data give the same head."""
    x, y = features.double(), labels.long()
    n_c = torch.bincount(y, minlength=num_classes).double()
    if (n_c == 0).any():
        raise DafslError(f"classifier.imbalance calibration: a class has no feature "
                         f"(counts {n_c.long().tolist()})")
    w = (len(y) / (num_classes * n_c))[y]
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        ce = F.cross_entropy(x @ weight.T + bias, y, reduction="none")
        loss = (w * ce).sum() / w.sum() + weight.pow(2).sum() / (2 * L2_C * len(y))
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach().float(), bias.detach().float()


def calibrate(features: Tensor, labels: np.ndarray, synthetic: np.ndarray | None, num_classes: int,
              *, lam: float, alpha: float, mean_rule: str, samples: int | None,
              seed: int) -> tuple[Tensor, Tensor, dict]:
    """The calibrated head from the training faces' raw features ``features`` (N, D),
    ``labels`` (N,) and ``synthetic`` (N,) bool (generated faces: left out).

    Returns weight (C, D), bias (C,) of the linear layer that follows :func:`tukey`, and
    the figures the summary records."""
    real = ~np.asarray(synthetic, dtype=bool) if synthetic is not None else np.ones(len(labels), bool)
    x = tukey(features[torch.as_tensor(real)].double(), lam)
    y = torch.as_tensor(np.asarray(labels)[real], dtype=torch.int64)
    counts = torch.bincount(y, minlength=num_classes)
    if (counts == 0).any():
        raise DafslError(f"classifier.imbalance calibration: class {int((counts == 0).nonzero()[0])} "
                         f"has no real training face (real counts {counts.tolist()})")
    base = int(counts.argmax())
    mu_b, sigma_b = base_statistics(x[y == base])
    n_draw = int(samples) if samples is not None else int(counts[base])  # as many as the base class
    gen = torch.Generator().manual_seed(int(seed))
    drawn, drawn_labels, jitter = [], [], 0.0
    for c in range(num_classes):
        if c == base:
            continue
        dists = calibrated_distributions(x[y == c], mu_b, sigma_b, alpha, mean_rule)
        # split n_draw evenly over the distributions (the paper: num_sampled / n_shot each)
        share = [n_draw // len(dists) + (i < n_draw % len(dists)) for i in range(len(dists))]
        for (mean, cov), k in zip(dists, share):
            if k:
                pts, jit = sample_gaussian(mean, cov, k, gen)
                drawn.append(pts)
                drawn_labels.append(torch.full((k,), c, dtype=torch.int64))
                jitter = max(jitter, jit)
    train_x = torch.cat([x, *drawn])
    train_y = torch.cat([y, *drawn_labels])
    weight, bias = fit_balanced_logistic(train_x, train_y, num_classes)
    pred = (x.float() @ weight.T + bias).argmax(1)
    recall = [float((pred[y == c] == c).float().mean()) for c in range(num_classes)]
    info = {"dc_samples": sum(len(d) for d in drawn), "dc_lambda": float(lam), "dc_alpha": float(alpha),
            "dc_mean": mean_rule, "dc_base_class": base, "dc_jitter": jitter,
            # alpha is absolute: compare it with the base class's mean variance per dimension
            "dc_base_variance": float(sigma_b.diagonal().mean()),
            "dc_train_balanced_accuracy": float(np.mean(recall))}
    return weight, bias, info
