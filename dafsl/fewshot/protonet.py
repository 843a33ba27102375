"""Prototypical networks (Snell et al. 2017): a class is the mean of its support
features (its prototype); a query's logit for class c is the negative squared Euclidean
distance to prototype c (Snell et al., eq. 1 and 2 with d = squared Euclidean).

``squared=False`` gives the plain Euclidean distance, which is what easyfsl's
``PrototypicalNetworks`` returns (``-torch.cdist``); the tests compare against it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dafsl.fewshot.base import FewShotClassifier


def class_means(features: Tensor, labels: Tensor, way: int) -> Tensor:
    """(way, D) mean feature of each class 0..way-1."""
    onehot = torch.nn.functional.one_hot(labels, way).to(features)
    return (onehot.T @ features) / onehot.sum(dim=0)[:, None]


class PrototypicalNetwork(FewShotClassifier):
    name = "protonet"

    def __init__(self, backbone: nn.Module | None = None, squared: bool = True):
        super().__init__(backbone)
        self.squared = squared

    def process_support_features(self, features: Tensor, labels: Tensor) -> None:
        super().process_support_features(features, labels)
        self.prototypes = class_means(features, labels, self.way)

    def logits(self, query_features: Tensor) -> Tensor:
        d = torch.cdist(query_features, self.prototypes)
        return -(d ** 2) if self.squared else -d
