"""The classifier's :class:`dafsl.engine.Trainer`: data order, one optimisation step
through the distillation method, validation metrics per epoch."""
from __future__ import annotations

from typing import Sequence

import albumentations as A
import numpy as np
import torch
from torch import nn

from dafsl.classifier.data import EpochBatches, FaceSet, epoch_order, to_input
from dafsl.classifier.distill import Distiller
from dafsl.classifier.metrics import classification_metrics
from dafsl.engine import SingleModelState


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray, input_size: int,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, C) for uint8 faces (N, S, S, 3), in eval mode."""
    was_training = model.training
    model.eval()
    probs = [model(to_input(images[i:i + batch_size], input_size)).softmax(dim=1)
             for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(probs).numpy()


class ClassifierTrainer(SingleModelState):
    """Trains ``distiller.student`` on ``train`` faces; ``evaluate`` scores ``val`` faces."""

    def __init__(self, stage: str, distiller: Distiller, optimizer: torch.optim.Optimizer,
                 scheduler, train: FaceSet, val: FaceSet, classes: Sequence[str], positive: str, *,
                 seed: int, batch_size: int, input_size: int, balanced: bool,
                 epoch_size: int | None, augment: A.Compose | None):
        self.stage = stage
        self.distiller, self.model = distiller, distiller.student
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train, self.val = train, val
        self.classes, self.positive = list(classes), positive
        self.seed, self.batch_size, self.input_size = seed, batch_size, input_size
        self.balanced, self.epoch_size, self.augment = balanced, epoch_size, augment

    def batches(self, epoch: int) -> EpochBatches:
        if self.augment is not None:
            # reseeded per epoch so a resumed run augments exactly as an uninterrupted one
            self.augment.set_random_seed(self.seed * 1000 + epoch)
        order = epoch_order(self.train.labels, epoch, self.seed, balanced=self.balanced,
                            epoch_size=self.epoch_size, synthetic=self.train.synthetic)
        return EpochBatches(self.train, order, self.batch_size, self.input_size, self.augment,
                            views=self.distiller.views)

    def train_step(self, batch: dict) -> dict[str, float]:
        self.model.train()
        extra = {k: v for k, v in batch.items() if k not in ("image", "target")}
        logits, losses = self.distiller.forward_train(batch["image"], batch["target"], **extra)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        acc = (logits.argmax(dim=1) == batch["target"]).float().mean()
        return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()},
                "train_accuracy": float(acc)}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {"lr": float(self.optimizer.param_groups[0]["lr"])}

    def evaluate(self, epoch: int) -> dict:
        probs = predict_probs(self.model, self.val.images, self.input_size)
        m = classification_metrics(self.val.labels, probs, self.classes, self.positive)
        return {f"val_{k}": v for k, v in m.items()}
