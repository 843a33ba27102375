"""The report's tables, each next to the paper's figures (seed 001; ../shared/mission.md)."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Sequence

from dafsl.report.runs import (MODES, NOT_MEASURED, STAGES, TARGETS, StageRun, as_number,
                               by_mode, fmt, fmt_ci, mean_spread, summary_value,
                               time_to_target_rows)

PAPER_TABLE2 = {"vanilla": 22.38, "fixed": 32.32, "finetune": 31.87, "pretrained": 43.22}
PAPER_TABLE3 = {"vanilla": 34.32, "fixed": 38.32, "finetune": 13.53, "pretrained": 4.32}
PAPER_TABLE4 = [("Faster R-CNN (BDRP)", "3d 1h 15m", "1d 23h 53m", 35),
                ("Generator", "4d 12h 48m", "4d 5h 15m", 7),
                ("Discriminator", "2d 18h 22m", "2d 16h 4m", 3)]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        cell = lambda s: str(s).replace("|", "/")  # noqa: E731
        lines = [f"### {self.title}", "", "| " + " | ".join(map(cell, self.header)) + " |",
                 "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(map(cell, r)) + " |" for r in self.rows]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                       for r in self.rows)
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<h3>{html.escape(self.title)}</h3><table><tr>{head}</tr>{body}</table>"
                + (f"<ul class='notes'>{notes}</ul>" if notes else ""))


def _stat(group: Sequence[StageRun], value) -> dict:
    return mean_spread([value(r) for r in group])


def table2(runs: Sequence[StageRun]) -> Table:
    groups = by_mode(runs, "detector")
    rows = []
    for mode in MODES:
        g = groups.get(mode, [])
        rows.append([mode, fmt(_stat(g, lambda r: r.final("map50")), 2, 100),
                     fmt(_stat(g, lambda r: summary_value(r, "map50")), 2, 100),
                     fmt(_stat(g, lambda r: r.final("ap50_coco")), 2, 100),
                     fmt(_stat(g, lambda r: len(r.records)), 0), f"{PAPER_TABLE2[mode]:.2f}"])
    return Table("Table 2: BDRP detector mAP@0.5 (%) per mode at the end of the budget",
                 ["mode", "ours: val mAP@0.5", "ours: test mAP@0.5", "ours: val AP50 (COCO)",
                  "epochs", "paper Table 2 (100 epochs)"], rows,
                 ["mAP@0.5 is the 11-point VOC07 mean AP at IoU 0.5 (seed 001, eq. 2); "
                  "mean ± sample std over seeds."])


def table3(runs: Sequence[StageRun]) -> Table:
    groups = by_mode(runs, "augmenter")
    rows = []
    for mode in MODES:
        g = groups.get(mode, [])
        rows.append([mode, fmt(_stat(g, lambda r: r.final("loss_g"))),
                     fmt(_stat(g, lambda r: r.final("loss_d"))),
                     fmt(_stat(g, lambda r: summary_value(r, "kid")), 4),
                     fmt(_stat(g, lambda r: summary_value(r, "precision"))),
                     fmt(_stat(g, lambda r: summary_value(r, "recall"))),
                     fmt(_stat(g, lambda r: len(r.records)), 0), f"{PAPER_TABLE3[mode]:.2f}"])
    return Table("Table 3: GAN generator and discriminator cross-entropy loss per mode (last epoch)",
                 ["mode", "ours: G loss", "ours: D loss", "ours: KID", "precision", "recall",
                  "epochs", "paper Table 3 (1,000 epochs)"], rows,
                 ["Losses are the mean per step of the last epoch; KID/precision/recall are the "
                  "stage's final quality figures (summary.json).",
                  "The paper reports one GAN cross-entropy figure per mode without saying how "
                  "G and D losses combine; compare trends, not values."])


def classifier_table(runs: Sequence[StageRun]) -> Table:
    groups = by_mode(runs, "classifier")
    rows = []
    for mode in MODES:
        g = groups.get(mode, [])
        rows.append([mode] + [fmt(_stat(g, lambda r, k=k: summary_value(r, k)), 2, 100)
                              for k in ("balanced_accuracy", "f1_macro", "roc_auc", "system_map50",
                                        "probe_auc")]
                    + [fmt(_stat(g, lambda r: len(r.records)), 0)])
    return Table("Classifier: test figures per mode (%; the paper gives none per mode)",
                 ["mode", "balanced accuracy", "macro F1", "ROC-AUC", "system mAP@0.5 (male/female)",
                  "real-vs-generated probe AUC", "epochs"], rows,
                 ["System mAP@0.5: detector + classifier scored as a two-class detector "
                  "(11-point AP at IoU 0.5).",
                  "Probe AUC: a classifier of the same architecture and budget telling held-out real "
                  "Dlack-class crops from the generated faces, cross-validated; 50 = the generated "
                  "faces carry no 'generated' signal, 100 = every one is recognisable."])


def _reduction(runs: Sequence[StageRun], vanilla: dict) -> dict:
    return mean_spread([100.0 * (vanilla[r.seed].train_time_s - r.train_time_s) / vanilla[r.seed].train_time_s
                        for r in runs if r.seed in vanilla and r.train_time_s is not None
                        and vanilla[r.seed].train_time_s])


def table4(runs: Sequence[StageRun]) -> Table:
    paper = {"detector": f"{PAPER_TABLE4[0][1]} → {PAPER_TABLE4[0][2]} (−{PAPER_TABLE4[0][3]}%)",
             "augmenter": " ; ".join(f"{n}: {a} → {b} (−{p}%)" for n, a, b, p in PAPER_TABLE4[1:]),
             "classifier": "not reported"}
    names = {"detector": "BDRP detector", "augmenter": "GAN (G + D)", "classifier": "classifier"}
    rows = []
    for stage in STAGES:
        groups = by_mode(runs, stage)
        vanilla = {r.seed: r for r in groups.get("vanilla", [])}
        row = [names[stage], fmt(_stat(groups.get("vanilla", []), lambda r: r.train_time_s), 1, unit=" s")]
        for mode in MODES[1:]:
            g = groups.get(mode, [])
            t = fmt(_stat(g, lambda r: r.train_time_s), 1, unit=" s")
            red = _reduction(g, vanilla)
            row.append(t if not red["n"] else f"{t} ({fmt(red, 1, unit='%')} reduction)")
        rows.append(row + [paper[stage]])
    return Table("Table 4: training wall-clock time per module, original (vanilla) vs each transfer mode",
                 ["module", "vanilla (original)", "fixed", "finetune", "pretrained", "paper Table 4"],
                 rows, ["Time = the engine's cumulative training time for the same epoch budget "
                        "(evaluation and zoo builds excluded); reduction = (vanilla − mode) / vanilla "
                        "per seed, then mean ± std; negative = slower than vanilla.",
                        "Our G and D train in one step loop, so the GAN has one time; the paper "
                        "times them separately."])


def time_to_target_table(runs: Sequence[StageRun]) -> tuple[Table, list[dict]]:
    rows, raw = [], []
    for stage in STAGES:
        t = TARGETS[stage]
        scale, digits = (100, 2) if t.percent else (1, 4)
        found = time_to_target_rows(runs, stage)
        raw += found
        if not found:
            rows.append([stage, "-", NOT_MEASURED, "", "", "", ""])
            continue
        for r in found:
            reached = r["compared"] - r["never"]
            where = " (val subset, step evaluations)" if r["resolution"].startswith("step") else ""
            rows.append([stage, r["mode"], f"{t.label}{where}: {fmt(r['target'], digits, scale)}",
                         "never" if r["compared"] and not reached else fmt(r["time_s"], 1, unit=" s"),
                         fmt_ci(r["fraction_of_vanilla"], 1, 100, "%") if reached else "never",
                         fmt(r["epochs"], 1) if reached else "never",
                         f"{reached}/{r['compared']}" if r["compared"] else NOT_MEASURED])
    return Table("Time to target: wall-clock time to first reach vanilla's final score (same seed)",
                 ["stage", "mode", "target (vanilla final)", "time to reach", "% of vanilla's time",
                  "epochs", "seeds reaching"], rows,
                 ["'never' = the mode did not reach the target within the budget.",
                  "The crossing is interpolated linearly in training time between the two "
                  "evaluations that bracket the target: the step evaluations (eval_every_steps, "
                  "a fixed val subset, target = vanilla's last one) when every run logged them, "
                  "else the per-epoch ones. % of vanilla: mean ± std [95 % t-interval] (n seeds).",
                  "Paper, closest figure (Table 4, total time with transfer vs original): "
                  "Faster R-CNN 65%, generator 93%, discriminator 97%."]), raw


def auto_table(decisions: Sequence[dict]) -> Table:
    rows, seen = [], set()
    for d in decisions:
        key = (d["stage"], d.get("source"), d.get("target"), d.get("p"))
        if key in seen:
            continue
        seen.add(key)
        sim = fmt(as_number(d.get("similarity")), 3)
        interval = d.get("similarity_interval")  # bootstrap over the target's objects
        if isinstance(interval, list) and len(interval) == 2:
            sim += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
        rows.append([d["stage"], d.get("source", "?"), d.get("target", "?"), d.get("p", "?"),
                     fmt(as_number(d.get("distance")), 4), sim,
                     d.get("target_size", "?"), d.get("mode", "?"), d.get("reason", "")])
    if not rows:
        rows = [["-", NOT_MEASURED, "", "", "", "", "", "", ""]]
    return Table("--kd auto: the decision per stage (seed 001, eq. 1)",
                 ["stage", "source", "target", "p", "distance", "similarity [interval]", "target size",
                  "mode", "reason"], rows,
                 ["[interval]: the bootstrap interval over the target's objects "
                  "(similarity.confidence); a mode is chosen only when the whole interval is in its "
                  "range, else the reason says 'undecided within noise' and gives the fallback."])
