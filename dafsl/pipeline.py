"""``python -m dafsl.pipeline``: run one stage of DA-FSL, or the whole chain.

    python -m dafsl.pipeline --stage {detector,augmenter,classifier,all}
        --kd {vanilla,fixed,finetune,pretrained,auto}
        [--config FILE] [--set KEY=VALUE ...] [--out DIR] [--resume] [--seed N] [--quiet]

Each stage lives in ``dafsl/<stage>/`` and exposes ``train.run(ctx) -> dict``; the
pipeline prepares the run directory, the data split and the mode, then hands over.
Stages pass outputs to the next one through the run directory.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dafsl.config import DEFAULT_CONFIG, load_config
from dafsl.data import denough_dlack, load_split
from dafsl.errors import DafslError, exit_on_error
from dafsl.manifest import load_manifest
from dafsl.runs import RunDir, atomic_write_json, seed_everything

STAGES = ("detector", "augmenter", "classifier")
MODES = ("vanilla", "fixed", "finetune", "pretrained", "auto")


@dataclass
class StageContext:
    """Everything a stage's ``run`` needs; ``outputs`` collects what earlier stages produced."""

    cfg: dict
    run: RunDir
    mode: str
    device: torch.device
    split_info: dict
    resume: bool = False
    quiet: bool = False
    outputs: dict = field(default_factory=dict)
    from_run: Path | None = None

    def stage_output(self, stage: str) -> dict:
        """Outputs of an earlier stage: from this invocation, else ``--from RUN_DIR``.

        A stage records its outputs in ``<run>/<stage>/outputs.json`` (paths relative to
        the run directory); this returns that dict with paths made absolute.
        """
        if stage in self.outputs:
            return self.outputs[stage]
        for base in (self.from_run, self.run.path):
            if base is None:
                continue
            path = Path(base) / stage / "outputs.json"
            if path.is_file():
                return read_outputs(path)
        raise DafslError(f"{self.run.path}: no {stage} outputs found; run the {stage} stage "
                         f"first or pass --from RUN_DIR of a run that has them")


def write_outputs(run: RunDir, stage: str, outputs: dict) -> dict:
    """Record a stage's outputs (paths under the run dir) in ``<run>/<stage>/outputs.json``."""
    rel = {k: (str(Path(v).resolve().relative_to(run.path.resolve())) if isinstance(v, Path) else v)
           for k, v in outputs.items()}
    atomic_write_json(run.stage_dir(stage) / "outputs.json", rel)
    return read_outputs(run.stage_dir(stage) / "outputs.json")


def read_outputs(path: Path) -> dict:
    import json

    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError:
        raise DafslError(f"{path}: invalid JSON") from None
    base = Path(path).parent.parent
    return {k: (base / v if isinstance(v, str) and (base / v).exists() else v)
            for k, v in raw.items()}


def stage_available(stage: str) -> bool:
    try:
        return importlib.util.find_spec(f"dafsl.{stage}.train") is not None
    except ModuleNotFoundError:  # the stage package itself does not exist yet
        return False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DafslError("device: cuda requested but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise DafslError(f"device: expected auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def prepare_data(cfg: dict, run: RunDir, quiet: bool) -> dict:
    """Materialise the training split and compute/save the Denough/Dlack split."""
    manifest = load_manifest(cfg["data"]["manifest"])
    train = load_split(manifest, "train", cfg["data"]["cache_dir"], quiet=quiet)
    info = denough_dlack(train.class_counts(), cfg["data"]["imbalance_threshold"],
                         origin=train.label)
    info["dataset"] = train.label
    atomic_write_json(run.path / "data_split.json", info)
    if not quiet:
        counts = ", ".join(f"{c}={n}" for c, n in info["counts"].items())
        print(f"[data] {train.label}: {counts} -> Denough {info['denough']}, "
              f"Dlack {info['dlack']} ({info['rule']})")
    return info


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
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = load_config(args.config, overrides)
    if args.resume and not args.out:
        raise DafslError("--resume needs --out RUN_DIR (the run to continue)")
    out = Path(args.out) if args.out else RunDir.default_path(args.stage, args.kd, cfg["out_root"])
    run = RunDir(out)
    run.save_config(cfg)
    seed_everything(int(cfg["seed"]))
    device = resolve_device(cfg["device"])

    wanted = list(cfg["stages"]["all"]) if args.stage == "all" else [args.stage]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise DafslError(f"stages.all: unknown stage '{unknown[0]}'")
    missing = [s for s in wanted if not stage_available(s)]
    if missing and args.stage != "all":
        raise DafslError(f"stage '{args.stage}' is not built yet")
    if missing:
        print(f"not built yet, skipped: {', '.join(missing)}")

    ctx = StageContext(cfg=cfg, run=run, mode=args.kd, device=device,
                       split_info=prepare_data(cfg, run, args.quiet),
                       resume=args.resume, quiet=args.quiet)
    if args.from_run:
        if not Path(args.from_run).is_dir():
            raise DafslError(f"--from {args.from_run}: run directory not found")
        ctx.from_run = Path(args.from_run)
    for stage in wanted:
        if stage in missing:
            continue
        if args.kd == "auto":  # seed 001, eq. 1: one concrete mode per stage
            from dafsl.similarity import auto_mode

            ctx.mode, _ = auto_mode(ctx, stage)
        module = importlib.import_module(f"dafsl.{stage}.train")
        # each stage starts from the seed, so a stage run alone (--from) repeats exactly
        # what it did inside the chain, whatever earlier stages consumed
        seed_everything(int(cfg["seed"]))
        ctx.outputs[stage] = module.run(ctx)
    print(f"run directory: {run.path}")  # also with --quiet: scripts need it
    return run.read_summary()


if __name__ == "__main__":
    main()
