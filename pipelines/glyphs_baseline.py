"""How hard a character set is: raw-pixel 1-nearest-neighbour accuracy on N-way K-shot episodes.

Usage: python pipelines/glyphs_baseline.py [--manifest glyphs] [--split test] [--way 5]
       [--shots 1 5] [--query 15] [--episodes 1000] [--seed 0] [--image-size 28]
       [--figure docs/img/glyphs_samples.png]

Prints the set's size (alphabets, characters, images), the time to load (render or read
the cache) and, per shot, the mean accuracy over ``--episodes`` seeded episodes with a 95 %
confidence interval (1.96 x the standard error over episodes). Each query takes the label
of its nearest support image in Euclidean distance on the raw pixels. Works on any
character-set manifest (``glyphs``, ``omniglot`` with ``$OMNIGLOT_ROOT`` set). ``--figure``
also writes a grid of samples: one row per alphabet, a few characters, several drawers each.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl.errors import exit_on_error  # noqa: E402
from dafsl.fewshot.data import CharacterSet, EpisodeSampler, load_characters  # noqa: E402


def nearest_neighbour_accuracy(data: CharacterSet, way: int, shot: int, query: int,
                               episodes: int, seed: int) -> tuple[float, float]:
    """(mean, 95 % CI half-width) of raw-pixel 1-NN accuracy over seeded episodes."""
    flat = data.images.flatten(1)
    sampler = EpisodeSampler(data.labels, way, shot, query, episodes, seed, origin=data.origin)
    accs = []
    for ep in sampler:
        dist = torch.cdist(flat[ep.query_idx], flat[ep.support_idx])
        pred = ep.support_labels[dist.argmin(1)]
        accs.append((pred == ep.query_labels).double().mean().item())
    acc = torch.tensor(accs, dtype=torch.float64)
    ci = 1.96 * acc.std().item() / math.sqrt(len(acc)) if len(acc) > 1 else float("nan")
    return acc.mean().item(), ci


def sample_grid(data: CharacterSet, path: Path, alphabets: int = 8, characters: int = 4,
                drawers: int = 4) -> None:
    """One row per alphabet (the first ``alphabets``), ``characters`` x ``drawers`` drawings."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(c.split("/")[0] for c in data.classes))[:alphabets]
    fig = Figure(figsize=(0.5 * characters * drawers + 1.2, 0.55 * len(names)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), characters, squeeze=False,
                        gridspec_kw={"wspace": 0.08, "hspace": 0.15})
    for r, name in enumerate(names):
        chars = [i for i, c in enumerate(data.classes) if c.split("/")[0] == name][:characters]
        for k, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(chars):
                ax.axis("off")
                continue
            idx = (data.labels == chars[k]).nonzero().flatten()[:drawers]
            ax.imshow(1.0 - torch.cat(list(data.images[idx, 0]), 1).numpy(), cmap="gray",
                      vmin=0, vmax=1)
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"{data.origin}: {drawers} drawers of {characters} characters per alphabet",
                 fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="glyphs")
    ap.add_argument("--split", default="test")
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--query", type=int, default=15)
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--figure", type=Path, help="also write a sample grid (PNG) here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_characters(args.manifest, args.split, image_size=args.image_size)
    loaded = time.perf_counter() - t0
    alphabets = len({c.split("/")[0] for c in data.classes})
    print(f"{data.origin}: {alphabets} alphabets, {data.num_classes} characters, {len(data)} "
          f"images of {args.image_size}x{args.image_size} px (loaded in {loaded:.1f} s)")
    if args.figure:
        sample_grid(data, args.figure)
        print(f"wrote {args.figure}")
    for shot in args.shots:
        mean, ci = nearest_neighbour_accuracy(data, args.way, shot, args.query, args.episodes,
                                              args.seed)
        print(f"raw-pixel 1-NN, {shot}-shot {args.way}-way, {args.episodes} episodes of "
              f"{args.query} queries/class (seed {args.seed}): {mean:.3f} ± {ci:.3f} (95 % CI)")


if __name__ == "__main__":
    main()
