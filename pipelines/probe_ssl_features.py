"""Diagnostic: do a zoo source's frozen classifier features carry gender? A linear probe.

Usage: python pipelines/probe_ssl_features.py [--entries classifier-ssl] [--manifest
       synthfaces_related] [--c 1.0] [--set KEY=VALUE ...]

For each zoo entry (default ``classifier-ssl``) and for the same backbone at random
initialisation, the classifier (``classifier.backbone``, ``classifier.stem``) is loaded
the way ``classifier.source: zoo`` loads it, frozen, and its pooled features are computed
for every annotated face of the manifest's train and val splits (cut as the classifier
cuts them). A class-balanced L2 logistic regression (scikit-learn's objective,
``class_weight="balanced"``, ``C``) is fitted on the train features with their gender
labels and scored on the val faces (balanced accuracy, ROC-AUC).

This is a diagnostic only, run *after* a build: the zoo build never sees a label, and
nothing here feeds back into it (no setting is chosen on these figures).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl import transfer  # noqa: E402
from dafsl.classifier.data import crop_size_of, split_faces  # noqa: E402
from dafsl.classifier.metrics import classification_metrics  # noqa: E402
from dafsl.classifier.model import adapt_stem, backbone_prefixes, build_classifier  # noqa: E402
from dafsl.classifier.trainer import frozen_features  # noqa: E402
from dafsl.config import DEFAULT_CONFIG, load_config  # noqa: E402
from dafsl.data import load_split  # noqa: E402
from dafsl.detector.model import backbone_state  # noqa: E402
from dafsl.engine import torch_threads  # noqa: E402
from dafsl.errors import exit_on_error  # noqa: E402
from dafsl.log import configure  # noqa: E402


def source_model(cfg: dict, entry: str | None) -> torch.nn.Module:
    """The classifier with ``entry``'s weights loaded as ``classifier.source: zoo`` loads
    them (every backbone layer required), or at random init (seed 0) when ``entry`` is None."""
    c = cfg["classifier"]
    torch.manual_seed(0)
    model = build_classifier(c["backbone"], 2, c["stem"])
    if entry is not None:
        state, _ = transfer.resolve_source({**cfg, "transfer": {**cfg["transfer"], "source": "zoo"}}, entry)
        if not any(k.startswith(("conv1.", "layer1.")) for k in state):
            state = backbone_state(state)
        loaded, skipped = transfer.load_matching(model, adapt_stem(model, state), backbone_prefixes(model))
        print(f"{entry}: loaded {len(loaded)} tensors, not loaded {[n for n, _ in skipped]}")
    return model.eval()


def balanced_logistic(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Weights (D + 1,) minimising ``C * sum_i w_i logloss_i + |w|^2 / 2`` (bias not
    penalised), ``w_i = n / (2 n_class(i))``; full-batch L-BFGS. x: (N, D), y: (N,) in {0, 1}."""
    counts = torch.bincount(y, minlength=2).double()
    sample_w = (len(y) / (2 * counts))[y]
    xb = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    w = torch.zeros(xb.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = c * (sample_w * torch.nn.functional.binary_cross_entropy_with_logits(
            xb @ w, y.double(), reduction="none")).sum() + 0.5 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def probe(model: torch.nn.Module, faces: dict, input_size: int, c: float) -> dict:
    feats = {s: frozen_features(model, f.images, input_size, None, 1)[0].double() for s, f in faces.items()}
    mean, std = feats["train"].mean(0), feats["train"].std(0).clamp_min(1e-6)
    w = balanced_logistic((feats["train"] - mean) / std, torch.as_tensor(faces["train"].labels), c)
    val = torch.cat([(feats["val"] - mean) / std, torch.ones(len(feats["val"]), 1, dtype=torch.float64)], 1)
    p_female = torch.sigmoid(val @ w).numpy()
    m = classification_metrics(faces["val"].labels, np.stack([1 - p_female, p_female], 1), ["male", "female"])
    return {"val_balanced_accuracy": m["balanced_accuracy"], "val_roc_auc": m["roc_auc"]}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", nargs="+", default=["classifier-ssl"], help="zoo entries to probe")
    p.add_argument("--manifest", default="synthfaces_related", help="labelled faces to probe on")
    p.add_argument("--c", type=float, default=1.0, help="inverse L2 strength (scikit-learn's C)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


@exit_on_error
def main(argv: list[str] | None = None) -> list[dict]:
    args = get_args_parser().parse_args(argv)
    configure(False)
    cfg = load_config(args.config, args.overrides)
    classes = ["male", "female"]
    faces = {s: split_faces(load_split(args.manifest, s, cfg["data"]["cache_dir"]), classes,
                            crop_size_of(cfg), cfg["faces"])[0]
             for s in ("train", "val")}
    print(f"{args.manifest}: train {np.bincount(faces['train'].labels).tolist()} (male, female), "
          f"val {np.bincount(faces['val'].labels).tolist()}")
    rows = []
    with torch_threads(int(cfg["classifier"]["num_threads"])):
        for entry in [*args.entries, None]:
            row = {"source": entry or "random init", **probe(source_model(cfg, entry), faces,
                                                             int(cfg["classifier"]["input_size"]), args.c)}
            rows.append(row)
    print("| source | val balanced accuracy | val ROC-AUC |\n|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['val_balanced_accuracy']:.3f} | {r['val_roc_auc']:.3f} |")
    return rows


if __name__ == "__main__":
    main()
