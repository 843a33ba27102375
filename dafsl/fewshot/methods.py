"""The registry of few-shot methods: ``fewshot.method`` -> class."""
from __future__ import annotations

from torch import nn

from dafsl.errors import DafslError
from dafsl.fewshot.base import FewShotClassifier
from dafsl.fewshot.matching import MatchingNetwork
from dafsl.fewshot.protonet import PrototypicalNetwork
from dafsl.fewshot.siamese import SiameseNetwork

METHODS: dict[str, type[FewShotClassifier]] = {
    "siamese": SiameseNetwork, "matching": MatchingNetwork, "protonet": PrototypicalNetwork}


def build_method(name: str, backbone: nn.Module | None, feature_dim: int, *,
                 fce: bool = False) -> FewShotClassifier:
    """The method ``name`` on ``backbone`` (None: features in, as a classifier head)."""
    if name not in METHODS:
        raise DafslError(f"fewshot.method: expected one of {', '.join(METHODS)}, got {name!r}")
    if name == "siamese":
        return SiameseNetwork(backbone, feature_dim)
    if name == "matching":
        return MatchingNetwork(backbone, feature_dim, fce=fce)
    return PrototypicalNetwork(backbone)
