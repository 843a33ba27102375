"""The real-vs-generated probe: can a classifier tell generated Dlack faces from real ones?

If it can, a classifier trained on real Denough + generated Dlack faces may learn
"generated" instead of the class. The probe is a classifier of the gender classifier's own
architecture (``classifier.backbone``, ``classifier.input_size``), optimiser (AdamW,
``classifier.lr``, ``classifier.weight_decay``) and budget (``classifier.epochs`` x
``classifier.epoch_size`` samples in batches of ``classifier.batch_size``), trained to
separate **real Dlack-class crops the GAN never saw** (the validation split's) from
generated faces, class-balanced (as many generated faces as real ones). Its ROC-AUC is
cross-validated over ``folds`` stratified folds: 0.5 means "generated" carries no signal,
1.0 that every generated face is recognisable.

    from dafsl.augmenter.probe import probe_from_config
    result = probe_from_config(cfg, real_val_crops, generated_faces)   # -> dict
    run.update_summary("probe", result)

Inputs are uint8 (N, S, S, 3) faces at the classifier's ``crop_size``.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from dafsl.classifier.data import model_device, to_input
from dafsl.classifier.metrics import roc_auc
from dafsl.classifier.model import build_classifier
from dafsl.errors import DafslError


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Indices of ``labels`` split into ``folds`` test folds, each class spread evenly."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for k, chunk in enumerate(np.array_split(idx, folds)):
            parts[k].extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def train_probe(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, steps: int,
                batch_size: int, lr: float, weight_decay: float, input_size: int, seed: int) -> nn.Module:
    """``steps`` AdamW steps of cross-entropy on class-balanced batches with random
    horizontal flips; ``images`` (N, S, S, 3) uint8, ``labels`` (N,) in {0, 1}."""
    gen = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in (0, 1)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(steps):
        idx = np.concatenate([gen.choice(ix, batch_size // 2) for ix in by_class])
        batch = images[idx]
        flip = gen.random(len(idx)) < 0.5
        batch = np.where(flip[:, None, None, None], batch[:, :, ::-1], batch)
        dev = model_device(model)
        loss = nn.functional.cross_entropy(model(to_input(np.ascontiguousarray(batch), input_size, dev)),
                                           torch.as_tensor(labels[idx], device=dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def generated_scores(model: nn.Module, images: np.ndarray, input_size: int) -> np.ndarray:
    """P(generated) per face, (N,)."""
    dev = model_device(model)
    return np.concatenate([model(to_input(images[i:i + 256], input_size, dev)).softmax(dim=1)[:, 1].cpu().numpy()
                           for i in range(0, len(images), 256)])


def probe_auc(real: np.ndarray, generated: np.ndarray, *, backbone: str, input_size: int,
              steps: int, batch_size: int, lr: float, weight_decay: float, folds: int = 3,
              seed: int = 0, stem: str = "imagenet", init_state: Callable[[nn.Module], None] | None = None) -> dict:
    """Cross-validated ROC-AUC of a real (label 0) vs generated (label 1) classifier.

    ``generated`` is subsampled (seeded) to as many faces as ``real``. ``init_state(model)``
    may load the classifier's starting weights (e.g. the detector backbone); default: random.
    Returns ``{"auc", "auc_std", "auc_folds", "folds", "real", "generated", "steps", "time_s"}``.
    """
    if len(real) < folds or len(generated) < folds:
        raise DafslError(f"probe: needs at least {folds} real and generated faces "
                         f"(got {len(real)} and {len(generated)})")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    generated = generated[rng.choice(len(generated), min(len(real), len(generated)), replace=False)]
    images = np.concatenate([real, generated])
    labels = np.concatenate([np.zeros(len(real), np.int64), np.ones(len(generated), np.int64)])
    aucs = []
    for k, test_idx in enumerate(stratified_folds(labels, folds, seed)):
        train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
        torch.manual_seed(seed * 100 + k)
        model = build_classifier(backbone, 2, stem)
        if init_state is not None:
            init_state(model)
        train_probe(model, images[train_idx], labels[train_idx], steps=steps, batch_size=batch_size,
                    lr=lr, weight_decay=weight_decay, input_size=input_size, seed=seed * 100 + k)
        aucs.append(roc_auc(labels[test_idx], generated_scores(model, images[test_idx], input_size)))
    return {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)), "auc_folds": aucs,
            "folds": folds, "real": int(len(real)), "generated": int(len(generated)),
            "steps": int(steps), "backbone": backbone, "time_s": time.perf_counter() - t0}


def probe_from_config(cfg: dict, real: np.ndarray, generated: np.ndarray,
                      init_state: Callable[[nn.Module], None] | None = None) -> dict:
    """:func:`probe_auc` with the classifier's architecture and budget from ``cfg``
    (``classifier.*``) and ``augmenter.probe.folds``."""
    c = cfg["classifier"]
    epoch_size = int(c["epoch_size"]) if c.get("epoch_size") else len(real) + len(generated)
    steps = max(1, int(c["epochs"]) * epoch_size // int(c["batch_size"]))
    return probe_auc(real, generated, backbone=str(c["backbone"]), input_size=int(c["input_size"]),
                     steps=steps, batch_size=int(c["batch_size"]), lr=float(c["lr"]),
                     weight_decay=float(c["weight_decay"]), folds=int(cfg["augmenter"]["probe"]["folds"]),
                     seed=int(cfg["seed"]), stem=str(c.get("stem", "imagenet")), init_state=init_state)


def main(argv: list[str] | None = None) -> dict:
    """``python -m dafsl.augmenter.probe RUN_DIR [--raw] [--set K=V]``: the probe on the
    generated faces of RUN_DIR's augmenter, against the validation split's Dlack faces cut
    at RUN_DIR's detector boxes. ``--raw``: fresh samples of ``generator_ema.pt`` without the
    degradation chain (what the faces looked like before it)."""
    import argparse
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from dafsl.augmenter.data import to_uint8
    from dafsl.faces import class_faces
    from dafsl.augmenter.networks import Generator
    from dafsl.augmenter.reference import make_cropper
    from dafsl.augmenter.trainer import generate
    from dafsl.config import load_config
    from dafsl.data import load_split
    from dafsl.stages import read_outputs
    from dafsl.runs import load_checkpoint

    parser = argparse.ArgumentParser(description="real-vs-generated probe of an augmenter run")
    parser.add_argument("run_dir")
    parser.add_argument("--raw", action="store_true")
    parser.add_argument("--detector-run", help="run directory with the detector outputs (default RUN_DIR)")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    run = Path(args.run_dir)
    cfg = load_config(run / "config.yaml", args.overrides)
    ctx = SimpleNamespace(cfg=cfg, device=torch.device("cpu"),
                          optional_output=lambda s, k: read_outputs(
                              Path(args.detector_run or run) / s / "outputs.json").get(k))
    dlack = json.loads((run / "data_split.json").read_text())["dlack"][0]
    val = load_split(cfg["data"]["manifest"], "val", cfg["data"]["cache_dir"])
    real = make_cropper(ctx)(val, class_faces(val, dlack)).images
    out_dir = run / "augmenter"
    if args.raw:
        state = load_checkpoint(out_dir / "generator_ema.pt")
        g = Generator(int(state["latent_dim"]), state["channels"], int(state["resolution"]))
        g.load_state_dict(state["model"])
        z = torch.randn(len(real), g.latent_dim, generator=torch.Generator().manual_seed(1))
        fake = to_uint8(generate(g.eval(), z))
    else:
        import cv2
        manifest = json.loads((out_dir / "generated.json").read_text())
        fake = np.stack([cv2.imread(str(out_dir / "generated" / n))[:, :, ::-1] for n in manifest["images"]])
    result = probe_from_config(cfg, real, fake)
    print(f"probe ({'raw' if args.raw else 'written'} generated vs {len(real)} val '{dlack}' crops): "
          f"AUC {result['auc']:.3f} +- {result['auc_std']:.3f} over {result['folds']} folds, "
          f"{result['steps']} steps, {result['time_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
