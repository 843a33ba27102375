"""The one training loop every stage runs through.

A stage supplies a :class:`Trainer` (its model(s), data and loss); :func:`fit` owns the
rest, the same way for the detector, the GAN and the classifier:

* a tqdm bar per epoch with speed, ETA, the running losses and resident memory;
* a finiteness check of every step's losses (training stops with a message);
* per-epoch timing: ``epoch_time_s`` counts training only, evaluation is logged as
  ``eval_time_s``, and ``wall_clock_s`` is the cumulative training time of the stage;
* one ``metrics.jsonl`` record per epoch;
* with ``eval_every`` > 0 and a trainer that has ``evaluate_quick(step)``, a cheaper
  evaluation (a fixed validation subset) before the first step, every ``eval_every``
  optimiser steps and after the last one, logged as ``"kind": "step_eval"`` records
  (``step``, ``wall_clock_s`` at that point, ``eval_time_s``, the figures); its time is
  kept out of the training clock; :func:`fit` returns the per-epoch records only;
* an atomic checkpoint every epoch holding the trainer state, the epoch, the
  cumulative time and the global RNG states, so ``--resume`` continues exactly.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import signal
import time
from typing import Iterable, Protocol

import torch

from dafsl import dist
from dafsl.errors import DafslError
from dafsl.log import get_logger, progress
from dafsl.runs import (RunDir, load_checkpoint, prune_checkpoints, rng_state, save_checkpoint,
                        seed_everything, set_rng_state)


class TrainingDiverged(DafslError):
    """A loss became NaN or infinite."""


class Trainer(Protocol):
    """What a stage provides to :func:`fit`."""

    stage: str

    def batches(self, epoch: int) -> Iterable:
        """The training batches of one epoch (must have ``len``). Shuffle with a generator
        seeded from (seed, epoch) so a resumed run sees the same order."""

    def train_step(self, batch) -> dict[str, float]:
        """One optimisation step; returns named scalar losses for logging."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called after the last step of an epoch (scheduler steps, GAN growth, ...);
        returns extra figures to log (may be empty)."""

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Validation figures after ``epoch``; not counted in the training time."""

    def state_dict(self) -> dict:
        """Models, optimisers, schedulers and any extra state (tensors/plain Python only)."""

    def load_state_dict(self, state: dict) -> None:
        ...


class SingleModelState:
    """``state_dict``/``load_state_dict`` for a trainer with one ``model``, ``optimizer``
    and ``scheduler`` (the detector's and the classifier's)."""

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fit(trainer: Trainer, run: RunDir, epochs: int, *, mode: str, resume: bool = False,
        extra: dict | None = None, eval_every: int = 0) -> list[dict]:
    """Train ``trainer`` for ``epochs`` epochs, logging to and checkpointing in ``run``.

    ``run.keep`` (``checkpoints.keep``) > 0 also keeps ``<stage>_epochN.pt`` for the last
    ``run.keep`` epochs (weights only); ``<stage>_last.pt`` (with the optimiser state, for ``--resume``) is always kept.
    Under torchrun (:mod:`dafsl.dist`) each rank trains on its share of every batch, the
    logged losses are the mean over ranks and rank 0 alone writes.
    Returns this stage's metric records (including those of a resumed earlier part).
    """
    stage = trainer.stage
    log = get_logger(stage.split("_")[0])
    ckpt_path = run.checkpoint_path(stage)
    world = dist.world_size()
    device = torch.device(getattr(trainer, "device", "cpu"))
    bf16 = run.runtime.get("precision", "fp32") == "bf16"
    start, wall = 0, 0.0
    if resume and run.shared_checkpoint_path(stage).exists():
        ckpt_path = run.shared_checkpoint_path(stage)  # rank 0's, for every rank
        state = load_checkpoint(ckpt_path)
        try:
            trainer.load_state_dict(state["trainer"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise DafslError(f"{ckpt_path}: does not match this {stage} "
                             f"({str(err).splitlines()[0][:200]})") from None
        set_rng_state(state["rng"])
        start, wall = int(state["epoch"]) + 1, float(state["wall_clock_s"])
        run.truncate_metrics(stage, int(state["epoch"]))
        log.info(f"resumed from {ckpt_path} at epoch {start}/{epochs}")
        ckpt_path = run.checkpoint_path(stage)
    else:
        run.truncate_metrics(stage, -1)
    quick = StepEvals(trainer, run, stage, mode, eval_every)
    if start == 0:
        quick.at(0, 0, 0.0)  # before the first step: where each mode starts from

    for epoch in range(start, epochs):
        if world > 1:
            # each rank its own random stream (GAN noise, RPN sampling), reseeded per epoch
            # so that a restarted group draws what an uninterrupted one would
            seed_everything(hash((int(getattr(trainer, "seed", 0)), epoch, dist.rank())) % 2**31)
        t0 = time.perf_counter()
        meter = LossMeter(stage, epoch, sync_every=1 if device.type == "cpu" else 25)
        n = 0
        batches = trainer.batches(epoch)
        bar = progress(prefetch(batches, int(run.runtime.get("prefetch", 0)), pin=device.type == "cuda"),
                       total=len(batches), desc=f"{stage} {epoch + 1}/{epochs}")
        for batch in bar:
            _fault_point(stage, epoch, n)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                losses = trainer.train_step(dist.shard(batch))
            if world > 1:
                losses = dist.mean_over_ranks(losses)
            meter.add(n, losses)
            n += 1
            if quick.due(epoch * len(batches) + n):
                t0 += quick.at(epoch * len(batches) + n, epoch, wall + time.perf_counter() - t0)
            if n % 5 == 0 or n == len(batches):
                meter.flush()
                bar.set_postfix({k: f"{v / n:.3f}" for k, v in list(meter.sums.items())[:3]}
                                | {"rss": f"{peak_rss_mb():.0f}M"})
        bar.close()
        meter.flush()
        sums = meter.sums
        record = {k: v / max(n, 1) for k, v in sums.items()}
        record.update(trainer.end_epoch(epoch) or {})
        epoch_time = time.perf_counter() - t0
        wall += epoch_time
        if quick.enabled and epoch == epochs - 1 and not quick.due(epoch * len(batches) + n):
            quick.at(epoch * len(batches) + n, epoch, wall)  # the trained model's score, last

        t1 = time.perf_counter()
        record.update(trainer.evaluate(epoch) or {})
        eval_time = time.perf_counter() - t1

        record = {"stage": stage, "mode": mode, "epoch": epoch, "epoch_time_s": epoch_time,
                  "wall_clock_s": wall, "eval_time_s": eval_time, "steps": n,
                  "peak_rss_mb": peak_rss_mb(), **(extra or {}), **record}
        run.log(record)
        if dist.is_main():
            state = {"trainer": trainer.state_dict(), "epoch": epoch, "wall_clock_s": wall,
                     "rng": rng_state()}
            save_checkpoint(state, ckpt_path)
            if run.keep > 0:
                save_checkpoint({"trainer": _weights_only(state["trainer"]), "epoch": epoch},
                                run.checkpoint_path(stage, f"epoch{epoch}"))
                prune_checkpoints(run, stage, run.keep)
        if log.isEnabledFor(logging.INFO):
            figs = " ".join(f"{k}={v:.4g}" for k, v in record.items()
                            if isinstance(v, float) and k not in ("epoch_time_s", "eval_time_s",
                                                                    "peak_rss_mb", "wall_clock_s"))
            log.info(f"epoch {epoch + 1}/{epochs} {epoch_time:.1f}s "
                       f"(eval {eval_time:.1f}s, rss {record['peak_rss_mb']:.0f}M) {figs}")
    return [r for r in run.read_metrics(stage) if r.get("kind") != STEP_EVAL]


STEP_EVAL = "step_eval"


class StepEvals:
    """The step-cadence evaluations of one :func:`fit` (``eval_every`` steps; 0: off).
    :meth:`at` evaluates, logs a ``step_eval`` record and returns the seconds it took, which
    the caller adds to its epoch start so that the training clock excludes them."""

    def __init__(self, trainer, run: RunDir, stage: str, mode: str, every: int):
        self.trainer, self.run, self.stage, self.mode = trainer, run, stage, mode
        self.every = int(every)
        self.enabled = self.every > 0 and hasattr(trainer, "evaluate_quick")
        if self.every > 0 and not self.enabled:
            get_logger(stage.split("_")[0]).warning(
                f"{stage}: eval_every_steps {every} ignored (this stage has no step evaluation)")

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def at(self, step: int, epoch: int, wall: float) -> float:
        if not self.enabled:
            return 0.0
        t = time.perf_counter()
        figures = self.trainer.evaluate_quick(step) or {}
        spent = time.perf_counter() - t
        self.run.log({"stage": self.stage, "mode": self.mode, "kind": STEP_EVAL, "epoch": epoch,
                      "step": step, "epoch_time_s": 0.0, "wall_clock_s": wall,
                      "eval_time_s": spent, **figures})
        return spent


class LossMeter:
    """Running sums of one epoch's step losses. A value may be a float or a 0-d tensor
    left on the device by the step: tensors are read back every ``sync_every`` steps (one
    host synchronisation for many steps on a GPU, every step on the CPU), and a NaN or
    infinite value stops training naming the step it came from."""

    def __init__(self, stage: str, epoch: int, sync_every: int = 1):
        self.stage, self.epoch, self.sync_every = stage, epoch, max(1, sync_every)
        self.sums: dict[str, float] = {}
        self.pending: list[tuple[int, dict]] = []

    def add(self, step: int, losses: dict) -> None:
        self.pending.append((step, losses))
        if len(self.pending) >= self.sync_every:
            self.flush()

    def flush(self) -> None:
        for step, losses in self.pending:
            values = {k: float(v) for k, v in losses.items()}
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                raise TrainingDiverged(f"{self.stage} epoch {self.epoch} step {step}: loss {bad[0]} "
                                       f"is {values[bad[0]]}; lower the learning rate")
            for k, v in values.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
        self.pending = []


def prefetch(batches: Iterable, depth: int, pin: bool = False) -> Iterable:
    """``batches`` in order, produced up to ``depth`` ahead by a background thread (the
    next batch's augmentation overlaps this step's compute); tensors pinned when ``pin``
    (asynchronous host-to-GPU copies). ``depth`` 0: the batches as they are. Batch
    construction must not draw from the global RNGs (the stages seed their own)."""
    if depth <= 0:
        return batches
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def pinned(x):
        if isinstance(x, torch.Tensor):
            return x.pin_memory() if pin else x
        if isinstance(x, (list, tuple)):
            return type(x)(pinned(v) for v in x)
        if isinstance(x, dict):
            return {k: pinned(v) for k, v in x.items()}
        return x

    def work():
        try:
            for b in batches:
                q.put(pinned(b))
        except BaseException as err:  # re-raised in the training thread
            q.put(err)
        q.put(done)

    threading.Thread(target=work, daemon=True).start()

    class _Iter:
        def __len__(self):
            return len(batches)

        def __iter__(self):
            while (item := q.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item

    return _Iter()


def _fault_point(stage: str, epoch: int, step: int) -> None:
    """Fault injection for tests and ``pipelines/fault_injection.py``: with
    ``DAFSL_KILL_AT=<stage>:<epoch>:<step>[:<rank>]`` in the environment, the process (of that
    rank, default 0) kills itself with SIGKILL before that step, in a first attempt only
    (a worker group restarted by torchrun runs through)."""
    spec = os.environ.get("DAFSL_KILL_AT")
    if not spec or dist.restarted():
        return
    parts = spec.split(":")
    if (parts[0], int(parts[1]), int(parts[2])) == (stage, epoch, step) and \
            (int(parts[3]) if len(parts) > 3 else 0) == dist.rank():
        os.kill(os.getpid(), signal.SIGKILL)


def _weights_only(state: dict) -> dict:
    """A trainer state without optimiser and scheduler states (what a user deploys)."""
    return {k: v for k, v in state.items()
            if not any(w in k for w in ("opt", "sched", "scaler"))}


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch threads (0: leave torch's default), restored afterwards."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
