"""Do generated faces help? One row per way of filling the scarce class, each seed with its
OWN augmenter (a GAN has its own randomness, so its spread belongs in the ±), against the
non-generative rows at the same classifier budget.

Usage:
    python pipelines/compare_generators.py --upstream RUN_DIR [--rows ROW,...] [--seeds 3]
        [--seed-base S] [--jobs 2] [--set KEY=VALUE ...] [--out DIR] [--kd pretrained]

``--upstream``: a run with a detector (e.g. the README's first command); every row and
seed crops faces with that detector, so the rows differ only by what fills the class.
Per seed and row: ``--stage augmenter --from UPSTREAM --seed S`` with the row's augmenter
settings (rows that use generated faces), then ``--stage classifier --from <that run>``
with the row's classifier settings. Figures per row: TSTR of the augmenter (small
ConvNet, validation and test), TSTR with the classifier's architecture and budget
(validation), KID, the classifier's test balanced accuracy, female recall, ROC-AUC,
system mAP@0.5, and the final model's VALIDATION balanced accuracy (the only figure any
choice may use). Writes OUT/compare_generators.{json,md}.

Rows (``ROWS``): ``ncm`` and ``calibration`` (no generated faces: the baselines a
generator must beat), ``uncond`` (today's GAN: fine-tuned on the 10 faces, Denough fill
from the source GAN), ``cond`` (one class-conditional generator for both classes,
snapshot by validation TSTR), ``cond-ada``, ``cond-cdc``, ``cond-freezed`` (``--kd
finetune`` for the augmenter: D's lowest layers frozen), and ``*-real`` variants whose
NCM head is fit on the real faces only.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_imbalance import final_val_figures, link_detector, positive_of, run_figures  # noqa: E402
from compare_modes import run_stage  # noqa: E402

from dafsl.config import DEFAULT_CONFIG  # noqa: E402
from dafsl.runs import atomic_write_json  # noqa: E402

GAN_CLS = ["classifier.augmentation=gan", "classifier.imbalance=ncm", "classifier.probe=false"]
COND = ["augmenter.conditional=true", "augmenter.select=best_val_tstr"]
SSL = ["classifier.source=zoo", "classifier.zoo_entry=classifier-ssl"]
# row -> (augmenter overrides or None (no generated faces), augmenter mode or None, classifier overrides)
ROWS: dict[str, tuple[list[str] | None, str | None, list[str]]] = {
    "ncm": (None, None, ["classifier.augmentation=none", "classifier.imbalance=ncm"]),
    "calibration": (None, None, ["classifier.augmentation=none", "classifier.imbalance=calibration"]),
    "uncond": ([], None, GAN_CLS),
    "cond": (COND, None, GAN_CLS),
    "cond-real": (COND, None, [*GAN_CLS, "classifier.head_faces=real"]),
    "cond-ada": ([*COND, "augmenter.target.ada=true", "augmenter.diffaug="], None, GAN_CLS),
    "cond-cdc": ([*COND, "augmenter.target.cdc_weight=100"], None, GAN_CLS),
    "cond-freezed": (COND, "finetune", GAN_CLS),
    # the self-supervised source (zoo entry classifier-ssl: SimCLR on unlabelled faces of both
    # genders from synthfaces_related), the setting real users start from; the rows above are
    # the strict setting (no face of the scarce class anywhere but the 10)
    "ssl-ncm": (None, None, ["classifier.augmentation=none", "classifier.imbalance=ncm", *SSL]),
    "ssl-cond": (COND, None, [*GAN_CLS, *SSL]),
}
COLUMNS = (("tstr_val_small", "TSTR bal. acc. (small CNN, val)"),
           ("tstr_val_arch", "TSTR bal. acc. (classifier arch., val)"),
           ("kid", "KID (val)"), ("val_balanced_accuracy", "val bal. acc."),
           ("balanced_accuracy", "test bal. acc."), ("recall", "female recall"),
           ("roc_auc", "ROC-AUC"), ("system_map50", "system mAP@0.5"))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python pipelines/compare_generators.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, metavar="RUN_DIR", help="a run with a detector")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of the rows")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-base", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="row/seed chains at once")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None)
    p.add_argument("--kd", default="pretrained", choices=("vanilla", "fixed", "finetune", "pretrained"))
    return p


def mean_std_ci(values: list) -> dict:
    """mean, sample std and the 95 % t-interval half-width of the numbers in ``values``."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not xs:
        return {"n": 0}
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}.get(n, 1.96)
    return {"n": n, "mean": m, "std": sd, "ci95": t * sd / math.sqrt(n) if n > 1 else None}


def chain(row: str, seed: int, args, out: Path) -> dict:
    """The row's augmenter (if any) then classifier for one seed; returns its figures."""
    aug_over, aug_mode, cls_over = ROWS[row]
    upstream = Path(args.upstream).resolve()
    rec: dict = {"row": row, "seed": seed}
    base = list(args.overrides)
    src = upstream
    run_dir = out / row / f"seed{seed}"
    if aug_over is not None:
        aug_dir = run_dir / "augmenter_run"
        res = run_stage("augmenter", aug_mode or args.kd, seed, aug_dir, args, [*base, *aug_over], upstream)
        rec["augmenter_s"] = res["seconds"]
        if not res["ok"]:
            return {**rec, "error": res["error"]}
        s = json.loads((aug_dir / "summary.json").read_text())["augmenter"]
        rec.update(tstr_val_small=s.get("tstr_val_balanced_accuracy"), tstr_val_small_auc=s.get("tstr_val_auc"),
                   tstr_test_small=s.get("tstr_test_balanced_accuracy"), kid=s.get("kid"))
        link_detector(upstream, aug_dir)  # the classifier crops with the same detector
        src = aug_dir
    cls_dir = run_dir / "classifier_run"
    res = run_stage("classifier", args.kd, seed, cls_dir, args, [*base, *(aug_over or []), *cls_over], src)
    rec["classifier_s"] = res["seconds"]
    if not res["ok"]:
        return {**rec, "error": res["error"]}
    s = json.loads((cls_dir / "summary.json").read_text())["classifier"]
    positive = positive_of(cls_dir, list(s["train_counts"]))
    rec.update(run_figures(cls_dir, positive), **final_val_figures(cls_dir, upstream),
               tstr_val_arch=s.get("tstr_val_balanced_accuracy"), tstr_val_arch_auc=s.get("tstr_val_auc"))
    return rec


def write_outputs(out: Path, rows: list[str], records: list[dict], args) -> dict:
    stats = {row: {key: mean_std_ci([r.get(key) for r in records if r["row"] == row])
                   for key, _ in COLUMNS} for row in rows}
    data = {"rows": rows, "records": records, "stats": stats, "seeds": args.seeds,
            "upstream": str(args.upstream), "overrides": args.overrides}
    atomic_write_json(out / "compare_generators.json", data)
    lines = ["| row | " + " | ".join(label for _, label in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            st = stats[row][key]
            cells.append("—" if not st.get("n") else f"{st['mean']:.3f} ± {st['std']:.3f}"
                         + ("" if st["n"] == args.seeds else f" (n={st['n']})"))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    text = ("\n".join(lines) + "\n\nmean ± sample std over seeds; each seed trains its own augmenter. "
            f"Command: `python pipelines/compare_generators.py --upstream {args.upstream} --rows "
            f"{','.join(rows)} --seeds {args.seeds}" + "".join(f" --set {o}" for o in args.overrides) + "`\n")
    (out / "compare_generators.md").write_text(text)
    return data


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        print(f"error: --rows: unknown row(s) {', '.join(unknown)} (known: {', '.join(ROWS)})", file=sys.stderr)
        raise SystemExit(2)
    if not (Path(args.upstream) / "detector" / "outputs.json").is_file():
        print(f"error: {args.upstream}: no detector outputs (run the detector stage first)", file=sys.stderr)
        raise SystemExit(2)
    out = Path(args.out or f"runs/generators-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    seeds = [args.seed_base + i for i in range(args.seeds)]
    jobs = [(row, seed) for seed in seeds for row in rows]
    records: list[dict] = []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(chain, row, seed, args, out): (row, seed) for row, seed in jobs}
        for fut in futures:
            rec = fut.result()
            records.append(rec)
            fig = rec.get("error") or (f"test bal. acc. {rec.get('balanced_accuracy'):.3f}, "
                                       f"TSTR {rec.get('tstr_val_small')}")
            print(f"[generators] {len(records)}/{len(jobs)} {rec['row']} seed {rec['seed']}: {fig} "
                  f"({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
            write_outputs(out, rows, records, args)
    data = write_outputs(out, rows, records, args)
    print((out / "compare_generators.md").read_text())
    return data


if __name__ == "__main__":
    main()
