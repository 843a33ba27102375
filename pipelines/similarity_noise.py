"""How noisy is ``--kd auto``'s similarity for a 10-face target? (issue 11, item 6)

    python pipelines/similarity_noise.py [--config FILE] [--set KEY=VALUE ...] [--subsets 200]

On the config's data (p, bootstrap, confidence and thresholds from ``similarity:``):

1. the similarity and its bootstrap interval of the Dlack faces of the training split
   (the augmenter's target) against the reference the augmenter's zoo entry stores
   (``describe_split(train)``), and of 3 random sets of as many Denough faces;
2. over ``--subsets`` random sets of that many faces drawn from the whole Denough
   (training split) and Dlack (test split) populations: the spread of the point
   estimate, the coverage of the population's similarity by the basic interval the
   code uses and by a percentile interval, and the decisions taken.

Descriptors only (no training): a few seconds once the data is rendered.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl import similarity as S  # noqa: E402
from dafsl.config import DEFAULT_CONFIG, load_config  # noqa: E402
from dafsl.data import denough_dlack, load_split  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(DEFAULT_CONFIG))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--subsets", type=int, default=200)
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    s_cfg, seed = cfg["similarity"], int(cfg["seed"])
    p, n_boot, conf = S.parse_p(s_cfg["p"]), int(s_cfg["bootstrap"]), float(s_cfg["confidence"])
    load = lambda split: load_split(cfg["data"]["manifest"], split, cfg["data"]["cache_dir"])  # noqa: E731
    train, test = load("train"), load("test")
    info = denough_dlack(train.class_counts(), cfg["data"]["imbalance_threshold"])
    denough, dlack = list(info["denough"]), list(info["dlack"])
    ref = np.asarray(S.describe_split(train, int(s_cfg["n_objects"])))
    sim = lambda objs: S.similarity(S.minkowski(ref, objs.mean(axis=0), p), p)  # noqa: E731
    target = S.describe_objects(train, 10_000, dlack)
    k = len(target)
    pops = {f"{'+'.join(denough)} (train)": S.describe_objects(train, 10_000, denough),
            f"{'+'.join(dlack)} (test)": S.describe_objects(test, 10_000, dlack)}
    rng = np.random.default_rng(seed)
    print(f"reference: describe_split(train), p={S.p_label(p)}, {n_boot} resamples, {conf:.0%}")
    sets = {f"the {k} {'+'.join(dlack)} training faces": target}
    male = next(iter(pops.values()))
    for i in range(3):
        sets[f"{k} random {'+'.join(denough)} faces, set {i}"] = male[rng.choice(len(male), k, replace=False)]
    for name, objs in sets.items():
        out = S.compare(ref.tolist(), objs.mean(axis=0).tolist(), k, s_cfg, objects=objs, seed=seed)
        lo, hi = out["similarity_interval"]
        print(f"  {name}: s {out['similarity']:.4f}, interval [{lo:.4f}, {hi:.4f}] -> {out['mode']} "
              f"({out['reason']})")
    tail = (1 - conf) / 2 * 100
    for name, objs in pops.items():
        truth, pts, cov_basic, cov_pct, decisions = sim(objs), [], 0, 0, {}
        for r in range(args.subsets):
            sub = objs[rng.choice(len(objs), k, replace=False)]
            pts.append(sim(sub))
            lo, hi = S.bootstrap_interval(ref, sub, p, n_boot, conf, seed=r)
            idx = np.random.default_rng(r).integers(0, k, (n_boot, k))
            q_lo, q_hi = np.percentile([sim(sub[i]) for i in idx], [tail, 100 - tail])
            cov_basic += lo <= truth <= hi
            cov_pct += q_lo <= truth <= q_hi
            mode, reason = S.decide(pts[-1], k, s_cfg, (lo, hi))
            key = mode + (" (undecided)" if reason.startswith(S.UNDECIDED) else "")
            decisions[key] = decisions.get(key, 0) + 1
        print(f"{name}: {len(objs)} faces, population s {truth:.4f}; {args.subsets} random sets of "
              f"{k}: s 5-95 % {np.percentile(pts, 5):.4f}-{np.percentile(pts, 95):.4f} (mean "
              f"{np.mean(pts):.4f}); coverage basic {cov_basic / args.subsets:.2f}, percentile "
              f"{cov_pct / args.subsets:.2f}; decisions {dict(sorted(decisions.items()))}")


if __name__ == "__main__":
    main()
