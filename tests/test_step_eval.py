"""Step-cadence evaluation (``eval_every_steps``) and time to target from it: the engine's
``step_eval`` records, the training clock without them, and the interpolated crossing on
the smoke config lying between the evaluations that bracket it."""
from __future__ import annotations

import json
import time

import pytest

from dafsl.config import CONFIG_DIR
from dafsl.engine import STEP_EVAL, fit
from dafsl.pipeline import main as pipeline_main
from dafsl.report.runs import collect, find_run_dirs, time_to_target, time_to_target_rows
from dafsl.runs import RunDir
from test_engine import TinyTrainer  # noqa: E402  (tests/ is on sys.path under pytest)

SMOKE = str(CONFIG_DIR / "smoke.yaml")


class QuickTrainer(TinyTrainer):
    """TinyTrainer (4 steps per epoch) with a slow step evaluation."""

    def __init__(self):
        super().__init__()
        self.quick_steps = []

    def evaluate_quick(self, step):
        self.quick_steps.append(step)
        time.sleep(0.3)
        return {"val_mse": self.evaluate(0)["val_mse"]}


def test_step_evals_logged_apart_and_kept_out_of_the_clock(tmp_path):
    trainer = QuickTrainer()
    records = fit(trainer, RunDir(tmp_path), 2, mode="vanilla", eval_every=3)
    # before training, every 3rd global step, and after the last step (8: not a multiple of 3)
    assert trainer.quick_steps == [0, 3, 6, 8]
    assert [r["epoch"] for r in records] == [0, 1] and all("kind" not in r for r in records)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if r.get("kind") == STEP_EVAL]
    assert [r["step"] for r in steps] == [0, 3, 6, 8]
    walls = [r["wall_clock_s"] for r in steps]
    assert walls == sorted(walls) and walls[0] == 0.0
    assert all(r["eval_time_s"] >= 0.3 for r in steps)
    # four 0.3 s evaluations happened, none of them on the training clock
    assert records[-1]["wall_clock_s"] < 0.3
    assert walls[-1] == pytest.approx(records[-1]["wall_clock_s"])  # the last one: end of training


def test_without_evaluate_quick_or_cadence_nothing_is_logged(tmp_path):
    fit(TinyTrainer(), RunDir(tmp_path / "a"), 1, mode="vanilla", eval_every=2)
    fit(QuickTrainer(), RunDir(tmp_path / "b"), 1, mode="vanilla", eval_every=0)
    for d in ("a", "b"):
        assert STEP_EVAL not in (tmp_path / d / "metrics.jsonl").read_text()


def test_smoke_time_to_target_lies_between_the_bracketing_evaluations(tmp_path):
    for mode in ("vanilla", "pretrained"):
        pipeline_main(["--stage", "detector", "--kd", mode, "--config", SMOKE, "--quiet",
                       "--out", str(tmp_path / mode), "--set", "detector.eval_every_steps=2",
                       "--set", "detector.eval_subset=8"])
    runs, _ = collect(find_run_dirs([tmp_path]))
    by_mode = {r.mode: r for r in runs}
    vanilla = by_mode["vanilla"]
    assert [e["step"] for e in vanilla.step_evals][:3] == [0, 2, 4]
    assert all(e["eval_images"] == 8 for e in vanilla.step_evals)
    target = vanilla.step_evals[-1]["map50"]  # vanilla's final score on the subset
    checked = 0
    for run in by_mode.values():
        hit = time_to_target(run.step_evals, "map50", target, True)
        if hit is None or hit.get("upper_bound"):
            continue
        t0, t1 = hit["bracket"]
        assert t0 <= hit["wall_clock_s"] <= t1
        before = next(e for e in run.step_evals if e["wall_clock_s"] == t0)
        at = next(e for e in run.step_evals if e["wall_clock_s"] == t1)
        assert before["map50"] < target <= at["map50"] and at["step"] > before["step"]
        assert at["step"] - before["step"] <= 2  # consecutive evaluations, 2 steps apart
        checked += 1
    assert checked >= 1  # vanilla crosses its own final score at the latest at its end
    rows = {r["mode"]: r for r in time_to_target_rows(runs, "detector")}
    assert rows["vanilla"]["resolution"].startswith("step")
    assert 0 < rows["vanilla"]["fraction_of_vanilla"]["mean"] <= 1.0
