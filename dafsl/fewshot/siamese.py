"""Siamese networks (Koch et al. 2015): twin encoders (one backbone, shared weights), a
learned weighted L1 distance between the two feature vectors and a sigmoid,
``p(same) = sigmoid(sum_j w_j |f(x1)_j - f(x2)_j| + b)`` (Koch et al., section 3.1);
trained with binary cross-entropy on same/different pairs.

Pairs come from the episodes: every (query, support item) pair of an episode, "same"
when their classes agree. An episode holds ``way - 1`` different pairs per same pair,
so the same pairs are weighted ``way - 1`` (``pos_weight``) to balance the two, as
Koch et al. sample them balanced.

Classification: a query takes the class of its most similar support item. The logit of
class c is the largest pair log-odds ``s = logit(p)`` over class c's support items;
sigmoid is monotone, so its argmax is the most similar item's class. Softmax of these
class scores is the per-query class distribution that self-distillation matches (the
seed does not say which distribution it matched for the Siamese network; this is our
choice, see docs/fewshot.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dafsl.fewshot.base import FewShotClassifier


class SiameseNetwork(FewShotClassifier):
    name = "siamese"

    def __init__(self, backbone: nn.Module | None = None, feature_dim: int = 64,
                 chunk: int = 256):
        super().__init__(backbone)
        self.distance = nn.Linear(feature_dim, 1)  # weights w_j and bias b of the L1 distance
        self.chunk = chunk

    def pair_logits(self, query_features: Tensor, support_features: Tensor) -> Tensor:
        """Log-odds of "same" (Q, S) for every query/support pair (support in chunks, so a
        large support set, e.g. a classifier head's, fits in memory)."""
        return torch.cat([self.distance((query_features[:, None] - s[None]).abs()).squeeze(-1)
                          for s in support_features.split(self.chunk)], dim=1)

    def logits(self, query_features: Tensor) -> Tensor:
        pairs = self.pair_logits(query_features, self.support_features)
        scores = pairs.new_full((len(pairs), self.way), float("-inf"))
        index = self.support_labels[None].expand_as(pairs)
        return scores.scatter_reduce(1, index, pairs, reduce="amax")

    def label_loss(self, logits: Tensor, query_features: Tensor, query_labels: Tensor) -> Tensor:
        pairs = self.pair_logits(query_features, self.support_features)
        same = (query_labels[:, None] == self.support_labels[None]).to(pairs)
        pos_weight = torch.tensor(float(max(self.way - 1, 1)), device=pairs.device)
        return F.binary_cross_entropy_with_logits(pairs, same, pos_weight=pos_weight)
