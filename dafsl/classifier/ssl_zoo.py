"""Zoo entry ``classifier-ssl``: the classifier's own backbone pretrained self-supervised.

The offline stand-in for the ImageNet or face-recognition weights a real user starts
from: ``classifier.backbone`` with ``classifier.stem`` (the exact network
:func:`dafsl.classifier.model.build_classifier` builds, without its head) trained with
SimCLR's NT-Xent (Chen et al. 2020) on the *unlabelled* face crops of
``zoo.ssl_manifest`` (default ``synthfaces_related``: other scene seeds and identities
than the target, both genders). Select it with ``classifier.source: zoo`` and
``classifier.zoo_entry: classifier-ssl``.

* **No label is read.** Faces are every annotated box of the train split
  (:func:`dafsl.faces.class_faces` with no class), cut as the classifier cuts them
  (``faces.margin``, at ``augmenter.resolution`` px); the trainer receives one image
  tensor. The meta's only quality figure is label-free: the contrastive top-1 accuracy
  (each view finding its twin) on the source's val faces, next to chance.
* **Views** are :func:`dafsl.augmenter.featnet.random_view`'s: crop jitter (scale, shift),
  a flip and a mild brightness/contrast change, no hue or saturation jitter: lip
  saturation and hair length are gender cues in ``synthfaces`` and an augmentation that
  varied them would teach the features to ignore them.
* **Format**: the checkpoint's ``model`` is the backbone's state dict in the classifier's
  own names (``conv1.*``, ``bn1.*``, ``layer1.*`` ... ``layer4.*``, no ``fc``), so
  :func:`dafsl.classifier.train.source_state` loads it as it is and every backbone tensor
  transfers; the two-class head is new, as with every source.
* Built once with seed 0 whatever the run's seed (like ``detector-related``), through
  :func:`dafsl.engine.fit` (progress bar, ``train/metrics.jsonl`` next to the entry).
"""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

from dafsl import faces as face_crops
from dafsl.augmenter.data import to_tensor
from dafsl.augmenter.featnet import nt_xent, random_view
from dafsl.classifier.data import crop_size_of, to_input
from dafsl.classifier.model import build_classifier
from dafsl.data import cache_root, load_split, split_cache_dir
from dafsl.engine import SingleModelState, fit, torch_threads
from dafsl.errors import DafslError
from dafsl.manifest import load_manifest
from dafsl.runs import RunDir, save_checkpoint
from dafsl.similarity import describe_split
from dafsl.transfer import cosine_decay

SSL_ENTRY = "classifier-ssl"
SOURCE_SEED = 0
STAGE = "zoo-classifier-ssl"


class SimCLRNet(nn.Module):
    """The classifier's backbone (head removed) and a 2-layer projection MLP on its pooled
    features: (B, 3, S, S) normalised -> (B, proj_dim). Only ``backbone`` is kept."""

    def __init__(self, backbone: str, stem: str, proj_dim: int = 128):
        super().__init__()
        self.backbone = build_classifier(backbone, 0, stem)  # timm: num_classes 0 = no head
        width = int(self.backbone.num_features)
        self.proj = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True),
                                  nn.Linear(width, proj_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.backbone(x))


def as_input(views: Tensor, input_size: int) -> Tensor:
    """Views (B, 3, S, S) in [-1, 1] -> the classifier's input: resized to ``input_size``
    and normalised as :func:`dafsl.classifier.data.to_input` does."""
    return to_input((views + 1).mul(127.5).permute(0, 2, 3, 1), input_size)


class ViewPairs:
    """One epoch of (view 1, view 2) batches of ``images`` (N, 3, S, S) in [-1, 1]: a
    shuffle and the views drawn from a generator seeded by (seed, epoch)."""

    def __init__(self, images: Tensor, batch_size: int, input_size: int, seed: int, epoch: int):
        self.images, self.batch_size, self.input_size = images, batch_size, input_size
        self.gen = torch.Generator().manual_seed(seed * 100_003 + epoch)

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def __iter__(self) -> Iterator[dict]:
        order = torch.randperm(len(self.images), generator=self.gen)
        for i in range(len(self)):
            x = self.images[order[i * self.batch_size:(i + 1) * self.batch_size]]
            yield {"view1": as_input(random_view(x, self.gen), self.input_size),
                   "view2": as_input(random_view(x, self.gen), self.input_size)}


class SimCLRTrainer(SingleModelState):
    """:func:`dafsl.engine.fit`'s trainer: NT-Xent on two views of unlabelled ``images``
    (N, 3, S, S) in [-1, 1]; ``evaluate`` scores the twin accuracy on ``val_images``."""

    def __init__(self, model: SimCLRNet, images: Tensor, val_images: Tensor, *, epochs: int,
                 batch_size: int, lr: float, temperature: float, input_size: int, seed: int,
                 device: torch.device):
        if images.ndim != 4 or images.dtype != torch.float32:
            raise DafslError(f"{STAGE}: expected one float image tensor (N, 3, S, S), "
                             f"got {tuple(images.shape)} {images.dtype}")
        if len(images) < batch_size:
            raise DafslError(f"zoo.ssl_batch_size: {batch_size} is more than the "
                             f"{len(images)} faces of the source")
        self.stage, self.seed, self.device = STAGE, seed, device
        self.model, self.images, self.val_images = model.to(device), images, val_images
        self.batch_size, self.temperature, self.input_size = batch_size, temperature, input_size
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        steps = epochs * (len(images) // batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_decay(steps, final=0.0, warmup=max(1, steps // 20)))

    def batches(self, epoch: int) -> ViewPairs:
        return ViewPairs(self.images, self.batch_size, self.input_size, self.seed, epoch)

    def train_step(self, batch: dict) -> dict[str, float]:
        self.model.train()
        loss, acc = nt_xent(self.model(batch["view1"].to(self.device)),
                            self.model(batch["view2"].to(self.device)), self.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": loss.detach(), "twin_acc": acc}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {"lr": self.scheduler.get_last_lr()[0]}

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, float]:
        """Twin accuracy on the held-out faces, the same views every epoch."""
        if len(self.val_images) < 2:
            return {}
        self.model.eval()
        gen = torch.Generator().manual_seed(self.seed * 100_003 + 99_991)
        x = self.val_images
        z1 = self.model(as_input(random_view(x, gen), self.input_size).to(self.device))
        z2 = self.model(as_input(random_view(x, gen), self.input_size).to(self.device))
        loss, acc = nt_xent(z1, z2, self.temperature)
        return {"val_loss": float(loss), "val_twin_acc": acc,
                "val_twin_chance": 1.0 / (2 * len(x) - 1)}


def source_faces(cfg: dict, split_name: str, limit: int = 0) -> tuple[Tensor, object]:
    """Crops (N, 3, S, S) in [-1, 1] of every annotated face of ``zoo.ssl_manifest``'s
    ``split_name`` (the first ``limit``; 0: all), cut as the classifier cuts them, and the
    split. No class attribute is read."""
    split = load_split(cfg["zoo"]["ssl_manifest"], split_name, cfg["data"]["cache_dir"])
    faces = face_crops.class_faces(split, None, limit)
    crops = face_crops.crop_faces(split, faces, crop_size_of(cfg), float(cfg["faces"]["margin"]))
    return to_tensor(crops), split


def entry_key(cfg: dict) -> dict:
    """What the checkpoint depends on (:func:`dafsl.zoo.entry_key` hashes it with this
    module's code): the backbone, the crops, the ``zoo.ssl_*`` settings, the source data
    (its rendered-cache name carries the renderer version) and the code it runs."""
    manifest = load_manifest(cfg["zoo"]["ssl_manifest"])
    data_key = split_cache_dir(manifest, "train", cache_root(None)).parent.name
    code = "".join(inspect.getsource(obj) for obj in (
        build_classifier, random_view, nt_xent, to_tensor, to_input,
        face_crops.crop_face, face_crops.crop_faces, face_crops.class_faces))
    c = cfg["classifier"]
    return {"classifier": {k: c[k] for k in ("backbone", "stem", "input_size", "crop_size")},
            "resolution": cfg["augmenter"]["resolution"], "margin": cfg["faces"]["margin"],
            "zoo": {k: v for k, v in cfg["zoo"].items() if k.startswith("ssl_")},
            "source": data_key, "seed": SOURCE_SEED,
            "code": hashlib.sha256(code.encode()).hexdigest()}


def build_ssl_entry(cfg: dict, out_dir: Path, device: torch.device) -> dict:
    """Pretrain the classifier's backbone with SimCLR on the source's unlabelled faces;
    writes ``out_dir/checkpoint.pt`` ({"model": backbone state dict, "backbone", "stem"})."""
    z, c = cfg["zoo"], cfg["classifier"]
    images, train = source_faces(cfg, "train", int(z["ssl_max_faces"]))
    val_images, _ = source_faces(cfg, "val")
    epochs, batch_size = int(z["ssl_epochs"]), int(z["ssl_batch_size"])
    torch.manual_seed(SOURCE_SEED)
    model = SimCLRNet(c["backbone"], c["stem"])
    trainer = SimCLRTrainer(model, images, val_images, epochs=epochs, batch_size=batch_size,
                            lr=float(z["ssl_lr"]), temperature=float(z["ssl_temperature"]),
                            input_size=int(c["input_size"]), seed=SOURCE_SEED, device=device)
    log_run = RunDir(out_dir / "train")
    with torch_threads(int(c["num_threads"])):
        records = fit(trainer, log_run, epochs, mode="vanilla")
    log_run.checkpoint_path(STAGE).unlink(missing_ok=True)  # the entry is the checkpoint
    save_checkpoint({"model": model.backbone.cpu().state_dict(), "backbone": c["backbone"],
                     "stem": c["stem"]}, out_dir / "checkpoint.pt")
    last = records[-1]
    return {"source_dataset": f"{train.label} faces (GT boxes, both classes, no labels), "
                              f"self-supervised (SimCLR)",
            "descriptor": describe_split(train), "faces": len(images), "val_faces": len(val_images),
            "backbone": c["backbone"], "stem": c["stem"], "crop_size": crop_size_of(cfg),
            "input_size": int(c["input_size"]), "epochs": epochs,
            "steps": epochs * (len(images) // batch_size), "seed": SOURCE_SEED,
            "final_loss": last["loss"], "heldout_twin_accuracy": last.get("val_twin_acc"),
            "heldout_twin_chance": last.get("val_twin_chance"),
            "train_time_s": last["wall_clock_s"]}
