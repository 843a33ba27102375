"""pipelines/compare_imbalance.py: the selection on validation, the run plan, and one
end-to-end run on the smoke config."""
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from dafsl.config import REPO_ROOT


def _pipeline():
    spec = importlib.util.spec_from_file_location(
        "compare_imbalance", REPO_ROOT / "pipelines" / "compare_imbalance.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_best_of_the_others_is_chosen_on_validation_not_test():
    choose_best = _pipeline().choose_best

    def run(val, test, ok=True):
        return {"ok": ok, "val_balanced_accuracy": val, "balanced_accuracy": test}

    runs = {"none": [run(0.60, 0.90), run(0.62, 0.95)],               # best on TEST, mean val 0.61
            "crt": [run(0.70, 0.55), run(0.66, 0.50)],                # best on VAL, mean val 0.68
            "ncm": [run(0.99, 0.99, ok=False), run(0.50, 0.60)],      # the failed run does not count
            "weighted_loss": [run(None, 0.99)]}                       # never measured on val
    best, means = choose_best(runs, ["none", "crt", "ncm", "weighted_loss"])
    assert best == "crt"
    assert means["crt"] == pytest.approx(0.68) and means["ncm"] == pytest.approx(0.50)
    assert means["weighted_loss"] is None
    # ties go to the earlier candidate; no measured candidate: no choice
    assert choose_best({"a": [run(0.7, 0)], "b": [run(0.7, 1)]}, ["a", "b"])[0] == "a"
    assert choose_best({"a": [run(None, 1.0)]}, ["a"]) == (None, {"a": None})


def test_rows_and_upstream_plan(tmp_path):
    mod = _pipeline()
    assert mod.row_spec("crt")["overrides"] == ["classifier.augmentation=none", "classifier.imbalance=crt"]
    assert mod.row_spec(mod.BEST, "ncm")["overrides"] == ["classifier.augmentation=gan+classic",
                                                          "classifier.imbalance=ncm",
                                                          "classifier.probe=false"]
    assert "classifier.probe=false" not in mod.row_spec("gan+classic")["overrides"]
    oracle = mod.row_spec("oracle")
    assert oracle["oracle"] and "data.manifest=synthfaces_oracle" in oracle["overrides"]
    assert [mod.row_spec(r)["uses_generated"] for r in ("none", "classic", "gan", "gan+classic")] == \
        [False, False, True, True]
    plan = mod.upstream_runs([3, 4], tmp_path, need_gan=True, share=True)
    up = [tmp_path / f"seed{s}" / "upstream" for s in (3, 4)]
    assert plan == [(3, "detector", up[0], None), (3, "augmenter", up[0], None),
                    (4, "augmenter", up[1], up[0])]  # the detector once, shared
    assert [p[:2] for p in mod.upstream_runs([0, 1], tmp_path, False, False)] == \
        [(0, "detector"), (1, "detector")]
    r = subprocess.run([sys.executable, str(REPO_ROOT / "pipelines" / "compare_imbalance.py"),
                        "--rows", "none,bogus", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--rows: unknown value 'bogus'" in r.stderr


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    """--quick, 3 rows, 1 seed: 1-2 minutes on the shared 2-core CPU (zoo build included)."""
    out = tmp_path / "imb"
    r = subprocess.run([sys.executable, str(REPO_ROOT / "pipelines" / "compare_imbalance.py"),
                        "--quick", "--rows", "none,balanced_sampling,gan", "--seeds", "1",
                        "--out", str(out)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "budget 45 min" in r.stdout
    data = json.loads((out / "compare_imbalance.json").read_text())
    assert [row["row"] for row in data["rows"]] == ["none", "balanced_sampling", "gan"]
    assert data["seeds"] == [0] and data["positive"] == "female"
    md = (out / "compare_imbalance.md").read_text()
    assert (out / "compare_imbalance.png").read_bytes()[:4] == b"\x89PNG"
    for row in data["rows"]:
        run_dir = out / "seed0" / row["row"]
        s = json.loads((run_dir / "summary.json").read_text())["classifier"]
        # by hand from the run directory: one seed, so the mean is the run's figure
        assert row["runs"][0]["balanced_accuracy"] == s["test_balanced_accuracy"]
        assert row["runs"][0]["recall"] == s["test_recall_female"]
        assert row["runs"][0]["system_map50"] == s["system_map50"]
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row['label']} "))
        assert f"| {np.mean([s['test_balanced_accuracy']]):.3f} |" in line
        # the selection figure is the final model's on val: for these rows the last epoch's
        last = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
        assert row["runs"][0]["val_balanced_accuracy"] == pytest.approx(last["val_balanced_accuracy"])
    gan = next(ln for ln in md.splitlines() if ln.startswith("| augmentation: gan"))
    none = next(ln for ln in md.splitlines() if ln.startswith("| imbalance: none"))
    assert ("not measured" in gan) or ("n/a" not in gan)  # the probe: measured or "not measured"
    assert "n/a (no generated faces)" in none
