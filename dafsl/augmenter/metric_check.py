"""Is the augmenter's KID meaningful? Scores known sets against the Dlack reference.

    python -m dafsl.augmenter.metric_check RUN_DIR [--set KEY=VALUE ...] [--generator PATH]

RUN_DIR holds a detector output (``--stage detector``); every set is cut at the detector's
boxes, like the GAN's training faces. Against the **test** split's Dlack faces it prints
the KID of: the validation split's Dlack faces (same class, other faces: should be low);
the Dlack training crops (the GAN's 10 faces); the validation split's Denough faces
(other class: higher); the generated faces of ``--generator`` (optional); uniform noise
and flat grey (highest). The test reference is used for this check only; nothing here
selects or tunes anything.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from dafsl.augmenter.data import denough_classes, to_tensor
from dafsl.faces import class_faces
from dafsl.augmenter.featnet import load_feature_net
from dafsl.augmenter.quality import extract_features, kid
from dafsl.augmenter.reference import make_cropper
from dafsl.config import load_config
from dafsl.data import load_split
from dafsl.stages import read_outputs
from dafsl.runs import load_checkpoint


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--generator", help="generator_ema.pt of an augmenter run")
    parser.add_argument("--detector-run", help="run directory with the detector outputs (default RUN_DIR)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(Path(args.run_dir) / "config.yaml", args.overrides)
    aug, n = cfg["augmenter"], int(cfg["augmenter"]["reference_faces"])
    ctx = SimpleNamespace(cfg=cfg, device=torch.device("cpu"),
                          optional_output=lambda s, k: read_outputs(
                              Path(args.detector_run or args.run_dir) / s / "outputs.json").get(k))
    crop = make_cropper(ctx)
    net, _ = load_feature_net(cfg)
    load = lambda name: load_split(cfg["data"]["manifest"], name, cfg["data"]["cache_dir"])  # noqa: E731
    train, val, test = load("train"), load("val"), load("test")
    dlack = json.loads((Path(args.run_dir) / "data_split.json").read_text())["dlack"][0]
    denough = denough_classes(cfg, train)[0]
    feats = lambda imgs: extract_features(net, imgs)  # noqa: E731
    ref = feats(to_tensor(crop(test, class_faces(test, dlack, n)).images))
    r = int(aug["resolution"])
    gen = torch.Generator().manual_seed(0)
    sets = {
        f"val {dlack} (held-out, same class)": to_tensor(crop(val, class_faces(val, dlack, n)).images),
        f"train {dlack} crops (the GAN's {int(aug['shots']) or 'all'} shots)":
            to_tensor(crop(train, class_faces(train, dlack, int(aug["shots"]))).images),
        f"val {denough} (other class)": to_tensor(crop(val, class_faces(val, denough, n)).images),
        "uniform noise": torch.rand(n, 3, r, r, generator=gen) * 2 - 1,
        "flat grey": torch.zeros(n, 3, r, r),
    }
    if args.generator:
        from dafsl.augmenter.trainer import generate
        from dafsl.augmenter.networks import Generator
        state = load_checkpoint(Path(args.generator))
        g = Generator(int(state["latent_dim"]), state["channels"], int(state["resolution"]))
        g.load_state_dict(state["model"])
        sets["generated (--generator)"] = generate(g.eval(), torch.randn(1000, g.latent_dim, generator=gen))
    out = {}
    for name, imgs in sets.items():
        mean, std = kid(feats(imgs), ref, int(aug["kid_subsets"]), int(aug["kid_subset_size"]), int(cfg["seed"]))
        out[name] = {"kid": mean, "kid_std": std, "n": len(imgs)}
        print(f"{name:45s} n={len(imgs):4d}  KID {mean:.4f} +- {std:.4f}")
    print(f"reference: {len(ref)} test '{dlack}' faces, detector crops; feature dim {ref.shape[1]}")
    return out


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
