"""Reading run directories for the report: every (run, stage) training with its
metric records and summary, and the statistics over seeds (mean ± spread, time to
target). Only ``metrics.jsonl``, ``summary.json`` and ``config.yaml`` (for the seed)
are read, plus the PNGs a stage left in ``<run>/<stage>/``."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from dafsl.engine import STEP_EVAL
from dafsl.errors import DafslError
from dafsl.runs import read_metrics
from dafsl.stages import CONCRETE_MODES as MODES
from dafsl.stages import STAGES as _REGISTRY

STAGES = tuple(_REGISTRY)
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Target:
    """The score a stage is judged by: its metric key(s) in metrics.jsonl (the first one
    logged counts: the classifier logs ``val_balanced_accuracy``) and its direction."""

    keys: tuple[str, ...]
    higher_is_better: bool
    label: str
    percent: bool = False  # shown x100

    def key_in(self, runs: Sequence["StageRun"]) -> str:
        """The first of ``keys`` any of ``runs`` logged (else the first key)."""
        for key in self.keys:
            if any(is_number(r.get(key)) for run in runs for r in run.records):
                return key
        return self.keys[0]


TARGETS = {"detector": Target(("map50",), True, "val mAP@0.5 (11-point)", percent=True),
           "augmenter": Target(("kid",), False, "KID (lower is better)"),
           "classifier": Target(("val_balanced_accuracy", "balanced_accuracy"), True,
                                "val balanced accuracy", percent=True)}


@dataclass
class StageRun:
    """One training of one stage: its metric records in epoch order and its summary."""

    run_dir: Path
    stage: str
    mode: str
    seed: int | None
    records: list[dict]
    summary: dict
    images: list[Path] = field(default_factory=list)
    step_evals: list[dict] = field(default_factory=list)  # "kind": "step_eval" records, by step

    def final(self, key: str) -> float | None:
        """Last logged value of ``key`` (None when never logged)."""
        vals = [r[key] for r in self.records if is_number(r.get(key))]
        return float(vals[-1]) if vals else None

    @property
    def train_time_s(self) -> float | None:
        last = self.final("wall_clock_s")
        return last if last is not None else as_number(self.summary.get("train_time_s"))


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def as_number(v) -> float | None:
    return float(v) if is_number(v) else None


# ------------------------------------------------------------------- collecting


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories under ``paths`` (a run dir holds metrics.jsonl or summary.json)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise DafslError(f"{p}: run directory not found")
        hits = sorted({f.parent for name in ("metrics.jsonl", "summary.json") for f in p.rglob(name)})
        if not hits:
            raise DafslError(f"{p}: no metrics.jsonl or summary.json below it")
        found += [h for h in hits if h not in found]
    return found


def _stage_images(stage_dir: Path) -> list[Path]:
    """PNGs a stage left: its folder and one level below, where a folder of more than two
    (sample grids per epoch) contributes its last. Generated faces are data, not figures."""
    if not stage_dir.is_dir():
        return []
    out = sorted(stage_dir.glob("*.png"))
    for d in sorted(p for p in stage_dir.iterdir() if p.is_dir() and not p.name.startswith("generated")):
        pngs = sorted(d.glob("*.png"))
        out += pngs[-1:] if len(pngs) > 2 else pngs  # a series (samples/epoch*.png): the last
    return out


def collect(run_dirs: Sequence[Path]) -> tuple[list[StageRun], list[dict]]:
    """All stage trainings in ``run_dirs`` and every ``--kd auto`` decision recorded."""
    runs, decisions = [], []
    for rd in run_dirs:
        summary = {}
        if (rd / "summary.json").is_file():
            try:
                summary = json.loads((rd / "summary.json").read_text())
            except json.JSONDecodeError:
                raise DafslError(f"{rd / 'summary.json'}: invalid JSON") from None
        seed = None
        if (rd / "config.yaml").is_file():
            seed = (yaml.safe_load((rd / "config.yaml").read_text()) or {}).get("seed")
        records = read_metrics(rd / "metrics.jsonl")
        for stage in STAGES:
            s_sum = summary.get(stage) if isinstance(summary.get(stage), dict) else {}
            if isinstance(s_sum.get("auto"), dict):
                decisions.append({"stage": stage, **s_sum["auto"]})
            mine = [r for r in records if r.get("stage") == stage]
            recs = sorted((r for r in mine if r.get("kind") != STEP_EVAL), key=lambda r: r["epoch"])
            if not recs:
                continue
            steps = sorted((r for r in mine if r.get("kind") == STEP_EVAL), key=lambda r: r["step"])
            mode = recs[-1].get("mode", s_sum.get("mode", "?"))
            runs.append(StageRun(rd, stage, mode, seed, recs, s_sum, _stage_images(rd / stage), steps))
    return runs, decisions


# ------------------------------------------------------------------- statistics


def time_to_target(records: Sequence[dict], key: str, target: float, higher_is_better: bool
                   ) -> dict | None:
    """When ``key`` first reaches ``target`` (>= when higher is better, else <=), linearly
    interpolated in training time between the two evaluations that bracket the crossing:
    {"epoch", "wall_clock_s", "value", "bracket": [t_before, t_at]} (``epoch`` and
    ``value`` of the evaluation that reached it; ``step`` too for step evaluations).
    None ("never") when no evaluation reaches it. When the first evaluation already
    reaches it there is nothing to interpolate from: its time is returned (an upper
    bound, ``"upper_bound": True``). Records are ordered by ``step``, else ``epoch``."""
    order = (lambda r: r["step"]) if all("step" in r for r in records) else (lambda r: r["epoch"])
    prev = None
    for r in sorted(records, key=order):
        v = r.get(key)
        if not is_number(v):
            continue
        t = float(r["wall_clock_s"])
        if v >= target if higher_is_better else v <= target:
            hit = {"epoch": int(r["epoch"]), "wall_clock_s": t, "value": float(v), "bracket": [t, t]}
            if "step" in r:
                hit["step"] = int(r["step"])
            if prev is None:
                hit["upper_bound"] = True
            elif prev[1] != v:
                t0, v0 = prev
                hit["wall_clock_s"] = t0 + (target - v0) / (v - v0) * (t - t0)
                hit["bracket"] = [t0, t]
            return hit
        prev = (t, float(v))
    return None


def score_series(run: StageRun, key: str, steps: bool) -> list[dict]:
    """The evaluations time to target reads: the step evaluations (a fixed val subset)
    when ``steps``, else the per-epoch records."""
    return run.step_evals if steps else run.records


def mean_spread(values: Sequence[float | None]) -> dict:
    """Mean, sample standard deviation (0 for one value), min, max and n of the numbers."""
    xs = np.array([v for v in values if v is not None], dtype=np.float64)
    if xs.size == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": int(xs.size), "mean": float(xs.mean()),
            "std": float(xs.std(ddof=1)) if xs.size > 1 else 0.0,
            "min": float(xs.min()), "max": float(xs.max())}


def mean_ci(values: Sequence[float | None], confidence: float = 0.95) -> dict:
    """:func:`mean_spread` plus the ``confidence`` interval of the mean from the
    t-distribution with n - 1 degrees of freedom (``lo``, ``hi``; None for n < 2)."""
    out = {**mean_spread(values), "lo": None, "hi": None}
    if out["n"] > 1:
        from scipy import stats

        half = float(stats.t.ppf(0.5 + confidence / 2, out["n"] - 1)) * out["std"] / math.sqrt(out["n"])
        out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    return out


def fmt_ci(stat: dict, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    """``mean ± std [lo, hi] (n=k)``: :func:`fmt` with the 95 % interval of the mean."""
    if not stat["n"] or stat.get("lo") is None:
        return fmt(stat, digits, scale, unit)
    return (f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}{unit} "
            f"[{stat['lo'] * scale:.{digits}f}, {stat['hi'] * scale:.{digits}f}] (n={stat['n']})")


def within_noise(a: dict, b: dict) -> bool:
    """Both have a 95 % interval (>= 2 values) and the intervals overlap: a comparison that
    was tested and found no difference (one seed: not tested, False)."""
    return a.get("lo") is not None and b.get("lo") is not None and overlap(a, b)


def overlap(a: dict, b: dict) -> bool:
    """Whether two :func:`mean_spread` intervals overlap (or either has none: fewer than
    two values can show no difference): a difference counts only when this is False."""
    if not a["n"] or not b["n"] or a.get("lo") is None or b.get("lo") is None:
        return True
    return a["lo"] <= b["hi"] and b["lo"] <= a["hi"]


def fmt(stat: dict | float | None, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    """``mean ± std (n=k)`` of a :func:`mean_spread` dict, or one number."""
    if isinstance(stat, dict):
        if not stat["n"]:
            return NOT_MEASURED
        if stat["n"] == 1:
            return f"{stat['mean'] * scale:.{digits}f}{unit}"
        return (f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}{unit} "
                f"(n={stat['n']})")
    return NOT_MEASURED if stat is None else f"{stat * scale:.{digits}f}{unit}"


def by_mode(runs: Sequence[StageRun], stage: str) -> dict[str, list[StageRun]]:
    """Trainings of ``stage`` grouped by mode (paper order), seeds sorted."""
    out: dict[str, list[StageRun]] = {}
    for mode in (*MODES, *sorted({r.mode for r in runs} - set(MODES))):
        group = sorted((r for r in runs if r.stage == stage and r.mode == mode),
                       key=lambda r: (r.seed is None, r.seed or 0, str(r.run_dir)))
        if group:
            out[mode] = group
    return out


def summary_value(run: StageRun, key: str) -> float | None:
    """A final figure from summary.json (``test_<key>`` first, then ``<key>``)."""
    for k in (f"test_{key}", key):
        if is_number(run.summary.get(k)):
            return float(run.summary[k])
    return None


def time_to_target_rows(runs: Sequence[StageRun], stage: str) -> list[dict]:
    """Per mode: wall-clock time to first reach the same seed's vanilla final score."""
    t = TARGETS[stage]
    groups = by_mode(runs, stage)
    key = t.key_in([r for g in groups.values() for r in g])
    vanilla = {r.seed: r for r in groups.get("vanilla", [])}
    # step evaluations when every run logged them (same subset in every mode), else epochs
    steps = bool(runs) and all(any(is_number(e.get(key)) for e in r.step_evals)
                               for g in groups.values() for r in g)
    rows = []
    for mode, group in groups.items():
        times, epochs, fractions, speedups, never, targets, at_start = [], [], [], [], 0, [], 0
        for run in group:
            ref = vanilla.get(run.seed)
            finals = [e[key] for e in score_series(ref, key, steps) if is_number(e.get(key))] if ref else []
            if not finals:
                continue
            target = finals[-1]
            targets.append(target)
            hit = time_to_target(score_series(run, key, steps), key, target, t.higher_is_better)
            if hit is None:
                never += 1
                continue
            times.append(hit["wall_clock_s"])
            epochs.append(hit["epoch"] + 1)
            if ref.train_time_s:
                fractions.append(hit["wall_clock_s"] / ref.train_time_s)
                if hit["wall_clock_s"] > 0:
                    speedups.append(ref.train_time_s / hit["wall_clock_s"])
                else:  # the evaluation before the first step already reached it
                    at_start += 1
        rows.append({"stage": stage, "mode": mode, "target": mean_spread(targets),
                     "time_s": mean_spread(times), "epochs": mean_spread(epochs),
                     "fraction_of_vanilla": mean_ci(fractions), "speedup": mean_ci(speedups),
                     "never": never, "compared": len(targets), "at_start": at_start,
                     "resolution": "step evaluations (val subset)" if steps else "epochs"})
    return rows
