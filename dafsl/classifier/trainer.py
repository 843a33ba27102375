"""The classifier's :class:`dafsl.engine.Trainer`: data order, one optimisation step
through the distillation method, validation metrics per epoch; its learning-rate
schedule (:func:`classifier_scheduler`); and, when the backbone is frozen (``fixed``),
a head-only path that computes the backbone's features once (:func:`frozen_features`)."""
from __future__ import annotations

from typing import Sequence

import albumentations as A
import numpy as np
import torch
from torch import nn

from dafsl import dist
from dafsl.classifier.data import EpochBatches, FaceSet, epoch_order, model_device, to_input
from dafsl.classifier.distill import Distiller
from dafsl.classifier.metrics import classification_metrics
from dafsl.engine import SingleModelState
from dafsl.errors import DafslError
from dafsl.transfer import build_scheduler, cosine_decay

from dafsl.config_schema import LR_SCHEDULES  # noqa: E402
FEATURE_VIEWS = 4  # fixed mode: each face's features, unaugmented + 3 augmented views


def classifier_scheduler(optimizer: torch.optim.Optimizer, mode: str, cfg: dict,
                         train_size: int, teacher: bool = False) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule of ``classifier.lr_schedule``: ``cosine`` = linear warm-up over
    ``classifier.warmup_steps`` then cosine decay to 5 % at the last step of
    ``classifier.epochs`` (``classifier.teacher.epochs`` for a ``teacher``); ``constant`` = 1.
    The ``pretrained`` mode's own warm-up and ``lr_factor`` (transfer section) apply on top,
    so its classifier warm-up is skipped."""
    c = cfg["classifier"]
    batches = EpochBatches.count(int(c["epoch_size"] or train_size), int(c["batch_size"]))
    total = int(c["teacher"]["epochs"] if teacher else c["epochs"]) * batches
    if int(c["warmup_steps"]) < 0:
        raise DafslError(f"classifier.warmup_steps must be >= 0, got {c['warmup_steps']}")
    base = None
    if c["lr_schedule"] == "cosine":
        base = cosine_decay(total, warmup=0 if mode == "pretrained" else int(c["warmup_steps"]))
    return build_scheduler(optimizer, mode, cfg["transfer"], base=base)


def frozen_backbone(model: nn.Module) -> bool:
    """True when every parameter outside the head is frozen (the ``fixed`` mode)."""
    head = getattr(model, "get_classifier", lambda: None)()
    if head is None or not hasattr(model, "forward_head"):
        return False
    own = {id(p) for p in head.parameters()}
    return all(not p.requires_grad for p in model.parameters() if id(p) not in own)


@torch.no_grad()
def frozen_features(model: nn.Module, images: np.ndarray, input_size: int,
                    augment: A.Compose | None, views: int, batch_size: int = 256) -> torch.Tensor:
    """Pooled backbone features (V, N, D) of ``images``: view 0 unaugmented, views 1.. through
    ``augment`` (only view 0 without it). Frozen BatchNorms stay in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for v in range(views if augment is not None else 1):
        imgs = images if v == 0 else np.stack([augment(image=im)["image"] for im in images])
        dev = model_device(model)
        out.append(torch.cat([model.forward_head(model.forward_features(to_input(imgs[i:i + batch_size], input_size, dev)),
                                                 pre_logits=True).cpu()
                              for i in range(0, len(imgs), batch_size)]))
    model.train(was_training)
    return torch.stack(out)


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray, input_size: int,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, C) for uint8 faces (N, S, S, 3), in eval mode."""
    was_training = model.training
    model.eval()
    dev = model_device(model)
    probs = [model(to_input(images[i:i + batch_size], input_size, dev)).softmax(dim=1).cpu()
             for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(probs).numpy()


class ClassifierTrainer(SingleModelState):
    """Trains ``distiller.student`` on ``train`` faces; ``evaluate`` scores ``val`` faces."""

    def __init__(self, stage: str, distiller: Distiller, optimizer: torch.optim.Optimizer,
                 scheduler, train: FaceSet, val: FaceSet, classes: Sequence[str], positive: str, *,
                 seed: int, batch_size: int, input_size: int, balanced: bool,
                 epoch_size: int | None, augment: A.Compose | None, real_share: float | None = None):
        self.stage = stage
        self.distiller, self.model = distiller, distiller.student
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train, self.val = train, val
        self.classes, self.positive = list(classes), positive
        self.seed, self.batch_size, self.input_size = seed, batch_size, input_size
        distortion = getattr(distiller, "distortion", None)  # DDGSD's views: augment, then distort
        if distortion is not None:
            augment = A.Compose([augment, distortion]) if augment is not None else distortion
        self.balanced, self.epoch_size, self.augment = balanced, epoch_size, augment
        self.real_share = real_share  # data.epoch_order: a class's draws that are real faces
        # a frozen backbone and a method that only needs the student's logits: train the
        # head on features computed once (the same optimiser, steps and data order)
        self.head_only = frozen_backbone(self.model) and type(distiller).forward_train is \
            Distiller.forward_train
        self.features: torch.Tensor | None = None
        # DDP under torchrun (the unwrapped model stays ``self.model`` for state and eval)
        self.head = self.model.get_classifier() if self.head_only else None
        if dist.world_size() > 1:
            if self.head_only:
                self.head = dist.wrap(self.head)
            else:
                distiller.student = dist.wrap(self.model)

    def batches(self, epoch: int):
        if self.head_only:
            if self.features is None:
                if self.augment is not None:
                    self.augment.set_random_seed(self.seed * 1000 + 999)  # no epoch uses it
                self.features = frozen_features(self.model, self.train.images, self.input_size,
                                                self.augment, FEATURE_VIEWS)
            order = epoch_order(self.train.labels, epoch, self.seed, balanced=self.balanced,
                                epoch_size=self.epoch_size, synthetic=self.train.synthetic,
                                real_share=self.real_share)
            g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
            view = torch.randint(len(self.features), (len(order),), generator=g).numpy()
            n = EpochBatches.count(len(order), self.batch_size)
            return [{"feature": self.features[view[b:b + self.batch_size], order[b:b + self.batch_size]],
                     "target": torch.as_tensor(self.train.labels[order[b:b + self.batch_size]])}
                    for b in range(0, n * self.batch_size, self.batch_size)]
        if self.augment is not None:
            # reseeded per epoch so a resumed run augments exactly as an uninterrupted one
            self.augment.set_random_seed(self.seed * 1000 + epoch)
        order = epoch_order(self.train.labels, epoch, self.seed, balanced=self.balanced,
                            epoch_size=self.epoch_size, synthetic=self.train.synthetic,
                            real_share=self.real_share)
        return EpochBatches(self.train, order, self.batch_size, self.input_size, self.augment,
                            views=self.distiller.views)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "distiller": self.distiller.own_state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.distiller.load_own_state_dict(state.get("distiller", {}))

    def train_step(self, batch: dict) -> dict[str, float]:
        self.distiller.train()  # the student (and the method's own modules); never a teacher
        dev = model_device(self.model)
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        if "feature" in batch:
            logits = self.head(batch["feature"])
            losses = {"loss_ce": self.distiller.cross_entropy(logits, batch["target"])}
        else:
            extra = {k: v for k, v in batch.items() if k not in ("image", "target")}
            logits, losses = self.distiller.forward_train(batch["image"], batch["target"], **extra)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        acc = (logits.argmax(dim=1) == batch["target"]).float().mean()
        # tensors left on the device: the engine reads them back in batches (no sync here)
        return {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()},
                "train_accuracy": acc.detach()}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {"lr": float(self.optimizer.param_groups[0]["lr"])}

    def evaluate(self, epoch: int) -> dict:
        probs = predict_probs(self.model, self.val.images, self.input_size)
        m = classification_metrics(self.val.labels, probs, self.classes, self.positive)
        return {f"val_{k}": v for k, v in m.items()}
