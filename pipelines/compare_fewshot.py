"""Seed 000's table on the embedded character set: Siamese, Matching and Prototypical
networks, each as the teacher (labels only) and as the self-distilled student
(``L_label + alpha * KL(teacher || student)``), over 3 seeds; then the alpha sweep and
the distillation-only ablation on one method.

Usage:
    python pipelines/compare_fewshot.py [--seeds 3] [--seed-base 0] [--methods siamese,matching,protonet]
        [--sweep-method protonet] [--alphas 0.5,1.0] [--quick] [--set KEY=VALUE ...] [--out DIR]

Every model is trained on 1-shot 5-way episodes (``--set`` changes that) and tested on
the same 1,000 fixed test episodes in 1-shot and 5-shot 5-way (``fewshot.test_shots``):
one training serves both rows, to fit the budget. The student starts from the teacher's
random initialisation and sees the teacher's episodes, so the KL term is the only
difference between them; alpha = 0 therefore gives the teacher exactly (a test checks
it) and its row repeats the teacher's figures. The sweep and the ablation reuse each
seed's trained teacher (its checkpoint copied into the run, then resumed).

Figures: test accuracy, mean over seeds ± 1.96 std / sqrt(seeds); the student - teacher
difference per seed (paired), mean ± the same interval; "within noise" when the two
intervals overlap. Training time is the sum of the epoch times (evaluation excluded).

Writes OUT/compare_fewshot.{json,md,png}; OUT/<group>/<method>/seed<S> are the run
directories (python -m dafsl.fewshot layout). ``--quick``: the tiny character set and a
few episodes, a test run in a minute.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl.config import load_config  # noqa: E402
from dafsl.config_schema import FEWSHOT_METHODS  # noqa: E402
from dafsl.errors import DafslError, exit_on_error  # noqa: E402
from dafsl.log import configure  # noqa: E402
from dafsl.runs import atomic_write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# seed 000, table 1: Omniglot 1-shot 5-way, baseline -> self-distilled (%)
SEED_TABLE = {"siamese": (92.3, 93.3), "matching": (94.2, 94.8), "protonet": (98.3, 98.4)}
NAMES = {"siamese": "Siamese", "matching": "Matching", "protonet": "Prototypical"}
# the budget of the full run (~25 min on the shared 2-core CPU, docs/fewshot.md)
FULL = ["fewshot.width=32", "fewshot.train_query=5", "fewshot.epochs=4",
        "fewshot.episodes_per_epoch=350", "fewshot.val_episodes=200", "fewshot.test_episodes=1000",
        "fewshot.lr=0.003", "fewshot.test_shots=[5]"]
QUICK = ["fewshot.manifest=glyphs_tiny", "fewshot.image_size=16", "fewshot.width=8",
         "fewshot.train_query=3", "fewshot.query=5", "fewshot.epochs=1", "fewshot.episodes_per_epoch=3",
         "fewshot.val_episodes=10", "fewshot.test_episodes=20", "fewshot.test_shots=[5]"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python pipelines/compare_fewshot.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-base", type=int, default=0)
    p.add_argument("--methods", default=",".join(FEWSHOT_METHODS))
    p.add_argument("--sweep-method", default="protonet", help="method of the alpha sweep and ablation")
    p.add_argument("--alphas", default="0.5,1.0", help="sweep values besides 0 and the seed's")
    p.add_argument("--quick", action="store_true", help="tiny set, a few episodes: a test run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="output folder (default runs/fewshot-<time>)")
    return p


def stat(values: list[float]) -> dict:
    """{mean, ci95, n}: the interval is 1.96 std / sqrt(n) (std with n - 1; 0 for one value)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "ci95": 1.96 * std / math.sqrt(n), "n": n}


def verdict(teacher: dict, student: dict) -> str:
    """"helped" / "hurt" when the intervals are disjoint, else "within noise"."""
    if teacher["mean"] is None or student["mean"] is None:
        return "not measured"
    lo_s, hi_s = student["mean"] - student["ci95"], student["mean"] + student["ci95"]
    lo_t, hi_t = teacher["mean"] - teacher["ci95"], teacher["mean"] + teacher["ci95"]
    if lo_s > hi_t:
        return "helped"
    if hi_s < lo_t:
        return "hurt"
    return "within noise"


def pct(s: dict) -> str:
    return "n/a" if s["mean"] is None else f"{100 * s['mean']:.1f} ± {100 * s['ci95']:.1f}"


def run_one(cfg_overrides: list[str], out: Path, teacher_from: Path | None = None) -> dict:
    """One python -m dafsl.fewshot run in-process; ``teacher_from``: reuse that run's
    teacher (its checkpoint and metrics copied, then resumed: only the student trains)."""
    from dafsl.fewshot.run import run_fewshot

    cfg = load_config(None, cfg_overrides)
    resume = teacher_from is not None
    if resume:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.copy2(teacher_from / "checkpoints" / "fewshot_last.pt", out / "checkpoints")
        shutil.copy2(teacher_from / "metrics.jsonl", out / "metrics.jsonl")
    return run_fewshot(cfg, out, resume=resume)


def collect(runs: list[dict], role: str, shot: int, base_shot: int) -> dict:
    key = f"{role}_test_accuracy" if shot == base_shot else f"{role}_test_{shot}shot_accuracy"
    return stat([r[key] for r in runs if key in r])


def markdown(data: dict) -> str:
    lines = [f"## {data['title']}", "", f"Command: `{data['command']}`  ", f"Seeds: {data['seeds']}; "
             f"{data['test_episodes']} test episodes per model and shot; machine: {data['machine']}; "
             f"total {data['elapsed_s'] / 60:.1f} min.", "",
             "| method | test | teacher (%) | student (%) | student - teacher (pp, paired) | "
             "self-distillation | train s teacher / student | seed 000, Omniglot 1-shot (%) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in data["main"]:
        seed = SEED_TABLE[row["method"]]
        seed_txt = f"{seed[0]} -> {seed[1]}" if row["shot"] == 1 else "-"
        d = row["delta"]
        delta = "n/a" if d["mean"] is None else f"{100 * d['mean']:+.1f} ± {100 * d['ci95']:.1f}"
        lines.append(f"| {NAMES[row['method']]} | {row['shot']}-shot {row['way']}-way | "
                     f"{pct(row['teacher'])} | {pct(row['student'])} | {delta} | {row['verdict']} | "
                     f"{row['teacher_time_s']:.0f} / {row['student_time_s']:.0f} | {seed_txt} |")
    sw = data.get("sweep")
    if sw:
        lines += ["", f"### alpha sweep and distillation-only ablation ({NAMES[sw['method']]}, "
                      f"{sw['shot']}-shot {sw['way']}-way; seed 000 swept its Siamese network)", "",
                  "| student | test (%) | vs teacher |", "|---|---|---|"]
        for r in sw["rows"]:
            lines.append(f"| {r['label']} | {pct(r['acc'])} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = data["main"]
    xs = range(len(rows))
    for off, role, colour in ((-0.2, "teacher", "tab:orange"), (0.2, "student", "tab:blue")):
        axes[0].bar([x + off for x in xs], [100 * (r[role]["mean"] or 0) for r in rows], 0.4,
                    yerr=[100 * (r[role]["ci95"] or 0) for r in rows], color=colour, capsize=3,
                    label="teacher (labels only)" if role == "teacher" else "self-distilled student")
    axes[0].set_xticks(list(xs), [f"{NAMES[r['method']]}\n{r['shot']}-shot" for r in rows], fontsize=8)
    axes[0].set_ylabel("test accuracy (%), 5-way")
    lo = min([100 * r["teacher"]["mean"] for r in rows if r["teacher"]["mean"] is not None] or [0])
    axes[0].set_ylim(max(0, lo - 15), 100)
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"teacher vs student, mean ± 95 % CI over {len(data['seeds'])} seeds", fontsize=9)
    sw = data.get("sweep")
    if sw:
        pts = [r for r in sw["rows"] if r["alpha"] is not None and r["acc"]["mean"] is not None]
        axes[1].errorbar([r["alpha"] for r in pts], [100 * r["acc"]["mean"] for r in pts],
                         yerr=[100 * r["acc"]["ci95"] for r in pts], marker="o", capsize=3,
                         label="L_label + alpha KL")
        only = [r for r in sw["rows"] if r["alpha"] is None and r["acc"]["mean"] is not None]
        for r in only:
            axes[1].axhline(100 * r["acc"]["mean"], color="tab:red", ls="--", label=r["label"])
        axes[1].set_xlabel("alpha")
        axes[1].set_ylabel("test accuracy (%)")
        axes[1].set_title(f"alpha sweep, {NAMES[sw['method']]} {sw['shot']}-shot", fontsize=9)
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, data: dict) -> None:
    atomic_write_json(out / "compare_fewshot.json", data)
    (out / "compare_fewshot.md").write_text(markdown(data), encoding="utf-8")
    plot(data, out / "compare_fewshot.png")


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args_parser().parse_args(argv)
    configure(quiet=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods + [args.sweep_method] if m not in FEWSHOT_METHODS]
    if bad:
        raise DafslError(f"--methods: unknown method '{bad[0]}' (expected {', '.join(FEWSHOT_METHODS)})")
    if args.seeds < 1:
        raise DafslError(f"--seeds must be >= 1, got {args.seeds}")
    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError:
        raise DafslError(f"--alphas: expected comma-separated numbers, got {args.alphas!r}") from None
    base = (QUICK if args.quick else FULL) + list(args.overrides)
    cfg = load_config(None, base)  # a bad --set fails here, before any training
    f = cfg["fewshot"]
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    out = Path(args.out) if args.out else REPO / "runs" / f"fewshot-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    shots = [int(f["shot"]), *[int(s) for s in f["test_shots"] if int(s) != int(f["shot"])]]
    data = {"title": "Self-distillation of few-shot learners (seed 000) on the embedded character set",
            "command": "python pipelines/compare_fewshot.py " + shlex.join(argv), "seeds": seeds,
            "overrides": base, "manifest": f["manifest"], "test_episodes": int(f["test_episodes"]),
            "machine": "quick (tiny set)" if args.quick else "2 shared CPU cores, 1 torch thread",
            "main": [], "sweep": None, "elapsed_s": 0.0}
    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {}

    def log(msg: str) -> None:
        print(f"[fewshot] {(time.perf_counter() - t0) / 60:5.1f} min  {msg}", flush=True)

    for seed in seeds:  # seeds outer: drift in the machine's speed spreads over all methods
        for m in methods:
            s = run_one(base + [f"fewshot.method={m}", "fewshot.distill=self", f"seed={seed}"],
                        out / "main" / m / f"seed{seed}")
            runs.setdefault(m, []).append(s)
            log(f"{m} seed {seed}: teacher {s['teacher_test_accuracy']:.4f}, "
                f"student {s['student_test_accuracy']:.4f}")
    for m in methods:
        for shot in shots:
            key = "" if shot == shots[0] else f"{shot}shot_"
            pairs = [(r[f"teacher_test_{key}accuracy"], r[f"student_test_{key}accuracy"]) for r in runs[m]]
            t, s = stat([p[0] for p in pairs]), stat([p[1] for p in pairs])
            data["main"].append({
                "method": m, "shot": shot, "way": int(f["way"]), "teacher": t, "student": s,
                "delta": stat([b - a for a, b in pairs]), "verdict": verdict(t, s),
                "alpha": float(f["alpha"][m]),
                "teacher_time_s": stat([r["teacher_train_time_s"] for r in runs[m]])["mean"],
                "student_time_s": stat([r["student_train_time_s"] for r in runs[m]])["mean"]})
    data["elapsed_s"] = time.perf_counter() - t0
    write(out, data)

    sm = args.sweep_method
    if sm in runs:
        seed_alpha = float(f["alpha"][sm])
        teacher = stat([r["teacher_test_accuracy"] for r in runs[sm]])
        rows = [{"label": "alpha 0 (= the teacher: same initialisation and episodes)", "alpha": 0.0,
                 "acc": teacher, "verdict": "-"},
                {"label": f"alpha {seed_alpha} (the seed's)", "alpha": seed_alpha,
                 "acc": stat([r["student_test_accuracy"] for r in runs[sm]])}]
        variants = [(f"alpha {a}", a, [f"fewshot.alpha.{sm}={a}"]) for a in alphas if a != seed_alpha]
        variants.append((f"distillation only (no label term, alpha {seed_alpha})", None,
                         ["fewshot.label_weight=0"]))
        for label, alpha, extra in variants:
            accs = []
            for seed in seeds:
                name = "distill_only" if alpha is None else f"alpha{alpha}"
                s = run_one(base + [f"fewshot.method={sm}", "fewshot.distill=self", f"seed={seed}", *extra],
                            out / name / sm / f"seed{seed}", teacher_from=out / "main" / sm / f"seed{seed}")
                accs.append(s["student_test_accuracy"])
                log(f"{sm} {label} seed {seed}: student {s['student_test_accuracy']:.4f}")
            rows.append({"label": label, "alpha": alpha, "acc": stat(accs)})
        for r in rows[1:]:
            r["verdict"] = verdict(teacher, r["acc"])
        data["sweep"] = {"method": sm, "shot": int(f["shot"]), "way": int(f["way"]), "rows": rows}
    data["elapsed_s"] = time.perf_counter() - t0
    write(out, data)
    print(markdown(data))
    print(f"Wrote {out / 'compare_fewshot.md'}, {out / 'compare_fewshot.png'} "
          f"({data['elapsed_s'] / 60:.1f} min)")
    return data


if __name__ == "__main__":
    main()
