"""Zoo entry ``detector-shapes``: the default detector architecture pretrained on the
non-face ``shapes`` source set (multi-class), the offline stand-in for the paper's
ImageNet/ResNet-50 sources. Built by :func:`dafsl.zoo.get` on first use."""
from __future__ import annotations

import hashlib
import inspect
import shutil
from pathlib import Path

import torch

from dafsl.data import cache_root, load_split, split_cache_dir
from dafsl.detector import model as model_module
from dafsl.detector.data import load_scenes
from dafsl.detector.model import build_detector
from dafsl.detector.trainer import DetectorTrainer
from dafsl.engine import fit, torch_threads
from dafsl.manifest import load_manifest
from dafsl.runs import RunDir, save_checkpoint
from dafsl.similarity import describe_split

# detector keys that change the checkpoint; training-only keys (epochs, lr of the
# transfer run, ...) do not invalidate the zoo.
ARCH_KEYS = ("backbone", "image_size", "fpn_channels", "fpn_layers", "fpn_extra_pool",
             "anchor_sizes", "anchor_ratios", "rpn_pre_nms_train", "rpn_post_nms_train",
             "rpn_pre_nms_test", "rpn_post_nms_test", "rpn_batch_per_image",
             "roi_batch_per_image", "roi_output_size", "roi_sampling_ratio",
             "roi_canonical_scale", "box_head_width", "box_score_thresh",
             "box_detections_per_img", "batch_size", "optimizer", "momentum", "weight_decay",
             "lr_schedule", "grad_clip", "augment")


def entry_key(cfg: dict) -> dict:
    """What the checkpoint depends on: architecture, pretraining settings, source data
    (its rendered-cache name carries the renderer version) and the model code."""
    manifest = load_manifest(cfg["data"]["source_manifest"])
    data_key = split_cache_dir(manifest, "train", cache_root(None)).parent.name
    code = hashlib.sha256(inspect.getsource(model_module).encode()).hexdigest()[:12]
    return {"detector": {k: cfg["detector"][k] for k in ARCH_KEYS},
            "zoo": {k: v for k, v in cfg["zoo"].items() if k.startswith("detector_")},
            "source": data_key, "seed": cfg["seed"], "model_code": code}


def build_entry(cfg: dict, out_dir: Path, device: torch.device) -> dict:
    """Pretrain the detector on the source set; writes ``out_dir/checkpoint.pt``."""
    zcfg, det = cfg["zoo"], cfg["detector"]
    manifest = load_manifest(cfg["data"]["source_manifest"])
    cache = cfg["data"]["cache_dir"]
    train = load_split(manifest, "train", cache)
    val = load_split(manifest, "val", cache)
    scenes, _ = load_scenes(train, limit=int(zcfg["detector_images"]))
    n_classes = len(train.category_names)
    torch.manual_seed(int(cfg["seed"]))
    model = build_detector(det, num_classes=n_classes)
    epochs = int(zcfg["detector_epochs"])
    trainer = DetectorTrainer(model, scenes, det_cfg=det, mode="vanilla",
                              transfer_cfg=cfg["transfer"], seed=int(cfg["seed"]),
                              device=device, epochs=epochs,
                              lr=float(zcfg["detector_lr"]), val=val, stage="zoo-detector",
                              eval_epochs="last")
    # The build log (metrics.jsonl) stays next to the entry.
    with torch_threads(int(det["num_threads"])):
        records = fit(trainer, RunDir(out_dir / "build"), epochs, mode="vanilla")
    save_checkpoint({"model": model.state_dict(), "detector_cfg": dict(det),
                     "num_classes": n_classes, "source_dataset": manifest.name}, out_dir / "checkpoint.pt")
    shutil.rmtree(out_dir / "build" / "checkpoints", ignore_errors=True)  # the entry is the checkpoint
    return {"source_dataset": manifest.name, "descriptor": describe_split(train),
            "categories": [train.category_names[c] for c in sorted(train.category_names)],
            "epochs": epochs, "images": len(scenes), "architecture": det["backbone"],
            "source_val_map50": records[-1].get("map50") if records else None,
            "train_time_s": records[-1]["wall_clock_s"] if records else 0.0}
