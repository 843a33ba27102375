"""Matching networks (Vinyals et al. 2016): a query attends over the support set with a
softmax of cosine similarities, ``a(q, s_i) = softmax_i cos(f(q), g(s_i))`` (eq. 2), and
the class distribution is the attention mass on each class's support items,
``P(c | q) = sum_i a(q, s_i) [y_i = c]`` (eq. 1). Logits are ``log P`` so that softmax
of them is ``P`` and cross-entropy on them is the paper's loss.

Full context embeddings (``fce=True``, off by default; section 2.1.2 of the paper, laid
out as easyfsl does): g = support feature + a bidirectional LSTM over the support set;
f = an attention LSTM that reads the support set for as many steps as it has items.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dafsl.fewshot.base import FewShotClassifier


class MatchingNetwork(FewShotClassifier):
    name = "matching"

    def __init__(self, backbone: nn.Module | None = None, feature_dim: int = 64, fce: bool = False):
        super().__init__(backbone)
        self.fce = fce
        if fce:
            self.support_lstm = nn.LSTM(feature_dim, feature_dim, batch_first=True, bidirectional=True)
            self.query_lstm = nn.LSTMCell(2 * feature_dim, feature_dim)

    def process_support_features(self, features: Tensor, labels: Tensor) -> None:
        super().process_support_features(features, labels)
        if self.fce:
            d = features.shape[1]
            h = self.support_lstm(features[None])[0][0]  # (S, 2D)
            features = features + h[:, :d] + h[:, d:]
        self.support_embeddings = features
        self.support_onehot = F.one_hot(labels, self.way).to(features)

    def _query_embeddings(self, q: Tensor) -> Tensor:
        if not self.fce:
            return q
        g = self.support_embeddings
        hidden, cell = q, torch.zeros_like(q)
        for _ in range(len(g)):
            read = (hidden @ g.T).softmax(dim=1) @ g
            hidden, cell = self.query_lstm(torch.cat([q, read], dim=1), (hidden, cell))
            hidden = hidden + q
        return hidden

    def logits(self, query_features: Tensor) -> Tensor:
        f = F.normalize(self._query_embeddings(query_features), dim=1)
        attention = (f @ F.normalize(self.support_embeddings, dim=1).T).softmax(dim=1)  # (Q, S)
        return (attention @ self.support_onehot).clamp_min(1e-12).log()
