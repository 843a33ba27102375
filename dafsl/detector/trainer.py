"""The detector's :class:`dafsl.engine.Trainer`: its model, data and loss; the loop is
:func:`dafsl.engine.fit`."""
from __future__ import annotations

import torch
from torch import nn

from dafsl import dist
from dafsl.data import Split
from dafsl.detector.data import EpochBatches, Scene, build_augment
from dafsl.detector.predict import score_split, val_subset
from dafsl.engine import SingleModelState
from dafsl.transfer import build_scheduler, cosine_decay


class DetectorTrainer(SingleModelState):
    """Trains a torchvision Faster R-CNN on in-memory scenes; evaluates on ``val``.

    ``lr`` is the base rate (the mode's factor and warm-up come from
    :func:`dafsl.transfer.build_scheduler`); only parameters with ``requires_grad`` are
    optimised, so the transfer mode's freezing is respected.
    """

    def __init__(self, model: nn.Module, scenes: list[Scene], *, det_cfg: dict, mode: str,
                 transfer_cfg: dict, seed: int, device: torch.device, epochs: int,
                 lr: float | None = None, val: Split | None = None, stage: str = "detector",
                 eval_epochs: str = "every"):
        self.stage, self.model, self.scenes, self.device = stage, model.to(device), scenes, device
        self.train_model = dist.wrap(self.model)  # DDP under torchrun, else the model
        self.cfg, self.seed, self.val, self.epochs, self.eval_epochs = det_cfg, seed, val, epochs, eval_epochs
        self.batch_size = int(det_cfg["batch_size"])
        self.augment = build_augment(det_cfg["augment"])
        params = [p for p in model.parameters() if p.requires_grad]
        lr = float(det_cfg["lr"] if lr is None else lr)
        if det_cfg["optimizer"] == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=float(det_cfg["momentum"]),
                                             weight_decay=float(det_cfg["weight_decay"]))
        else:
            self.optimizer = torch.optim.AdamW(params, lr=lr,
                                               weight_decay=float(det_cfg["weight_decay"]))
        steps = epochs * max(1, len(scenes) // self.batch_size)
        base = cosine_decay(steps) if det_cfg["lr_schedule"] == "cosine" else None
        self.scheduler = build_scheduler(self.optimizer, mode, transfer_cfg, base=base)
        self.grad_clip = float(det_cfg["grad_clip"])
        self._val_images = ({i: val.load_image(i) for i in val.image_ids}
                            if val is not None else None)
        self._quick = (val_subset(val, int(det_cfg.get("eval_subset", 0)))
                       if val is not None else None)

    def batches(self, epoch: int) -> EpochBatches:
        return EpochBatches(self.scenes, self.batch_size, self.seed, epoch, self.augment)

    def train_step(self, batch) -> dict[str, float]:
        images, targets = batch
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
        self.model.train()
        losses = self.train_model(images, targets)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                     self.grad_clip)
        self.optimizer.step()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        # tensors left on the device: the engine reads them back in batches (no sync here)
        return {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}, "lr": lr}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {}

    def evaluate(self, epoch: int) -> dict[str, float]:
        if self.val is None or (self.eval_epochs == "last" and epoch != self.epochs - 1):
            return {}
        result = score_split(self.model, self.val, self.device,
                             int(self.cfg["eval_batch_size"]), self._val_images)
        return {"map50": result["map50"], "ap50_coco": result["ap50_coco"]}

    def evaluate_quick(self, step: int) -> dict[str, float]:
        """mAP@0.5 on the fixed val subset (``detector.eval_subset`` images), for the
        engine's step-cadence evaluations (``detector.eval_every_steps``)."""
        if self._quick is None:
            return {}
        result = score_split(self.model, self._quick, self.device,
                             int(self.cfg["eval_batch_size"]), self._val_images, with_coco=False)
        return {"map50": result["map50"], "eval_images": len(self._quick.image_ids)}
