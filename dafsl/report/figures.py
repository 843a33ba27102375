"""Figures of the mode-comparison report (:mod:`dafsl.report`): convergence curves per
mode, mean over seeds with a ±1 std band, against epoch and against wall-clock time.
Matplotlib through an explicit Agg canvas (no pyplot, no global backend switch)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

COLOURS = {"vanilla": "#444444", "fixed": "#1f77b4", "finetune": "#2ca02c", "pretrained": "#d62728"}


def mean_curve(group: Sequence, key: str) -> dict | None:
    """Mean over seeds of ``key`` per epoch (epochs where every seed logged it), with
    its std and the mean wall-clock time at that epoch: {"epoch", "wall", "mean", "std"}
    arrays of shape (E,); None when no seed logged ``key``."""
    per_seed = []
    for run in group:
        pts = {int(r["epoch"]): (float(r["wall_clock_s"]), float(r[key])) for r in run.records
               if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])}
        if pts:
            per_seed.append(pts)
    if not per_seed:
        return None
    epochs = sorted(set.intersection(*(set(p) for p in per_seed)))
    if not epochs:
        return None
    vals = np.array([[p[e][1] for e in epochs] for p in per_seed])
    walls = np.array([[p[e][0] for e in epochs] for p in per_seed])
    return {"epoch": np.array(epochs) + 1, "wall": walls.mean(0), "mean": vals.mean(0),
            "std": vals.std(0, ddof=1) if len(per_seed) > 1 else np.zeros(len(epochs)),
            "n": len(per_seed)}


def _panel(ax, groups: dict, key: str, x: str, ylabel: str, scale: float = 1.0,
           target: float | None = None) -> bool:
    drawn = False
    for mode, group in groups.items():
        c = mean_curve(group, key)
        if c is None:
            continue
        xs = c["epoch"] if x == "epoch" else c["wall"]
        label = f"{mode}" + (f" (n={c['n']})" if c["n"] > 1 else "")
        ax.plot(xs, c["mean"] * scale, marker="." if len(xs) < 40 else None,
                color=COLOURS.get(mode), label=label)
        if c["n"] > 1:
            ax.fill_between(xs, (c["mean"] - c["std"]) * scale, (c["mean"] + c["std"]) * scale,
                            color=COLOURS.get(mode), alpha=0.15, linewidth=0)
        drawn = True
    if target is not None and drawn:
        ax.axhline(target * scale, color="#444444", linestyle=":", linewidth=1,
                   label="vanilla final (target)")
    ax.set_xlabel("epoch" if x == "epoch" else "training wall-clock time (s)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    return drawn


def _figure(ncols: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 * ncols, 4.5))
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def plot_score_curves(groups: dict, key: str, ylabel: str, title: str, path: Path,
                      scale: float = 1.0, target: float | None = None) -> bool:
    """``key`` against epoch (left) and wall-clock time (right), one curve per mode.
    Returns False (and writes nothing) when no mode logged ``key``."""
    fig, (left, right) = _figure(2)
    if not _panel(left, groups, key, "epoch", ylabel, scale, target):
        return False
    _panel(right, groups, key, "wall", ylabel, scale, target)
    left.set_title(f"{title} vs epoch")
    right.set_title(f"{title} vs wall-clock time")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def plot_gan_losses(groups: dict, path: Path) -> bool:
    """Generator (left) and discriminator (right) loss per epoch, one curve per mode."""
    fig, (left, right) = _figure(2)
    if not (_panel(left, groups, "loss_g", "epoch", "generator loss")
            | _panel(right, groups, "loss_d", "epoch", "discriminator loss")):
        return False
    left.set_title("Generator cross-entropy loss")
    right.set_title("Discriminator cross-entropy loss")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True
