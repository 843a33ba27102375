"""The quality metrics' feature network, zoo entry ``augmenter-featnet``.

A small CNN trained **self-supervised** (SimCLR's NT-Xent, Chen et al. 2020) on the
Denough faces of the training split only: ground-truth crops at the GAN resolution and
margin. It needs nothing but face boxes and the class names every dataset has (no
rendered attributes, no identities), and it never sees a face of the Dlack class, nor
any validation or test face. It is not the classifier and never sees a gender label.

Two views of each face differ by a random scale/shift (affine resampling), a flip and a
mild brightness/contrast change. With ``featnet.positives: identity`` and faces that carry
an ``identity`` (the renderer's do; COCO data usually not), the second view is another
face of the same person, from another scene: the features then follow what makes a person
(hair, jaw, brows, lips, glasses...) rather than the scene. Faces without an identity fall
back to two views of the same face (plain SimCLR), so any face dataset works. There is deliberately no colour, blur or noise
augmentation: the features must *not* become invariant to the colour noise and blur that
separate generated from real faces.

KID / precision / recall (:mod:`dafsl.augmenter.quality`) use :meth:`FeatureNet.features`:
the average-pooled activations of all four stages (``width * 7 + feature_dim`` values).
The entry's meta reports the contrastive top-1 accuracy (each view finding its twin among
``2 * batch - 1`` candidates) on held-out Denough faces, next to chance.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dafsl.augmenter import data
from dafsl import faces as face_crops
from dafsl.augmenter.data import denough_classes, to_tensor
from dafsl.faces import class_faces, crop_faces
from dafsl.log import progress
from dafsl.data import load_split
from dafsl.errors import DafslError
from dafsl.runs import load_checkpoint, save_checkpoint
from dafsl.similarity import describe_split

FEATNET_ENTRY = "augmenter-featnet"


class FeatureNet(nn.Module):
    """(B, 3, r, r) in [-1, 1] -> projection (B, proj_dim) for the contrastive loss.

    Four conv-BN-ReLU stages (width, 2, 4 x width, ``feature_dim`` channels), 2x max
    pooling between them, and a 2-layer MLP projection head used only in training.
    """

    def __init__(self, width: int = 16, feature_dim: int = 128, proj_dim: int = 64):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, feature_dim]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))
            for ci, co in zip(chans[:-1], chans[1:]))
        self.proj = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True),
                                  nn.Linear(feature_dim, proj_dim))
        self.feature_dim = sum(chans[1:])
        self.last_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, r, r) -> (B, self.feature_dim): every stage's activations averaged over
        space, concatenated (the last ``last_dim`` values feed the projection head)."""
        pooled = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x)[:, -self.last_dim:])


def random_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One augmented view of ``x`` (B, 3, r, r): scale in [0.8, 1.15], shift up to 1/8 of
    the side, horizontal flip, brightness +-0.15, contrast x [0.8, 1.2] (one draw per image)."""
    b = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=gen)  # noqa: E731
    scale = u(0.8, 1.15)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, 0, 2], theta[:, 1, 2] = u(-0.25, 0.25), u(-0.25, 0.25)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * u(0.8, 1.2)[:, None, None, None] + mean + u(-0.15, 0.15)[:, None, None, None]
    return out.clamp(-1, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    """SimCLR loss of paired projections (B, d) x 2 and the top-1 accuracy of finding each
    view's twin among the other 2B - 1 views."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    acc = float((sim.argmax(dim=1) == target).float().mean())
    return F.cross_entropy(sim, target), acc


def identity_groups(faces: list[tuple[int, dict]]) -> list[list[int]]:
    """Indices of ``faces`` grouped by their annotation's ``identity`` (a face without one
    is its own group)."""
    groups: dict = {}
    for i, (_, ann) in enumerate(faces):
        groups.setdefault(ann.get("identity", ("face", i)), []).append(i)
    return list(groups.values())


def partners(idx: torch.Tensor, groups: list[list[int]], gen: torch.Generator) -> torch.Tensor:
    """For each face index in ``idx``, a random face of its group (itself when alone)."""
    group_of = {i: g for g in groups for i in g}
    picks = [group_of[int(i)][int(torch.randint(len(group_of[int(i)]), (1,), generator=gen))] for i in idx]
    return torch.tensor(picks, dtype=torch.long)


def entry_key(cfg: dict) -> dict:
    """What the entry depends on (hashed with this module's code by :mod:`dafsl.zoo`)."""
    aug = cfg["augmenter"]
    code = "".join(inspect.getsource(f) for f in (face_crops.crop_face, face_crops.crop_faces,
                                                    face_crops.class_faces, data.to_tensor))
    return {"data": {k: cfg["data"][k] for k in ("manifest", "imbalance_threshold")},
            "seed": cfg["seed"], "resolution": aug["resolution"], "crop_margin": cfg["faces"]["margin"],
            "featnet": aug["featnet"], "code": hashlib.sha256(code.encode()).hexdigest()}


def build_feature_net(cfg: dict, out_dir: Path, device: torch.device) -> dict:
    """Zoo builder: SimCLR on the Denough training faces; writes ``out_dir/checkpoint.pt``."""
    aug, net_cfg = cfg["augmenter"], cfg["augmenter"]["featnet"]
    train = load_split(cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"])
    faces = [f for c in denough_classes(cfg, train) for f in class_faces(train, c)]
    if len(faces) < 8:
        raise DafslError(f"{train.label}: the quality feature net needs at least 8 Denough faces, "
                         f"got {len(faces)}")
    x = to_tensor(crop_faces(train, faces, int(aug["resolution"]), float(cfg["faces"]["margin"])))
    gen = torch.Generator().manual_seed(int(cfg["seed"]) * 1000 + 17)
    if net_cfg["positives"] not in ("identity", "self"):
        raise DafslError(f"augmenter.featnet.positives: expected identity or self, got {net_cfg['positives']!r}")
    groups = identity_groups(faces) if net_cfg["positives"] == "identity" else [[i] for i in range(len(x))]
    perm = torch.randperm(len(x), generator=gen)
    n_hold = min(256, max(2, len(x) // 10))
    hold, fit_idx = perm[:n_hold], perm[n_hold:]
    torch.manual_seed(int(cfg["seed"]))
    net = FeatureNet(int(net_cfg["width"]), int(net_cfg["feature_dim"])).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=float(net_cfg["lr"]))
    bs, epochs, tau = int(net_cfg["batch_size"]), int(net_cfg["epochs"]), float(net_cfg["temperature"])
    steps = epochs * max(1, len(fit_idx) // bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    t0, loss = time.perf_counter(), torch.tensor(0.0)
    for _ in progress(range(epochs), desc="feature net"):
        net.train()
        order = fit_idx[torch.randperm(len(fit_idx), generator=gen)]
        for i in range(0, len(order) - bs + 1, bs):
            idx = order[i:i + bs]
            loss, _ = nt_xent(net(random_view(x[idx], gen).to(device)),
                              net(random_view(x[partners(idx, groups, gen)], gen).to(device)), tau)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        xb = x[hold]
        _, acc = nt_xent(net(random_view(xb, gen).to(device)), net(random_view(xb, gen).to(device)), tau)
    save_checkpoint({"model": net.cpu().state_dict()}, out_dir / "checkpoint.pt")
    return {"source_dataset": f"{train.label} Denough faces (GT boxes), self-supervised",
            "positives": net_cfg["positives"], "identities": len(groups),
            "descriptor": describe_split(train), "faces": len(x), "final_loss": float(loss.detach()),
            "train_time_s": time.perf_counter() - t0, "heldout_twin_accuracy": acc,
            "heldout_twin_chance": 1.0 / (2 * len(hold) - 1)}


def load_feature_net(cfg: dict, device: torch.device | str = "cpu") -> tuple[FeatureNet, dict]:
    """The cached (or freshly built) feature net in eval mode, and its zoo meta."""
    from dafsl import zoo

    path, meta = zoo.get(FEATNET_ENTRY, cfg, device=device)
    net_cfg = cfg["augmenter"]["featnet"]
    net = FeatureNet(int(net_cfg["width"]), int(net_cfg["feature_dim"]))
    net.load_state_dict(load_checkpoint(path)["model"])
    return net.eval(), meta
