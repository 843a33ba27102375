"""Compare the transfer modes: every stage trained in vanilla, fixed, finetune and
pretrained with the same seed, data and epoch budget, then the report (the paper's
Tables 2-4, Figures 7-8, time to target, the ``--kd auto`` decision).

Usage:
    python pipelines/compare_modes.py [--stages detector,augmenter,classifier]
        [--modes vanilla,fixed,finetune,pretrained] [--epochs N] [--detector-epochs N]
        [--augmenter-epochs N] [--classifier-epochs N] [--seeds N (3)] [--seed-base S]
        [--eval-every-steps N (25)]
        [--config FILE] [--set KEY=VALUE ...] [--out DIR] [--upstream-mode pretrained]
        [--from RUN_DIR] [--no-auto]

Layout of --out: ``seed<S>/<mode>/`` is one run directory per seed and mode, holding
that mode's training of every requested stage; each stage runs as its own
``python -m dafsl.pipeline`` process (log in ``<stage>.log`` next to it), so one
failing run is reported as "not measured" and the others go on. ``auto/summary.json``
holds the decision ``--kd auto`` would make, ``report/`` the report
(``python -m dafsl.report OUT`` rebuilds it), which opens with the verdict per stage.

Three seeds by default: every figure is mean ± std with a 95 % t-interval, and two
modes differ only where their intervals do not overlap. The detector also evaluates
every ``--eval-every-steps`` optimiser steps on a fixed val subset
(``detector.eval_subset``), so time to vanilla's final score is interpolated between
step evaluations rather than quantised to epochs.

Same data for every mode: a later stage takes its input (the detector's boxes, the
generated faces) from the ``--upstream-mode`` run of the same seed, not from the
same mode's earlier stage, so only the stage's own transfer mode differs. Stages
before the first requested one run once per seed in the upstream mode (unless
``--from`` gives them). Seeds are the outer loop and modes the inner one, so drift
in a shared machine's speed spreads over all modes alike.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl.config import DEFAULT_CONFIG, load_config  # noqa: E402
from dafsl.errors import DafslError, exit_on_error  # noqa: E402
from dafsl.runs import atomic_write_json  # noqa: E402

STAGES = ("detector", "augmenter", "classifier")
MODES = ("vanilla", "fixed", "finetune", "pretrained")
REPO = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python pipelines/compare_modes.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default="detector,augmenter,classifier")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--epochs", type=int, default=None, help="epoch budget of every requested stage")
    for stage in STAGES:
        p.add_argument(f"--{stage}-epochs", type=int, default=None, help=f"epoch budget of the {stage}")
    p.add_argument("--seeds", type=int, default=3,
                   help="repeat every run with N seeds (default 3: mean ± std and 95%% intervals)")
    p.add_argument("--eval-every-steps", type=int, default=25,
                   help="detector: also evaluate on the val subset every N optimiser steps "
                        "(detector.eval_every_steps; 0: per epoch only; a --set of it wins)")
    p.add_argument("--seed-base", type=int, default=None, help="first seed (default: config seed)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to every run (python -m dafsl.pipeline --set)")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-<time>)")
    p.add_argument("--upstream-mode", default="pretrained", choices=MODES,
                   help="mode of the runs whose outputs feed later stages (default pretrained)")
    p.add_argument("--from", dest="from_run", default=None,
                   help="take earlier stages' outputs from this run instead of training them")
    p.add_argument("--no-auto", action="store_true", help="skip the --kd auto decision")
    p.add_argument("--title", default="DA-FSL mode comparison")
    return p


def parse_list(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise DafslError(f"{flag}: unknown value '{bad[0] if bad else text}' "
                         f"(expected a comma-separated subset of {', '.join(allowed)})")
    return [s for s in allowed if s in items]  # pipeline order


def budget_overrides(args, stages: list[str]) -> list[str]:
    out = []
    for stage in stages:
        n = getattr(args, f"{stage}_epochs") or args.epochs
        if n is not None:
            if n < 1:
                raise DafslError(f"--{stage}-epochs must be >= 1, got {n}")
            out.append(f"{stage}.epochs={n}")
    return out


def run_stage(stage: str, mode: str, seed: int, run_dir: Path, args, overrides: list[str],
              from_run: Path | None) -> dict:
    """One ``python -m dafsl.pipeline`` process; returns {ok, seconds, log, error}."""
    cmd = [sys.executable, "-m", "dafsl.pipeline", "--stage", stage, "--kd", mode,
           "--config", str(args.config), "--out", str(run_dir), "--seed", str(seed), "--quiet"]
    for item in overrides:
        cmd += ["--set", item]
    if from_run is not None:
        cmd += ["--from", str(from_run)]
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / f"{stage}.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    seconds = time.perf_counter() - t0
    error = None
    if proc.returncode != 0:
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        error = lines[-1] if lines else f"exit status {proc.returncode}"
    return {"stage": stage, "mode": mode, "seed": seed, "ok": proc.returncode == 0,
            "seconds": seconds, "log": str(log), "error": error}


def final_figure(run_dir: Path, stage: str) -> str:
    """One-line result of a finished run, for the progress log."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text()).get(stage, {})
    except (OSError, json.JSONDecodeError):
        return ""
    keys = {"detector": ("test_map50", "map50"), "augmenter": ("kid",),
            "classifier": ("test_balanced_accuracy", "balanced_accuracy")}[stage]
    parts = [f"{k} {summary[k]:.4f}" for k in keys if isinstance(summary.get(k), (int, float))][:1]
    if isinstance(summary.get("train_time_s"), (int, float)):
        parts.append(f"train {summary['train_time_s']:.1f} s")
    return ", ".join(parts)


def auto_decisions(cfg: dict, stages: list[str], out: Path) -> dict:
    """What ``--kd auto`` would choose per stage, written to ``out/auto/summary.json``."""
    from dafsl.data import denough_dlack, load_split
    from dafsl.similarity import auto_decision

    train = load_split(cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"])
    info = denough_dlack(train.class_counts(), cfg["data"]["imbalance_threshold"], origin=train.label)
    summary = {}
    for stage in stages:
        try:
            decision = auto_decision(cfg, stage, info)
        except DafslError as err:
            decision = {"source": "?", "target": "?", "mode": "not decided", "reason": str(err)}
        summary[stage] = {"auto": decision}
        print(f"[compare] --kd auto, {stage}: {decision['mode']} ({decision['reason']})")
    atomic_write_json(out / "auto" / "summary.json", summary)
    return summary


def plan_runs(stages: list[str], modes: list[str], seeds: list[int], upstream: str, out: Path,
              from_run: Path | None = None) -> list[tuple[int, str, str, Path, Path | None]]:
    """The runs in order: (seed, mode, stage, run dir, --from dir or None).

    Per seed the upstream mode runs first and trains, in its one run directory, every
    stage up to the requested ones (also the earlier stages that feed them); the other
    modes train only the requested stages and read earlier outputs from it (or from
    ``from_run``). An upstream mode that is not compared trains only what feeds others.
    """
    feeders = [] if from_run else list(STAGES[:STAGES.index(stages[0])])
    chain = feeders + stages
    plan = []
    for seed in seeds:
        upstream_dir = out / f"seed{seed}" / upstream
        for mode in sorted(set(modes) | {upstream}, key=lambda m: (m != upstream, MODES.index(m))):
            if mode not in modes:
                todo = [] if from_run else chain[:-1]
            else:
                todo = chain if mode == upstream else stages
            for stage in todo:
                src = from_run if from_run else (
                    upstream_dir if mode != upstream and stage != STAGES[0] else None)
                plan.append((seed, mode, stage, out / f"seed{seed}" / mode, src))
    return plan


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    stages = parse_list(args.stages, STAGES, "--stages")
    modes = parse_list(args.modes, MODES, "--modes")
    if args.seeds < 1:
        raise DafslError(f"--seeds must be >= 1, got {args.seeds}")
    if args.eval_every_steps < 0:
        raise DafslError(f"--eval-every-steps must be >= 0, got {args.eval_every_steps}")
    cadence = [f"detector.eval_every_steps={args.eval_every_steps}"] if "detector" in stages and \
        not any(o.startswith("detector.eval_every_steps=") for o in args.overrides) else []
    overrides = cadence + list(args.overrides) + budget_overrides(args, stages)
    cfg = load_config(args.config, overrides)  # fail fast on a bad key before any training
    base = int(cfg["seed"]) if args.seed_base is None else args.seed_base
    seeds = list(range(base, base + args.seeds))
    out = Path(args.out) if args.out else REPO / "runs" / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.from_run and not Path(args.from_run).is_dir():
        raise DafslError(f"--from {args.from_run}: run directory not found")
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_runs(stages, modes, seeds, args.upstream_mode, out,
                     Path(args.from_run) if args.from_run else None)
    print(f"[compare] {len(plan)} runs: stages {', '.join(stages)}; modes {', '.join(modes)}; "
          f"seeds {', '.join(map(str, seeds))}; out {out}")
    results, t_start = [], time.perf_counter()
    for i, (seed, mode, stage, run_dir, from_run) in enumerate(plan, 1):
        res = run_stage(stage, mode, seed, run_dir, args, overrides, from_run)
        results.append(res)
        what = final_figure(run_dir, stage) if res["ok"] else f"FAILED: {res['error']}"
        print(f"[compare] {i}/{len(plan)} seed {seed} {stage} {mode}: {res['seconds']:.0f} s "
              f"({what}); elapsed {(time.perf_counter() - t_start) / 60:.1f} min", flush=True)
    if not args.no_auto:
        auto_decisions(cfg, stages, out)
    atomic_write_json(out / "compare.json", {"stages": stages, "modes": modes, "seeds": seeds,
                                             "overrides": overrides, "config": str(args.config),
                                             "upstream_mode": args.upstream_mode, "runs": results,
                                             "elapsed_s": time.perf_counter() - t_start})
    from dafsl.report import build_report

    report = build_report([out], out / "report", stages, args.title, modes)
    failed = [r for r in results if not r["ok"]]
    print(f"[compare] report: {out / 'report' / 'report.html'}; "
          f"{len(results) - len(failed)}/{len(results)} runs ok in "
          f"{(time.perf_counter() - t_start) / 60:.1f} min")
    for check in report["checks"]:
        print(f"  {check}")
    if failed:
        raise DafslError(f"{len(failed)} run(s) failed, e.g. {failed[0]['stage']} "
                         f"{failed[0]['mode']} seed {failed[0]['seed']}: see {failed[0]['log']}")
    return report


if __name__ == "__main__":
    main()
