"""The BDRP stage: ``python -m dafsl.pipeline --stage detector --kd MODE``.

Trains the face detector on the Denough scenes (scenes holding a Dlack-class face are
left out), evaluates mAP@0.5 on val every epoch, scores test once at the end and writes
``<run>/detector/detector_final.pt`` for the augmenter and classifier.
"""
from __future__ import annotations

import torch

from dafsl.data import load_split
from dafsl.detector.data import load_scenes
from dafsl.detector.model import BODY, as_detector_state, build_detector, freeze_names
from dafsl.detector.predict import score_split, val_subset
from dafsl.detector.trainer import DetectorTrainer
from dafsl.engine import fit
from dafsl.evaluate import write_report
from dafsl.log import get_logger
from dafsl.manifest import load_manifest
from dafsl.runs import save_checkpoint, seed_everything
from dafsl.stages import StageContext, StageResult
from dafsl.transfer import apply_mode, resolve_source

ZOO_ENTRY = "detector-shapes"  # the default of detector.zoo_entry
log = get_logger("detector")


def build_for_mode(cfg: dict, mode: str):
    """The detector for ``mode``, weights loaded and frozen per :mod:`dafsl.transfer`.

    Returns ``(model, TransferReport, source meta)``. ``fixed``/``finetune`` take only the
    ResNet body from the source (FPN, RPN and ROI heads are new); ``pretrained`` takes
    every matching tensor (the source's box predictor has another class count and is
    listed as skipped). The ResNet body is required to transfer in every mode.
    """
    det = cfg["detector"]
    source, meta = None, {"source": None}
    if mode != "vanilla":
        source, meta = resolve_source(cfg, det["zoo_entry"], arch=str(det["backbone"]))
        source = as_detector_state(source)
    torch.manual_seed(int(cfg["seed"]))  # same init in every mode
    model = build_detector(det)
    tcfg = cfg["transfer"]
    report = apply_mode(model, mode, source_state=source,
                        frozen=freeze_names(mode, int(tcfg["freeze_at"])), required=[BODY],
                        lr_factor=float(tcfg["lr_factor"]),
                        load_only=[BODY] if mode in ("fixed", "finetune") else None, log=log.info)
    return model, report, meta


def run(ctx: StageContext) -> StageResult:
    cfg, det, mode = ctx.cfg, ctx.cfg["detector"], ctx.mode
    manifest = load_manifest(cfg["data"]["manifest"])
    cache = cfg["data"]["cache_dir"]
    train, val, test = (load_split(manifest, s, cache) for s in ("train", "val", "test"))
    dlack = set(ctx.split_info["dlack"])
    scenes, left_out = load_scenes(train, exclude_classes=dlack,
                                   limit=int(det["train_scenes"]) or None)
    log.info(f"{train.label}: training on {len(scenes)} Denough scenes; left out {left_out} "
             f"scene(s) holding a Dlack-class face ({', '.join(sorted(dlack)) or 'none'})")

    model, report, meta = build_for_mode(cfg, mode)
    seed_everything(int(cfg["seed"]))  # training draws the same numbers in every mode
    trainer = DetectorTrainer(model, scenes, det_cfg=det, mode=mode, transfer_cfg=cfg["transfer"],
                              seed=int(cfg["seed"]), device=ctx.device,
                              epochs=int(det["epochs"]), val=val)
    records = fit(trainer, ctx.run, int(det["epochs"]), mode=mode, resume=ctx.resume,
                  eval_every=int(det["eval_every_steps"]))

    result = score_split(model, val_subset(test, int(det["test_subset"])), ctx.device,
                         int(det["eval_batch_size"]))
    out_dir = ctx.run.stage_dir("detector")
    write_report(result, out_dir / "test_eval")
    path = out_dir / "detector_final.pt"
    save_checkpoint({"model": model.state_dict(), "detector_cfg": dict(det), "num_classes": 1,
                     "mode": mode}, path)
    last = records[-1] if records else {}
    figures = {
        "test_map50": result["map50"], "test_ap50_coco": result["ap50_coco"],
        "val_map50": last.get("map50"), "val_ap50_coco": last.get("ap50_coco"),
        "epochs": int(det["epochs"]),
        "trainable_params": report.trainable_params, "frozen_params": report.frozen_params,
        "trainable_modules": report.trainable_modules, "frozen_modules": report.frozen_modules,
        "source": meta.get("source"), "source_dataset": meta.get("source_dataset"),
        "train_scenes": len(scenes), "dlack_scenes_left_out": left_out,
    }
    log.info(f"{mode}: test mAP@0.5 {result['map50']:.4f} (COCO AP50 {result['ap50_coco']:.4f}), "
             f"training {float(last.get('wall_clock_s', 0.0)):.0f}s")
    return StageResult(figures, {"checkpoint": path}, train_time_s=float(last.get("wall_clock_s", 0.0)),
                       transfer=report.as_dict())
