"""Compare how the few-shot gender classifier copes with imbalance: one row per method,
mean ± std over seeds of test balanced accuracy, Dlack (female) recall, ROC-AUC,
end-to-end two-class mAP@0.5, the real-vs-generated probe's AUC and training time.

Usage:
    python pipelines/compare_imbalance.py [--rows ROW,...] [--seeds 3] [--seed-base S]
        [--config FILE | --quick] [--set KEY=VALUE ...] [--out DIR] [--kd pretrained]
        [--share-detector | --no-share-detector] [--upstream RUN_DIR]

Rows (default: all, in this order): the classifier.imbalance values with
classifier.augmentation=none (none, balanced_sampling, weighted_loss, logit_adjustment,
logit_adjustment_posthoc, balanced_softmax, crt, ncm); head-protonet, head-matching,
head-siamese (classifier.head: a few-shot head over the training faces' features, no
generated faces); classic (augmentation=classic);
gan and gan+classic (the augmenter's generated faces fill Dlack); gan+classic+best
(gan+classic with the imbalance method of the rows above that has the best mean
VALIDATION balanced accuracy of its final model; chosen on val, never on test); oracle
(data.manifest=synthfaces_oracle: plenty of real female faces, augmentation=classic,
crops from the same detector). On request (not in the default list): distill-hinton,
distill-ddgsd, distill-takd, distill-dgkd, distill-ensemble (classifier.distill with the
default ncm head, augmentation none; compare with the ncm row).

How: per seed one upstream run (``--stage detector``, then ``--stage augmenter`` when
a row uses generated faces) in ``OUT/seed<S>/upstream``, then one ``--stage classifier
--from OUT/seed<S>/upstream --seed S --set ...`` process per row in
``OUT/seed<S>/<row>`` (log in ``classifier.log`` there). ``--share-detector`` trains the
detector once (first seed) and every seed's augmenter and classifiers use it, to fit
the 45-minute budget on 2 CPU cores; ``--upstream RUN_DIR`` uses an existing run's
detector (and augmenter) for every seed. ``--set`` goes to every run; a row's own
settings come after it and win. A failed run reads "not measured" and the others go
on. After each classifier run its final checkpoint is scored on the validation split
(same crops) for the selection. Writes OUT/compare_imbalance.{json,md,png};
``python -m dafsl.report OUT`` includes the table and figure.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_modes import parse_list, run_stage  # noqa: E402

from dafsl.config import CONFIG_DIR, DEFAULT_CONFIG, load_config  # noqa: E402
from dafsl.config_schema import CLASSIFIER_HEADS, DISTILLERS, IMBALANCE  # noqa: E402
from dafsl.errors import DafslError, exit_on_error  # noqa: E402
from dafsl.report import imbalance as table  # noqa: E402
from dafsl.report.runs import is_number, mean_spread  # noqa: E402
from dafsl.runs import atomic_write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BEST = "gan+classic+best"
ROWS = (*IMBALANCE, "classic", "gan", "gan+classic", BEST, "oracle")
# classifier.head: a few-shot head over the training faces' features (dafsl/classifier/heads.py);
# like the distillation rows below, only when asked for with --rows (the default run keeps
# its 45-minute budget)
HEAD_ROWS = tuple(f"head-{h}" for h in CLASSIFIER_HEADS if h != "linear")
# classifier.distill methods on the default (ncm) classifier: only when asked for with --rows
# (takd/dgkd/ensemble train classifier.distill_chain first: minutes per run)
DISTILL_ROWS = tuple(f"distill-{m}" for m in DISTILLERS if m != "none")
BUDGET_MIN = 45.0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python pipelines/compare_imbalance.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of the rows")
    p.add_argument("--jobs", type=int, default=1,
                   help="classifier runs at once (each uses the config's num_threads; 2 on this 2-core CPU)")
    p.add_argument("--seeds", type=int, default=3, help="repeat every row with N seeds (default 3)")
    p.add_argument("--seed-base", type=int, default=None, help="first seed (default: config seed)")
    p.add_argument("--config", default=None, help=f"config file (default {DEFAULT_CONFIG.name})")
    p.add_argument("--quick", action="store_true", help="configs/smoke.yaml: a test run in seconds")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to every run (python -m dafsl.pipeline --set)")
    p.add_argument("--out", default=None, help="output folder (default runs/imbalance-<time>)")
    p.add_argument("--kd", default="pretrained", choices=("vanilla", "fixed", "finetune", "pretrained"),
                   help="transfer mode of every run (default pretrained)")
    p.add_argument("--share-detector", action=argparse.BooleanOptionalAction, default=True,
                   help="train the detector once, on the first seed, for all seeds (default on)")
    p.add_argument("--upstream", default=None, metavar="RUN_DIR",
                   help="use this run's detector (and augmenter) for every seed; train none")
    p.add_argument("--oracle-manifest", default="synthfaces_oracle")
    return p


def row_spec(name: str, best: str | None = None, oracle_manifest: str = "synthfaces_oracle") -> dict:
    """{row, label, overrides, uses_generated, oracle} of one row (``best``: the chosen
    imbalance method of the gan+classic+best row)."""
    if name in IMBALANCE:
        return {"row": name, "label": f"imbalance: {name}", "uses_generated": False, "oracle": False,
                "overrides": ["classifier.augmentation=none", f"classifier.imbalance={name}"]}
    if name in HEAD_ROWS:
        return {"row": name, "label": f"few-shot head: {name[5:]}", "uses_generated": False,
                "oracle": False, "overrides": ["classifier.augmentation=none", "classifier.imbalance=none",
                                               f"classifier.head={name[5:]}"]}
    # the probe depends on the generated faces, the starting weights and the budget, not on
    # the imbalance method or classic augmentation: it runs once per seed, in the gan+classic row
    no_probe = ["classifier.probe=false"]
    if name in ("classic", "gan", "gan+classic"):
        return {"row": name, "label": f"augmentation: {name}", "uses_generated": name != "classic",
                "oracle": False,
                "overrides": [f"classifier.augmentation={name}", "classifier.imbalance=none",
                              *(no_probe if name == "gan" else [])]}
    if name == BEST:
        return {"row": name, "label": f"GAN fill + best of the others ({best or 'not chosen'})",
                "uses_generated": True, "oracle": False,
                "overrides": ["classifier.augmentation=gan+classic", f"classifier.imbalance={best}",
                              *no_probe]}
    if name == "oracle":
        return {"row": name, "label": "oracle: plenty of real female faces", "uses_generated": False,
                "oracle": True, "overrides": [f"data.manifest={oracle_manifest}",
                                              "classifier.augmentation=classic",
                                              "classifier.imbalance=none"]}
    if name in DISTILL_ROWS:
        return {"row": name, "label": f"distill: {name[8:]} (ncm head)", "uses_generated": False,
                "oracle": False, "overrides": ["classifier.augmentation=none", "classifier.imbalance=ncm",
                                               f"classifier.distill={name[8:]}"]}
    raise DafslError(f"--rows: unknown row '{name}' (expected {', '.join(ROWS + HEAD_ROWS + DISTILL_ROWS)})")


def choose_best(runs_by_row: dict[str, list[dict]], candidates: list[str]) -> tuple[str | None, dict]:
    """The candidate row with the highest mean VALIDATION balanced accuracy over its
    finished runs (ties: the earlier candidate). Test figures are never read.
    Returns (row or None when no candidate was measured, {row: mean or None})."""
    means = {c: mean_spread([r.get(table.SELECTION_KEY) for r in runs_by_row.get(c, [])
                             if r.get("ok") and is_number(r.get(table.SELECTION_KEY))])["mean"]
             for c in candidates}
    measured = [c for c in candidates if means[c] is not None]
    if not measured:
        return None, means
    return max(measured, key=lambda c: (means[c], -candidates.index(c))), means


def positive_of(run_dir: Path, classes: list[str]) -> str:
    """The run's Dlack class (the stage's rule: the first Dlack class, else the last class)."""
    split = json.loads((run_dir / "data_split.json").read_text())
    return (split.get("dlack") or classes[-1:])[0]


def run_figures(run_dir: Path, positive: str) -> dict:
    """The table's figures of one classifier run, from its summary.json."""
    s = json.loads((run_dir / "summary.json").read_text()).get("classifier", {})
    return {"balanced_accuracy": s.get("test_balanced_accuracy"),
            "recall": s.get(f"test_recall_{positive}"), "roc_auc": s.get("test_roc_auc"),
            "system_map50": s.get("system_map50"), "probe_auc": s.get("probe_auc"),
            "train_time_s": s.get("train_time_s")}


def final_val_figures(run_dir: Path, upstream: Path) -> dict:
    """Validation figures of the run's FINAL classifier (after a post-hoc, cRT or NCM
    head), on the same crops as the run: the detector of ``upstream`` (its --from run),
    whose detections the run cached."""
    import torch
    import yaml

    from dafsl.classifier.data import split_faces
    from dafsl.classifier.metrics import classification_metrics
    from dafsl.classifier.model import load_classifier
    from dafsl.classifier.trainer import predict_probs
    from dafsl.data import load_split
    from dafsl.faces import split_detections
    from dafsl.stages import read_outputs

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())["classifier"]
    model, meta = load_classifier(read_outputs(run_dir / "classifier" / "outputs.json")["checkpoint"])
    positive = positive_of(run_dir, meta["classes"])
    val = load_split(cfg["data"]["manifest"], "val", cfg["data"]["cache_dir"])
    dets = None
    if summary.get("crops") == "detector":
        detector = read_outputs(upstream / "detector" / "outputs.json")["checkpoint"]
        dets = split_detections(detector, val, "cpu", cfg["data"]["cache_dir"])
    faces, _ = split_faces(val, meta["classes"], int(meta["crop_size"]), cfg["faces"], dets)
    with torch.no_grad():
        probs = predict_probs(model, faces.images, int(meta["input_size"]))
    m = classification_metrics(faces.labels, probs, meta["classes"], positive)
    return {table.SELECTION_KEY: m["balanced_accuracy"], "val_recall": m[f"recall_{positive}"]}


def link_detector(src_run: Path, dst_run: Path) -> None:
    """Make ``dst_run`` offer ``src_run``'s detector (outputs.json with absolute paths)."""
    from dafsl.stages import read_outputs

    outs = read_outputs(src_run / "detector" / "outputs.json")
    atomic_write_json(dst_run / "detector" / "outputs.json",
                      {k: str(Path(v).resolve()) if isinstance(v, Path) else v for k, v in outs.items()})


def upstream_runs(seeds: list[int], out: Path, need_gan: bool, share: bool) -> list[tuple]:
    """(seed, stage, run dir, --from or None) of the upstream runs, in order."""
    plan = []
    first = out / f"seed{seeds[0]}" / "upstream"
    for seed in seeds:
        up = out / f"seed{seed}" / "upstream"
        if not share or seed == seeds[0]:
            plan.append((seed, "detector", up, None))
        if need_gan:
            plan.append((seed, "augmenter", up, first if share and seed != seeds[0] else None))
    return plan


def _progress(i: int, n: int, what: str, res: dict, extra: str, t0: float) -> None:
    elapsed = (time.perf_counter() - t0) / 60
    print(f"[imbalance] {i}/{n} {what}: {res['seconds']:.0f} s "
          f"({extra if res['ok'] else 'FAILED: ' + str(res['error'])}); elapsed {elapsed:.1f} min, "
          f"projected {elapsed * n / i:.1f} min", flush=True)


def write_outputs(out: Path, data: dict) -> None:
    atomic_write_json(out / table.FILE, data)
    (out / "compare_imbalance.md").write_text(table.markdown(data), encoding="utf-8")
    if not table.plot_imbalance(data, out / table.FIGURE):
        (out / table.FIGURE).unlink(missing_ok=True)


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args_parser().parse_args(argv)
    if args.quick and args.config:
        raise DafslError("--quick uses configs/smoke.yaml; leave out --config")
    args.config = str(CONFIG_DIR / "smoke.yaml") if args.quick else (args.config or str(DEFAULT_CONFIG))
    rows = parse_list(args.rows, ROWS + HEAD_ROWS + DISTILL_ROWS, "--rows")
    candidates = [r for r in rows if r in IMBALANCE]
    if BEST in rows and not candidates:
        raise DafslError(f"--rows: {BEST} needs at least one of {', '.join(IMBALANCE)} to choose from")
    if args.seeds < 1:
        raise DafslError(f"--seeds must be >= 1, got {args.seeds}")
    cfg = load_config(args.config, args.overrides)  # fail fast on a bad key before any training
    for r in rows:
        load_config(args.config, args.overrides + row_spec(r, "none", args.oracle_manifest)["overrides"])
    base = int(cfg["seed"]) if args.seed_base is None else args.seed_base
    seeds = list(range(base, base + args.seeds))
    out = Path(args.out) if args.out else REPO / "runs" / f"imbalance-{time.strftime('%Y%m%d-%H%M%S')}"
    given = Path(args.upstream) if args.upstream else None
    if given and not (given / "detector" / "outputs.json").is_file():
        raise DafslError(f"--upstream {given}: no detector outputs (detector/outputs.json) in it")
    out.mkdir(parents=True, exist_ok=True)
    need_gan = any(row_spec(r, "none")["uses_generated"] for r in rows)
    specs = {r: row_spec(r, None, args.oracle_manifest) for r in rows}
    up_plan = [] if given else upstream_runs(seeds, out, need_gan, args.share_detector)
    n_total = len(up_plan) + len(rows) * len(seeds)
    upstream_note = (f"given: {given} (the same detector and augmenter for every seed)" if given else
                     f"detector trained once (seed {seeds[0]}) and shared by all seeds, augmenter per seed"
                     if args.share_detector and len(seeds) > 1 else "detector and augmenter per seed")
    data = {"title": "Few-shot classifier under imbalance: one row per method",
            "command": "python pipelines/compare_imbalance.py " + shlex.join(argv),
            "config": args.config, "overrides": args.overrides, "kd": args.kd, "seeds": seeds,
            "upstream": upstream_note, "positive": None, "rows": [], "best_of_others": None,
            "machine": "2 CPU cores" if not args.quick else "quick (smoke config)"}
    print(f"[imbalance] {n_total} runs: rows {', '.join(rows)}; seeds {', '.join(map(str, seeds))}; "
          f"upstream: {upstream_note}; out {out}", flush=True)
    t0, done, results = time.perf_counter(), 0, {r: [] for r in rows}
    failed_up: set[int] = set()
    for seed, stage, run_dir, src in up_plan:
        res = run_stage(stage, args.kd, seed, run_dir, args, list(args.overrides), src)
        done += 1
        _progress(done, n_total, f"seed {seed} upstream {stage}", res, "ok", t0)
        if not res["ok"]:
            failed_up.add(seed)
    if args.share_detector and not given:
        for seed in seeds[1:]:
            if (out / f"seed{seeds[0]}" / "upstream" / "detector" / "outputs.json").is_file():
                link_detector(out / f"seed{seeds[0]}" / "upstream", out / f"seed{seed}" / "upstream")
    t_up = time.perf_counter() - t0

    def classifier_run(row: str, seed: int) -> dict:
        nonlocal done
        run_dir = out / f"seed{seed}" / row
        upstream = given or out / f"seed{seed}" / "upstream"
        if seed in failed_up:
            res = {"ok": False, "seconds": 0.0, "error": f"upstream of seed {seed} failed"}
        else:
            res = run_stage("classifier", args.kd, seed, run_dir, args,
                            list(args.overrides) + specs[row]["overrides"], upstream)
        rec = {"seed": seed, "run_dir": str(run_dir), "ok": res["ok"], "error": res["error"],
               "seconds": res["seconds"]}
        if res["ok"]:
            try:
                classes = list(json.loads((run_dir / "data_split.json").read_text())["counts"])
                positive = positive_of(run_dir, classes)
                rec.update(run_figures(run_dir, positive), **final_val_figures(run_dir, upstream))
                if not specs[row]["oracle"]:
                    data["positive"] = data["positive"] or positive
            except (OSError, KeyError, ValueError, DafslError) as err:
                rec.update(ok=False, error=f"reading the run: {err}")
        done += 1
        extra = (f"test bal. acc {rec.get('balanced_accuracy', float('nan')):.3f}, "
                 f"val {rec.get(table.SELECTION_KEY, float('nan')):.3f}") if rec["ok"] else ""
        _progress(done, n_total, f"seed {seed} {row}", {**res, "ok": rec["ok"], "error": rec["error"]},
                  extra, t0)
        return rec

    def snapshot() -> None:
        data["rows"] = [{**specs[r], "runs": results[r]} for r in rows if results[r]]
        data["elapsed_s"] = time.perf_counter() - t0
        write_outputs(out, data)

    torch_threads_one()
    from concurrent.futures import ThreadPoolExecutor

    # seeds outer: drift in a shared machine's speed spreads over all rows
    plan = [(row, seed) for seed in seeds for row in rows if row != BEST]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for (row, seed), rec in zip(plan, pool.map(lambda rs: classifier_run(*rs), plan)):
            results[row].append(rec)
            snapshot()
    if BEST in rows:
        best, means = choose_best(results, candidates)
        data["best_of_others"] = {"chosen": best, "candidates": means,
                                  "by": "mean validation balanced accuracy of the final model"}
        specs[BEST] = row_spec(BEST, best, args.oracle_manifest)
        print(f"[imbalance] best of the others on VALIDATION: {best} "
              f"({', '.join(f'{k} {v:.3f}' for k, v in means.items() if v is not None)})", flush=True)
        if best is None:
            results[BEST] = [{"seed": s, "ok": False, "error": "no candidate measured"} for s in seeds]
        elif best == "none" and results.get("gan+classic"):
            results[BEST] = [dict(r) for r in results["gan+classic"]]  # the very same runs
            specs[BEST]["label"] += " = the gan+classic runs"
            done += len(seeds)
        else:
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                results[BEST].extend(pool.map(lambda sd: classifier_run(BEST, sd), seeds))
    snapshot()
    data["upstream_s"], data["elapsed_s"] = t_up, time.perf_counter() - t0
    data["positive"] = data["positive"] or "female"
    write_outputs(out, data)
    minutes = data["elapsed_s"] / 60
    print(table.markdown(data, None))
    print(f"[imbalance] measured {minutes:.1f} min in all (upstream {t_up / 60:.1f} min); budget "
          f"{BUDGET_MIN:.0f} min: {'within' if minutes <= BUDGET_MIN else 'OVER'}. "
          f"Wrote {out / table.FILE}, {out / 'compare_imbalance.md'}, {out / table.FIGURE}")
    failed = [(r, x) for r in rows for x in results[r] if not x["ok"]]
    if failed:
        raise DafslError(f"{len(failed)} run(s) failed, e.g. {failed[0][0]} seed "
                         f"{failed[0][1]['seed']}: {failed[0][1]['error']}")
    return data


def torch_threads_one() -> None:
    """The validation scoring runs in this process: one thread, as the configs' runs."""
    import torch

    torch.set_num_threads(1)


if __name__ == "__main__":
    main()
