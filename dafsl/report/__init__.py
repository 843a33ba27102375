"""``python -m dafsl.report RUN_DIR [RUN_DIR ...] [--out DIR]``: the mode-comparison
report (the paper's Tables 2-4 and Figures 7-8 from our runs) rebuilt from run
directories alone: ``metrics.jsonl``, ``summary.json`` and ``config.yaml`` (for the
seed), plus the PNGs the stages left in ``<run>/<stage>/``. No retraining.

A RUN_DIR may also be a folder of run directories (``pipelines/compare_modes.py``
writes one per seed and mode); every ``metrics.jsonl`` or ``summary.json`` below it
counts. Each (run, stage) with metric records is one training, keyed by its stage,
its mode and its seed. A stage or a figure that is missing reads "not measured".

A ``compare_imbalance.json`` below a RUN_DIR (``pipelines/compare_imbalance.py``) adds
its table and bar figure (:mod:`.imbalance`).

Time is the engine's ``wall_clock_s``: cumulative training time of the stage,
evaluation and zoo builds excluded (the paper does not count ImageNet training).

Layout: :mod:`.runs` reads run directories and computes statistics,
:mod:`.tables` builds the tables, :mod:`.figures` draws the curves; this module
writes report.md / report.html / report.json and holds the CLI.
"""
from __future__ import annotations

import argparse
import base64
import html
import os
from pathlib import Path
from typing import Sequence

from dafsl.errors import DafslError, exit_on_error
from dafsl.report.runs import (MODES, NOT_MEASURED, STAGES, TARGETS, StageRun, by_mode, collect,
                               find_run_dirs, fmt, mean_spread, time_to_target)
from dafsl.report.tables import (auto_table, classifier_table, table2, table3, table4,
                                 time_to_target_table)
from dafsl.report.verdict import noise_table, verdict_table
from dafsl.runs import atomic_write_json

__all__ = ["build_report", "collect", "find_run_dirs", "main", "time_to_target"]


def _checks(runs: Sequence[StageRun], ttt: Sequence[dict]) -> list[str]:
    """The issue's goals, stated against what we measured (never asserted)."""
    out = []
    det = by_mode(runs, "detector")
    pre = next((r for r in ttt if r["stage"] == "detector" and r["mode"] == "pretrained"), None)
    if pre and pre["compared"]:
        frac = pre["fraction_of_vanilla"]
        reached = pre["compared"] - pre["never"]
        out.append(f"Detector, pretrained: reached vanilla's final mAP@0.5 in "
                   f"{reached}/{pre['compared']} seeds, at {fmt(frac, 1, 100, '%')} of vanilla's "
                   f"training time (goal <= 50%; the paper's -35% is 65%).")
    finals = {m: mean_spread([r.final("map50") for r in g])["mean"] for m, g in det.items()}
    if all(finals.get(m) is not None for m in MODES):
        holds = min(finals["fixed"], finals["finetune"]) > finals["vanilla"] and \
            finals["pretrained"] > max(finals["fixed"], finals["finetune"])
        order = " > ".join(sorted(MODES, key=lambda m: -finals[m]))
        out.append(f"Final mAP@0.5 ordering (mean over seeds): {order}; the paper's "
                   f"pretrained > fixed, finetune > vanilla {'holds' if holds else 'does not hold'}.")
    return out


def _figure_list(out: Path, runs: Sequence[StageRun]) -> list[tuple[str, Path | None, str]]:
    from dafsl.report.figures import plot_gan_losses, plot_score_curves

    def target(groups: dict, key: str) -> float | None:  # vanilla's final: the dotted line
        return mean_spread([r.final(key) for r in groups.get("vanilla", [])])["mean"]

    for stale in ("fig7.png", "fig8.png", "fig_kid.png", "fig_classifier.png"):
        (out / stale).unlink(missing_ok=True)  # a rebuild must not show an old figure
    figs = []
    det, gan, cls = (by_mode(runs, s) for s in STAGES)
    ok = plot_score_curves(det, "map50", "val mAP@0.5 (%)", "mAP@0.5", out / "fig7.png", 100,
                           target(det, "map50"))
    figs.append(("Figure 7: detector mAP@0.5 per mode", out / "fig7.png" if ok else None,
                 "One curve per mode; mean over seeds, band = ±1 std; dotted = vanilla's final."))
    ok = plot_gan_losses(gan, out / "fig8.png")
    figs.append(("Figure 8: GAN generator and discriminator losses per mode",
                 out / "fig8.png" if ok else None, "Mean per step of each epoch."))
    ok = plot_score_curves(gan, "kid", "KID", "KID", out / "fig_kid.png", 1, target(gan, "kid"))
    figs.append(("GAN quality: KID per mode (lower is better)", out / "fig_kid.png" if ok else None, ""))
    key = TARGETS["classifier"].key_in([r for g in cls.values() for r in g])
    ok = plot_score_curves(cls, key, "val balanced accuracy (%)", "balanced accuracy",
                           out / "fig_classifier.png", 100, target(cls, key))
    figs.append(("Classifier: validation balanced accuracy per mode",
                 out / "fig_classifier.png" if ok else None, ""))
    return figs


def _gallery(runs: Sequence[StageRun]) -> list[tuple[str, Path]]:
    """Stage PNGs (sample grids, confusion matrices, PR curves) of the first seed per mode."""
    out = []
    for stage in STAGES:
        for mode, group in by_mode(runs, stage).items():
            out += [(f"{stage} / {mode} (seed {group[0].seed}): {p.relative_to(group[0].run_dir)}", p)
                    for p in group[0].images]
    return out


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _imbalance_sections(paths: Sequence[str | Path], out: Path, md: list[str],
                        body: list[str]) -> list[str]:
    """Each ``compare_imbalance.json`` below ``paths`` (pipelines/compare_imbalance.py):
    its table and bar figure, appended to ``md`` and ``body``; returns the files used."""
    from dafsl.report import imbalance

    found = imbalance.find(paths)
    for stale in out.glob("compare_imbalance*.png"):
        stale.unlink()  # a rebuild must not show an old figure
    for i, path in enumerate(found):
        data = imbalance.load(path)
        table = imbalance.imbalance_table(data)
        table.title += f" ({path.parent.name})"
        fig = out / (f"compare_imbalance_{i}.png" if len(found) > 1 else imbalance.FIGURE)
        md.append(table.markdown())
        body.append(table.html())
        if imbalance.plot_imbalance(data, fig):
            md.append(f"![imbalance comparison]({fig.name})\n")
            body.append(f"<img alt='imbalance comparison' src='{_data_uri(fig)}'>")
    return [str(p) for p in found]


CSS = ("body{font-family:sans-serif;max-width:1150px;margin:1em auto;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 7px;"
       "font-size:13px;text-align:left}th{background:#eee}img{max-width:100%;border:1px solid #ddd}"
       ".gallery{display:flex;flex-wrap:wrap;gap:12px}.gallery figure{margin:0;max-width:360px}"
       "figcaption{font-size:12px;color:#555}.notes{font-size:12px;color:#555}")


def build_report(paths: Sequence[str | Path], out_dir: str | Path,
                 stages: Sequence[str] | None = None, title: str = "DA-FSL mode comparison",
                 modes: Sequence[str] | None = None) -> dict:
    """Write table2.md, table3.md, table4.md, time_to_target.md, fig7.png, fig8.png,
    report.md, report.html (self-contained) and report.json into ``out_dir``."""
    run_dirs = find_run_dirs(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, decisions = collect(run_dirs)
    runs = [r for r in runs if (not stages or r.stage in stages) and (not modes or r.mode in modes)]
    decisions = [d for d in decisions if not stages or d["stage"] in stages]
    tables = {"table2": table2(runs), "table3": table3(runs), "table4": table4(runs),
              "classifier": classifier_table(runs)}
    tables["time_to_target"], ttt = time_to_target_table(runs)
    tables["auto"] = auto_table(decisions)
    tables["verdict"], verdicts = verdict_table(runs, ttt, decisions)
    tables["noise"] = noise_table(runs, ttt)
    for name, table in tables.items():
        if name in ("table2", "table3", "table4", "time_to_target", "verdict"):
            (out / f"{name}.md").write_text(table.markdown(), encoding="utf-8")
    figs, gallery, checks = _figure_list(out, runs), _gallery(runs), _checks(runs, ttt)
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    intro = [f"{len(runs)} stage trainings from {len(run_dirs)} run directories; seeds "
             f"{', '.join(map(str, seeds)) or 'unknown'}; rebuilt by `python -m dafsl.report`."]

    # the verdict opens the report: the answer first, the evidence below it
    md = [f"# {title}", "", tables["verdict"].markdown(), *intro, ""] + [f"- {c}" for c in checks] + [""]
    body = [f"<h1>{html.escape(title)}</h1>", tables["verdict"].html(),
            *(f"<p>{html.escape(t)}</p>" for t in intro),
            "<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in checks) + "</ul>"]
    order = [("table2", 0), ("fig", 0), ("table3", 0), ("fig", 1), ("table4", 0),
             ("time_to_target", 0), ("noise", 0), ("fig", 2), ("classifier", 0), ("fig", 3), ("auto", 0)]
    for name, i in order:
        if name != "fig":
            md.append(tables[name].markdown())
            body.append(tables[name].html())
            continue
        caption, path, note = figs[i]
        md.append(f"### {caption}\n")
        body.append(f"<h3>{html.escape(caption)}</h3>")
        if path is None:
            md.append(f"{NOT_MEASURED}\n")
            body.append(f"<p>{NOT_MEASURED}</p>")
        else:
            md.append(f"![{caption}]({path.name})\n\n{note}\n")
            body.append(f"<img alt='{html.escape(caption)}' src='{_data_uri(path)}'>"
                        f"<p class='notes'>{html.escape(note)}</p>")
    imbalance = _imbalance_sections(paths, out, md, body)
    md.append("### Stage figures (GAN samples, confusion matrices, PR curves)\n")
    body.append("<h3>Stage figures (GAN samples, confusion matrices, PR curves)</h3><div class='gallery'>")
    for caption, path in gallery:
        md.append(f"![{caption}]({os.path.relpath(path, out)})  \n{caption}\n")
        body.append(f"<figure><img alt='{html.escape(caption)}' src='{_data_uri(path)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if not gallery:
        md.append(f"{NOT_MEASURED}\n")
        body.append(f"<p>{NOT_MEASURED}</p>")
    body.append("</div><h3>Run directories</h3><ul>"
                + "".join(f"<li>{html.escape(str(d))}</li>" for d in run_dirs) + "</ul>")
    md += ["### Run directories", ""] + [f"- {d}" for d in run_dirs]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    (out / "report.html").write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n", encoding="utf-8")
    result = {"run_dirs": [str(d) for d in run_dirs], "checks": checks, "time_to_target": ttt,
              "auto": decisions, "verdicts": verdicts, "figures": [str(p) for _, p, _ in figs if p is not None],
              "gallery": [str(p) for _, p in gallery], "imbalance": imbalance,
              "tables": {k: {"header": t.header, "rows": t.rows} for k, t in tables.items()}}
    atomic_write_json(out / "report.json", result)
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dafsl.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="run directories, or folders holding them")
    p.add_argument("--out", default=None, help="report folder (default: the first RUN_DIR/report)")
    p.add_argument("--stages", default=None, help="comma-separated stages to report (default all)")
    p.add_argument("--modes", default=None, help="comma-separated modes to report (default all)")
    p.add_argument("--title", default="DA-FSL mode comparison")
    return p


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    stages = args.stages.split(",") if args.stages else None
    bad = [s for s in stages or () if s not in STAGES]
    if bad:
        raise DafslError(f"--stages: unknown stage '{bad[0]}' (expected {', '.join(STAGES)})")
    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "report"
    modes = args.modes.split(",") if args.modes else None
    result = build_report(args.run_dirs, out, stages, args.title, modes)
    print(f"report: {out / 'report.html'} ({len(result['run_dirs'])} run directories)")
    for check in result["checks"]:
        print(f"  {check}")
    return result
