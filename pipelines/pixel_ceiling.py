"""Pixel-level ceiling of the gender task: a classifier trained to convergence on plenty of
balanced real face crops, at the working resolution.

Usage: python pipelines/pixel_ceiling.py [--manifest synthfaces_oracle] [--seeds 0 1 2]
       [--crop-size 32] [--margin 0.1] [--stem small] [--steps 600] [--out FILE.md]

The attribute-level Bayes accuracy (``faces.bayes_accuracy``) bounds what any classifier
can get from the rendered cues; this script measures what a CNN gets from the *pixels*
(cues drawn at face scale, JPEG, blur, noise, the crop). Crops are cut at the annotated
boxes exactly as the classifier stage cuts them (``split_faces``), augmented with the
stage's classic augmentation, drawn class-balanced, and trained with AdamW and a cosine
schedule with warm-up. Nothing is chosen on test: the table reports the final model's
validation and test balanced accuracy, mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl import transfer  # noqa: E402
from dafsl.classifier.data import (EpochBatches, classic_augmentation, epoch_order,  # noqa: E402
                                   split_faces)
from dafsl.classifier.metrics import classification_metrics  # noqa: E402
from dafsl.classifier.model import STEMS, build_classifier  # noqa: E402
from dafsl.classifier.trainer import predict_probs  # noqa: E402
from dafsl.data import load_split  # noqa: E402
from dafsl.errors import exit_on_error  # noqa: E402
from dafsl.synth.faces import CLASSES, bayes_accuracy  # noqa: E402


def crops(manifest: str, size: int, margin: float) -> dict:
    """{split: FaceSet} of every annotated face, cut at its annotated box."""
    return {s: split_faces(load_split(manifest, s), CLASSES, size,
                           {"score_threshold": 0.5, "match_iou": 0.5, "margin": margin})[0]
            for s in ("train", "val", "test")}


def train_one(faces: dict, seed: int, a: argparse.Namespace) -> dict:
    """Train one classifier on ``faces["train"]``; returns its val/test metrics and time."""
    torch.manual_seed(seed)
    model = build_classifier(a.backbone, len(CLASSES), a.stem)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    sched = transfer.build_scheduler(opt, "vanilla", {"lr_factor": 1.0, "warmup_steps": 0},
                                     base=transfer.cosine_decay(a.steps, warmup=a.warmup))
    augment = classic_augmentation(seed) if a.augment else None
    train, step, t0 = faces["train"], 0, time.perf_counter()
    epoch_size = a.batch_size * a.eval_every
    curve = []
    while step < a.steps:
        epoch = step // a.eval_every
        if augment is not None:
            augment.set_random_seed(seed * 1000 + epoch)
        order = epoch_order(train.labels, epoch, seed, balanced=True, epoch_size=epoch_size)
        model.train()
        for batch in EpochBatches(train, order, a.batch_size, a.input_size, augment):
            loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["target"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step >= a.steps:
                break
        val = classification_metrics(faces["val"].labels, predict_probs(model, faces["val"].images, a.input_size),
                                     CLASSES, "female")["balanced_accuracy"]
        curve.append((step, round(val, 3)))
        if not a.quiet:
            print(f"  seed {seed} step {step}: loss {loss.item():.3f} val bal. acc {val:.3f}", flush=True)
    train_time = time.perf_counter() - t0
    out = {"seed": seed, "train_time_s": train_time, "val_curve": curve}
    for s in ("val", "test"):
        m = classification_metrics(faces[s].labels, predict_probs(model, faces[s].images, a.input_size),
                                   CLASSES, "female")
        out[f"{s}_balanced_accuracy"], out[f"{s}_roc_auc"] = m["balanced_accuracy"], m["roc_auc"]
    return out


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="synthfaces_oracle")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--crop-size", type=int, default=32, help="classifier.crop_size")
    ap.add_argument("--input-size", type=int, default=None, help="classifier.input_size (default: crop size)")
    ap.add_argument("--margin", type=float, default=0.1, help="classifier.crop_margin")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--stem", default="small", choices=STEMS)
    ap.add_argument("--steps", type=int, default=400, help="optimiser steps")
    ap.add_argument("--warmup", type=int, default=30, help="linear warm-up steps")
    ap.add_argument("--eval-every", type=int, default=100, help="steps between validation scores")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--no-augment", dest="augment", action="store_false")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    a.input_size = a.input_size or a.crop_size
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    faces = crops(a.manifest, a.crop_size, a.margin)
    counts = {s: np.bincount(f.labels, minlength=2).tolist() for s, f in faces.items()}
    print(f"faces (male, female): {counts}; crops in {time.perf_counter() - t0:.0f}s", flush=True)
    runs = [train_one(faces, seed, a) for seed in a.seeds]
    bayes = bayes_accuracy()
    lines = [f"Pixel-level ceiling: {a.manifest}, {a.crop_size} px crops (margin {a.margin}), "
             f"{a.backbone} stem {a.stem} at {a.input_size} px, {a.steps} steps of {a.batch_size}, "
             f"lr {a.lr:g} cosine, classic augmentation {'on' if a.augment else 'off'}", "",
             "| seed | val bal. acc | test bal. acc | test ROC-AUC | train s |", "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['val_balanced_accuracy']:.3f} | {r['test_balanced_accuracy']:.3f} | "
              f"{r['test_roc_auc']:.3f} | {r['train_time_s']:.0f} |" for r in runs]
    lines.append(f"| mean ± std | {mean_std([r['val_balanced_accuracy'] for r in runs])} | "
                 f"{mean_std([r['test_balanced_accuracy'] for r in runs])} | "
                 f"{mean_std([r['test_roc_auc'] for r in runs])} | |")
    lines += ["", f"Attribute-level Bayes accuracy of the cues: {bayes:.3f}",
              "Validation curves (step, bal. acc): " + "; ".join(
                  f"seed {r['seed']}: {r['val_curve']}" for r in runs)]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
