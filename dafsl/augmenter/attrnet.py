"""The quality metrics' feature network, zoo entry ``augmenter-attrnet``.

A small CNN trained to predict the per-face attributes (hair length, jaw width, brow
thickness, lip size and saturation, earrings, glasses, facial hair, skin tone) of the
Denough training faces plus the validation faces (ground-truth crops at the GAN
resolution). It never sees a gender label and is not the final classifier. 10% of its
faces are held out; the entry's meta reports its attribute error on them next to that
of predicting the mean.

KID / precision / recall (:mod:`dafsl.augmenter.quality`) are computed in
:meth:`AttributeNet.features`: the average-pooled activations of all four stages.
"""
from __future__ import annotations

import hashlib
import inspect
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dafsl.augmenter import data
from dafsl import faces as face_crops
from dafsl.augmenter.data import denough_classes, to_tensor
from dafsl.faces import class_faces, crop_faces
from dafsl.data import Split, load_split
from dafsl.errors import DafslError
from dafsl.log import progress
from dafsl.runs import load_checkpoint, save_checkpoint
from dafsl.similarity import describe_split

ATTRNET_ENTRY = "augmenter-attrnet"


class AttributeNet(nn.Module):
    """(B, 3, r, r) in [-1, 1] -> attribute logits (B, n_attributes).

    Four conv-BN-ReLU stages (width, 2, 4 x width, ``feature_dim`` channels), 2x max
    pooling between them: ~4 MMAC per 32 px face, a zoo build of seconds on 2 cores.
    """

    def __init__(self, n_attributes: int, width: int = 16, feature_dim: int = 128):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, feature_dim]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))
            for ci, co in zip(chans[:-1], chans[1:]))
        self.head = nn.Linear(feature_dim, n_attributes)
        self.feature_dim = sum(chans[1:])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, r, r) -> (B, feature_dim): every stage's activations averaged over space,
        concatenated (the last ``head.in_features`` values are the head's input)."""
        pooled = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[:, -self.head.in_features:])


def attribute_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits against attribute targets in [0, 1] (soft for the continuous cues)."""
    return F.binary_cross_entropy_with_logits(logits, targets)


def entry_key(cfg: dict) -> dict:
    """What the entry depends on (hashed by :func:`dafsl.zoo.entry_key` with this module's
    code): data, seed, resolution and framing, the net's settings, the cropping code."""
    aug = cfg["augmenter"]
    code = "".join(inspect.getsource(f) for f in (face_crops.crop_face, face_crops.crop_faces,
                                                    face_crops.class_faces, data.to_tensor))
    return {"data": {k: cfg["data"][k] for k in ("manifest", "imbalance_threshold")},
            "seed": cfg["seed"], "resolution": aug["resolution"], "crop_margin": cfg["faces"]["margin"],
            "attrnet": aug["attrnet"], "code": hashlib.sha256(code.encode()).hexdigest()}


def attribute_names(split: Split) -> list[str]:
    anns = split.coco["annotations"]
    if not anns or not isinstance(anns[0].get("attributes"), dict):
        raise DafslError(f"{split.label}: faces carry no 'attributes'; the augmenter's quality "
                         f"network needs per-face attribute labels")
    return sorted(anns[0]["attributes"])


def attribute_targets(faces: list[tuple[int, dict]], names: list[str], label: str) -> torch.Tensor:
    """(N, len(names)) float targets in [0, 1]; a face lacking one is a one-line error."""
    rows = []
    for _, ann in faces:
        attrs = ann.get("attributes") or {}
        missing = [n for n in names if n not in attrs]
        if missing:
            raise DafslError(f"{label}: annotation {ann['id']} lacks attribute '{missing[0]}'")
        rows.append([float(attrs[n]) for n in names])
    return torch.tensor(rows, dtype=torch.float32).clamp(0, 1)


def build_attribute_net(cfg: dict, out_dir: Path, device: torch.device) -> dict:
    """Zoo builder: train the attribute net, write ``out_dir/checkpoint.pt``, return meta."""
    aug, net_cfg = cfg["augmenter"], cfg["augmenter"]["attrnet"]
    size, margin = int(aug["resolution"]), float(cfg["faces"]["margin"])
    manifest, cache = cfg["data"]["manifest"], cfg["data"]["cache_dir"]
    train = load_split(manifest, "train", cache)
    val = load_split(manifest, "val", cache)
    names = attribute_names(train)
    images, targets = [], []
    for split, faces in ((train, [f for c in denough_classes(cfg, train) for f in class_faces(train, c)]),
                         (val, [(a["image_id"], a) for a in val.coco["annotations"]])):
        images.append(to_tensor(crop_faces(split, faces, size, margin)))
        targets.append(attribute_targets(faces, names, split.label))
    x, y = torch.cat(images), torch.cat(targets)
    gen = torch.Generator().manual_seed(int(cfg["seed"]) * 1000 + 17)
    perm = torch.randperm(len(x), generator=gen)
    n_hold = max(1, len(x) // 10)
    hold, fit_idx = perm[:n_hold], perm[n_hold:]
    torch.manual_seed(int(cfg["seed"]))
    net = AttributeNet(len(names), int(net_cfg["width"]), int(net_cfg["feature_dim"])).to(device)
    x, y = x.to(device), y.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=float(net_cfg["lr"]))
    bs, epochs = int(net_cfg["batch_size"]), int(net_cfg["epochs"])
    t0 = time.perf_counter()
    for _ in progress(range(epochs), desc="attribute net"):
        net.train()
        order = fit_idx[torch.randperm(len(fit_idx), generator=gen)]
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)  # the attributes are left-right symmetric
            xb = torch.where(flip[:, None, None, None], x[idx].flip(3), x[idx])
            batch_loss = attribute_loss(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        mae = (torch.sigmoid(net(x[hold])) - y[hold]).abs().mean(dim=0)
    baseline = (y[fit_idx].mean(dim=0, keepdim=True) - y[hold]).abs().mean(dim=0)
    save_checkpoint({"model": net.cpu().state_dict(), "attributes": names}, out_dir / "checkpoint.pt")
    return {"source_dataset": f"{train.label} Denough faces + {val.label} faces (GT boxes)",
            "descriptor": describe_split(train), "attributes": names, "faces": len(x),
            "train_time_s": time.perf_counter() - t0,
            "heldout_mae": float(mae.mean()), "heldout_mae_mean_predictor": float(baseline.mean()),
            "heldout_mae_per_attribute": {n: float(v) for n, v in zip(names, mae)}}


def load_attribute_net(cfg: dict, device: torch.device | str = "cpu") -> tuple[AttributeNet, dict]:
    """The cached (or freshly built) attribute net in eval mode, and its zoo meta."""
    from dafsl import zoo

    path, meta = zoo.get(ATTRNET_ENTRY, cfg, device=device)
    state = load_checkpoint(path)
    net_cfg = cfg["augmenter"]["attrnet"]
    net = AttributeNet(len(state["attributes"]), int(net_cfg["width"]), int(net_cfg["feature_dim"]))
    net.load_state_dict(state["model"])
    return net.eval(), meta
