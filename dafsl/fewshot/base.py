"""One interface for every few-shot method, in the style of easyfsl's
``FewShotClassifier``: ``process_support_set(images, labels)`` then ``forward(query)``
returns logits (Q, way), so one evaluation loop serves all methods.

Support labels are 0..way-1 (:func:`dafsl.fewshot.data.sample_episode` renumbers them).
Every method works on features as well as on images
(:meth:`FewShotClassifier.process_support_features`, :meth:`FewShotClassifier.logits`), so
an evaluation can embed a whole split once and then score thousands of episodes cheaply,
and a classifier head can run on a trained backbone's features.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dafsl.errors import DafslError


def check_labels(labels: Tensor) -> int:
    """``way`` of support ``labels`` (S,), which must cover 0..way-1."""
    if labels.ndim != 1 or len(labels) == 0:
        raise DafslError(f"support labels must be a non-empty 1-d tensor, got shape {tuple(labels.shape)}")
    way = int(labels.max()) + 1
    if int(labels.min()) < 0 or len(torch.unique(labels)) != way:
        raise DafslError(f"support labels must cover 0..way-1, got {sorted(set(labels.tolist()))}")
    return way


class FewShotClassifier(nn.Module, ABC):
    """A backbone (images (N, C, S, S) -> features (N, D)) plus a rule that scores
    queries against a stored support set."""

    def __init__(self, backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else nn.Identity()
        self.way = 0

    def compute_features(self, images: Tensor) -> Tensor:
        """Features (N, D) of ``images`` (N, C, S, S)."""
        return self.backbone(images)

    def process_support_set(self, images: Tensor, labels: Tensor) -> None:
        """Store what ``forward`` needs from the support ``images`` (S, C, H, W) with
        ``labels`` (S,) in 0..way-1."""
        self.process_support_features(self.compute_features(images), labels)

    def process_support_features(self, features: Tensor, labels: Tensor) -> None:
        self.way = check_labels(labels)
        self.support_features, self.support_labels = features, labels

    def forward(self, query: Tensor) -> Tensor:
        """Logits (Q, way) of ``query`` images (Q, C, H, W); softmax gives the class
        distribution the self-distillation matches."""
        return self.logits(self.compute_features(query))

    @abstractmethod
    def logits(self, query_features: Tensor) -> Tensor:
        """Logits (Q, way) of query features (Q, D) against the stored support set."""

    def label_loss(self, logits: Tensor, query_features: Tensor, query_labels: Tensor) -> Tensor:
        """The method's own training loss on one episode (cross-entropy by default)."""
        return F.cross_entropy(logits, query_labels)

    def forward_train(self, support: Tensor, support_labels: Tensor, query: Tensor,
                      query_labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One episode: support and queries through the backbone in one batch (as the
        papers' implementations do, so BatchNorm sees the whole episode); returns
        (query logits (Q, way), {"loss_label": ...})."""
        feats = self.compute_features(torch.cat([support, query]))
        self.process_support_features(feats[:len(support)], support_labels)
        q = feats[len(support):]
        logits = self.logits(q)
        return logits, {"loss_label": self.label_loss(logits, q, query_labels)}
