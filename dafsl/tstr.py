"""Train on synthetic, test on real (TSTR): do generated faces carry their class?

A classifier is trained on generated faces of every class only, then scored on real
faces it never saw (the validation split for selection, the test split for the final
figure). If the generator's "female" faces show what makes a real face female, the
classifier recognises real female faces; if they differ from its "male" faces in
something else (or in nothing), it sits near chance. Unlike KID, which compares one
class's generated faces with real ones in a class-blind feature space, TSTR measures
exactly what the classifier stage needs from the augmenter (Shmelkov et al. 2018, "How
good is my GAN?", train-on-generated/test-on-real; Ravuri & Vinyals 2019's
Classification Accuracy Score).

Shared machinery (beside the stages, not inside one): the augmenter uses it with the
small network :func:`small_cnn` to pick its snapshot, the classifier stage with its own
architecture and budget for the figure in ``summary.json``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from dafsl.errors import DafslError


def small_cnn(num_classes: int = 2, width: int = 32) -> nn.Module:
    """A 3-block ConvNet for 32 px faces: (B, 3, 32, 32) -> logits (B, num_classes);
    ~0.1 M parameters, about 2 s for 120 steps of batch 64 on one CPU thread."""
    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2))
    return nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))


def default_preprocess(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, S, S) in [-1, 1]."""
    x = torch.as_tensor(images).to(device).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC-AUC of ``scores`` (N,) for the boolean ``positive`` (N,) (Mann-Whitney U with
    mid-ranks for ties); None when one class is absent."""
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Mean over the classes present in ``labels`` of the recall of each."""
    recalls = [float((predicted[labels == c] == c).mean()) for c in range(num_classes) if (labels == c).any()]
    return float(np.mean(recalls))


def tstr(train_images: np.ndarray, train_labels: np.ndarray, eval_images: np.ndarray,
         eval_labels: np.ndarray, *, make_model: Callable[[], nn.Module], positive: int,
         steps: int = 120, batch_size: int = 64, lr: float = 2e-3, weight_decay: float = 1e-4,
         seed: int = 0, preprocess: Callable = default_preprocess, flip: bool = True,
         device: torch.device | str = "cpu", extra_eval: dict | None = None) -> dict:
    """Train ``make_model()`` on (``train_images`` (N, S, S, 3) uint8, ``train_labels`` (N,))
    for ``steps`` AdamW steps of class-balanced draws (each class equally likely, so the
    counts of generated faces per class do not matter), then score it on the real
    ``eval_images``/``eval_labels``.

    Returns {"balanced_accuracy", "roc_auc" (score: P(``positive``)), "recall_positive",
    "train_faces", "eval_faces", "steps"}, plus {"extra": {name: the same figures}} for
    each ``extra_eval`` {name: (images, labels)} scored by the same model. Seeded: the same
    inputs give the same figures.
    """
    train_labels = np.asarray(train_labels, dtype=np.int64)
    eval_labels = np.asarray(eval_labels, dtype=np.int64)
    classes = sorted(set(train_labels.tolist()))
    if len(classes) < 2:
        raise DafslError(f"TSTR: needs generated faces of at least two classes, got classes {classes}")
    if len(eval_labels) == 0 or len(set(eval_labels.tolist())) < 2:
        raise DafslError("TSTR: needs real evaluation faces of at least two classes")
    num_classes = int(max(train_labels.max(), eval_labels.max())) + 1
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model().to(device)
    counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    weights = torch.as_tensor(1.0 / counts[train_labels])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    model.train()
    for _ in range(steps):
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=gen).numpy()
        x = preprocess(train_images[idx], device)
        if flip:  # the one augmentation that never changes a face's class
            mask = (torch.rand(len(idx), generator=gen) < 0.5).to(x.device)
            x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
        loss = F.cross_entropy(model(x), torch.as_tensor(train_labels[idx], device=x.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()

    def score(images: np.ndarray, labels: np.ndarray) -> dict:
        labels = np.asarray(labels, dtype=np.int64)
        with torch.no_grad():
            p = torch.cat([model(preprocess(images[i:i + 256], device)).softmax(1).cpu()
                           for i in range(0, len(images), 256)]).numpy()
        predicted = p.argmax(1)
        return {"balanced_accuracy": balanced_accuracy(labels, predicted, num_classes),
                "roc_auc": binary_auc(p[:, positive], labels == positive),
                "recall_positive": float((predicted[labels == positive] == positive).mean()),
                "eval_faces": int(len(labels))}
    out = {**score(eval_images, eval_labels), "train_faces": int(len(train_labels)), "steps": int(steps)}
    if extra_eval:
        out["extra"] = {name: score(*pair) for name, pair in extra_eval.items()}
    return out
