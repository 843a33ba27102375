"""Worker for tests/test_dist.py: train the smoke detector for one epoch on 8 one-face
scenes with a global batch of 4, in one process or under torchrun, and save the final
weights. Sampling is exhaustive (every anchor and every proposal enters the losses) and
every image has one face and the same number of proposals, so the per-rank loss means
average to the global batch's mean; the backbone is frozen (``fixed``: its BatchNorms in
eval mode), because on the CPU there is no SyncBatchNorm and trainable BatchNorms use each
rank's own batch statistics. 1 and 2 processes must then end with the same weights."""
from __future__ import annotations

import sys

import torch

from dafsl import dist
from dafsl.config import CONFIG_DIR, load_config
from dafsl.data import load_split
from dafsl.detector import build_detector
from dafsl.detector.data import load_scenes
from dafsl.detector.trainer import DetectorTrainer
from dafsl.engine import fit
from dafsl.runs import RunDir, save_checkpoint
from dafsl.transfer import freeze_module


def main(out: str) -> None:
    torch.set_num_threads(1)
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [
        "detector.batch_size=4", "detector.rpn_batch_per_image=100000",
        "detector.roi_batch_per_image=100000", "detector.rpn_post_nms_train=8",
        "detector.lr_schedule=constant", "detector.optimizer=sgd", "detector.lr=0.01"])
    dist.init(torch.device("cpu"))
    split = dist.main_first(load_split, cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"])
    scenes = load_scenes(split, exclude_classes={"female"})[0][:8]
    for s in scenes:
        s.boxes, s.labels = s.boxes[:1], s.labels[:1]
    torch.manual_seed(0)
    model = build_detector(cfg["detector"])
    freeze_module(model.backbone.body)
    trainer = DetectorTrainer(model, scenes, det_cfg=cfg["detector"], mode="vanilla",
                              transfer_cfg=cfg["transfer"], seed=0, device=torch.device("cpu"),
                              epochs=1)
    run = RunDir(out)
    if dist.is_main():
        save_checkpoint({"model": model.state_dict()}, run.path / "init.pt")
    fit(trainer, run, 1, mode="vanilla")
    if dist.is_main():
        save_checkpoint({"model": model.state_dict()}, run.path / "final.pt")
    run.close_rank()
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
