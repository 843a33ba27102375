"""The mode-comparison report, rebuilt from hand-written metrics.jsonl/summary.json files."""
import base64
import json
import re
import subprocess
import sys

import pytest

from dafsl.report import build_report, time_to_target
from dafsl.report.runs import mean_spread

# (mode, seed) -> detector val mAP@0.5 per epoch, wall-clock per epoch (s)
DETECTOR = {
    ("vanilla", 0): ([0.10, 0.20, 0.30, 0.40], [10, 20, 30, 40]),
    ("vanilla", 1): ([0.12, 0.22, 0.33, 0.44], [11, 22, 33, 44]),
    ("pretrained", 0): ([0.30, 0.45, 0.50, 0.55], [8, 16, 24, 32]),
    ("pretrained", 1): ([0.30, 0.40, 0.46, 0.50], [9, 18, 27, 36]),
    ("fixed", 0): ([0.20, 0.25, 0.30, 0.35], [5, 10, 15, 20]),
    ("fixed", 1): ([0.20, 0.25, 0.30, 0.35], [5, 10, 15, 20]),
    ("finetune", 0): ([0.10, 0.30, 0.40, 0.42], [7, 14, 21, 28]),
}
# mode -> (loss_g, loss_d, kid) per epoch, kid every second epoch
GAN = {"vanilla": ([3.0, 2.5, 2.0, 1.8], [0.9, 0.8, 0.7, 0.7], [None, 0.30, None, 0.20]),
       "pretrained": ([1.5, 1.2, 1.0, 0.9], [0.6, 0.6, 0.5, 0.5], [None, 0.15, None, 0.10])}

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def write_run(path, seed, records, summary, images=()):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"seed: {seed}\n")
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "summary.json").write_text(json.dumps(summary))
    for rel in images:
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(PNG)


def detector_records(mode, maps, walls):
    prev = 0.0
    out = []
    for e, (m, w) in enumerate(zip(maps, walls)):
        out.append({"stage": "detector", "mode": mode, "epoch": e, "epoch_time_s": w - prev,
                    "wall_clock_s": float(w), "eval_time_s": 1.0, "loss": 1.0 / (e + 1),
                    "map50": m, "ap50_coco": m + 0.01})
        prev = w
    return out


def gan_records(mode, losses_g, losses_d, kids):
    out = []
    for e, (g, d, k) in enumerate(zip(losses_g, losses_d, kids)):
        rec = {"stage": "augmenter", "mode": mode, "epoch": e, "epoch_time_s": 5.0,
               "wall_clock_s": 5.0 * (e + 1) * (0.8 if mode == "pretrained" else 1.0),
               "eval_time_s": 0.5, "loss_g": g, "loss_d": d}
        if k is not None:
            rec["kid"] = k
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    for (mode, seed), (maps, walls) in DETECTOR.items():
        recs = detector_records(mode, maps, walls)
        summary = {"detector": {"mode": mode, "test_map50": maps[-1] - 0.05, "train_time_s": walls[-1]}}
        images = ["detector/pr_curves.png"] if seed == 0 else []
        if seed == 0 and mode in GAN:
            recs += gan_records(mode, *GAN[mode])
            summary["augmenter"] = {"mode": mode, "kid": GAN[mode][2][-1], "precision": 0.5,
                                    "recall": 0.25, "train_time_s": recs[-1]["wall_clock_s"]}
            images += ["augmenter/samples/epoch0001.png", "augmenter/real_vs_generated.png"]
        write_run(root / f"seed{seed}" / mode, seed, recs, summary, images)
    auto = {"source": "zoo:detector-shapes", "target": "faces", "distance": 0.52, "p": "2",
            "similarity": 0.874, "similarity_interval": [0.861, 0.885], "target_size": 1000,
            "mode": "fixed", "reason": "dissimilar"}
    write_run(root / "auto", 0, [], {"detector": {"auto": auto}})
    out = root / "report"
    return out, build_report([root], out)


def test_time_to_target_on_a_hand_made_curve():
    recs = [{"epoch": e, "wall_clock_s": 10.0 * (e + 1), "map50": m}
            for e, m in enumerate([0.1, 0.35, 0.3, 0.5, 0.6])]
    # 0.35 is reached exactly at 20 s: the interpolation between (10, 0.1) and (20, 0.35) ends there
    assert time_to_target(recs, "map50", 0.35, True) == {"epoch": 1, "wall_clock_s": 20.0, "value": 0.35,
                                                         "bracket": [10.0, 20.0]}
    # 0.45: first crossed between (30 s, 0.30) and (40 s, 0.50): 30 + 0.15 / 0.20 * 10 = 37.5
    hit = time_to_target(recs, "map50", 0.45, True)
    assert hit["wall_clock_s"] == pytest.approx(37.5) and hit["bracket"] == [30.0, 40.0]
    assert time_to_target(recs[::-1], "map50", 0.45, True)["epoch"] == 3  # order by epoch
    assert time_to_target(recs, "map50", 0.61, True) is None  # never
    first = time_to_target(recs, "map50", 0.05, True)  # the first evaluation: nothing before it
    assert first["wall_clock_s"] == 10.0 and first["upper_bound"]
    kid = [{"epoch": 0, "wall_clock_s": 5.0}, {"epoch": 1, "wall_clock_s": 10.0, "kid": 0.3},
           {"epoch": 2, "wall_clock_s": 15.0}, {"epoch": 3, "wall_clock_s": 20.0, "kid": 0.1}]
    # lower is better: 0.3 at 10 s -> 0.1 at 20 s crosses 0.2 half-way, at 15 s
    assert time_to_target(kid, "kid", 0.2, False)["wall_clock_s"] == pytest.approx(15.0)
    assert time_to_target(kid, "kid", 0.05, False) is None
    # step evaluations are ordered by step, not epoch
    steps = [{"epoch": 0, "step": s, "wall_clock_s": float(s), "map50": m}
             for s, m in [(20, 0.5), (0, 0.0), (10, 0.2)]]
    hit = time_to_target(steps, "map50", 0.35, True)
    assert hit["wall_clock_s"] == pytest.approx(15.0) and hit["step"] == 20 and hit["bracket"] == [10.0, 20.0]


def test_mean_and_spread():
    s = mean_spread([0.40, 0.44, None])
    assert s["n"] == 2 and s["mean"] == pytest.approx(0.42)
    assert s["std"] == pytest.approx(0.0282842712, rel=1e-6)
    assert mean_spread([])["n"] == 0


def test_table2_has_final_map_per_mode_next_to_the_paper(report):
    out, _ = report
    t2 = (out / "table2.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in t2.splitlines() if line.startswith("| ")}
    assert "42.00 ± 2.83 (n=2)" in rows["vanilla"]  # final val mAP of seeds 0 and 1
    assert "52.50 ± 3.54 (n=2)" in rows["pretrained"]
    assert "37.00 ± 2.83 (n=2)" in rows["vanilla"]  # summary test_map50
    assert "| 42.00 |" in rows["finetune"] and "43.22" in rows["pretrained"]
    assert "22.38" in rows["vanilla"]


def test_table3_and_table4(report):
    out, _ = report
    t3 = (out / "table3.md").read_text()
    van = next(l for l in t3.splitlines() if l.startswith("| vanilla"))
    assert "| 1.800 | 0.700 | 0.2000 |" in van and "34.32" in van
    assert "not measured" in next(l for l in t3.splitlines() if l.startswith("| fixed"))
    t4 = (out / "table4.md").read_text()
    det = next(l for l in t4.splitlines() if l.startswith("| BDRP"))
    # vanilla 40 / 44 s; pretrained 32 / 36 s: reductions 20.0% and 18.2%
    assert "42.0 ± 2.8 s (n=2)" in det
    assert "34.0 ± 2.8 s (n=2) (19.1 ± 1.3% (n=2) reduction)" in det
    assert "28.0 s (30.0% reduction)" in det  # finetune, seed 0 only
    gan = next(l for l in t4.splitlines() if l.startswith("| GAN"))
    assert "20.0 s" in gan and "16.0 s (20.0% reduction)" in gan
    cls = next(l for l in t4.splitlines() if l.startswith("| classifier"))
    assert cls.count("not measured") == 4


def test_time_to_target_table(report):
    out, result = report
    rows = {(r["stage"], r["mode"]): r for r in result["time_to_target"]}
    # seed 0: target 0.40 crossed between (8 s, 0.30) and (16 s, 0.45): 8 + 0.10 / 0.15 * 8;
    # seed 1: target 0.44 between (18 s, 0.40) and (27 s, 0.46): 18 + 0.04 / 0.06 * 9 = 24
    t0, t1 = 8 + 0.10 / 0.15 * 8, 18 + 0.04 / 0.06 * 9
    pre = rows["detector", "pretrained"]
    assert pre["time_s"]["mean"] == pytest.approx((t0 + t1) / 2) and pre["never"] == 0
    assert pre["fraction_of_vanilla"]["mean"] == pytest.approx((t0 / 40 + t1 / 44) / 2)
    assert pre["speedup"]["mean"] == pytest.approx((40 / t0 + 44 / t1) / 2)
    # 95 % t-interval of two values: mean +- t(0.975, 1) * std / sqrt(2), t = 12.706
    fr = [t0 / 40, t1 / 44]
    half = 12.7062047 * abs(fr[0] - fr[1]) / 2 ** 0.5 / 2 ** 0.5
    assert pre["fraction_of_vanilla"]["hi"] - pre["fraction_of_vanilla"]["mean"] == pytest.approx(half, rel=1e-6)
    assert rows["detector", "fixed"]["never"] == 2
    # finetune seed 0: 0.40 at 21 s exactly (0.30 at 14 s before it)
    assert rows["detector", "finetune"]["time_s"]["mean"] == pytest.approx(21.0)
    # the pretrained GAN's first KID (0.15 at 8 s) already beats 0.20: nothing to interpolate from
    assert rows["augmenter", "pretrained"]["time_s"]["mean"] == pytest.approx(8.0)
    md = (out / "time_to_target.md").read_text()
    fixed = next(l for l in md.splitlines() if l.startswith("| detector | fixed"))
    assert "| never | never | never | 0/2 |" in fixed
    assert "classifier | - | not measured" in md
    assert any("pretrained: reached vanilla's final mAP@0.5 in 2/2 seeds" in c for c in result["checks"])
    # means: pretrained 0.525, vanilla 0.42, finetune 0.42, fixed 0.35 (fixed below vanilla)
    assert any("ordering (mean over seeds): pretrained > vanilla > finetune > fixed" in c
               and "does not hold" in c for c in result["checks"])


def test_figures_exist_and_html_embeds_every_image(report):
    out, result = report
    for name in ("fig7.png", "fig8.png", "fig_kid.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "fig_classifier.png").exists()  # no classifier runs: not drawn
    html = (out / "report.html").read_text()
    srcs = re.findall(r"src='([^']*)'", html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    # 3 figures + detector PR curves (4 modes) + augmenter sample grid and real-vs-generated (2 modes)
    assert len(srcs) == 3 + 4 + 2 * 2 == 3 + len(result["gallery"])
    fig7 = base64.b64encode((out / "fig7.png").read_bytes()).decode()
    assert fig7 in html
    assert "zoo:detector-shapes" in html and "dissimilar" in html
    assert "0.874 [0.861, 0.885]" in html  # the bootstrap interval next to the similarity
    md = (out / "report.md").read_text()
    assert "![Figure 7" in md and "fig7.png" in md and "not measured" in md


def test_cli_rebuilds_and_rejects_missing_dirs(report, tmp_path):
    out, _ = report
    root = out.parent
    proc = subprocess.run([sys.executable, "-m", "dafsl.report", str(root / "seed0"),
                           "--out", str(tmp_path / "r"), "--stages", "detector"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "report.html" in proc.stdout
    t2 = (tmp_path / "r" / "table2.md").read_text()
    assert "| 40.00 |" in t2  # seed 0 only
    assert "not measured" in (tmp_path / "r" / "table3.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "dafsl.report", str(tmp_path / "absent")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "run directory not found" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_evaluation_report_on_given_detections(tmp_path):
    """pipelines/evaluate_report.py's report, fed exact boxes plus one false positive per image."""
    import numpy as np

    from dafsl.data import load_split

    mod = _load_pipeline("evaluate_report")
    split = load_split("synthfaces_tiny", "val")
    rng = np.random.default_rng(0)
    dets = []
    for iid in split.image_ids:
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in split.annotations(iid))]
        scores = list(rng.uniform(0.3, 1.0, len(boxes)))
        boxes.append([0.0, 0.0, 6.0, 6.0])  # a 6 px corner box: no face is that small
        scores.append(0.9)
        dets.append({"boxes": np.array(boxes), "scores": np.array(scores)})
    out = tmp_path / "eval"
    summary = mod.evaluation_report(split, dets, out, examples=4)
    face = summary["per_class"]["face"]
    n_faces = len(split.coco["annotations"])
    assert face["n_gt"] == face["tp"] == n_faces and face["fp"] == len(split.image_ids)
    assert 0.3 < summary["map50"] < 1.0  # every face found, but a 0.9 false positive per image
    assert face["ap50_coco"] == pytest.approx(summary["ap50_coco"], abs=1e-6)  # one class
    low = summary["threshold_sweep"][0]
    assert low["threshold"] == 0.05 and low["recall"] == 1.0
    assert low["precision"] == pytest.approx(n_faces / (n_faces + len(split.image_ids)))
    assert summary["threshold_sweep"][-1]["tp"] < n_faces  # 0.95 drops some true faces
    for name in ("pr_curves.png", "threshold_sweep.png", "examples.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "| face | " in md and "## Score-threshold sweep" in md and "## Matching convention" in md
    assert json.loads((out / "evaluation.json").read_text())["map50"] == summary["map50"]


def _load_pipeline(name):
    import importlib.util

    from dafsl.config import REPO_ROOT

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "pipelines" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compare_modes_plan_feeds_every_mode_the_same_upstream(tmp_path):
    plan_runs = _load_pipeline("compare_modes").plan_runs
    modes = ["vanilla", "fixed", "finetune", "pretrained"]
    plan = plan_runs(["detector", "augmenter"], modes, [0, 1], "pretrained", tmp_path)
    assert len(plan) == 2 * 4 * 2
    first = [(m, s) for seed, m, s, _, _ in plan if seed == 0]
    assert first[:2] == [("pretrained", "detector"), ("pretrained", "augmenter")]  # upstream first
    assert [p[0] for p in plan] == [0] * 8 + [1] * 8  # seeds outer, modes inner
    for seed, mode, stage, run_dir, src in plan:
        assert run_dir == tmp_path / f"seed{seed}" / mode
        upstream = tmp_path / f"seed{seed}" / "pretrained"
        assert src == (upstream if stage == "augmenter" and mode != "pretrained" else None)
    # only the augmenter compared: the detector that feeds it trains once per seed
    plan = plan_runs(["augmenter"], ["vanilla", "fixed"], [0], "pretrained", tmp_path)
    assert [(m, s) for _, m, s, _, _ in plan] == [("pretrained", "detector"), ("vanilla", "augmenter"),
                                                 ("fixed", "augmenter")]
    # --from replaces the upstream runs
    plan = plan_runs(["augmenter"], ["vanilla"], [0], "pretrained", tmp_path, tmp_path / "given")
    assert [(m, s, src) for _, m, s, _, src in plan] == [("vanilla", "augmenter", tmp_path / "given")]


def test_check_report_finds_a_broken_figure(tmp_path):
    """pipelines/check_report.py in headless Chromium: one embedded PNG decodes, one does not."""
    import io
    import shutil

    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chromium on this machine")
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (7, 5), (200, 10, 10)).save(buf, format="PNG")
    good = base64.b64encode(buf.getvalue()).decode()
    bad = base64.b64encode(b"not a png").decode()
    html = tmp_path / "report.html"
    html.write_text(f'<html><body><img alt="good" src="data:image/png;base64,{good}">'
                    f'<img alt="bad" src="data:image/png;base64,{bad}"></body></html>')
    check = _load_pipeline("check_report")
    result = check.main([str(html), "--screenshot", str(tmp_path / "shot.png"), "--height", "300"])
    assert result["images"] == 2 and result["broken"] == 1
    assert (tmp_path / "shot.png").stat().st_size > 0
    with pytest.raises(SystemExit) as exc:
        check.main([str(tmp_path / "missing.html")])
    assert exc.value.code == 2


def _imbalance_json(root):
    """A tiny compare_imbalance.json: two rows, seeds 0 and 1, one failed run."""
    def run(seed, ba, rec, val, probe=None, ok=True):
        return {"seed": seed, "ok": ok, "error": None if ok else "boom", "balanced_accuracy": ba,
                "recall": rec, "roc_auc": ba + 0.1, "system_map50": ba - 0.1, "probe_auc": probe,
                "train_time_s": 10.0 + seed, "val_balanced_accuracy": val}
    data = {"title": "Imbalance comparison", "command": "python pipelines/compare_imbalance.py --seeds 2",
            "seeds": [0, 1], "positive": "female", "elapsed_s": 600.0,
            "best_of_others": {"chosen": "crt", "candidates": {"none": 0.5, "crt": 0.6}},
            "rows": [{"row": "crt", "label": "imbalance: crt", "uses_generated": False,
                      "overrides": ["classifier.imbalance=crt"],
                      "runs": [run(0, 0.50, 0.2, 0.6), run(1, 0.70, 0.4, 0.6)]},
                     {"row": "gan", "label": "augmentation: gan", "uses_generated": True,
                      "overrides": ["classifier.augmentation=gan"],
                      "runs": [run(0, 0.65, 0.5, 0.5, probe=0.9), run(1, 0.99, 0.9, 0.5, ok=False)]}]}
    (root / "compare_imbalance.json").write_text(json.dumps(data))
    return data


def test_imbalance_rows_statistics_and_noise(tmp_path):
    from dafsl.report import imbalance

    data = _imbalance_json(tmp_path)
    crt, gan = (imbalance.row_stats(r) for r in data["rows"])
    # by hand: crt 0.5, 0.7 -> mean 0.6, sample std sqrt(0.02) = 0.1414; gan: the failed run is left out
    assert crt["balanced_accuracy"]["mean"] == pytest.approx(0.6)
    assert crt["balanced_accuracy"]["std"] == pytest.approx(0.1414213562)
    assert gan["balanced_accuracy"] == {"n": 1, "mean": 0.65, "std": 0.0, "min": 0.65, "max": 0.65}
    assert crt["probe_auc"]["n"] == 0 and gan["probe_auc"]["mean"] == 0.9
    # [0.459, 0.741] contains 0.65: within noise; a tight interval away from it is not
    assert imbalance.within_noise(crt["balanced_accuracy"], gan["balanced_accuracy"]) is True
    assert imbalance.within_noise({"n": 2, "mean": 0.9, "std": 0.01}, gan["balanced_accuracy"]) is False
    notes, info = imbalance.noise_notes(data["rows"])
    assert info["top"] == "gan" and info["within_noise_of_top"] == ["crt"]
    assert info["gan_vs_best_other"]["difference"] == pytest.approx(0.05)
    assert info["gan_vs_best_other"]["within_noise"] is None  # the gan row has one run: no spread
    md = imbalance.markdown(data)
    crt_line = next(line for line in md.splitlines() if line.startswith("| imbalance: crt"))
    assert "0.600 ± 0.141 (n=2)" in crt_line and "n/a (no generated faces)" in crt_line
    gan_line = next(line for line in md.splitlines() if line.startswith("| augmentation: gan"))
    assert "(1 run(s) failed)" in gan_line and "| 0.650 |" in gan_line and "| 0.900 |" in gan_line
    assert "uses crt" in md and "VALIDATION" in md


def test_report_includes_compare_imbalance(tmp_path):
    root = tmp_path / "imb"
    write_run(root / "seed0" / "crt", 0,
              [{"stage": "classifier", "mode": "pretrained", "epoch": 0, "wall_clock_s": 10.0,
                "val_balanced_accuracy": 0.6}], {"classifier": {"mode": "pretrained"}})
    _imbalance_json(root)
    out = tmp_path / "report"
    result = build_report([root], out)
    assert result["imbalance"] == [str(root / "compare_imbalance.json")]
    md = (out / "report.md").read_text()
    assert "Imbalance comparison (imb)" in md and "0.600 ± 0.141 (n=2)" in md
    assert "![imbalance comparison](compare_imbalance.png)" in md
    assert (out / "compare_imbalance.png").read_bytes()[:4] == b"\x89PNG"
    assert "Imbalance comparison (imb)" in (out / "report.html").read_text()
    # without the file, no section and no stale figure
    (root / "compare_imbalance.json").unlink()
    result = build_report([root], out)
    assert result["imbalance"] == [] and not (out / "compare_imbalance.png").exists()
    assert "Imbalance comparison" not in (out / "report.md").read_text()


def test_verdict_opens_the_report_and_calls_no_difference_within_noise(report):
    out, result = report
    v = next(v for v in result["verdicts"] if v["stage"] == "detector")
    # pretrained's fractions 13.33/40 and 24/44 beat finetune's 21/40 (one seed: no interval,
    # so that comparison is not tested: neither a difference nor within noise); fixed never reaches
    assert v["fastest"] == "pretrained" and v["fastest_noise"] == []
    assert v["speedup"]["mean"] == pytest.approx((40 / (8 + 0.1 / 0.15 * 8) + 44 / 24) / 2)
    # best final: pretrained 0.55/0.50 (mean 0.525); with two seeds its t-interval
    # 0.525 +- 12.706 * 0.0354 / sqrt 2 = +-0.318 overlaps every other mode
    assert v["best"] == "pretrained" and v["best_score"]["mean"] == pytest.approx(0.525)
    assert v["best_score"]["hi"] - 0.525 == pytest.approx(12.7062047 * 0.05 / 2 ** 0.5 / 2 ** 0.5, rel=1e-6)
    assert sorted(v["best_noise"]) == ["fixed", "vanilla"]  # finetune: one seed, not tested
    html = (out / "report.html").read_text()
    body = html[html.index("<body>"):]
    assert body.index("Verdict: which mode to use") < body.index("<p>")  # before anything else
    verdict = result["tables"]["verdict"]["rows"][0]
    assert verdict[0] == "detector" and verdict[1].startswith("pretrained (2/2 seeds)")
    assert "fixed (s 0.874 [0.861, 0.885])" == verdict[4] and verdict[5] == "best final only"
    noise = {tuple(r[:2]): r[2:] for r in result["tables"]["noise"]["rows"]}
    assert noise["detector", "vanilla vs pretrained"][0] == "within noise"
    assert noise["detector", "vanilla vs finetune"][0] == "one seed: no interval"


def test_overlap_rule_on_hand_made_intervals():
    from dafsl.report.runs import mean_ci, overlap

    a, b = mean_ci([1.0, 1.1, 0.9]), mean_ci([2.0, 2.1, 1.9])  # t(0.975, 2) = 4.303: +-0.248
    assert a["hi"] == pytest.approx(1.0 + 4.30265273 * 0.1 / 3 ** 0.5, rel=1e-6)
    assert not overlap(a, b)  # [0.75, 1.25] vs [1.75, 2.25]: a difference
    assert overlap(a, mean_ci([1.2, 1.3, 1.4]))  # [1.05, 1.55] overlaps
    assert overlap(a, mean_ci([5.0]))  # one value: no interval, no difference claimed
