"""The imbalance comparison (``pipelines/compare_imbalance.py``): one row per method
for the few-shot classifier, mean ± std over seeds, as a table, a figure and a
Markdown page. The pipeline writes ``compare_imbalance.json``; this module renders it,
both for the pipeline's own ``compare_imbalance.md`` / ``.png`` and for
``python -m dafsl.report``, which includes every ``compare_imbalance.json`` it finds
below the run directories it is given.

The JSON's per-run figures are the source of truth: the statistics are recomputed
from them here (:func:`row_stats`), so a hand-edited or partial file renders as it is.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from dafsl.errors import DafslError
from dafsl.report.runs import NOT_MEASURED, fmt, is_number, mean_spread
from dafsl.report.tables import Table

FILE = "compare_imbalance.json"
FIGURE = "compare_imbalance.png"
# (key in a run's figures, column header; {positive} is the Dlack class, digits, scale)
COLUMNS = (("balanced_accuracy", "balanced accuracy", 3, 1.0),
           ("recall", "{positive} recall", 3, 1.0),
           ("roc_auc", "ROC-AUC", 3, 1.0),
           ("system_map50", "end-to-end mAP@0.5", 3, 1.0),
           ("probe_auc", "real-vs-generated probe AUC", 3, 1.0),
           ("train_time_s", "training time (s)", 1, 1.0))
SELECTION_KEY = "val_balanced_accuracy"  # the final model's, on the validation split


def row_stats(row: dict) -> dict:
    """{key: mean_spread over the row's runs} for every column and the selection key."""
    runs = [r for r in row.get("runs", []) if r.get("ok", True)]
    keys = [c[0] for c in COLUMNS] + [SELECTION_KEY]
    return {k: mean_spread([float(r[k]) if is_number(r.get(k)) else None for r in runs])
            for k in keys}


def interval(stat: dict) -> tuple[float, float] | None:
    """[mean - std, mean + std] of a :func:`mean_spread` dict (None when unmeasured)."""
    if not stat or not stat.get("n"):
        return None
    return stat["mean"] - stat["std"], stat["mean"] + stat["std"]


def within_noise(a: dict, b: dict) -> bool | None:
    """True when the mean ± std intervals of two statistics overlap (None: one unmeasured)."""
    ia, ib = interval(a), interval(b)
    if ia is None or ib is None:
        return None
    return ia[0] <= ib[1] and ib[0] <= ia[1]


def noise_notes(rows: Sequence[dict], key: str = "balanced_accuracy") -> tuple[list[str], dict]:
    """Which rows' test ``key`` intervals overlap the top row's, and the best GAN row
    against the best non-GAN, non-oracle row (reported, never used to choose anything).
    Returns (sentences, {"top", "within_noise_of_top", "gan_vs_best_other"})."""
    stats = {r["row"]: row_stats(r)[key] for r in rows}
    measured = [r for r in rows if stats[r["row"]]["n"]]
    if not measured:
        return [f"No run measured {key}."], {}
    top = max(measured, key=lambda r: stats[r["row"]]["mean"])["row"]
    near = [r["row"] for r in measured if r["row"] != top and within_noise(stats[r["row"]], stats[top])]
    out = {"top": top, "within_noise_of_top": near}
    notes = [f"Within noise (mean ± std intervals of test {key.replace('_', ' ')} overlap) of the "
             f"top row '{top}': {', '.join(near) if near else 'none'}."]
    if max(s["n"] for s in stats.values()) < 2:
        notes.append("One seed: no spread was measured, so no difference can be called beyond noise.")
    gan = [r for r in measured if r.get("uses_generated")]
    other = [r for r in measured if not r.get("uses_generated") and not r.get("oracle")]
    if gan and other:
        g = max(gan, key=lambda r: stats[r["row"]]["mean"])["row"]
        o = max(other, key=lambda r: stats[r["row"]]["mean"])["row"]
        diff = stats[g]["mean"] - stats[o]["mean"]
        single = min(stats[g]["n"], stats[o]["n"]) < 2
        overlap = None if single else within_noise(stats[g], stats[o])
        out["gan_vs_best_other"] = {"gan_row": g, "other_row": o, "difference": diff,
                                    "within_noise": overlap}
        noise = "no spread measured" if single else f"{'within' if overlap else 'beyond'} noise"
        notes.append(f"Best GAN row '{g}' minus best non-GAN row '{o}': {diff * 100:+.1f} points "
                     f"of test {key.replace('_', ' ')} ({noise}; the issue's goal is >= +5 points).")
    return notes, out


def _cell(row: dict, stats: dict, key: str, digits: int, scale: float) -> str:
    if key == "probe_auc" and not row.get("uses_generated"):
        return "n/a (no generated faces)"
    return fmt(stats[key], digits, scale)


def imbalance_table(data: dict) -> Table:
    """The comparison as a :class:`Table`: one row per method, mean ± std (n) per column."""
    positive = data.get("positive", "female")
    header = ["method", "settings"] + [h.format(positive=positive) for _, h, _, _ in COLUMNS] \
        + ["val balanced accuracy (selection)"]
    rows = []
    for row in data.get("rows", []):
        stats = row_stats(row)
        failed = sum(1 for r in row.get("runs", []) if not r.get("ok", True))
        label = row.get("label", row["row"]) + (f" ({failed} run(s) failed)" if failed else "")
        rows.append([label, " ".join(row.get("overrides", [])) or "-"]
                    + [_cell(row, stats, k, d, s) for k, _, d, s in COLUMNS]
                    + [fmt(stats[SELECTION_KEY], 3)])
    return Table(data.get("title", "Few-shot classifier under imbalance: one row per method"),
                 header, rows, list(notes(data)))


def notes(data: dict) -> list[str]:
    """How the table was made: command, seeds, selection, noise, timing."""
    out = []
    if data.get("command"):
        out.append(f"Command: `{data['command']}`.")
    seeds = data.get("seeds", [])
    out.append(f"Seeds {', '.join(map(str, seeds)) or '?'}; each cell is mean ± sample std over "
               f"seeds (n = runs that finished); test split figures, except the last column.")
    if data.get("upstream"):
        out.append(f"Upstream (detector, augmenter): {data['upstream']}.")
    best = data.get("best_of_others")
    if best:
        cands = ", ".join(f"{k} {v:.3f}" if is_number(v) else f"{k} {NOT_MEASURED}"
                          for k, v in best.get("candidates", {}).items())
        out.append(f"'GAN fill + best of the others' uses {best.get('chosen')}: the highest mean "
                   f"VALIDATION balanced accuracy of the final model (post-hoc, cRT and NCM heads "
                   f"included) among {cands}. Nothing is chosen on test.")
    out.append("Probe AUC: the classifier summary's `probe_auc` (real Dlack-class validation "
               "crops vs generated faces; 0.5 = indistinguishable); 'not measured' where the "
               "summary has no such key.")
    out.append("Training time: the engine's wall-clock training time of the classifier stage "
               "(crops, cRT/NCM head fitting and evaluation excluded).")
    out += noise_notes(data.get("rows", []))[0]
    if is_number(data.get("elapsed_s")):
        out.append(f"Measured wall-clock time of the whole comparison: "
                   f"{data['elapsed_s'] / 60:.1f} min ({data.get('machine', 'this machine')}).")
    return out


def plot_imbalance(data: dict, path: Path) -> bool:
    """Horizontal bars per row: test balanced accuracy ± std (left), Dlack recall ± std
    (right). False (nothing written) when no row has a measured balanced accuracy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = data.get("rows", [])
    stats = [row_stats(r) for r in rows]
    if not any(s["balanced_accuracy"]["n"] for s in stats):
        return False
    fig = Figure(figsize=(11, 0.45 * len(rows) + 1.6))
    FigureCanvasAgg(fig)
    labels = [r.get("label", r["row"]) for r in rows]
    ys = list(range(len(rows)))[::-1]
    colours = ["#d62728" if r.get("uses_generated") else "#7f7f7f" if r.get("oracle") else "#1f77b4"
               for r in rows]
    for i, (key, title) in enumerate((("balanced_accuracy", "test balanced accuracy"),
                                      ("recall", f"test {data.get('positive', 'female')} recall"))):
        ax = fig.add_subplot(1, 2, i + 1)
        means = [s[key]["mean"] if s[key]["n"] else 0.0 for s in stats]
        stds = [s[key]["std"] if s[key]["n"] else 0.0 for s in stats]
        ax.barh(ys, means, xerr=stds, color=colours, capsize=3, alpha=0.85)
        for y, s in zip(ys, stats):
            if not s[key]["n"]:
                ax.text(0.01, y, NOT_MEASURED, va="center", fontsize=8)
        if key == "balanced_accuracy":
            ax.axvline(0.5, color="#444444", linestyle=":", linewidth=1)  # chance
        if i == 1:
            from matplotlib.patches import Patch

            ax.legend(handles=[Patch(color=c, label=t) for c, t in
                               (("#1f77b4", "real faces only"), ("#d62728", "generated faces used"),
                                ("#7f7f7f", "oracle"))], fontsize=8, loc="lower right")
        ax.set_yticks(ys)
        ax.set_yticklabels(labels if i == 0 else [], fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_title(f"{title} (mean ± std over seeds)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def markdown(data: dict, figure: str | None = FIGURE) -> str:
    """The page ``compare_imbalance.md``: the table, its notes and the figure."""
    md = imbalance_table(data).markdown()
    return md + (f"\n![balanced accuracy and recall per method]({figure})\n" if figure else "")


def load(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DafslError(f"{path}: unreadable comparison ({err.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise DafslError(f"{path}: not a compare_imbalance.json (no 'rows' list)")
    return data


def find(paths: Sequence[str | Path]) -> list[Path]:
    """Every compare_imbalance.json below ``paths`` (or given directly), sorted, unique."""
    found: list[Path] = []
    for p in map(Path, paths):
        hits = [p] if p.is_file() and p.name == FILE else sorted(p.rglob(FILE)) if p.is_dir() else []
        found += [h for h in hits if h not in found]
    return found
