"""Stage 3: ``run(ctx)`` trains and scores the gender classifier.

    python -m dafsl.pipeline --stage classifier --kd MODE [--from RUN_DIR]

Steps: face crops (BDRP detector boxes, or annotated boxes) for train/val/test; the
Dlack class filled with the augmenter's generated faces (``classifier.augmentation``);
the transfer mode applied through :mod:`dafsl.transfer` with the BDRP backbone (or
another ``classifier.source``); training through :func:`dafsl.engine.fit` with the
``classifier.distill`` method; final test metrics, confusion matrix PNG and the
end-to-end two-class detection score (:mod:`dafsl.classifier.system_eval`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from dafsl import engine, transfer
from dafsl.classifier import heads, imbalance, system_eval
from dafsl.classifier.chain import stage_chain
from dafsl.classifier.data import (FaceSet, classic_augmentation,
                                   crop_size_of, generated_faces, split_faces, to_input)
from dafsl.classifier.distill import DISTILLERS, TeacherEnsemble, build_distiller
from dafsl.classifier.metrics import classification_metrics, plot_confusion
from dafsl.classifier.model import (STEMS, adapt_stem, backbone_prefixes, build_classifier,
                                    frozen_modules, load_classifier, save_classifier)
from dafsl.classifier.trainer import (LR_SCHEDULES, ClassifierTrainer, classifier_scheduler,
                                      predict_probs)
from dafsl.data import load_split
from dafsl.errors import DafslError
from dafsl.faces import crop_source, split_detections
from dafsl.log import get_logger
from dafsl.runs import load_checkpoint, seed_everything
from dafsl.stages import StageResult

STAGE = "classifier"
log = get_logger(STAGE)


def find_detector(ctx) -> Path | None:
    """This run's (or ``--from``'s) detector checkpoint, or None when there is none."""
    path = ctx.optional_output("detector", "checkpoint")
    return None if path is None else Path(path)


def source_state(ctx, detector_path: Path | None) -> tuple[dict, dict]:
    """The pretrained weights for fixed/finetune/pretrained (``classifier.source``) and
    {"source": ...} for the summary."""
    from dafsl.detector.model import backbone_state

    c = ctx.cfg[STAGE]
    src = c["source"]
    if src == "detector":
        if detector_path is None:
            raise DafslError("classifier.source detector: no detector outputs; run the detector "
                             "stage first, pass --from RUN_DIR, or set classifier.source")
        return backbone_state(load_checkpoint(detector_path)), {"source": f"detector:{detector_path}"}
    # "zoo", "imagenet" or a path, resolved the shared way (the config itself is not changed)
    cfg = {**ctx.cfg, "transfer": {**ctx.cfg["transfer"], "source": src}}
    if src == "imagenet":
        # torchvision's and timm's ResNets share parameter names: either cache will do
        try:
            state, meta = transfer.resolve_source(cfg, c["zoo_entry"], arch=c["backbone"])
        except DafslError as tv_err:
            try:
                state, meta = transfer.resolve_source(cfg, c["zoo_entry"], arch=f"timm/{c['backbone']}")
            except DafslError:
                raise tv_err from None
    else:
        state, meta = transfer.resolve_source(cfg, c["zoo_entry"])
    if not any(k.startswith(("conv1.", "layer1.")) for k in state):
        state = backbone_state(state)  # a detector checkpoint (zoo entry or path)
    return state, {"source": meta.get("source", src)}


def build_model(ctx, backbone: str, mode: str, detector_path: Path | None):
    """A classifier with ``mode`` applied; returns (model, TransferReport, source info)."""
    model = build_classifier(backbone, len(ctx.split_info["counts"]), ctx.cfg[STAGE]["stem"])
    state, info = (None, {"source": None}) if mode == "vanilla" else source_state(ctx, detector_path)
    state = adapt_stem(model, state) if state is not None else None
    report = transfer.apply_mode(model, mode, source_state=state,
                                 frozen=frozen_modules(model, mode, int(ctx.cfg["transfer"]["freeze_at"])),
                                 required=backbone_prefixes(model) if state is not None else (),
                                 lr_factor=float(ctx.cfg["transfer"]["lr_factor"]), log=log.info)
    return model.to(ctx.device), report, info


def training_faces(ctx, train: FaceSet, classes: list[str], positive: str) -> tuple[FaceSet, dict]:
    """Real crops plus, for ``gan`` augmentations, generated Dlack faces filling the class
    up to the largest class (or ``classifier.generated_count``)."""
    c = ctx.cfg[STAGE]
    if not c["augmentation"].startswith("gan"):
        return train, {"generated_used": 0}
    out = ctx.stage_output("augmenter")
    counts = train.counts(len(classes))
    want = c["generated_count"]
    want = int(counts.max() - counts[classes.index(positive)]) if want is None else int(want)
    gen = generated_faces(out["generated_manifest"], out["generated_dir"], classes,
                          crop_size_of(ctx.cfg), limit=max(want, 1))
    if len(gen) < want:
        log.info(f"the augmenter made {len(gen)} faces, fewer than the {want} that would "
                 f"balance the classes; using all of them")
    parts, info = [train, gen], {"generated_used": len(gen)}
    if c["generated_denough"] and out.get("generated_denough_manifest"):
        # generated faces of the other class too (the source GAN's): "generated" then
        # carries no class information
        other = generated_faces(out["generated_denough_manifest"], out["generated_denough_dir"],
                                classes, crop_size_of(ctx.cfg), limit=max(len(gen), 1))
        parts.append(other)
        info["generated_denough_used"] = len(other)
    return FaceSet.concat(parts), info


def real_vs_generated_probe(ctx, val: FaceSet, train_set: FaceSet, positive_idx: int,
                            initial_state: dict) -> dict:
    """The real-vs-generated probe (:mod:`dafsl.augmenter.probe`) on the generated Dlack faces
    this classifier trains on, against the validation split's real Dlack-class crops (the
    GAN never saw them), with the classifier's architecture, starting weights and budget."""
    from dafsl.augmenter.probe import probe_from_config

    real = val.images[val.labels == positive_idx]
    generated = train_set.images[(train_set.labels == positive_idx) & train_set.synthetic]
    if len(generated) == 0:
        return {}
    result = probe_from_config(ctx.cfg, real, generated,
                               init_state=lambda m: m.load_state_dict(initial_state))
    log.info(f"real-vs-generated probe: ROC-AUC {result['auc']:.3f} +- {result['auc_std']:.3f} "
             f"({result['folds']} folds; 0.5 = indistinguishable)")
    return {"probe_auc": result["auc"], "probe_auc_std": result["auc_std"],
            "probe_auc_folds": result["auc_folds"], "probe_time_s": result["time_s"]}


def stage_tstr(ctx, train_set: FaceSet, faces: dict, positive_idx: int, initial_state: dict) -> dict:
    """TSTR (:mod:`dafsl.tstr`) with this stage's architecture, starting weights and step
    budget: a classifier trained on the generated faces alone (every class,
    class-balanced draws), scored on the real validation and test faces. Empty when fewer
    than two classes have generated faces."""
    c = ctx.cfg[STAGE]
    gen = train_set.synthetic
    if len(set(train_set.labels[gen].tolist())) < 2:
        return {}
    from dafsl.tstr import tstr

    def make_model():
        model = build_classifier(c["backbone"], len(ctx.split_info["counts"]), c["stem"])
        model.load_state_dict(initial_state)
        return model
    steps = int(c["epochs"]) * -(-int(c["epoch_size"] or len(train_set)) // int(c["batch_size"]))
    lr = float(c["lr"]) * (float(ctx.cfg["transfer"]["lr_factor"]) if ctx.mode == "pretrained" else 1.0)
    t0 = time.perf_counter()
    out = {}
    result = tstr(train_set.images[gen], train_set.labels[gen], faces["val"].images, faces["val"].labels,
                  make_model=make_model, positive=positive_idx, steps=steps, batch_size=int(c["batch_size"]),
                  lr=lr, weight_decay=float(c["weight_decay"]), seed=int(ctx.cfg["seed"]),
                  preprocess=lambda x, device: to_input(x, int(c["input_size"]), device), device=ctx.device,
                  extra_eval={"test": (faces["test"].images, faces["test"].labels)})
    for split in ("val", "test"):
        r = result if split == "val" else result["extra"]["test"]
        out.update({f"tstr_{split}_balanced_accuracy": r["balanced_accuracy"], f"tstr_{split}_auc": r["roc_auc"]})
    out["tstr_time_s"] = time.perf_counter() - t0
    log.info(f"TSTR (this architecture, {steps} steps on {int(gen.sum())} generated faces only): balanced "
             f"accuracy {out['tstr_val_balanced_accuracy']:.3f} on real validation faces, ROC-AUC "
             f"{out['tstr_val_auc']:.3f} ({out['tstr_time_s']:.0f}s)")
    return out


def stage_faces(ctx, classes: list[str], detector_path: Path | None):
    """Crops of every annotated face of train/val/test (:mod:`dafsl.faces`).

    Returns (crop source, splits, detections {split: ...} (the test split's always when
    there is a detector, for the system evaluation), faces {split: FaceSet}, crop
    statistics {split: ...}).
    """
    c, fcfg, data_cfg = ctx.cfg[STAGE], ctx.cfg["faces"], ctx.cfg["data"]
    crops = crop_source(fcfg["crops"], detector_path is not None, STAGE)
    splits = {s: load_split(data_cfg["manifest"], s, data_cfg["cache_dir"])
              for s in ("train", "val", "test")}
    # one cached detection pass per split serves the crops, the augmenter and the system evaluation
    detections = {s: split_detections(detector_path, sp, ctx.device, data_cfg["cache_dir"])
                  for s, sp in splits.items()
                  if detector_path is not None and (crops == "detector" or (s == "test" and c["system_eval"]))}
    faces, stats = {}, {}
    for s, sp in splits.items():
        faces[s], stats[s] = split_faces(
            sp, classes, crop_size_of(ctx.cfg), fcfg,
            detections.get(s) if crops == "detector" else None)
    return crops, splits, detections, faces, stats


def shortcut_check(model, train_set: FaceSet, positive_idx: int, positive: str,
                   input_size: int, max_generated: int = 512) -> dict:
    """How the trained model labels its own Dlack training faces, real vs generated.

    A classifier that calls every generated face ``positive`` but not the real ones has
    learnt "generated vs real" rather than the class: the GAN's faces then teach nothing
    about real Dlack faces. Empty when no generated face was used.
    """
    is_pos = train_set.labels == positive_idx
    real, gen = np.where(is_pos & ~train_set.synthetic)[0], np.where(is_pos & train_set.synthetic)[0]
    if len(gen) == 0 or len(real) == 0:
        return {}
    gen = gen[:max_generated]
    recall = [float((predict_probs(model, train_set.images[idx], input_size).argmax(1)
                     == positive_idx).mean()) for idx in (real, gen)]
    return {f"train_recall_{positive}_real": recall[0], f"train_recall_{positive}_generated": recall[1]}


def run(ctx) -> StageResult:
    """Train and score the classifier in ``ctx.mode``."""
    c = ctx.cfg[STAGE]
    classes = list(ctx.split_info["counts"])
    positive = (ctx.split_info["dlack"] or classes[-1:])[0]
    seed = int(ctx.cfg["seed"])
    stage_dir = ctx.run.stage_dir(STAGE)
    size = crop_size_of(ctx.cfg)

    # -- crops -----------------------------------------------------------------
    t0 = time.perf_counter()
    detector_path = find_detector(ctx)
    crops, splits, detections, faces, crop_stats = stage_faces(ctx, classes, detector_path)
    train_set, gen_info = training_faces(ctx, faces["train"], classes, positive)
    crop_time = time.perf_counter() - t0
    counts = train_set.counts(len(classes))
    log.info(f"crops from {crops}: train {dict(zip(classes, counts.tolist()))} "
             f"({gen_info['generated_used']} generated), val {len(faces['val'])}, "
             f"test {len(faces['test'])} faces ({crop_time:.1f}s)")

    # -- model, teacher, method ------------------------------------------------
    seed_everything(seed)  # the same initialisation whatever the crops above cost in random numbers
    model, report, src_info = build_model(ctx, c["backbone"], ctx.mode, detector_path)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # classifier.imbalance: the label loss and sampling (dafsl/classifier/imbalance.py)
    imb = imbalance.plan(c["imbalance"], counts, c["imbalance_params"])
    augment = classic_augmentation(seed) if c["augmentation"].endswith("classic") else None

    def make_trainer(stage: str, student, mode: str, distiller_name: str, teacher=None, params=None):
        distiller = build_distiller(distiller_name, student, teacher, None, **(params or {})).to(ctx.device)
        distiller.criterion = imb.loss
        opt = torch.optim.AdamW(distiller.trainable_parameters(), lr=float(c["lr"]),
                                weight_decay=float(c["weight_decay"]))
        sched = classifier_scheduler(opt, mode, ctx.cfg, len(train_set), teacher=stage != STAGE)
        return ClassifierTrainer(stage, distiller, opt, sched,
                                 train_set, faces["val"], classes, positive, seed=seed,
                                 batch_size=int(c["batch_size"]), input_size=int(c["input_size"]),
                                 balanced=imb.balanced,
                                 epoch_size=c["epoch_size"], augment=augment,
                                 real_share=c["real_share"])

    teacher, teacher_info = None, {}
    if DISTILLERS[c["distill"]].chain:  # takd | dgkd | ensemble: classifier.distill_chain first
        teacher, teacher_info = stage_chain(ctx, make_trainer, build_model, detector_path, classes,
                                            input_size=int(c["input_size"]), crop_size=size,
                                            stem=c["stem"], log=log.info)
    elif DISTILLERS[c["distill"]].needs_teacher:
        teacher, teacher_info = build_teacher(ctx, make_trainer, detector_path)
    trainer = make_trainer(STAGE, model, ctx.mode, c["distill"], teacher, c["distill_params"].get(c["distill"]))

    # -- train -----------------------------------------------------------------
    records = engine.fit(trainer, ctx.run, int(c["epochs"]), mode=ctx.mode, resume=ctx.resume,
                         extra={"augmentation": c["augmentation"],
                                                 "imbalance": c["imbalance"], "distill": c["distill"]})
    # classifier.imbalance: post-hoc adjustment, cRT or NCM head (imbalance.finish_head)
    head_info = imbalance.finish_head(
        c["imbalance"], model, train_set, len(classes), params=c["imbalance_params"],
        input_size=int(c["input_size"]), batch_size=int(c["batch_size"]), seed=seed,
        epoch_size=c["epoch_size"], head_faces=c["head_faces"], real_share=c["real_share"], log=log.info)
    # classifier.head: a few-shot head over the training faces' features (classifier/heads.py)
    head_info.update(heads.finish_head(c["head"], model, train_set, input_size=int(c["input_size"]),
                                       seed=seed, log=log.info))
    final_ckpt = stage_dir / "classifier_final.pt"
    save_classifier(model, final_ckpt, backbone=c["backbone"], classes=classes,
                    input_size=int(c["input_size"]), crop_size=size, stem=c["stem"])

    # -- score -----------------------------------------------------------------
    t0 = time.perf_counter()
    probs = predict_probs(model, faces["test"].images, int(c["input_size"]))
    test = classification_metrics(faces["test"].labels, probs, classes, positive)
    confusion_png = plot_confusion(test["confusion"], classes, stage_dir / "confusion_test.png",
                                   title=f"{ctx.mode}, {c['augmentation']}: bal. acc "
                                         f"{test['balanced_accuracy']:.3f}")
    shortcut = shortcut_check(model, train_set, classes.index(positive), positive,
                              int(c["input_size"]))
    eval_time = time.perf_counter() - t0
    probe = (real_vs_generated_probe(ctx, faces["val"], train_set, classes.index(positive), initial_state)
             if c["probe"] and gen_info["generated_used"] else {})
    if c["tstr"] and gen_info["generated_used"]:
        probe.update(stage_tstr(ctx, train_set, faces, classes.index(positive), initial_state))
    system, system_time = {}, 0.0
    if c["system_eval"] and detector_path is not None:
        t0 = time.perf_counter()
        system = system_eval.evaluate_system(
            model, splits["test"], detections["test"], classes, stage_dir / "system_eval",
            crop_size=size, margin=float(ctx.cfg["faces"]["margin"]),
            input_size=int(c["input_size"]), score_threshold=float(c["system_score_threshold"]))
        system_time = time.perf_counter() - t0
    elif c["system_eval"]:
        log.info("no detector: end-to-end system evaluation skipped")

    report_d = report.as_dict()
    figures = {"trainable_params": report_d["trainable_params"], "frozen_params": report_d["frozen_params"],
               **src_info, **teacher_info,
               "backbone": c["backbone"], "crops": crops, "crop_size": size,
               "augmentation": c["augmentation"], "imbalance": c["imbalance"], **head_info,
               "distill": c["distill"],
               "train_counts": dict(zip(classes, counts.tolist())), **gen_info,
               "crop_stats": crop_stats, "epochs": len(records),
               "crop_time_s": crop_time, "test_eval_time_s": eval_time,
               "system_eval_time_s": system_time,
               **{f"test_{k}": v for k, v in test.items()}, **shortcut, **probe, **system}
    log.info(f"test: balanced accuracy {test['balanced_accuracy']:.3f}, {positive} recall "
             f"{test[f'recall_{positive}']:.3f}, ROC-AUC {test['roc_auc'] or float('nan'):.3f}"
             + (f"; system mAP@0.5 {system['system_map50']:.3f}" if system else ""))
    outputs = {"checkpoint": final_ckpt, "confusion_png": confusion_png}
    if system:
        outputs["system_report"] = stage_dir / "system_eval" / "report.md"
    return StageResult(figures, outputs, transfer=report_d,
                       train_time_s=float(records[-1]["wall_clock_s"]) if records else 0.0)


def build_teacher(ctx, make_trainer, detector_path: Path | None):
    """The distillation teacher: the checkpoint(s) in ``classifier.teacher.checkpoints``
    (several = an ensemble with averaged logits), else a ``teacher.backbone`` classifier
    trained first on the same data (stage ``classifier_teacher`` in metrics.jsonl)."""
    t = ctx.cfg[STAGE]["teacher"]
    c = ctx.cfg[STAGE]
    if t["checkpoints"]:
        members = []
        for path in t["checkpoints"]:
            member, meta = load_classifier(Path(path), ctx.device)
            if meta.get("input_size") != int(c["input_size"]):
                raise DafslError(f"{path}: teacher was trained at input_size {meta.get('input_size')}, "
                                 f"the student uses {c['input_size']}")
            members.append(member)
        teacher = members[0] if len(members) == 1 else TeacherEnsemble(members)
        return teacher, {"teacher": [str(p) for p in t["checkpoints"]]}
    teacher, report, _ = build_model(ctx, t["backbone"], t["mode"], detector_path)
    trainer = make_trainer(f"{STAGE}_teacher", teacher, t["mode"], "none")
    records = engine.fit(trainer, ctx.run, int(t["epochs"]), mode=t["mode"], resume=ctx.resume)
    path = ctx.run.stage_dir(STAGE) / "teacher_final.pt"
    save_classifier(teacher, path, backbone=t["backbone"], classes=list(ctx.split_info["counts"]),
                    input_size=int(c["input_size"]), crop_size=crop_size_of(ctx.cfg), stem=c["stem"])
    last = records[-1] if records else {}
    return teacher, {"teacher": str(path), "teacher_backbone": t["backbone"],
                     "teacher_train_time_s": float(last.get("wall_clock_s", 0.0)),
                     "teacher_val_balanced_accuracy": last.get("val_balanced_accuracy")}
