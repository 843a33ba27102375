"""Few-shot heads for the gender classifier (``classifier.head``).

``linear`` (default) keeps the trained linear head (or the ``classifier.imbalance``
head). ``protonet``, ``matching`` and ``siamese`` replace it, after training, by the
rule of that few-shot method (:mod:`dafsl.fewshot`) over the features of the training
faces: the backbone is the classifier's own, trained as it is now (the cheaper option;
no episodic re-training), and the support set is every training face of each class,
i.e. the Dlack class's real faces and, when the GAN fills it, its generated ones
(generated Denough faces too when ``classifier.generated_denough`` adds them).

* ``protonet``: negative squared Euclidean distance to each class's mean feature
  (Snell et al.). ``classifier.imbalance: ncm`` is this rule on centred, L2-normalised
  features (SimpleShot); ``protonet`` uses the raw features.
* ``matching``: cosine attention over the whole support set (Vinyals et al.); with
  thousands of Denough faces against tens of Dlack ones the attention mass, hence the
  probability, leans towards Denough: the method as published, on imbalanced support.
* ``siamese``: the class score is the largest log-odds "same" over the class's support
  faces (Koch et al.); the weighted-L1 distance layer is fitted on the fixed training
  features, by logistic regression on class-balanced same/different pairs.

The head is fitted on the features in eval mode; it replaces ``imbalance``'s head when
both are set (the training phase of ``crt``/``ncm``/post-hoc is plain cross-entropy).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dafsl.classifier.imbalance import extract_features
from dafsl.classifier.model import head_name
from dafsl.config_schema import CLASSIFIER_HEADS
from dafsl.errors import DafslError
from dafsl.fewshot.head import SupportHead

HEADS = CLASSIFIER_HEADS


def balanced_pairs(labels: np.ndarray, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` (anchor, partner, same) index pairs: anchors drawn class-balanced, half the
    partners from the anchor's class and half from another class."""
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    classes = torch.unique(labels_t)
    members = [torch.nonzero(labels_t == c).flatten() for c in classes]

    def draw(c: Tensor) -> Tensor:
        return torch.stack([members[int(k)][torch.randint(len(members[int(k)]), (1,), generator=generator)[0]]
                            for k in c])

    anchor_cls = torch.randint(len(classes), (n,), generator=generator)
    same = torch.arange(n) % 2 == 0
    shift = torch.randint(1, len(classes), (n,), generator=generator)
    partner_cls = torch.where(same, anchor_cls, (anchor_cls + shift) % len(classes))
    return draw(anchor_cls), draw(partner_cls), same.float()


def fit_siamese_distance(head: SupportHead, features: Tensor, labels: np.ndarray, *, seed: int,
                         pairs: int = 4096, steps: int = 300, lr: float = 0.01) -> float:
    """Fit the weighted-L1 layer on fixed ``features``; returns the pair accuracy."""
    g = torch.Generator().manual_seed(seed)
    a, b, same = balanced_pairs(labels, pairs, g)
    diff = (features[a] - features[b]).abs()
    layer = head.method.distance
    torch.manual_seed(seed)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(layer(diff).squeeze(1), same)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((layer(diff).squeeze(1) > 0).float() == same).float().mean())


def finish_head(head: str, model: nn.Module, train_set, *, input_size: int, seed: int,
                log=lambda msg: None) -> dict:
    """Replace ``model``'s head by the few-shot ``head`` over the training faces' features
    (in place). Returns what the summary records."""
    if head not in HEADS:
        raise DafslError(f"classifier.head: expected one of {', '.join(HEADS)}, got {head!r}")
    if head == "linear":
        return {"head": head}
    name = head_name(model)
    device = next(model.parameters()).device
    feats = extract_features(model, train_set.images, input_size)
    labels = torch.as_tensor(train_set.labels, dtype=torch.int64)
    new = SupportHead(head, feats, labels)
    info = {"head": head, "head_support": len(feats)}
    if head == "siamese":
        info["head_pair_accuracy"] = fit_siamese_distance(new, feats, train_set.labels, seed=seed)
    setattr(model, name, new.to(device).eval())
    counts = np.bincount(train_set.labels).tolist()
    log(f"{head} head over {len(feats)} training features of dimension {feats.shape[1]} "
        f"(per class {counts})" + (f", pair accuracy {info['head_pair_accuracy']:.3f}"
                                   if "head_pair_accuracy" in info else ""))
    return info
