"""Does eq. 1 choose well? ``--kd auto``'s choice against the mode that measured best,
over source/target pairs from dissimilar to near-identical (detector stage).

Usage:
    python pipelines/validate_auto.py [--pairs NAME,... | --pairs all]
        [--pair NAME=SOURCE_MANIFEST:TARGET_MANIFEST ...] [--seeds N] [--epochs N]
        [--train-scenes N] [--zoo-images N] [--eval-every-steps N] [--eval-subset N]
        [--config FILE] [--set KEY=VALUE ...] [--out DIR]

Per pair, the detector's zoo entry ``detector-related`` is pretrained on the SOURCE
manifest's train split (``zoo.detector_related_manifest``) and the detector then trains
on the TARGET manifest in ``fixed``, ``finetune`` and ``pretrained`` (one
``pipelines/compare_modes.py --stages detector`` per pair, with its ``--kd auto``
decision); ``vanilla`` trains once per target and is shared by the pairs with that
target. Each row: the similarity with its bootstrap interval, auto's mode, the measured
fastest mode to vanilla's final val mAP@0.5 and the best final val mAP@0.5, and whether
auto agrees with the best final mode (or is within noise of it: 95 % intervals overlap,
which needs >= 2 seeds; with one seed only the same mode agrees).

``--pair NAME=SOURCE:TARGET`` (repeatable) adds your own pair: manifest names in
data_manifests/ or paths to manifest JSON files; ``--pairs none`` runs only those.
Output in ``--out``: ``<pair>/`` (compare_modes folders, each with report/),
``vanilla-<target>/``, ``validate_auto.{json,md}`` and the suggested thresholds
(:func:`refit_thresholds`). Everything is validation: the test split is never read
for the table.
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

REPO = Path(__file__).resolve().parents[1]
TRANSFER = ("fixed", "finetune", "pretrained")
# name -> (source manifest, target manifest, what it tests); dissimilar to near-identical
PAIRS = {
    "shapes_vs_faces": ("shapes", "synthfaces", "non-face shapes vs faces (far)"),
    "faces_other_seeds": ("synthfaces_seeds", "synthfaces",
                          "faces rendered from other seeds and identities vs faces"),
    "male_vs_female": ("synthfaces_male", "synthfaces_female", "male faces vs female faces"),
    "faces_shifted_nuisance": ("synthfaces_shifted", "synthfaces",
                               "faces with heavy lighting, blur, noise and JPEG vs faces"),
    "near_identical": ("synthfaces", "synthfaces", "the target's own training pool (near-identical)"),
    "related": ("synthfaces_related", "synthfaces",
                "the detector-related default: other seeds, both genders, milder nuisance shift"),
}
DEFAULT_PAIRS = ("shapes_vs_faces", "faces_other_seeds", "male_vs_female",
                 "faces_shifted_nuisance", "near_identical")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python pipelines/validate_auto.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default=",".join(DEFAULT_PAIRS),
                   help=f"built-in pairs: a subset of {', '.join(PAIRS)}, 'all' or 'none'")
    p.add_argument("--pair", dest="extra", action="append", default=[],
                   metavar="NAME=SOURCE:TARGET", help="your own pair (manifest names or paths)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--seed-base", type=int, default=None)
    p.add_argument("--epochs", type=int, default=2, help="detector epochs per run")
    p.add_argument("--train-scenes", type=int, default=120, help="detector.train_scenes (0: all)")
    p.add_argument("--zoo-images", type=int, default=160, help="zoo.detector_images of each source")
    p.add_argument("--eval-every-steps", type=int, default=10)
    p.add_argument("--eval-subset", type=int, default=40)
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="output folder (default runs/validate-auto-<time>)")
    return p


def parse_pairs(args) -> dict[str, tuple[str, str, str]]:
    names = [] if args.pairs == "none" else list(PAIRS) if args.pairs == "all" else \
        [s.strip() for s in args.pairs.split(",") if s.strip()]
    bad = [n for n in names if n not in PAIRS]
    if bad:
        raise DafslError(f"--pairs: unknown pair '{bad[0]}' (known: {', '.join(PAIRS)}, all, none)")
    pairs = {n: PAIRS[n] for n in names}
    for item in args.extra:
        name, _, rest = item.partition("=")
        source, _, target = rest.partition(":")
        if not (name and source and target):
            raise DafslError(f"--pair {item!r}: expected NAME=SOURCE_MANIFEST:TARGET_MANIFEST")
        pairs[name] = (source, target, f"{source} vs {target} (user pair)")
    if not pairs:
        raise DafslError("no pairs to run: give --pairs or --pair")
    return pairs


def run_compare(out: Path, modes: str, seeds: list[int], sets: list[str], args, auto: bool,
                title: str) -> bool:
    cmd = [sys.executable, str(REPO / "pipelines" / "compare_modes.py"), "--stages", "detector",
           "--modes", modes, "--seeds", str(len(seeds)), "--seed-base", str(seeds[0]),
           "--eval-every-steps", str(args.eval_every_steps), "--config", str(args.config),
           "--out", str(out), "--title", title] + (["--no-auto"] if not auto else [])
    for item in sets:
        cmd += ["--set", item]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "compare.log", "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    return proc.returncode == 0


def pair_row(name: str, source: str, target: str, what: str, pair_dir: Path, vanilla_dir: Path) -> dict:
    """One table row from the pair's runs and the shared vanilla runs (report rebuilt
    over both)."""
    from dafsl.report import build_report

    row = {"pair": name, "source": source, "target": target, "what": what}
    try:
        rep = build_report([pair_dir, vanilla_dir], pair_dir / "report", ["detector"],
                           f"validate_auto: {name}")
    except DafslError as err:
        return {**row, "error": str(err)}
    verdict = next((v for v in rep["verdicts"] if v["stage"] == "detector"), None)
    decision = next((d for d in rep["auto"] if d["stage"] == "detector"), {})
    if verdict is None:
        return {**row, "error": "no detector runs"}
    finals = {m: s for m, s in verdict["finals"].items() if m in TRANSFER}
    best = max(finals, key=lambda m: finals[m]["mean"], default=None)
    from dafsl.report.runs import within_noise

    noise = [m for m in finals if m != best and within_noise(finals[m], finals[best])] if best else []
    auto = decision.get("mode")
    agree = auto is not None and best is not None and (auto == best or auto in noise)
    return {**row, "similarity": decision.get("similarity"),
            "interval": decision.get("similarity_interval"), "undecided": decision.get("undecided"),
            "auto": auto, "fastest": verdict["fastest"], "fastest_noise": verdict["fastest_noise"],
            "speedup": verdict["speedup"], "best": best, "best_noise": noise,
            "finals": finals, "vanilla_final": verdict["finals"].get("vanilla"),
            "reached": verdict["reached"], "agree": agree,
            "resolution": verdict["resolution"]}


def refit_thresholds(rows: list[dict]) -> dict:
    """Thresholds that would have made eq. 1 agree with every row of the table, from its
    (similarity, measured best mode): ``similar`` half-way between the lowest similarity
    whose best mode is pretrained with only pretrained rows above it and the next row
    below; ``dissimilar`` half-way above the highest run of fixed rows from the bottom
    (0 when no row measured fixed best). A suggestion from a handful of points, to be
    checked on more pairs; ``consistent`` False when no pair of thresholds separates them."""
    pts = sorted((r["similarity"], r["best"]) for r in rows
                 if isinstance(r.get("similarity"), float) and r.get("best"))
    if not pts:
        return {"similar": None, "dissimilar": None, "consistent": False, "points": 0}
    top = len(pts)
    while top > 0 and pts[top - 1][1] == "pretrained":
        top -= 1
    bottom = 0
    while bottom < len(pts) and pts[bottom][1] == "fixed":
        bottom += 1
    similar = 1.0 if top == len(pts) else pts[top][0] if top == 0 else (pts[top - 1][0] + pts[top][0]) / 2
    dissimilar = 0.0 if bottom == 0 else 1.0 if bottom == len(pts) else \
        (pts[bottom - 1][0] + pts[bottom][0]) / 2
    middle = pts[bottom:top]
    consistent = all(m == "finetune" for _, m in middle) and dissimilar <= similar
    return {"similar": round(similar, 4), "dissimilar": round(min(dissimilar, similar), 4),
            "consistent": consistent, "points": len(pts)}


def _pct(stat: dict | None) -> str:
    from dafsl.report.runs import fmt_ci

    return fmt_ci(stat, 1, 100) if stat else "not measured"


def markdown(rows: list[dict], refit: dict, seeds: list[int], elapsed: float, command: str) -> str:
    agree = [r for r in rows if "error" not in r]
    n_ok = sum(r["agree"] for r in agree)
    lines = [f"### validate_auto: does eq. 1 choose the best detector mode? ({len(seeds)} seed(s))", "",
             f"`{command}`", "",
             "| pair | source → target | similarity [95 % interval] | auto | fastest to vanilla's final (× faster) "
             "| best final val mAP@0.5 (%) | vanilla final | finals fixed / finetune / pretrained | agrees |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['pair']} | {r['source']} → {r['target']} | not measured ({r['error']}) "
                         "| | | | | | |")
            continue
        iv = r["interval"]
        sim = f"{r['similarity']:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "")
        auto = r["auto"] + (" (undecided)" if r["undecided"] else "")
        fast = "none" if not r["fastest"] else (
            f"{r['fastest']} ({r['speedup']['mean']:.2f}×)" if r["speedup"] and r["speedup"]["n"]
            else f"{r['fastest']} (at step 0, before training)")
        best = f"{r['best']} ({r['finals'][r['best']]['mean'] * 100:.1f})" + (
            f"; within noise: {', '.join(r['best_noise'])}" if r["best_noise"] else "")
        finals = " / ".join(f"{r['finals'][m]['mean'] * 100:.1f}" if m in r["finals"] else "-"
                            for m in TRANSFER)
        lines.append(f"| {r['pair']} | {r['source']} → {r['target']} | {sim} | {auto} | {fast} | {best} "
                     f"| {_pct(r['vanilla_final'])} | {finals} | {'yes' if r['agree'] else 'no'} |")
    lines += ["", f"Agreement: **{n_ok}/{len(agree)}** pairs (auto's mode = the best final val mAP@0.5, "
              "or within noise of it when there are >= 2 seeds). Elapsed "
              f"{elapsed / 60:.1f} min.", "",
              f"Thresholds re-fitted to this table (`refit_thresholds`): similar {refit['similar']}, "
              f"dissimilar {refit['dissimilar']} ({'consistent' if refit['consistent'] else 'no pair of thresholds fits every row'}; "
              f"{refit['points']} points)."]
    return "\n".join(lines) + "\n"


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    pairs = parse_pairs(args)
    for flag in ("seeds", "epochs"):
        if getattr(args, flag) < 1:
            raise DafslError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    cfg = load_config(args.config, args.overrides)  # fail fast on a bad key
    base = int(cfg["seed"]) if args.seed_base is None else args.seed_base
    seeds = list(range(base, base + args.seeds))
    out = Path(args.out) if args.out else REPO / "runs" / f"validate-auto-{time.strftime('%Y%m%d-%H%M%S')}"
    common = [f"detector.epochs={args.epochs}", f"detector.train_scenes={args.train_scenes}",
              f"detector.eval_subset={args.eval_subset}", f"zoo.detector_images={args.zoo_images}",
              "detector.test_subset=50",  # the table reads validation figures only
              "detector.zoo_entry=detector-related", *args.overrides]
    t0 = time.perf_counter()
    vanilla_dirs = {}
    for target in dict.fromkeys(t for _, t, _ in pairs.values()):
        vdir = out / f"vanilla-{Path(target).stem}"
        ok = run_compare(vdir, "vanilla", seeds, common + [f"data.manifest={target}"], args, False,
                         f"vanilla on {target}")
        print(f"[validate_auto] vanilla on {target}: {'ok' if ok else 'FAILED, see ' + str(vdir)}; "
              f"{(time.perf_counter() - t0) / 60:.1f} min", flush=True)
        vanilla_dirs[target] = vdir
    rows = []
    for name, (source, target, what) in pairs.items():
        pdir = out / name
        sets = common + [f"data.manifest={target}", f"zoo.detector_related_manifest={source}"]
        ok = run_compare(pdir, ",".join(TRANSFER), seeds, sets, args, True, f"validate_auto: {name}")
        row = pair_row(name, source, target, what, pdir, vanilla_dirs[target])
        if not ok and "error" not in row:
            row["warning"] = f"some runs failed, see {pdir / 'compare.log'}"
        rows.append(row)
        write_table(out, rows, seeds, t0, argv, common)  # partial tables survive an interrupted sweep
        print(f"[validate_auto] {name}: similarity {row.get('similarity')}, auto {row.get('auto')}, "
              f"best {row.get('best')}, fastest {row.get('fastest')}, agree {row.get('agree')}; "
              f"{(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    result, md = write_table(out, rows, seeds, t0, argv, common)
    print(md)
    return result


def write_table(out: Path, rows: list[dict], seeds: list[int], t0: float, argv, common: list[str]
                ) -> tuple[dict, str]:
    refit = refit_thresholds([r for r in rows if "error" not in r])
    command = "python pipelines/validate_auto.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = markdown(rows, refit, seeds, time.perf_counter() - t0, command.strip())
    (out / "validate_auto.md").write_text(md, encoding="utf-8")
    result = {"pairs": rows, "refit": refit, "seeds": seeds, "overrides": common,
              "elapsed_s": time.perf_counter() - t0}
    atomic_write_json(out / "validate_auto.json", result)
    return result, md


if __name__ == "__main__":
    main()
