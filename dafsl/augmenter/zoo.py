"""The augmenter's two offline zoo entries (built on first use by :mod:`dafsl.zoo`,
cached, build time kept out of any run's training time):

* ``augmenter-gan``: the *source GAN* for the transfer modes. The same PG-GAN G /
  DC-GAN D as the stage, grown from 4x4 to the target resolution on the Denough
  faces (male, ground-truth crops of the training split): DA-FSL's natural source,
  plenty of faces of the neighbouring class. The checkpoint's ``G.*`` weights are the
  EMA generator's (the one PG-GAN samples from), ``D.*`` the discriminator's.
* ``augmenter-attrnet``: the feature network of the quality metrics
  (:class:`dafsl.augmenter.quality.AttributeNet`), trained to predict the face
  attributes of the Denough training faces plus the validation faces; 10% of those
  faces are held out to report its attribute error in the entry's meta.
"""
from __future__ import annotations

import hashlib
import inspect
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dafsl.augmenter import data, diffaug, loss, networks, quality, trainer
from dafsl.augmenter.data import class_faces, crop_annotations, to_tensor
from dafsl.augmenter.diffaug import parse_policy
from dafsl.augmenter.networks import build_gan
from dafsl.augmenter.quality import AttributeNet, attribute_loss
from dafsl.augmenter.trainer import GanTrainer, growth_for
from dafsl.data import Split, denough_dlack, load_split
from dafsl.engine import fit
from dafsl.errors import DafslError
from dafsl.runs import RunDir, load_checkpoint, save_checkpoint
from dafsl.similarity import describe_split

GAN_ENTRY = "augmenter-gan"
ATTRNET_ENTRY = "augmenter-attrnet"


def entry_key(cfg: dict) -> dict:
    """What both entries depend on (:func:`dafsl.zoo.entry_key` hashes it): the data, the
    seed, the GAN/attribute-net settings, and the code they are trained with (so a changed
    network rebuilds rather than failing to load; the metrics' code is left out)."""
    aug = cfg["augmenter"]
    code = "".join(inspect.getsource(obj) for obj in (
        networks, diffaug, loss, trainer.Growth, trainer.GanTrainer, trainer.real_at,
        trainer.update_ema, quality.AttributeNet, quality.attribute_loss, data.crop_face,
        data.crop_annotations, data.class_faces, data.to_tensor))
    return {"data": {k: cfg["data"][k] for k in ("manifest", "imbalance_threshold")},
            "seed": cfg["seed"],
            "augmenter": {k: aug[k] for k in ("resolution", "channels", "latent_dim", "mbstd_group",
                                              "batch_size", "steps_per_epoch", "lr_g", "lr_d", "betas",
                                              "ema_beta", "crop_margin", "source", "attrnet")},
            "code": hashlib.sha256(code.encode()).hexdigest()}


def denough_classes(cfg: dict, train: Split) -> list[str]:
    return denough_dlack(train.class_counts(), cfg["data"]["imbalance_threshold"],
                         origin=train.label)["denough"]


def _constant_lr(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def build_source_gan(cfg: dict, out_dir: Path, quiet: bool) -> dict:
    """Train the source GAN on the Denough faces; writes ``out_dir/checkpoint.pt``."""
    aug = cfg["augmenter"]
    src = {**aug, "stable_epochs": aug["source"]["stable_epochs"],
           "fade_epochs": aug["source"]["fade_epochs"], "eval_every": 0}
    train = load_split(cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"], quiet=quiet)
    faces = [f for cls in denough_classes(cfg, train) for f in class_faces(train, cls)]
    faces = faces[: int(aug["source"]["max_faces"])] if int(aug["source"]["max_faces"]) > 0 else faces
    if len(faces) < 2:
        raise DafslError(f"{train.label}: the source GAN needs at least 2 Denough faces, got {len(faces)}")
    reals = to_tensor(crop_annotations(train, faces, int(aug["resolution"]), float(aug["crop_margin"])))
    torch.manual_seed(int(cfg["seed"]))
    gan = build_gan(aug)
    epochs = int(aug["source"]["epochs"])
    growth = growth_for(src, gan.num_levels, grown=False)
    if growth.total_steps > epochs * int(aug["steps_per_epoch"]):
        raise DafslError(f"augmenter.source.epochs: {epochs} epochs end before the source GAN "
                         f"reaches {aug['resolution']} px (growth needs "
                         f"{growth.total_steps // int(aug['steps_per_epoch'])})")
    gan_trainer = GanTrainer(gan, reals, src, seed=int(cfg["seed"]), epochs=epochs,
                         growth=growth,
                         policy=parse_policy(str(aug["source"]["diffaug"])),
                         device=torch.device("cpu"), make_scheduler=_constant_lr,
                         stage="augmenter-source")
    log_run = RunDir(out_dir / "train")
    records = fit(gan_trainer, log_run, epochs, mode="vanilla", quiet=quiet)
    log_run.checkpoint_path("augmenter-source").unlink(missing_ok=True)
    state = {f"G.{k}": v for k, v in gan_trainer.g_ema.state_dict().items()}
    state.update({f"D.{k}": v for k, v in gan.D.state_dict().items()})
    save_checkpoint({"model": state}, out_dir / "checkpoint.pt")
    return {"source_dataset": f"{train.label} ({'+'.join(denough_classes(cfg, train))} faces, GT boxes)",
            "descriptor": describe_split(train), "faces": len(faces),
            "resolution": int(aug["resolution"]), "epochs": epochs,
            "final_loss_g": records[-1]["loss_g"], "final_loss_d": records[-1]["loss_d"]}


def attribute_names(split: Split) -> list[str]:
    anns = split.coco["annotations"]
    if not anns or not isinstance(anns[0].get("attributes"), dict):
        raise DafslError(f"{split.label}: faces carry no 'attributes'; the augmenter's quality "
                         f"network needs per-face attribute labels")
    return sorted(anns[0]["attributes"])


def _attribute_targets(faces: list[tuple[int, dict]], names: list[str], label: str) -> torch.Tensor:
    rows = []
    for _, ann in faces:
        attrs = ann.get("attributes") or {}
        missing = [n for n in names if n not in attrs]
        if missing:
            raise DafslError(f"{label}: annotation {ann['id']} lacks attribute '{missing[0]}'")
        rows.append([float(attrs[n]) for n in names])
    return torch.tensor(rows, dtype=torch.float32).clamp(0, 1)


def build_attribute_net(cfg: dict, out_dir: Path, quiet: bool) -> dict:
    """Train the quality metrics' attribute net; writes ``out_dir/checkpoint.pt``."""
    aug, net_cfg = cfg["augmenter"], cfg["augmenter"]["attrnet"]
    size, margin = int(aug["resolution"]), float(aug["crop_margin"])
    manifest, cache = cfg["data"]["manifest"], cfg["data"]["cache_dir"]
    train = load_split(manifest, "train", cache, quiet=quiet)
    val = load_split(manifest, "val", cache, quiet=quiet)
    names = attribute_names(train)
    images, targets = [], []
    for split, classes in ((train, denough_classes(cfg, train)), (val, None)):
        faces = ([f for c in classes for f in class_faces(split, c)] if classes
                 else [(a["image_id"], a) for a in split.coco["annotations"]])
        images.append(to_tensor(crop_annotations(split, faces, size, margin)))
        targets.append(_attribute_targets(faces, names, split.label))
    x, y = torch.cat(images), torch.cat(targets)
    gen = torch.Generator().manual_seed(int(cfg["seed"]) * 1000 + 17)
    perm = torch.randperm(len(x), generator=gen)
    n_hold = max(1, len(x) // 10)
    hold, fit_idx = perm[:n_hold], perm[n_hold:]
    torch.manual_seed(int(cfg["seed"]))
    net = AttributeNet(len(names), int(net_cfg["width"]), int(net_cfg["feature_dim"]))
    opt = torch.optim.Adam(net.parameters(), lr=float(net_cfg["lr"]))
    bs, epochs = int(net_cfg["batch_size"]), int(net_cfg["epochs"])
    t0 = time.perf_counter()
    for epoch in tqdm(range(epochs), desc="attribute net", disable=quiet, leave=False):
        net.train()
        order = fit_idx[torch.randperm(len(fit_idx), generator=gen)]
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # attributes are left-right symmetric
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            batch_loss = attribute_loss(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.sigmoid(net(x[hold]))
    mae = (pred - y[hold]).abs().mean(dim=0)
    baseline = (y[fit_idx].mean(dim=0, keepdim=True) - y[hold]).abs().mean(dim=0)
    save_checkpoint({"model": net.state_dict(), "attributes": names}, out_dir / "checkpoint.pt")
    return {"source_dataset": f"{train.label} Denough faces + {val.label} faces (GT boxes)",
            "descriptor": describe_split(train), "attributes": names, "faces": len(x),
            "train_time_s": time.perf_counter() - t0,
            "heldout_mae": float(mae.mean()), "heldout_mae_mean_predictor": float(baseline.mean()),
            "heldout_mae_per_attribute": {n: float(v) for n, v in zip(names, mae)}}


def load_attribute_net(cfg: dict, quiet: bool = False) -> tuple[AttributeNet, dict]:
    """The cached (or freshly built) attribute net in eval mode, and its zoo meta."""
    from dafsl import zoo

    path, meta = zoo.get(ATTRNET_ENTRY, cfg, quiet=quiet)
    state = load_checkpoint(path)
    net_cfg = cfg["augmenter"]["attrnet"]
    net = AttributeNet(len(state["attributes"]), int(net_cfg["width"]), int(net_cfg["feature_dim"]))
    net.load_state_dict(state["model"])
    return net.eval(), meta
