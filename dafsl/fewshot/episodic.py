"""Episodic training and evaluation of a few-shot method.

:class:`EpisodicTrainer` is a :class:`dafsl.engine.Trainer`: an epoch is
``episodes_per_epoch`` episodes drawn with a generator seeded from (seed, epoch), so a
resumed run sees the same episodes; with a ``teacher`` each step adds the seed-000
self-distillation term (:mod:`dafsl.fewshot.distill`). After each epoch the method is
scored on fixed validation episodes and the best validation state is kept in the
trainer's state (checkpointed with it): that state, never a test figure, picks the
model that is finally tested.

:func:`evaluate_episodes` embeds a split once (eval mode) and scores ``n`` episodes
drawn with a fixed seed on those features: the mean accuracy and its 95 % confidence
interval ``1.96 * std / sqrt(n)``.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from dafsl.fewshot.base import FewShotClassifier
from dafsl.fewshot.data import CharacterSet, sample_episode
from dafsl.fewshot.distill import distillation_loss

VAL_SEED, TEST_SEED = 1_000_003, 2_000_003  # episode streams, independent of the training seed


@torch.no_grad()
def split_features(model: FewShotClassifier, images: Tensor, batch_size: int = 512) -> Tensor:
    """Features (N, D) of every image, in eval mode (the model's mode is restored)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    feats = torch.cat([model.compute_features(images[i:i + batch_size].to(device))
                       for i in range(0, len(images), batch_size)])
    model.train(was)
    return feats


def summarise(accuracies: list[float]) -> dict:
    """{accuracy, accuracy_std, accuracy_ci95, episodes}; the interval is the normal one,
    ``1.96 * std / sqrt(n)`` (std with n - 1)."""
    acc = torch.tensor(accuracies, dtype=torch.float64)
    n = len(acc)
    std = float(acc.std()) if n > 1 else 0.0
    return {"accuracy": float(acc.mean()), "accuracy_std": std,
            "accuracy_ci95": 1.96 * std / math.sqrt(n), "episodes": n}


@torch.no_grad()
def evaluate_episodes(model: FewShotClassifier, data: CharacterSet, *, way: int, shot: int,
                      query: int, episodes: int, seed: int = TEST_SEED,
                      features: Tensor | None = None) -> dict:
    """Mean query accuracy over ``episodes`` episodes of ``data`` (see :func:`summarise`);
    the same ``seed`` gives the same episodes to every model. ``features``: ``data``'s
    features from :func:`split_features`, when the caller already has them."""
    was = model.training
    model.eval()
    feats = split_features(model, data.images) if features is None else features
    g = torch.Generator().manual_seed(seed)
    accs = []
    for _ in range(episodes):
        ep = sample_episode(data.labels, way, shot, query, g)
        dev = feats.device
        model.process_support_features(feats[ep.support_idx.to(dev)], ep.support_labels.to(dev))
        pred = model.logits(feats[ep.query_idx.to(dev)]).argmax(dim=1).cpu()
        accs.append(float((pred == ep.query_labels).float().mean()))
    model.train(was)
    return summarise(accs)


class EpisodicTrainer:
    """Trains ``model`` on episodes of ``train``; ``evaluate`` scores ``val`` episodes."""

    def __init__(self, stage: str, model: FewShotClassifier, optimizer, scheduler,
                 train: CharacterSet, val: CharacterSet, *, way: int, shot: int, query: int,
                 train_way: int, train_query: int | None = None, episodes_per_epoch: int, val_episodes: int, seed: int,
                 teacher: FewShotClassifier | None = None, alpha: float = 0.0,
                 temperature: float = 1.0, label_weight: float = 1.0):
        self.stage, self.model, self.optimizer, self.scheduler = stage, model, optimizer, scheduler
        self.train, self.val = train, val
        self.way, self.shot, self.query, self.train_way = way, shot, query, train_way
        self.train_query = train_query or query
        self.episodes_per_epoch, self.val_episodes, self.seed = episodes_per_epoch, val_episodes, seed
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature
        self.label_weight = label_weight
        self.teacher_features: Tensor | None = None
        self.device = next(model.parameters()).device
        self.best_state: dict | None = None
        self.best_val, self.best_epoch = -1.0, -1

    def batches(self, epoch: int) -> list:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return [sample_episode(self.train.labels, self.train_way, self.shot, self.train_query, g)
                for _ in range(self.episodes_per_epoch)]

    def train_step(self, ep) -> dict[str, float]:
        dev = self.device
        support, query = self.train.images[ep.support_idx].to(dev), self.train.images[ep.query_idx].to(dev)
        s_lab, q_lab = ep.support_labels.to(dev), ep.query_labels.to(dev)
        self.model.train()
        logits, losses = self.model.forward_train(support, s_lab, query, q_lab)
        loss = self.label_weight * losses["loss_label"]
        out = {"loss_label": losses["loss_label"].item()}
        if self.teacher is not None and self.alpha > 0:
            kl = distillation_loss(logits, self.teacher_logits(ep), self.temperature)
            loss = loss + self.alpha * kl
            out["loss_kl"] = kl.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        acc = float((logits.argmax(dim=1) == q_lab).float().mean())
        return {"loss": loss.item(), **out, "train_accuracy": acc}

    @torch.no_grad()
    def teacher_logits(self, ep) -> Tensor:
        """The frozen teacher's query logits of episode ``ep``. In eval mode a network's
        features do not depend on the rest of the batch, so the teacher embeds the
        training images once and each episode only runs its scoring rule."""
        if self.teacher_features is None:
            self.teacher.eval()
            self.teacher_features = split_features(self.teacher, self.train.images)
        dev = self.teacher_features.device
        self.teacher.process_support_features(self.teacher_features[ep.support_idx.to(dev)],
                                              ep.support_labels.to(dev))
        return self.teacher.logits(self.teacher_features[ep.query_idx.to(dev)]).to(self.device)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {"lr": float(self.optimizer.param_groups[0]["lr"])}

    def evaluate(self, epoch: int) -> dict[str, float]:
        res = evaluate_episodes(self.model, self.val, way=self.way, shot=self.shot,
                                query=self.query, episodes=self.val_episodes, seed=VAL_SEED)
        if res["accuracy"] > self.best_val:
            self.best_val, self.best_epoch = res["accuracy"], epoch
            self.best_state = copy.deepcopy(self.model.state_dict())
        return {"val_accuracy": res["accuracy"], "val_ci95": res["accuracy_ci95"],
                "best_val_accuracy": self.best_val, "best_epoch": self.best_epoch}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "best_state": self.best_state,
                "best_val": self.best_val, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best_state = state["best_state"]
        self.best_val, self.best_epoch = float(state["best_val"]), int(state["best_epoch"])

    def load_best(self) -> None:
        """Put the best validation state into the model (no-op before any evaluation)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
