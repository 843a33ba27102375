"""pipelines/compare_distill.py --quick on random stand-in characters: every method's row,
the teacher trained once per seed and shared, each method's time counting every model it
needs, the orderings' paired differences, the table and the figure; the benchmark's split
by drawer."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dafsl.classifier import bench
from dafsl.runs import read_metrics

REPO = Path(__file__).resolve().parents[1]


def test_split_by_drawer_keeps_drawers_apart():
    chars = bench.fake_characters(12, 20, 8)
    d = bench.split_by_drawer(chars, 10, (12, 3, 5))
    assert (len(d.train), len(d.val), len(d.test)) == (120, 30, 50)
    assert len(d.classes) == 10 and set(np.unique(d.train.labels)) == set(range(10))
    assert d.train.images.dtype == np.uint8 and d.train.images.shape[1:] == (8, 8, 3)
    with pytest.raises(Exception, match="has 12 characters, asked for 20"):
        bench.split_by_drawer(chars, 20)


def test_compare_distill_quick(tmp_path):
    out = tmp_path / "cd"
    r = subprocess.run([sys.executable, "pipelines/compare_distill.py", "--quick", "--fake",
                        "--seeds", "2", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((out / "compare_distill.json").read_text())
    assert [row["method"] for row in data["rows"]] == list(bench.METHODS)
    assert (out / "compare_distill.png").stat().st_size > 0
    assert "TAKD" in (out / "compare_distill.md").read_text()
    rows = {row["method"]: row for row in data["rows"]}
    for seed in (0, 1):
        stages = {rec["stage"] for rec in read_metrics(out / f"seed{seed}" / "metrics.jsonl")}
        # cnn4 teacher once; cnn3 from it once (the same model under takd/dgkd/ensemble); the
        # students: none, hinton, takd, dgkd, ensemble, ddgsd
        assert sum(s.startswith("bench_cnn4-") for s in stages) == 1
        assert sum(s.startswith("bench_cnn3-") for s in stages) == 1
        assert sum(s.startswith("bench_cnn2-") for s in stages) == 6
        takd = next(x for x in rows["takd"]["runs"] if x["seed"] == seed)
        assert [m["model"] for m in takd["models"]] == ["cnn4", "cnn3", "cnn2"]
        assert takd["train_time_s"] == pytest.approx(sum(m["train_time_s"] for m in takd["models"]))
        hinton = next(x for x in rows["hinton"]["runs"] if x["seed"] == seed)
        assert hinton["models"][0] == takd["models"][0]  # the same teacher, trained once
    claims = {o["claim"]: o for o in data["orderings"]}
    acc = {m: [x["test_accuracy"] for x in rows[m]["runs"]] for m in ("dgkd", "takd")}
    assert claims["dgkd > takd"]["diffs"] == pytest.approx([a - b for a, b in zip(acc["dgkd"], acc["takd"])])
    again = subprocess.run([sys.executable, "pipelines/compare_distill.py", "--quick", "--fake",
                            "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    bad = subprocess.run([sys.executable, "pipelines/compare_distill.py", "--quick", "--fake",
                          "--chain", "cnn2", "--out", str(tmp_path / "bad")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--chain: expected at least two of cnn2..cnn10" in bad.stderr
