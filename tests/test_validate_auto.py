"""pipelines/validate_auto.py: pair parsing and the threshold re-fit from a table."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
import validate_auto  # noqa: E402

from dafsl.errors import DafslError  # noqa: E402


def rows(*pts):
    return [{"similarity": s, "best": m} for s, m in pts]


def test_refit_separates_the_measured_best_modes():
    r = validate_auto.refit_thresholds(rows((0.87, "fixed"), (0.91, "finetune"), (0.95, "pretrained"),
                                            (0.99, "pretrained")))
    # similar half-way between 0.91 and 0.95, dissimilar half-way between 0.87 and 0.91
    assert r == {"similar": 0.93, "dissimilar": 0.89, "consistent": True, "points": 4}


def test_refit_when_pretrained_is_always_best_never_freezes():
    r = validate_auto.refit_thresholds(rows((0.87, "pretrained"), (0.98, "pretrained")))
    assert r["similar"] == 0.87 and r["dissimilar"] == 0.0 and r["consistent"]


def test_refit_reports_an_inconsistent_table():
    # pretrained best below a finetune-best pair: no thresholds fit both
    r = validate_auto.refit_thresholds(rows((0.88, "pretrained"), (0.95, "finetune"), (0.99, "pretrained")))
    assert r["similar"] == pytest.approx(0.97) and not r["consistent"]


def test_pairs_parse_and_reject():
    args = validate_auto.get_args_parser().parse_args(["--pairs", "none", "--pair", "mine=a.json:b.json"])
    assert validate_auto.parse_pairs(args) == {"mine": ("a.json", "b.json", "a.json vs b.json (user pair)")}
    assert len(validate_auto.parse_pairs(validate_auto.get_args_parser().parse_args([]))) == 5
    with pytest.raises(DafslError, match="unknown pair 'nope'"):
        validate_auto.parse_pairs(validate_auto.get_args_parser().parse_args(["--pairs", "nope"]))
    with pytest.raises(DafslError, match="NAME=SOURCE_MANIFEST:TARGET_MANIFEST"):
        validate_auto.parse_pairs(validate_auto.get_args_parser().parse_args(["--pair", "x=a"]))
