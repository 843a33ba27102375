"""pipelines/fault_injection.py on the smoke detector: kills at random moments, every
checkpoint loadable after each kill, and the resumed run's figures and losses equal to
the uninterrupted run's."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fault_injection_smoke(tmp_path, dafsl_cache):
    out = tmp_path / "fi"
    proc = subprocess.run([sys.executable, "pipelines/fault_injection.py", "--config",
                           "configs/smoke.yaml", "--kills", "3", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "fault_injection.json").read_text())
    assert result["unloadable_checkpoints"] == 0 and result["kills"] == 3
    assert result["final_figures_equal"] and result["runs_equal_to_uninterrupted"] == result["runs_completed"] >= 1


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path, dafsl_cache):
    proc = subprocess.run([sys.executable, "pipelines/gpu_check.py", "--device", "cpu", "--quick",
                           "--skip-chain", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "DAFSL_CACHE": str(dafsl_cache)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    (det,) = result["detector"]
    assert det["train_img_s"] > 0 and det["backbone_fwd_bwd_img_s"] > 0
    assert abs(det["ratio"] - det["train_img_s"] / det["backbone_fwd_bwd_img_s"]) < 0.01
