"""One few-shot experiment from a resolved config: train the method episodically
(stage ``fewshot``), with ``fewshot.distill: self`` also a student from scratch
distilled from it (stage ``fewshot_student``), and score each on fixed test episodes.

Run directory (:class:`dafsl.runs.RunDir`): ``config.yaml``, ``metrics.jsonl`` (one
record per stage per epoch), ``checkpoints/<stage>_last.pt`` (atomic, every epoch;
``resume`` continues from them), ``fewshot/<role>_best.pt`` (the best-validation
weights) and ``summary.json`` (section ``fewshot``).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from dafsl import engine
from dafsl.errors import DafslError
from dafsl.fewshot.backbone import build_backbone, feature_dim
from dafsl.fewshot.data import CharacterSet, load_characters
from dafsl.fewshot.distill import freeze
from dafsl.fewshot.episodic import EpisodicTrainer, evaluate_episodes, split_features
from dafsl.fewshot.methods import build_method
from dafsl.log import get_logger
from dafsl.runs import RunDir, save_checkpoint, seed_everything
from dafsl.stages import resolve_device

STAGE = "fewshot"
log = get_logger(STAGE)


def load_splits(cfg: dict) -> dict[str, CharacterSet]:
    """train/val/test of ``fewshot.manifest``; checks there are enough classes and images."""
    f = cfg[STAGE]
    splits = {s: load_characters(f["manifest"], s, image_size=int(f["image_size"]),
                                 cache_dir=cfg["data"]["cache_dir"]) for s in ("train", "val", "test")}
    ways = {"train": int(f["train_way"] or f["way"]), "val": int(f["way"]), "test": int(f["way"])}
    need = max([int(f["shot"]), *map(int, f["test_shots"])]) + max(int(f["query"]), int(f["train_query"] or 0))
    for s, data in splits.items():
        n_classes = len(torch.unique(data.labels))
        if n_classes < ways[s]:
            raise DafslError(f"--way {ways[s]}: {f['manifest']} {s} has only {n_classes} classes")
        fewest = int(torch.bincount(data.labels).min())
        if fewest < need:
            raise DafslError(f"--shot {f['shot']} --query {f['query']}: {f['manifest']} {s} has a "
                             f"class with only {fewest} images (need {need})")
    return splits


def build_model(cfg: dict, device: torch.device):
    f = cfg[STAGE]
    backbone = build_backbone(f["backbone"], in_chans=1, width=int(f["width"]))
    dim = feature_dim(backbone, 1, int(f["image_size"]))
    return build_method(f["method"], backbone, dim, fce=bool(f["fce"])).to(device)


def train_one(cfg: dict, run: RunDir, stage: str, splits: dict, device: torch.device, *,
              resume: bool, teacher=None) -> tuple[torch.nn.Module, EpisodicTrainer, list[dict]]:
    """Train one network (from the config's seed: the student starts from the same random
    initialisation and sees the same episodes as the teacher, so the distillation term is
    the only difference) and load its best-validation state."""
    f = cfg[STAGE]
    seed = int(cfg["seed"])
    seed_everything(seed)
    model = build_model(cfg, device)
    opt = torch.optim.Adam(model.parameters(), lr=float(f["lr"]), weight_decay=float(f["weight_decay"]))
    total = int(f["epochs"]) * int(f["episodes_per_epoch"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    alpha = float(f["alpha"][f["method"]]) if teacher is not None else 0.0
    trainer = EpisodicTrainer(
        stage, model, opt, sched, splits["train"], splits["val"], way=int(f["way"]),
        shot=int(f["shot"]), query=int(f["query"]), train_way=int(f["train_way"] or f["way"]),
        train_query=int(f["train_query"] or f["query"]),
        episodes_per_epoch=int(f["episodes_per_epoch"]), val_episodes=int(f["val_episodes"]),
        seed=seed, teacher=teacher, alpha=alpha, temperature=float(f["temperature"]),
        label_weight=float(f["label_weight"]) if teacher is not None else 1.0)
    records = engine.fit(trainer, run, int(f["epochs"]), mode=f"{f['method']}-{f['way']}w{f['shot']}s",
                         resume=resume, extra={"method": f["method"], "alpha": alpha})
    trainer.load_best()
    return model, trainer, records


def run_fewshot(cfg: dict, out: str | Path, *, resume: bool = False) -> dict:
    """Train (and distil) ``fewshot.method`` as ``cfg`` says, in run directory ``out``;
    returns the ``fewshot`` summary."""
    f = cfg[STAGE]
    run = RunDir(out)
    run.save_config(cfg)
    device = resolve_device(cfg["device"])
    with engine.torch_threads(int(f["num_threads"])):
        splits = load_splits(cfg)
        log.info(f"{f['manifest']}: " + ", ".join(
            f"{s} {len(d.labels)} images of {len(d.classes)} classes" for s, d in splits.items()))
        episodes = dict(way=int(f["way"]), shot=int(f["shot"]), query=int(f["query"]),
                        episodes=int(f["test_episodes"]))
        roles = [("teacher", STAGE)] + ([("student", f"{STAGE}_student")] if f["distill"] == "self" else [])
        summary = {"method": f["method"], "distill": f["distill"], "way": int(f["way"]),
                   "shot": int(f["shot"]), "query": int(f["query"]), "manifest": f["manifest"],
                   "backbone": f["backbone"], "seed": int(cfg["seed"])}
        teacher = None
        for role, stage in roles:
            model, trainer, records = train_one(cfg, run, stage, splits, device, resume=resume,
                                                teacher=teacher)
            save_checkpoint({"model": model.state_dict(), "method": f["method"],
                             "backbone": f["backbone"], "width": int(f["width"]),
                             "image_size": int(f["image_size"]), "fce": bool(f["fce"])},
                            run.stage_dir(STAGE) / f"{role}_best.pt")
            t0 = time.perf_counter()
            feats = split_features(model, splits["test"].images)
            test = evaluate_episodes(model, splits["test"], **episodes, features=feats)
            summary.update({f"{role}_test_{k}": v for k, v in test.items()})
            for shot in f["test_shots"]:  # the same model tested with more support images
                more = evaluate_episodes(model, splits["test"], **{**episodes, "shot": int(shot)},
                                         features=feats)
                summary.update({f"{role}_test_{shot}shot_{k}": v for k, v in more.items()})
            summary.update({f"{role}_val_accuracy": trainer.best_val,
                            f"{role}_best_epoch": trainer.best_epoch,
                            f"{role}_train_time_s": float(records[-1]["wall_clock_s"]) if records else 0.0,
                            f"{role}_test_time_s": time.perf_counter() - t0})
            if role == "student":
                summary.update({"alpha": trainer.alpha, "temperature": trainer.temperature,
                                "label_weight": trainer.label_weight})
            log.info(f"{role}: test accuracy {test['accuracy']:.4f} +- {test['accuracy_ci95']:.4f} "
                     f"(95 % CI, {test['episodes']} episodes; best val {trainer.best_val:.4f} "
                     f"at epoch {trainer.best_epoch + 1})")
            if role == "teacher" and f["distill"] == "self":
                freeze(model)
                teacher = model
    run.update_summary(STAGE, summary, replace=True)
    return summary
