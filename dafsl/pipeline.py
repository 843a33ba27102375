"""``python -m dafsl.pipeline``: run one stage of DA-FSL, or the whole chain.

    python -m dafsl.pipeline --stage {detector,augmenter,classifier,all}
        --kd {vanilla,fixed,finetune,pretrained,auto}
        [--config FILE] [--set KEY=VALUE ...] [--out DIR] [--from RUN_DIR] [--resume]
        [--seed N] [--quiet]

The stages are declared in :mod:`dafsl.stages` and run by :func:`dafsl.runner.run_stage`;
this module only prepares the run directory and the data split, chains the stages and,
after ``--stage all``, writes the run's report (``report.md`` and a self-contained
``report.html``) and prints the headline figures.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dafsl import dist
from dafsl.config import DEFAULT_CONFIG, load_config
from dafsl.data import denough_dlack, load_split, save_selections
from dafsl.errors import DafslError, exit_on_error
from dafsl.log import configure, get_logger
from dafsl.manifest import load_manifest
from dafsl.runner import run_stage
from dafsl.runs import RunDir, atomic_write_json
from dafsl.stages import MODES, STAGES, StageContext, resolve_device

log = get_logger("pipeline")

#: headline figures per stage: (summary key, label, format)
HEADLINES = {
    "detector": [("test_map50", "test mAP@0.5", "{:.3f}")],
    "augmenter": [("kid", "KID", "{:.3f}"), ("kid_real_crops", "KID of the real crops", "{:.3f}")],
    "classifier": [("test_balanced_accuracy", "balanced acc.", "{:.3f}"),
                   ("test_recall_female", "female recall", "{:.3f}"),
                   ("system_map50", "system mAP@0.5", "{:.3f}"),
                   ("probe_auc", "real-vs-generated probe AUC", "{:.3f}")],
}


def prepare_data(cfg: dict, run: RunDir) -> dict:
    """Materialise the training split and compute/save the Denough/Dlack split."""
    manifest = load_manifest(cfg["data"]["manifest"])
    train = load_split(manifest, "train", cfg["data"]["cache_dir"])
    info = denough_dlack(train.class_counts(), cfg["data"]["imbalance_threshold"],
                         origin=train.label)
    info["dataset"] = train.label
    atomic_write_json(run.path / "data_split.json", info)
    save_selections(manifest, cfg["data"]["cache_dir"], run.path / "data_selection.json")
    counts = ", ".join(f"{c}={n}" for c, n in info["counts"].items())
    get_logger("data").info(f"{train.label}: {counts} -> Denough {info['denough']}, "
                            f"Dlack {info['dlack']} ({info['rule']})")
    return info


def headline_table(summary: dict, stages: list[str]) -> str:
    """A short text table of each stage's mode, training time and headline figures."""
    rows = [("stage", "mode", "train s", "figures")]
    for stage in stages:
        s = summary.get(stage) or {}
        figs = ", ".join(f"{label} {fmt.format(s[key])}" for key, label, fmt in HEADLINES.get(stage, [])
                         if isinstance(s.get(key), (int, float)))
        rows.append((stage, str(s.get("mode", "-")), f"{float(s.get('train_time_s', 0.0)):.0f}", figs))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows)


def write_run_report(run: RunDir, stages: list[str]) -> Path:
    """``report.md`` + self-contained ``report.html`` of this run, by :mod:`dafsl.report`."""
    from dafsl.report import build_report

    build_report([run.path], run.path, stages, title=f"DA-FSL run {run.path.name}")
    return run.path / "report.html"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dafsl.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    p.add_argument("--kd", choices=MODES, default="pretrained",
                   help="transfer mode applied to every stage run")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set detector.epochs=3")
    p.add_argument("--out", default=None, help="run directory (default runs/<stage>-<mode>-<time>)")
    p.add_argument("--from", dest="from_run", default=None,
                   help="reuse the outputs of an earlier run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoints")
    p.add_argument("--seed", type=int, default=None, help="shortcut for --set seed=N")
    p.add_argument("--quiet", action="store_true", help="warnings only, no progress bars")
    return p


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    configure(args.quiet)
    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = load_config(args.config, overrides)
    if args.resume and not args.out:
        raise DafslError("--resume needs --out RUN_DIR (the run to continue)")
    if args.from_run and not Path(args.from_run).is_dir():
        raise DafslError(f"--from {args.from_run}: run directory not found")
    wanted = list(cfg["stages"]["all"]) if args.stage == "all" else [args.stage]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise DafslError(f"stages.all: unknown stage '{unknown[0]}' (known: {', '.join(STAGES)})")
    device = dist.init(resolve_device(cfg["device"]))
    if dist.world_size() > 1 and not args.out:
        raise DafslError("torchrun: give --out RUN_DIR, the one directory every rank (and a "
                         "restarted worker group) writes to and resumes from")
    resume = args.resume or dist.restarted()  # torchrun --max-restarts: resume by itself
    out = Path(args.out) if args.out else RunDir.default_path(args.stage, args.kd, cfg["out_root"])
    run = RunDir(out, keep=int(cfg["checkpoints"]["keep"]), runtime=cfg["runtime"])
    run.save_config(cfg)
    ctx = StageContext(cfg=cfg, run=run, mode=args.kd, device=device,
                       split_info=dist.main_first(prepare_data, cfg, run), resume=resume,
                       from_run=Path(args.from_run) if args.from_run else None)
    for stage in wanted:
        STAGES[stage].check_data(ctx.split_info)  # before anything trains
    for stage in wanted:
        run_stage(ctx, stage, args.kd)
    summary = run.read_summary()
    if not dist.is_main():
        run.close_rank()
        return summary
    lines = [headline_table(summary, wanted)]
    if args.stage == "all" and wanted:
        lines.append(f"report: {write_run_report(run, wanted)}")
    lines.append(f"run directory: {run.path}")
    print("\n".join(lines))  # also with --quiet: scripts need the run directory
    return summary


if __name__ == "__main__":
    try:
        main()
    finally:
        dist.shutdown()
