"""The augmenter's source GAN, zoo entry ``augmenter-gan`` (built on first use by
:mod:`dafsl.zoo`, cached, build time kept out of any run's training time).

It is the source of the transfer modes: the same PG-GAN G / DC-GAN D as the stage,
grown from 4x4 to the target resolution on the Denough faces (male, ground-truth crops
of the training split), DA-FSL's natural source: plenty of faces of the neighbouring
class. The checkpoint's ``G.*`` weights are the EMA generator's (the one PG-GAN samples
from), ``D.*`` the discriminator's. The quality metrics' feature net is the other
augmenter entry, in :mod:`dafsl.augmenter.featnet`.
"""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import torch

from dafsl.augmenter import data, diffaug, loss, networks, trainer
from dafsl import faces as face_crops
from dafsl.augmenter.data import denough_classes, to_tensor
from dafsl.faces import class_faces, crop_faces
from dafsl.augmenter.diffaug import parse_policy
from dafsl.augmenter.networks import build_gan
from dafsl.augmenter.trainer import GanTrainer, growth_for
from dafsl.data import load_split
from dafsl.engine import fit, torch_threads
from dafsl.errors import DafslError
from dafsl.runs import RunDir, save_checkpoint
from dafsl.similarity import describe_split

GAN_ENTRY = "augmenter-gan"


def entry_key(cfg: dict) -> dict:
    """What the source GAN depends on (:func:`dafsl.zoo.entry_key` hashes it with this
    module's code): the data, the seed, the GAN settings, and the code it is trained with,
    so a changed network rebuilds rather than failing to load."""
    aug = cfg["augmenter"]
    code = "".join(inspect.getsource(obj) for obj in (
        networks, diffaug, loss, trainer.Growth, trainer.GanTrainer, trainer.real_at,
        trainer.update_ema, face_crops.crop_face, face_crops.crop_faces, face_crops.class_faces, data.to_tensor))
    return {"data": {k: cfg["data"][k] for k in ("manifest", "imbalance_threshold")},
            "seed": cfg["seed"],
            "augmenter": {k: aug[k] for k in ("resolution", "channels", "latent_dim", "mbstd_group",
                                              "batch_size", "steps_per_epoch", "lr_g", "lr_d", "betas",
                                              "ema_beta", "source")},
            "margin": cfg["faces"]["margin"],
            "code": hashlib.sha256(code.encode()).hexdigest()}


def _constant_lr(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def build_source_gan(cfg: dict, out_dir: Path, device: torch.device) -> dict:
    """Train the source GAN on the Denough faces; writes ``out_dir/checkpoint.pt``."""
    aug = cfg["augmenter"]
    src = {**aug, "stable_epochs": aug["source"]["stable_epochs"],
           "fade_epochs": aug["source"]["fade_epochs"], "eval_every": 0}
    train = load_split(cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"])
    faces = [f for cls in denough_classes(cfg, train) for f in class_faces(train, cls)]
    faces = faces[: int(aug["source"]["max_faces"])] if int(aug["source"]["max_faces"]) > 0 else faces
    if len(faces) < 2:
        raise DafslError(f"{train.label}: the source GAN needs at least 2 Denough faces, got {len(faces)}")
    reals = to_tensor(crop_faces(train, faces, int(aug["resolution"]), float(cfg["faces"]["margin"])))
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
                         device=device, make_scheduler=_constant_lr,
                         stage="augmenter-source")
    log_run = RunDir(out_dir / "train")
    with torch_threads(int(aug["num_threads"])):
        records = fit(gan_trainer, log_run, epochs, mode="vanilla")
    log_run.checkpoint_path("augmenter-source").unlink(missing_ok=True)
    state = {f"G.{k}": v for k, v in gan_trainer.g_ema.state_dict().items()}
    state.update({f"D.{k}": v for k, v in gan.D.state_dict().items()})
    save_checkpoint({"model": state}, out_dir / "checkpoint.pt")
    return {"source_dataset": f"{train.label} ({'+'.join(denough_classes(cfg, train))} faces, GT boxes)",
            "descriptor": describe_split(train), "faces": len(faces),
            "resolution": int(aug["resolution"]), "epochs": epochs,
            "final_loss_g": records[-1]["loss_g"], "final_loss_d": records[-1]["loss_d"]}
