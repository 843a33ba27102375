"""The shared stage runner: what every stage repeats, written once.

:func:`run_stage` takes a registered :class:`dafsl.stages.Stage` through the same steps:

1. ``--kd auto``: the similarity check (seed 001, eq. 1) picks the concrete mode;
2. the zoo entries the stage needs are resolved (built on first use) *before* seeding,
   so a run with a cached entry and one that builds it in-process draw the same random
   numbers and give the same figures;
3. the torch thread count (``<stage>.num_threads``) and the seed are set;
4. the stage's ``run(ctx) -> StageResult`` trains and scores;
5. one summary schema for every stage is written to ``summary.json``:
   ``mode``, ``transfer {...}``, ``train_time_s``, ``zoo_build_time_s`` (+ by entry),
   ``stage_time_s``, ``peak_rss_mb``, ``auto`` (if chosen so), then the stage's figures;
   and the stage's outputs go to ``<run>/<stage>/outputs.json``.
"""
from __future__ import annotations

import time

from dafsl import dist, zoo
from dafsl.engine import peak_rss_mb, torch_threads
from dafsl.log import get_logger
from dafsl.runs import seed_everything
from dafsl.stages import StageContext, StageResult, get_stage, write_outputs

RESERVED = ("mode", "transfer", "train_time_s", "zoo_build_time_s", "zoo_build_time_by_entry_s",
            "stage_time_s", "peak_rss_mb", "auto")


def run_stage(ctx: StageContext, name: str, requested_mode: str) -> dict:
    """Run stage ``name`` in ``requested_mode`` (``auto`` resolved here); returns its outputs."""
    stage = get_stage(name)
    stage.check_data(ctx.split_info)
    log = get_logger(name)
    cfg = ctx.cfg
    t0 = time.perf_counter()
    builds_before = len(zoo.BUILDS)
    with torch_threads(int(cfg[name].get("num_threads", 0))):
        decision = None
        mode = requested_mode
        if requested_mode == "auto":
            from dafsl.similarity import auto_decision, format_decision

            decision = auto_decision(cfg, name, ctx.split_info)
            mode = decision["mode"]
            log.info(f"--kd auto: {format_decision(decision)}")
        for entry in stage.zoo_needs(cfg, mode):  # under torchrun: rank 0 builds, others wait
            dist.main_first(zoo.get, entry, cfg, device=ctx.device)
        ctx.mode = mode
        # every stage starts from the seed, so a stage run alone (--from) repeats exactly
        # what it did inside the chain, whatever earlier stages or zoo builds consumed
        seed_everything(int(cfg["seed"]))
        result: StageResult = stage.function()(ctx)
    built = {n: s for n, s in zoo.BUILDS[builds_before:]}
    clash = sorted(set(result.figures) & set(RESERVED))
    if clash:
        raise RuntimeError(f"stage {name} returned reserved summary keys {clash}")
    summary = {"mode": mode, "transfer": result.transfer or {"mode": mode},
               "train_time_s": float(result.train_time_s),
               "zoo_build_time_s": round(sum(built.values()), 2),
               "zoo_build_time_by_entry_s": built,
               "stage_time_s": round(time.perf_counter() - t0, 2),
               "peak_rss_mb": peak_rss_mb(),
               **({"auto": decision} if decision else {}), **result.figures}
    ctx.run.update_summary(name, summary, replace=True)
    if built:
        log.info("zoo builds in this stage (not counted as training time): "
                 + ", ".join(f"{n} {s:.0f}s" for n, s in built.items()))
    outputs = write_outputs(ctx.run, name, {k: v for k, v in result.outputs.items() if v is not None})
    ctx.outputs[name] = outputs
    dist.barrier()  # the next stage starts together on every rank
    return outputs
