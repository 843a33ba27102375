"""Kill a stage at random moments, resume it each time, and check nothing is lost.

    python pipelines/fault_injection.py                       # default detector, 20 kills
    python pipelines/fault_injection.py --config configs/smoke.yaml --kills 5 --out /tmp/fi

1. An uninterrupted run of the stage (``--out``/plain) gives the reference figures and
   its wall time T.
2. A second run is killed with SIGKILL at a moment drawn uniformly from (0, T) after its
   start (T: the last whole run's duration, the machine being shared) (seeded: ``--seed``), ``--kills`` times; after every kill each checkpoint in the
   run directory is loaded (``weights_only=True``) and every unloadable one is counted;
   then the run is restarted with ``--resume``. After the last kill it runs to the end.
   A run that finishes before its next kill is compared and the following kills go to a
   fresh run, so every kill lands in training, not in a finished run.
3. The table: kills, unloadable checkpoints, completed runs, and how many of them ended
   with the uninterrupted run's figures and every logged loss (all must: training
   resumes from the last epoch checkpoint with its RNG states).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dafsl.errors import DafslError, exit_on_error  # noqa: E402
from dafsl.runs import atomic_write_bytes, load_checkpoint, read_metrics  # noqa: E402

IGNORED = ("_s", "_mb")  # timings and memory differ between runs


def pipeline_cmd(args, out: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "dafsl.pipeline", "--stage", args.stage, "--kd", args.kd,
           "--config", args.config, "--out", str(out), "--quiet"]
    for kv in args.overrides:
        cmd += ["--set", kv]
    return cmd + (["--resume"] if resume else [])


def figures(out: Path, stage: str) -> dict:
    summary = json.loads((out / "summary.json").read_text())[stage]
    return {k: v for k, v in summary.items() if not k.endswith(IGNORED) and k != "zoo_build_time_by_entry_s"}


def losses(out: Path, stage: str) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith(IGNORED)} for r in read_metrics(out / "metrics.jsonl", stage)]


def unloadable(out: Path) -> list[str]:
    bad = []
    for p in sorted((out / "checkpoints").glob("*.pt")):
        try:
            load_checkpoint(p)
        except DafslError as err:
            bad.append(str(err))
    return bad


@exit_on_error
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    p.add_argument("--stage", default="detector")
    p.add_argument("--kd", default="pretrained")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    p.add_argument("--out", default="runs/fault_injection")
    args = p.parse_args(argv)
    out = Path(args.out)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

    plain, plain_meta = out / "plain", out / "plain.json"
    if plain_meta.is_file() and (plain / "summary.json").is_file():  # measured before: reuse
        total = json.loads(plain_meta.read_text())["wall_s"]
    else:
        # warm the caches (data, zoo) so that T measures the stage, not a first build
        subprocess.run(pipeline_cmd(args, out / "warmup", False) + ["--set", f"{args.stage}.epochs=1"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        t0 = time.perf_counter()
        subprocess.run(pipeline_cmd(args, plain, False), cwd=ROOT, env=env, check=True, capture_output=True)
        total = time.perf_counter() - t0
        atomic_write_bytes(plain_meta, json.dumps({"wall_s": total}).encode())
    print(f"uninterrupted: {total:.0f}s")

    killed = out / "killed"
    if killed.exists():
        shutil.rmtree(killed)  # a fresh killed run every time
    rng = random.Random(args.seed)
    reference = (figures(plain, args.stage), losses(plain, args.stage))
    rows, bad_total, runs_done, runs_equal = [], 0, 0, 0
    resume, kills = False, 0

    def finished_run() -> None:
        nonlocal runs_done, runs_equal, resume
        runs_done += 1
        runs_equal += (figures(killed, args.stage), losses(killed, args.stage)) == reference
        shutil.rmtree(killed)  # the next kills land in a fresh run
        resume = False

    while kills < args.kills:
        at = rng.uniform(0.0, total)
        started = time.perf_counter()
        proc = subprocess.Popen(pipeline_cmd(args, killed, resume), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            bad = unloadable(killed)
            bad_total += len(bad)
            epochs = len(read_metrics(killed / "metrics.jsonl", args.stage))
            rows.append({"kill": kills, "at_s": round(at, 1), "unloadable": len(bad),
                         "epochs_logged": epochs, "resumed": resume})
            print(f"kill {kills:2d} at {at:6.1f}s{' (resumed run)' if resume else ''}: epochs "
                  f"logged {epochs}, unloadable checkpoints {len(bad)}", flush=True)
            for line in bad:
                print("   ", line)
            resume = True
            continue
        if proc.returncode != 0:
            raise DafslError(f"{killed}: the resumed run failed: {proc.stderr.strip().splitlines()[-1][:300]}")
        if not resume:  # a whole run: the machine's speed now, for the next kill moments
            total = time.perf_counter() - started
        finished_run()
        print(f"run {runs_done} finished before its next kill ({total:.0f}s); figures and losses equal to the "
              f"uninterrupted run: {runs_equal == runs_done}", flush=True)
    subprocess.run(pipeline_cmd(args, killed, resume), cwd=ROOT, env=env, check=True, capture_output=True)
    final = figures(killed, args.stage)
    finished_run()
    result = {"config": args.config, "stage": args.stage, "kills": kills,
              "uninterrupted_s": round(total, 1), "unloadable_checkpoints": bad_total,
              "runs_completed": runs_done, "runs_equal_to_uninterrupted": runs_equal,
              "final_figures_equal": runs_equal == runs_done, "final": final, "rows": rows}
    atomic_write_bytes(out / "fault_injection.json", (json.dumps(result, indent=2) + "\n").encode())
    print(f"\n{kills} kills over {runs_done} runs: {bad_total} unloadable checkpoints; runs whose "
          f"figures and every logged loss equal the uninterrupted run's: {runs_equal}/{runs_done}")
    print(f"written: {out / 'fault_injection.json'}")
    if bad_total or runs_equal != runs_done:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
