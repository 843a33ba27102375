"""Compare the distillation methods on a many-class task: the student's test accuracy
(mean ± std over seeds) and the total training time each method costs, teacher and
assistants included; next to seed 004's figures (CNN-10 -> CNN-2 on CIFAR-100: TAKD
about 42 %, ensemble about 45 %, about DGKD's level) and seed 002's claim (DDGSD > none).

Usage:
    python pipelines/compare_distill.py [--seeds 3] [--seed-base 0] [--classes 100]
        [--epochs 20] [--chain cnn10,cnn6,cnn4,cnn2] [--methods none,hinton,...] [--temperature 4] [--alpha 0.5] [--out DIR] [--resume] [--quick] [--fake]

Data: ``--classes`` characters of the embedded ``glyphs`` set (train split), each
character's 20 drawings split by drawer 12 / 3 / 5 into train / val / test
(:mod:`dafsl.classifier.bench`); rendered into ``OUT/cache`` (nothing goes to the user's
cache). Models: plain CNNs, chain cnn10 -> cnn6 -> cnn4 -> cnn2 (teacher, two
assistants, student). Per seed the teacher is trained once and every model shared by
several methods once; a method's time is that of every model it needs, as if alone.
Nothing is selected: every model trains ``--epochs`` epochs and its last state is scored.
``--quick``: at most 10 classes, 2 epochs, chain cnn4 -> cnn3 -> cnn2 (a test run).
``--fake``: random stand-in characters instead of the glyph set (tests).
Writes OUT/compare_distill.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dafsl.classifier import bench  # noqa: E402
from dafsl.errors import DafslError, exit_on_error  # noqa: E402
from dafsl.report.runs import mean_spread  # noqa: E402
from dafsl.runs import atomic_write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUDGET_MIN = 60.0  # on an unloaded 2-core machine
LABELS = {"none": "no distillation", "hinton": "Hinton KD (teacher -> student)",
          "takd": "TAKD (each from the next larger)", "dgkd": "DGKD (from every larger model)",
          "ensemble": "ensemble pseudo-teacher (mean logits)", "ddgsd": "DDGSD (self, two views)"}
# the seeds' figures: seed 004, CNN-10 -> CNN-2 student on CIFAR-100; seed 002 claims only "> none"
SEED_FIGURES = {"takd": "≈ 42 % (seed 004)", "dgkd": "≈ 45 % (seed 004)",
                "ensemble": "≈ 45 % (seed 004)", "ddgsd": "> none (seed 002)"}
ORDERINGS = (("ensemble", "dgkd", "≈"), ("dgkd", "takd", ">"), ("takd", "hinton", ">"),
             ("hinton", "none", ">"), ("ddgsd", "none", ">"), ("ensemble", "takd", ">"))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python pipelines/compare_distill.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-base", type=int, default=0)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--epochs", type=int, default=None, help="epochs of every model (default 20)")
    p.add_argument("--methods", default=",".join(bench.METHODS))
    p.add_argument("--chain", default=None, help="teacher, assistants, student, large to small "
                   "(default cnn10,cnn6,cnn4,cnn2)")
    p.add_argument("--temperature", type=float, default=None, help="KD temperature (default 4)")
    p.add_argument("--alpha", type=float, default=None, help="KD soft-term weight (default 0.5)")
    p.add_argument("--out", default=None, help="output folder (default runs/distill-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the runs in --out")
    p.add_argument("--quick", action="store_true", help="a test run in seconds")
    p.add_argument("--fake", action="store_true", help="random stand-in characters (tests)")
    return p


def load_data(args, out: Path) -> bench.BenchData:
    if args.fake:
        return bench.split_by_drawer(bench.fake_characters(args.classes), args.classes)
    from dafsl.fewshot.data import load_characters

    chars = load_characters("glyphs", "train", image_size=28, cache_dir=out / "cache")
    return bench.split_by_drawer(chars, args.classes)


def orderings(results: dict[str, list[dict]]) -> list[dict]:
    """Each claimed ordering: the paired per-seed difference of test accuracy, mean ± std."""
    out = []
    for a, b, rel in ORDERINGS:
        if a not in results or b not in results:
            continue
        acc = {m: {r["seed"]: r["test_accuracy"] for r in results[m]} for m in (a, b)}
        diffs = [acc[a][s] - acc[b][s] for s in acc[a] if s in acc[b]]
        st = mean_spread(diffs)
        if rel == "≈":  # within one std of the seeds' paired differences, or under 1 point
            holds = st["n"] > 0 and abs(st["mean"]) <= max(st["std"], 0.01)
        else:
            holds = st["n"] > 0 and st["mean"] > 0 and all(d > 0 for d in diffs)
        out.append({"claim": f"{a} {rel} {b}", "diff_mean": st["mean"], "diff_std": st["std"],
                    "diffs": diffs, "holds": bool(holds)})
    return out


def pct(st: dict) -> str:
    return "not measured" if not st["n"] else f"{100 * st['mean']:.1f} ± {100 * st['std']:.1f}"


def markdown(data: dict) -> str:
    lines = [f"Command: `{data['command']}`", "",
             f"Task: {data['task']}; seeds {', '.join(map(str, data['seeds']))}; "
             f"measured {data['elapsed_s'] / 60:.1f} min in all on {data['machine']}.", "",
             "| method | student test acc. % | val acc. % | total training time s (models) | seed's figure |",
             "|---|---|---|---|---|"]
    for row in data["rows"]:
        lines.append(f"| {LABELS.get(row['method'], row['method'])} | {pct(row['test'])} | {pct(row['val'])} "
                     f"| {row['time']['mean']:.0f} ± {row['time']['std']:.0f} ({row['n_models']}) "
                     f"| {SEED_FIGURES.get(row['method'], '')} |")
    lines += ["", "Every model trained (each once per seed; test accuracy of that model itself):", "",
              "| model | trained with | test acc. % | training time s |", "|---|---|---|---|"]
    for (model, how), (accs, times) in models_table(data).items():
        lines.append(f"| {model} | {how} | {pct(mean_spread(accs))} | {np.mean(times):.0f} |")
    lines += ["", "Orderings (paired per-seed difference of test accuracy, points; a '>' holds "
              "when every seed agrees, '≈' when |mean| ≤ max(std, 1 point)):", ""]
    for o in data["orderings"]:
        diffs = ", ".join(f"{100 * d:+.1f}" for d in o["diffs"])
        lines.append(f"- {o['claim']}: {100 * o['diff_mean']:+.1f} ± {100 * o['diff_std']:.1f} "
                     f"(seeds: {diffs}) → **{'holds' if o['holds'] else 'does not hold'}**")
    return "\n".join(lines) + "\n"


def models_table(data: dict) -> dict[tuple[str, str], tuple[list, list]]:
    """{(model, how it was trained): ([test accuracy per seed], [time per seed])}, each
    model of each seed once (several methods share one)."""
    per_seed: dict[tuple[str, str, int], dict] = {}
    for row in data["rows"]:
        for run in row["runs"]:
            for m in run["models"]:
                teachers = [t.split("-")[0] for t in m["teachers"]]
                how = m["method"] if not teachers else \
                    f"{'kd' if len(teachers) == 1 else m['method']} from {', '.join(teachers)}"
                per_seed[(m["model"], how, run["seed"])] = m
    out: dict[tuple[str, str], tuple[list, list]] = {}
    for (model, how, _), m in per_seed.items():
        accs, times = out.setdefault((model, how), ([], []))
        accs.append(m["test_accuracy"])
        times.append(m["train_time_s"])
    return out


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for row in data["rows"]:
        if not row["test"]["n"]:
            continue
        ax.errorbar(row["time"]["mean"], 100 * row["test"]["mean"], xerr=row["time"]["std"],
                    yerr=100 * row["test"]["std"], fmt="o", capsize=3, label=LABELS.get(row["method"]))
    ax.set_xlabel("total training time per seed, s (teacher and assistants included)")
    ax.set_ylabel(f"student ({data['student']}) test accuracy, %")
    ax.set_title(f"Distillation on {data['task_short']}: mean ± std over {len(data['seeds'])} seeds",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarise(results: dict[str, list[dict]], data: dict) -> None:
    data["rows"] = [{"method": m, "runs": rs,
                     "test": mean_spread([r["test_accuracy"] for r in rs]),
                     "val": mean_spread([r["val_accuracy"] for r in rs]),
                     "time": mean_spread([r["train_time_s"] for r in rs]),
                     "n_models": len(rs[0]["models"]) if rs else 0}
                    for m, rs in results.items() if rs]
    data["orderings"] = orderings(results)


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args_parser().parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in bench.METHODS]
    if bad:
        raise DafslError(f"--methods: unknown method '{bad[0]}' (expected {', '.join(bench.METHODS)})")
    if args.seeds < 1:
        raise DafslError(f"--seeds must be >= 1, got {args.seeds}")
    cfg = bench.BenchConfig()
    if args.quick:
        cfg = bench.BenchConfig(chain=("cnn4", "cnn3", "cnn2"), epochs=2)
        args.classes = min(args.classes, 10)
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.chain:
        chain = tuple(m for m in args.chain.split(",") if m)
        if len(chain) < 2 or not all(bench.is_plain_cnn(m) for m in chain):
            raise DafslError(f"--chain: expected at least two of cnn2..cnn10, large to small, got {args.chain!r}")
        cfg.chain = chain
    if args.temperature is not None:
        cfg.temperature = args.temperature
    if args.alpha is not None:
        cfg.alpha = args.alpha
    torch.set_num_threads(1)
    out = Path(args.out) if args.out else REPO / "runs" / f"distill-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.glob("seed*")) and not args.resume:
        raise DafslError(f"--out {out}: holds runs already; pass --resume to continue them")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    d = load_data(args, out)
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    data = {"title": "Distillation methods, many-class benchmark",
            "command": "python pipelines/compare_distill.py " + shlex.join(argv),
            "task": (f"{len(d.classes)} {'fake' if args.fake else 'glyphs'} characters, "
                     f"{len(d.train)}/{len(d.val)}/{len(d.test)} train/val/test drawings, "
                     f"chain {' -> '.join(cfg.chain)}, {cfg.epochs} epochs per model"),
            "task_short": f"{len(d.classes)} glyph classes", "student": cfg.chain[-1],
            "config": {k: v for k, v in vars(cfg).items()}, "seeds": seeds,
            "machine": "2 CPU cores (shared), 1 torch thread" if not args.quick else "quick",
            "data_time_s": time.perf_counter() - t0}
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in seeds:
        print(f"[distill] seed {seed}: {', '.join(methods)}", flush=True)
        for r in bench.run_seed(d, cfg, seed, out / f"seed{seed}", methods, resume=args.resume,
                                log=lambda s: print(f"[distill] {s}", flush=True)):
            results[r["method"]].append(r)
        data["elapsed_s"] = time.perf_counter() - t0
        summarise(results, data)
        write(out, data)
        print(f"[distill] seed {seed} done; elapsed {data['elapsed_s'] / 60:.1f} min", flush=True)
    data["elapsed_s"] = time.perf_counter() - t0
    summarise(results, data)
    write(out, data)
    print(markdown(data))
    print(f"[distill] {data['elapsed_s'] / 60:.1f} min in all; wrote {out / 'compare_distill.md'}, "
          f"{out / 'compare_distill.png'}")
    return data


def write(out: Path, data: dict) -> None:
    atomic_write_json(out / "compare_distill.json", json.loads(json.dumps(data, default=_plain)))
    (out / "compare_distill.md").write_text(markdown(data), encoding="utf-8")
    plot(data, out / "compare_distill.png")


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return str(v)


if __name__ == "__main__":
    main()
