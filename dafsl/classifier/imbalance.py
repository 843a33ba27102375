"""Class-imbalance baselines for the classifier (``classifier.imbalance``).

Each value is what a practitioner would try before a GAN. ``prior`` is the class
frequency of the *training set as it is trained on* (real faces plus any generated
ones): when the GAN fills Dlack up to Denough's count the prior is uniform and every
prior-based method below reduces to plain cross-entropy.

* ``none``: plain cross-entropy, instance-balanced sampling.
* ``balanced_sampling``: each class equally likely per draw (:func:`epoch_order`).
* ``weighted_loss``: cross-entropy with inverse-frequency class weights.
* ``logit_adjustment`` (Menon et al. 2021, eq. 10, the logit-adjusted loss):
  ``CE(f(x) + tau * log prior, y)`` during training; plain logits at inference.
* ``logit_adjustment_posthoc`` (Menon et al. 2021, eq. 9): trained as ``none``, then
  ``f(x) - tau * log prior`` at inference. Folded into the head's bias, so the saved
  checkpoint, the test metrics and the system evaluation all use the adjusted logits.
* ``balanced_softmax`` (Ren et al. 2020): the softmax reweighted by the class counts,
  ``n_y exp(f_y) / sum_j n_j exp(f_j)``, i.e. ``CE(f(x) + log n, y)``. It is logit
  adjustment as a loss at ``tau = 1`` (log n and log prior differ by a constant that
  the softmax cancels); it stays a separate value because the papers are separate
  baselines, and ``tau`` does not apply to it.
* ``crt`` (Kang et al. 2020, classifier re-training): trained as ``none``; then the
  features of the training faces are computed once (eval mode, no augmentation), the
  linear head is re-initialised and retrained on them with class-balanced sampling.
* ``ncm`` (SimpleShot, Wang et al. 2019, CL2N): trained as ``none``; the head is
  replaced by a nearest-class-mean rule on centred, L2-normalised features:
  ``score_c = -|| n(f - m) - mu_c ||^2`` with ``m`` the training features' mean,
  ``n`` the L2 normalisation and ``mu_c`` the mean of class ``c``'s normalised
  features. The score is linear in ``n(f - m)`` (``2 mu_c . z - |mu_c|^2 - 1``), so the
  head is an ``nn.Linear`` after the normalisation; softmax of the scores gives the
  probabilities the metrics (ROC-AUC) and the system evaluation use.
* ``calibration`` (Yang et al. 2021, distribution calibration; :mod:`dafsl.classifier.calibration`):
  trained as ``none``; on the real training faces' features ``x = max(f, 0) ** lam``
  (Tukey), scarce-class features are sampled from ``N(mu', Sigma_b + alpha I)``
  (``Sigma_b``: the abundant class's covariance; ``mu'``: the support mean, or the
  paper's ``(mu_b + x_i) / 2``), and a class-balanced logistic head is fitted on real
  plus sampled features. The head (Tukey, then linear) is stored in the checkpoint.

Per-epoch validation figures are those of the model being trained (for ``crt``,
``ncm``, ``calibration`` and the post-hoc adjustment: before its head is replaced or adjusted); the
test figures and the checkpoint are of the final head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dafsl.classifier import calibration
from dafsl.classifier.data import epoch_order, to_input
from dafsl.classifier.model import (CalibratedHead, NCMHead, head_name,  # noqa: F401
                                    install_calibrated_head, install_ncm_head)
from dafsl.errors import DafslError

# methods whose training phase is plain instance-balanced cross-entropy
TRAIN_AS_NONE = ("logit_adjustment_posthoc", "crt", "ncm", "calibration")


# ----------------------------------------------------------------------- losses

def log_prior(counts) -> Tensor:
    """log of the class frequencies (C,) from class counts; an empty class is an error."""
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    if (n <= 0).any():
        raise DafslError(f"classifier.imbalance: a class has no training sample (counts {n.tolist()})")
    return (n / n.sum()).log().float()


def logit_adjusted_loss(logits: Tensor, target: Tensor, log_prior_: Tensor, tau: float = 1.0,
                        weight: Tensor | None = None) -> Tensor:
    """Menon et al. 2021, eq. 10: ``CE(logits + tau * log prior, target)`` (batch mean)."""
    return F.cross_entropy(logits + tau * log_prior_.to(logits), target, weight=weight)


def balanced_softmax_loss(logits: Tensor, target: Tensor, counts: Tensor) -> Tensor:
    """Ren et al. 2020: ``-log(n_y exp(f_y) / sum_j n_j exp(f_j))`` (batch mean)."""
    return F.cross_entropy(logits + torch.as_tensor(counts).to(logits).log(), target)


def posthoc_adjust(logits: Tensor, log_prior_: Tensor, tau: float = 1.0) -> Tensor:
    """Menon et al. 2021, eq. 9: ``logits - tau * log prior``."""
    return logits - tau * log_prior_.to(logits)


class AdjustedCrossEntropy(nn.Module):
    """Cross-entropy on ``logits + offset`` (the logit-adjusted and balanced-softmax losses
    are this with ``offset = tau * log prior`` and ``log n``), optional class weights."""

    def __init__(self, offset: Tensor | None = None, weight: Tensor | None = None):
        super().__init__()
        self.offset, self.weight = offset, weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.offset is not None:
            logits = logits + self.offset.to(logits)
        return F.cross_entropy(logits, target, weight=self.weight)


def check_params(params: dict) -> None:
    """One-line errors for ``classifier.imbalance_params``."""
    for key in ("tau", "crt_epochs", "crt_lr"):
        if key not in params:
            raise DafslError(f"classifier.imbalance_params.{key}: missing")
    if not float(params["tau"]) >= 0:
        raise DafslError(f"classifier.imbalance_params.tau must be >= 0, got {params['tau']}")
    if int(params["crt_epochs"]) < 1 or not float(params["crt_lr"]) > 0:
        raise DafslError(f"classifier.imbalance_params: crt_epochs must be >= 1 and crt_lr > 0, "
                         f"got {params['crt_epochs']} and {params['crt_lr']}")


@dataclass
class Plan:
    """What training needs from ``classifier.imbalance``: the loss and the sampling."""

    loss: AdjustedCrossEntropy
    balanced: bool


def plan(method: str, counts, params: dict) -> Plan:
    """The training loss and sampling for ``method`` given the training ``counts`` (C,)."""
    check_params(params)
    tau = float(params["tau"])
    counts = np.asarray(counts, dtype=np.float64)
    weight = offset = None
    if method == "weighted_loss":
        # inverse frequency, normalised so a balanced set gets weight 1 per class
        weight = torch.as_tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)
    elif method == "logit_adjustment":
        offset = tau * log_prior(counts)
    elif method == "balanced_softmax":
        offset = torch.as_tensor(np.log(np.maximum(counts, 1)), dtype=torch.float32)
    return Plan(AdjustedCrossEntropy(offset, weight), balanced=method == "balanced_sampling")


# ------------------------------------------------------------- head replacement

@torch.no_grad()
def extract_features(model: nn.Module, images: np.ndarray, input_size: int,
                     batch_size: int = 256) -> Tensor:
    """Pooled features (N, D) before the head of a timm classifier, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats = [model.forward_head(model.forward_features(
        to_input(images[i:i + batch_size], input_size).to(device)), pre_logits=True).cpu()
        for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(feats).float()


def train_linear_head(features: Tensor, labels: np.ndarray, num_classes: int, *, epochs: int,
                      batch_size: int, lr: float, seed: int, balanced: bool = True,
                      epoch_size: int | None = None, synthetic: np.ndarray | None = None) -> nn.Linear:
    """A freshly initialised linear head trained on fixed ``features`` (N, D) with
    cross-entropy; ``balanced``: class-balanced sampling (cRT's second stage), as
    :func:`epoch_order` (within a class, real and generated faces equally likely)."""
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = -(-int(epoch_size or len(labels)) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * steps_per_epoch))
    target = torch.as_tensor(labels, dtype=torch.int64)
    for epoch in range(epochs):
        order = torch.as_tensor(epoch_order(labels, epoch, seed, balanced=balanced,
                                            epoch_size=epoch_size, synthetic=synthetic))
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(head(features[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


HEAD_FACES = ("all", "real", "weighted")


def ncm_fit(features: Tensor, labels: np.ndarray, num_classes: int, synthetic: np.ndarray | None = None,
            faces: str = "all", real_weight: float = 0.5) -> tuple[Tensor, Tensor]:
    """(centre (D,), class means of the centred, normalised features (C, D)).

    ``faces`` (``classifier.head_faces``), with ``synthetic`` (N,) marking generated faces:
    ``all``: every feature counts once; ``real``: generated features are left out
    (centre and means); ``weighted``: a class with both kinds gets the mean
    ``real_weight * mean(real) + (1 - real_weight) * mean(generated)``, so its few real
    faces keep that share however many generated ones there are."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    gen = torch.zeros(len(labels), dtype=torch.bool) if synthetic is None else torch.as_tensor(synthetic)
    if faces not in HEAD_FACES:
        raise DafslError(f"classifier.head_faces: expected one of {', '.join(HEAD_FACES)}, got {faces!r}")
    if faces == "real":
        features, labels, gen = features[~gen], labels[~gen], gen[~gen]
    centre = features.mean(dim=0)
    z = F.normalize(features - centre, dim=1)
    missing = [c for c in range(num_classes) if not (labels == c).any()]
    if missing:
        raise DafslError(f"classifier.imbalance ncm: class {missing[0]} has no training feature")

    def class_mean(c: int) -> Tensor:
        real, fake = (labels == c) & ~gen, (labels == c) & gen
        if faces == "weighted" and real.any() and fake.any():
            return real_weight * z[real].mean(dim=0) + (1.0 - real_weight) * z[fake].mean(dim=0)
        return z[labels == c].mean(dim=0)
    return centre, torch.stack([class_mean(c) for c in range(num_classes)])


def ncm_scores(features: Tensor, centre: Tensor, centroids: Tensor) -> Tensor:
    """``-|| n(f - centre) - mu_c ||^2`` (N, C): higher is nearer."""
    z = F.normalize(features - centre, dim=1)
    return -torch.cdist(z, centroids) ** 2


def finish_head(method: str, model: nn.Module, train_set, num_classes: int, *, params: dict,
                input_size: int, batch_size: int, seed: int, epoch_size: int | None,
                head_faces: str = "all", real_share: float | None = None, log=lambda msg: None) -> dict:
    """After training: the post-hoc adjustment, the cRT, NCM or calibrated head, applied
    to ``model`` in place. Returns what the summary records (empty for other methods)."""
    if method not in TRAIN_AS_NONE:
        return {}
    if method == "calibration":
        calibration.check_params(params)  # before the feature pass, not after it
    head = getattr(model, head_name(model))
    counts = train_set.counts(num_classes)
    if method == "logit_adjustment_posthoc":
        tau = float(params["tau"])
        with torch.no_grad():
            head.bias.copy_(posthoc_adjust(head.bias, log_prior(counts), tau))
        log(f"post-hoc logit adjustment: bias -= {tau} * log prior {np.round(counts / counts.sum(), 4).tolist()}")
        return {"imbalance_tau": tau}
    feats = extract_features(model, train_set.images, input_size).to(head.weight.device)
    if method == "crt":
        new = train_linear_head(feats.cpu(), train_set.labels, num_classes,
                                epochs=int(params["crt_epochs"]), batch_size=batch_size,
                                lr=float(params["crt_lr"]), seed=seed, balanced=True,
                                epoch_size=epoch_size, synthetic=train_set.synthetic)
        with torch.no_grad():
            head.weight.copy_(new.weight)
            head.bias.copy_(new.bias)
        acc = float((new(feats.cpu()).argmax(1).numpy() == train_set.labels).mean())
        log(f"cRT: linear head retrained with class-balanced sampling on {len(feats)} fixed "
            f"features ({params['crt_epochs']} epochs), train accuracy {acc:.3f}")
        return {"crt_train_accuracy": acc}
    if method == "calibration":
        weight, bias, info = calibration.calibrate(
            feats.cpu(), train_set.labels, train_set.synthetic, num_classes,
            lam=float(params["dc_lambda"]), alpha=float(params["dc_alpha"]),
            mean_rule=params["dc_mean"], samples=params["dc_samples"], seed=seed)
        install_calibrated_head(model, weight, bias, info["dc_lambda"])
        log(f"distribution calibration: {info['dc_samples']} features sampled "
            f"(mean {info['dc_mean']}, lambda {info['dc_lambda']}, alpha {info['dc_alpha']} vs mean "
            f"base variance {info['dc_base_variance']:.3g}, "
            f"Cholesky jitter {info['dc_jitter']:.2g}) beside {int((~train_set.synthetic).sum())} real "
            f"features of dimension {feats.shape[1]}, logistic head, real train balanced accuracy "
            f"{info['dc_train_balanced_accuracy']:.3f}")
        return info
    weight = 0.5 if real_share is None else float(real_share)
    centre, centroids = ncm_fit(feats.cpu(), train_set.labels, num_classes, train_set.synthetic,
                                head_faces, weight)
    install_ncm_head(model, centre.to(feats), centroids.to(feats))
    n_gen = int(train_set.synthetic.sum())
    log(f"NCM head (CL2N) on {len(feats)} training features of dimension {feats.shape[1]}"
        + (f"; head_faces {head_faces}" + (f" (real weight {weight})" if head_faces == "weighted" else "")
           + f", {n_gen} generated" if n_gen else ""))
    return {"head_faces": head_faces} if n_gen else {}
