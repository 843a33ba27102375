"""The command line answers bad input with one line and exit status 2."""
import json
import subprocess
import sys

import pytest

from dafsl.manifest import load_manifest


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dafsl.pipeline", *args, "--quiet"],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], lines


def test_unknown_set_key(tmp_path):
    proc = run_cli("--config", "configs/smoke.yaml", "--set", "data.bogus=1",
                   "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "unknown config key 'data.bogus'")


def test_invalid_set_value(tmp_path):
    proc = run_cli("--config", "configs/smoke.yaml", "--set", "data.imbalance_threshold=lots",
                   "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "data.imbalance_threshold must be a number")


def test_missing_manifest(tmp_path):
    proc = run_cli("--config", "configs/smoke.yaml", "--set",
                   f"data.manifest={tmp_path}/absent.json", "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "absent.json: manifest not found")


def test_empty_dlack_class(tmp_path):
    m = json.loads(load_manifest("synthfaces_tiny").path.read_text())
    m["name"] = "no_female"
    m["splits"]["train"].update(count=4, female_faces=0)
    path = tmp_path / "no_female.json"
    path.write_text(json.dumps(m))
    proc = run_cli("--config", "configs/smoke.yaml", "--set", f"data.manifest={path}",
                   "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "class 'female' has no samples")


def test_resume_needs_a_run_directory():
    proc = run_cli("--config", "configs/smoke.yaml", "--resume")
    assert_one_line_error(proc, "--resume needs --out")


def test_run_directory_holds_config_and_split(tmp_path):
    from dafsl.pipeline import main

    out = tmp_path / "run"
    main(["--stage", "all", "--kd", "vanilla", "--config", "configs/smoke.yaml", "--quiet",
          "--out", str(out), "--set", "stages.all=[]"])
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["manifest"] == "synthfaces_tiny" and cfg["stages"]["all"] == []
    split = json.loads((out / "data_split.json").read_text())
    assert split["dlack"] == ["female"] and split["counts"]["female"] == 4


