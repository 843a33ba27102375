"""A few-shot method as a classifier head: :class:`SupportHead` maps a trained
backbone's pooled features (B, D) to logits (B, C) by scoring them against a stored
support set of training features, with the rule of ``dafsl.fewshot.<method>``.

The support set and the method live in buffers and parameters, so the head is saved
and loaded with the model's ``state_dict``; :func:`empty_head` rebuilds one of the right
shape from a state dict before loading (``dafsl.classifier.model.load_classifier``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dafsl.fewshot.methods import METHODS, build_method

HEAD_METHODS = tuple(METHODS)  # their index is stored in the head's ``method_id`` buffer


class SupportHead(nn.Module):
    """``method`` (a key of :data:`METHODS`) over ``support`` (S, D) features labelled
    ``labels`` (S,) in 0..C-1."""

    def __init__(self, method: str, support: Tensor, labels: Tensor):
        super().__init__()
        self.method_name = method
        self.register_buffer("method_id", torch.tensor(HEAD_METHODS.index(method)))
        self.register_buffer("support", support.detach().clone().float())
        self.register_buffer("support_labels", labels.detach().clone().long())
        self.method = build_method(method, None, support.shape[1])

    def forward(self, features: Tensor) -> Tensor:
        self.method.process_support_features(self.support, self.support_labels)
        return self.method.logits(features)


def empty_head(state: dict, prefix: str) -> SupportHead:
    """A :class:`SupportHead` shaped like the one saved under ``prefix`` in ``state``."""
    method = HEAD_METHODS[int(state[f"{prefix}method_id"])]
    support = state[f"{prefix}support"]
    labels = torch.arange(len(support)) % (int(state[f"{prefix}support_labels"].max()) + 1)
    return SupportHead(method, torch.zeros_like(support), labels)
