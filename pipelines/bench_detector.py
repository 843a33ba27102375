"""Detector speed and accuracy benchmark: our CPU-fast default vs torchvision's stock heads.

    python pipelines/bench_detector.py [--config FILE] [--set KEY=VALUE ...]
        [--batch-size 8] [--steps 12] [--train-images 200] [--epochs 2] [--skip-train]

In one run it measures the median training throughput (images/s, one optimisation step
of a real augmented batch, forward + backward + SGD update) of

  (a) ours:     the ``detector:`` config (CPU-fast heads);
  (b) stock:    the same backbone and image size with torchvision's stock FasterRCNN
                heads (256-ch FPN on layer1-4 + pool, 2000 proposals, 512 ROI samples,
                12,544 -> 1,024 TwoMLPHead, 3 aspect ratios);
  (c) backbone: the ResNet's own classification forward + backward at that size, the
                practical ceiling of any detector built on it.

The three are timed round-robin (a, b, c, a, b, c, ...) so that load from other
processes on a shared machine hits them alike; the ratios are what to compare across
machines. Then (a) and (b) are trained from the same initialisation for the same epochs
on the same scenes and both are scored (mAP@0.5, 11-point, on the val split).
A table is printed, then one JSON line with ``ours_img_s``, ``stock_img_s``,
``backbone_img_s``, ``ratio_vs_stock`` (a/b), ``ratio_vs_backbone`` (a/c) and the mAPs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dafsl.config import DEFAULT_CONFIG, load_config  # noqa: E402
from dafsl.data import denough_dlack, load_split  # noqa: E402
from dafsl.detector.data import EpochBatches, build_augment, load_scenes  # noqa: E402
from dafsl.detector.model import build_detector, stock_config  # noqa: E402
from dafsl.detector.predict import score_split  # noqa: E402
from dafsl.detector.trainer import DetectorTrainer  # noqa: E402
from dafsl.engine import peak_rss_mb  # noqa: E402
from dafsl.errors import exit_on_error  # noqa: E402
from dafsl.manifest import load_manifest  # noqa: E402


def backbone_classifier(name: str) -> nn.Module:
    """The detector's ResNet as a plain 1000-class classifier."""
    if name.startswith("timm/"):
        import timm

        return timm.create_model(name[5:], pretrained=False)
    if name == "resnet10":
        import torchvision

        return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


def detector_step(model: nn.Module):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    model.train()

    def step(batch) -> None:
        images, targets = batch
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def classifier_step(model: nn.Module, size: int):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def step(batch) -> None:
        images, _ = batch
        x = torch.stack([nn.functional.interpolate(im[None], size=(size, size), mode="bilinear",
                                                   align_corners=False)[0] if im.shape[-1] != size
                         else im for im in images])
        y = torch.arange(len(images)) % 1000
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure(steps: dict, batches: list, warmup: int) -> dict[str, list[float]]:
    """Round-robin timing: every model runs batch i before any model runs batch i+1."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i, batch in enumerate(batches):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(batch)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def train_and_score(cfg: dict, det_cfg: dict, scenes, val, epochs: int, label: str) -> tuple[float, float]:
    torch.manual_seed(int(cfg["seed"]))
    model = build_detector(det_cfg)
    trainer = DetectorTrainer(model, scenes, det_cfg=det_cfg, mode="vanilla",
                              transfer_cfg=cfg["transfer"], seed=int(cfg["seed"]),
                              device=torch.device("cpu"), epochs=epochs)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for batch in trainer.batches(epoch):
            trainer.train_step(batch)
        print(f"  {label}: epoch {epoch + 1}/{epochs} done, {time.perf_counter() - t0:.0f}s",
              flush=True)
    train_s = time.perf_counter() - t0
    return score_split(model, val, "cpu", int(det_cfg["eval_batch_size"]))["map50"], train_s


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--batch-size", type=int, default=None, help="default: detector.batch_size")
    p.add_argument("--steps", type=int, default=12, help="timed steps per model (after warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--train-images", type=int, default=240,
                   help="training scenes for the accuracy comparison")
    p.add_argument("--epochs", type=int, default=2, help="epochs for the accuracy comparison")
    p.add_argument("--skip-train", action="store_true", help="speed only")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: detector.num_threads; 0 = torch's default)")
    return p


@exit_on_error
def main(argv=None) -> dict:
    args = get_args_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    det = dict(cfg["detector"])
    threads = int(det["num_threads"]) if args.threads is None else args.threads
    if threads > 0:
        torch.set_num_threads(threads)
    if args.batch_size:
        det["batch_size"] = args.batch_size
    bs, size = int(det["batch_size"]), int(det["image_size"])
    manifest = load_manifest(cfg["data"]["manifest"])
    train = load_split(manifest, "train", cfg["data"]["cache_dir"])
    dlack = denough_dlack(train.class_counts(), cfg["data"]["imbalance_threshold"])["dlack"]
    scenes, _ = load_scenes(train, exclude_classes=set(dlack))  # the stage's training set
    n_batches = args.warmup + args.steps
    batches = list(EpochBatches(scenes, bs, int(cfg["seed"]), 0, build_augment(det["augment"])))
    batches = (batches * (n_batches // len(batches) + 1))[:n_batches]

    torch.manual_seed(0)
    models = {"ours": build_detector(det), "stock": build_detector(stock_config(det)),
              "backbone": backbone_classifier(str(det["backbone"]))}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    steps = {"ours": detector_step(models["ours"]), "stock": detector_step(models["stock"]),
             "backbone": classifier_step(models["backbone"], size)}
    load0 = os.getloadavg()[0]
    times = measure(steps, batches, args.warmup)
    img_s = {k: bs / statistics.median(v) for k, v in times.items()}
    print(f"\n{det['backbone']} at {size} px, batch {bs}, {args.steps} timed steps each "
          f"(round-robin), {torch.get_num_threads()} threads, load avg {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'model':<10}{'img/s':>9}{'median s/step':>15}{'min s/step':>12}{'params':>12}")
    for k, v in times.items():
        print(f"{k:<10}{img_s[k]:>9.2f}{statistics.median(v):>15.3f}{min(v):>12.3f}{params[k]:>12,}")
    out = {"ours_img_s": round(img_s["ours"], 3), "stock_img_s": round(img_s["stock"], 3),
           "backbone_img_s": round(img_s["backbone"], 3),
           "ratio_vs_stock": round(img_s["ours"] / img_s["stock"], 3),
           "ratio_vs_backbone": round(img_s["ours"] / img_s["backbone"], 3),
           "backbone": det["backbone"], "image_size": size, "batch_size": bs,
           "timed_steps": args.steps, "threads": torch.get_num_threads()}
    del models, steps

    if not args.skip_train:
        val = load_split(manifest, "val", cfg["data"]["cache_dir"])
        sub = scenes[:args.train_images]
        print(f"\ntraining both for {args.epochs} epoch(s) on {len(sub)} scenes "
              f"(vanilla, same init and batches), scoring on {len(val.image_ids)} val scenes")
        ours_map, ours_s = train_and_score(cfg, det, sub, val, args.epochs, "ours")
        stock_map, stock_s = train_and_score(cfg, stock_config(det), sub, val, args.epochs, "stock")
        print(f"{'model':<10}{'mAP@0.5':>9}{'train s':>10}")
        print(f"{'ours':<10}{ours_map:>9.4f}{ours_s:>10.0f}\n{'stock':<10}{stock_map:>9.4f}{stock_s:>10.0f}")
        out.update(ours_map50=round(ours_map, 4), stock_map50=round(stock_map, 4),
                   map50_gap_points=round(100 * (ours_map - stock_map), 2), epochs=args.epochs,
                   train_images=len(sub), ours_train_s=round(ours_s, 1),
                   stock_train_s=round(stock_s, 1))
    out["peak_rss_mb"] = round(peak_rss_mb(), 0)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
