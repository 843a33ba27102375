"""The answer a mode comparison gives, per stage: which mode reaches vanilla's final score
first and how much faster (× with its 95 % interval), which mode ends best, what
``--kd auto`` chose, and which differences between modes are within noise.

Statistics (:func:`dafsl.report.runs.mean_ci`): mean ± sample std over seeds and the
95 % interval of the mean from the t-distribution (n = 3: mean ± 4.30 std / sqrt 3). A
difference between two modes is called a difference only when their intervals do not
overlap (:func:`dafsl.report.runs.overlap`); with one seed there is no interval and
nothing is called a difference.
"""
from __future__ import annotations

from typing import Sequence

from dafsl.report.runs import (NOT_MEASURED, STAGES, TARGETS, StageRun, as_number, by_mode, fmt,
                               fmt_ci, mean_ci, within_noise)
from dafsl.report.tables import Table

TRANSFER = ("fixed", "finetune", "pretrained")


def final_scores(runs: Sequence[StageRun], stage: str) -> dict[str, dict]:
    """Per mode: :func:`mean_ci` of the final validation score (the stage's target key,
    last per-epoch record) over seeds."""
    groups = by_mode(runs, stage)
    key = TARGETS[stage].key_in([r for g in groups.values() for r in g])
    return {mode: mean_ci([r.final(key) for r in g]) for mode, g in groups.items()}


def stage_verdict(runs: Sequence[StageRun], stage: str, ttt: Sequence[dict],
                  decision: dict | None) -> dict:
    """The verdict of one stage as a dict (also what validate_auto reads):
    ``fastest`` (mode or None), ``speedup``/``fraction`` stats of it, ``fastest_noise``
    (modes within noise of it), ``best``/``best_score``/``best_noise`` likewise for the
    final score, ``auto`` (the decision's mode) and the time-to-target rows used."""
    t = TARGETS[stage]
    rows = {r["mode"]: r for r in ttt if r["stage"] == stage}
    reaching = [m for m in TRANSFER if m in rows and rows[m]["compared"]
                and rows[m]["never"] == 0]
    fastest = min(reaching, key=lambda m: rows[m]["fraction_of_vanilla"]["mean"], default=None)
    fastest_noise = [m for m in reaching if m != fastest and within_noise(
        rows[m]["fraction_of_vanilla"], rows[fastest]["fraction_of_vanilla"])] if fastest else []
    finals = {m: s for m, s in final_scores(runs, stage).items() if s["n"]}
    sign = 1 if t.higher_is_better else -1
    best = max(finals, key=lambda m: sign * finals[m]["mean"], default=None)
    best_noise = [m for m in finals if m != best and within_noise(finals[m], finals[best])] if best else []
    return {"stage": stage, "fastest": fastest, "fastest_noise": fastest_noise,
            "speedup": rows[fastest]["speedup"] if fastest else None,
            "at_start": rows[fastest].get("at_start", 0) if fastest else 0,
            "fraction": rows[fastest]["fraction_of_vanilla"] if fastest else None,
            "reached": {m: f"{r['compared'] - r['never']}/{r['compared']}" for m, r in rows.items()},
            "best": best, "best_score": finals.get(best), "best_noise": best_noise,
            "finals": finals, "auto": (decision or {}).get("mode"),
            "resolution": next(iter(rows.values()))["resolution"] if rows else None}


def _auto_cell(d: dict | None) -> str:
    if not d:
        return NOT_MEASURED
    cell = f"{d.get('mode', '?')} (s {fmt(as_number(d.get('similarity')), 3)}"
    iv = d.get("similarity_interval")
    if isinstance(iv, list) and len(iv) == 2:
        cell += f" [{iv[0]:.3f}, {iv[1]:.3f}]"
    return cell + (", undecided within noise)" if d.get("undecided") else ")")


def _agreement(v: dict) -> str:
    auto = v["auto"]
    if not auto or auto == "not decided":
        return NOT_MEASURED
    fast = v["fastest"] is not None and auto in (v["fastest"], *v["fastest_noise"])
    good = v["best"] is not None and auto in (v["best"], *v["best_noise"])
    return {(True, True): "yes", (True, False): "fastest only", (False, True): "best final only",
            (False, False): "no"}[(fast, good)]


def verdict_table(runs: Sequence[StageRun], ttt: Sequence[dict], decisions: Sequence[dict]
                  ) -> tuple[Table, list[dict]]:
    """The report's opening table, one row per stage measured, and the verdict dicts."""
    rows, verdicts = [], []
    for stage in STAGES:
        if not by_mode(runs, stage):
            continue
        t = TARGETS[stage]
        scale, digits = (100, 2) if t.percent else (1, 4)
        decision = next((d for d in decisions if d["stage"] == stage), None)
        v = stage_verdict(runs, stage, ttt, decision)
        verdicts.append(v)
        if v["fastest"]:
            noise = f"; within noise: {', '.join(v['fastest_noise'])}" if v["fastest_noise"] else ""
            fastest = f"{v['fastest']} ({v['reached'][v['fastest']]} seeds){noise}"
            speed = (f"{fmt_ci(v['speedup'], 2, unit='×')}; "
                     f"{fmt_ci(v['fraction'], 1, 100, '%')} of vanilla's time")
            if v["at_start"]:
                speed += (f"; {v['at_start']} seed(s) at step 0 (before training: × infinite, "
                          f"left out of the ×)")
        else:
            fastest, speed = "none reaches it in every seed", "-"
        if v["best"]:
            noise = f"; within noise: {', '.join(v['best_noise'])}" if v["best_noise"] else ""
            best = f"{v['best']}: {fmt_ci(v['best_score'], digits, scale)}{noise}"
        else:
            best = NOT_MEASURED
        rows.append([stage, fastest, speed, best, _auto_cell(decision), _agreement(v)])
    if not rows:
        rows = [["-", NOT_MEASURED, "", "", "", ""]]
    notes = ["Fastest: the transfer mode whose mean time to reach the same seed's vanilla final "
             "validation score is lowest, among modes reaching it in every seed; time to target is "
             "interpolated linearly between the two evaluations that bracket the target "
             "(step evaluations on a fixed val subset when every run logged them, else epochs).",
             "× faster = vanilla's training time / the mode's time to target, per seed; "
             "mean ± std [95 % t-interval of the mean] (n seeds).",
             "Best final: the final validation score (last epoch, whole val split). 'Within noise': "
             "modes whose 95 % interval overlaps the named one's; a difference is called one only "
             "when the intervals do not overlap. With one seed there is no interval: nothing is "
             "tested, so neither a difference nor 'within noise' is claimed.",
             "auto agrees: 'yes' when its mode is the fastest and the best (or within noise of them)."]
    return Table("Verdict: which mode to use, per stage",
                 ["stage", "fastest to vanilla's final score", "× faster [95 % interval]",
                  "best final score (mode)", "--kd auto chose (similarity [interval])",
                  "auto agrees"], rows, notes), verdicts


def noise_table(runs: Sequence[StageRun], ttt: Sequence[dict]) -> Table:
    """Every pair of modes per stage: final score and time to target, difference or within
    noise (95 % intervals overlap)."""
    rows = []
    for stage in STAGES:
        finals = {m: s for m, s in final_scores(runs, stage).items() if s["n"]}
        fracs = {r["mode"]: r["fraction_of_vanilla"] for r in ttt
                 if r["stage"] == stage and r["fraction_of_vanilla"]["n"]}
        modes = list(finals)
        for i, a in enumerate(modes):
            for b in modes[i + 1:]:
                cells = []
                for stats in (finals, fracs):
                    if a not in stats or b not in stats:
                        cells.append(NOT_MEASURED)
                    elif stats[a].get("lo") is None or stats[b].get("lo") is None:
                        cells.append("one seed: no interval")
                    else:
                        cells.append("within noise" if within_noise(stats[a], stats[b]) else
                                     f"difference ({a if stats[a]['mean'] > stats[b]['mean'] else b} higher)")
                rows.append([stage, f"{a} vs {b}", *cells])
    if not rows:
        rows = [["-", NOT_MEASURED, "", ""]]
    return Table("Differences between modes (95 % intervals over seeds)",
                 ["stage", "modes", "final validation score", "time to vanilla's final (% of vanilla)"],
                 rows, ["'higher' for time means slower; for KID (augmenter) a higher score is worse."])
