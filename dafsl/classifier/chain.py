"""Teacher-assistant chains (seed 004): TAKD, DGKD and the ensemble pseudo-teacher.

A chain is a list of models from large to small. Its first model trains on labels
alone; every later model trains with ``method`` (``takd`` | ``dgkd`` | ``ensemble``,
:mod:`dafsl.classifier.distill`) and receives ALL the larger models as its teachers, large
to small; the method picks what it uses (TAKD the nearest larger one, DGKD each of them,
the ensemble their mean logits). :func:`run_chain` is the one loop; the classifier stage
(:func:`stage_chain`: ``classifier.distill_chain`` are the teacher and the assistants, the
student is ``classifier.backbone``) and the glyph benchmark
(:mod:`dafsl.classifier.bench`) both go through it.

Each model is a stage of its own in ``metrics.jsonl`` (``classifier_chain<i>``), with its
own checkpoint, so a run killed while training model i resumes (``--resume``) at model i:
the models before it are restored from their last checkpoints without training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from torch import nn

from dafsl import engine
from dafsl.classifier.model import save_classifier
from dafsl.classifier.plain_cnn import is_plain_cnn
from dafsl.config_schema import CHAIN_DISTILLERS as CHAIN_METHODS
from dafsl.errors import DafslError


# train_one(index, name, method, teachers large -> small) -> (trained model, info dict)
TrainOne = Callable[[int, str, str, list], tuple[nn.Module, dict]]


def run_chain(names: Sequence[str], method: str, train_one: TrainOne) -> tuple[list[nn.Module], list[dict]]:
    """Train the chain ``names`` (large -> small): model 0 with ``none``, model i with
    ``method`` from models 0..i-1. Returns the models and each one's info, in order."""
    if method not in CHAIN_METHODS:
        raise DafslError(f"classifier.distill: a chain needs one of {', '.join(CHAIN_METHODS)}, got {method!r}")
    if not names:
        raise DafslError(f"classifier.distill_chain: {method} needs at least one model (the teacher)")
    models: list[nn.Module] = []
    infos: list[dict] = []
    for i, name in enumerate(names):
        model, info = train_one(i, name, "none" if i == 0 else method, list(models))
        models.append(model)
        infos.append(info)
    return models, infos


def stage_chain(ctx, make_trainer, build_model, detector_path, classes: list[str], *,
                input_size: int, crop_size: int, stem: str, log=None) -> tuple[list[nn.Module], dict]:
    """The classifier stage's chain: every model of ``classifier.distill_chain`` trained in
    turn (``classifier.teacher.epochs`` each; ``classifier.teacher.mode``, plain CNNs always
    ``vanilla``), saved as ``classifier/chain<i>_<name>.pt``. Returns the models (the
    student's teachers, large -> small) and the summary's figures (each model's name,
    method, training time and validation figures; their total time)."""
    c = ctx.cfg["classifier"]
    method, t = c["distill"], c["teacher"]
    params = dict(c["distill_params"].get(method) or {})
    stage_dir = ctx.run.stage_dir("classifier")

    def train_one(i: int, name: str, dist: str, teachers: list) -> tuple[nn.Module, dict]:
        mode = "vanilla" if is_plain_cnn(name) else t["mode"]
        model, _, _ = build_model(ctx, name, mode, detector_path)
        trainer = make_trainer(f"classifier_chain{i}", model, mode, dist, teachers or None,
                               params if dist != "none" else None)
        records = engine.fit(trainer, ctx.run, int(t["epochs"]), mode=mode, resume=ctx.resume,
                             extra={"model": name, "distill": dist})
        path = Path(stage_dir) / f"chain{i}_{name}.pt"
        save_classifier(model, path, backbone=name, classes=classes, input_size=input_size,
                        crop_size=crop_size, stem=stem)
        last = records[-1] if records else {}
        info = {"model": name, "distill": dist, "checkpoint": str(path),
                "train_time_s": float(last.get("wall_clock_s", 0.0)),
                "val_balanced_accuracy": last.get("val_balanced_accuracy")}
        if log is not None:
            log(f"chain model {i} {name} ({dist}): {info['train_time_s']:.1f}s, val balanced "
                f"accuracy {info['val_balanced_accuracy']}")
        return model, info

    models, infos = run_chain(list(c["distill_chain"]), method, train_one)
    return models, {"chain": infos, "chain_train_time_s": sum(i["train_time_s"] for i in infos)}
