"""``python -m dafsl.fewshot``: train and test one few-shot method, optionally with
seed 000's self-distillation.

    python -m dafsl.fewshot --method {siamese,matching,protonet} --distill {none,self}
        --way 5 --shot 1 [--query 15] [--manifest NAME] [--config FILE] [--set K=V ...]
        [--out DIR] [--resume] [--quiet]

The flags are shortcuts for ``--set fewshot.<key>=...`` (they win over --set); every
other setting is in the ``fewshot`` section of the config. Prints the test accuracy
with its 95 % confidence interval and the run directory.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dafsl.config import DEFAULT_CONFIG, load_config
from dafsl.errors import DafslError, exit_on_error
from dafsl.log import configure
from dafsl.runs import RunDir

FLAGS = ("method", "distill", "way", "shot", "query", "manifest")
TEXT_FLAGS = ("method", "distill", "manifest")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dafsl.fewshot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default=None, help="siamese | matching | protonet")
    p.add_argument("--distill", default=None, help="none | self")
    p.add_argument("--way", default=None, help="classes per episode")
    p.add_argument("--shot", default=None, help="support images per class")
    p.add_argument("--query", default=None, help="query images per class")
    p.add_argument("--manifest", default=None, help="character set manifest (glyphs, omniglot, ...)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="run directory (default runs/fewshot-<method>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoints")
    p.add_argument("--quiet", action="store_true", help="warnings only, no progress bars")
    return p


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    from dafsl.fewshot.run import run_fewshot

    args = get_args_parser().parse_args(argv)
    configure(args.quiet)
    # the names are strings as typed (YAML would read "yes" as true); the counts are parsed
    flags = [f"fewshot.{k}={json.dumps(v) if k in TEXT_FLAGS else v}"
             for k in FLAGS if (v := getattr(args, k)) is not None]
    cfg = load_config(args.config, list(args.overrides) + flags)
    if args.resume and not args.out:
        raise DafslError("--resume needs --out RUN_DIR (the run to continue)")
    out = Path(args.out) if args.out else RunDir.default_path("fewshot", cfg["fewshot"]["method"],
                                                              cfg["out_root"])
    summary = run_fewshot(cfg, out, resume=args.resume)
    for role in ("teacher", "student"):
        if f"{role}_test_accuracy" in summary:
            print(f"{role}: test accuracy {summary[f'{role}_test_accuracy']:.4f} "
                  f"+- {summary[f'{role}_test_accuracy_ci95']:.4f} "
                  f"({summary[f'{role}_test_episodes']} episodes)")
    print(f"run directory: {out}")
    return summary


if __name__ == "__main__":
    main()
