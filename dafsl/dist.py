"""Multi-process training with ``torchrun`` (``torch.distributed``): one place for it.

    torchrun --nproc_per_node 2 -m dafsl.pipeline --stage all --out runs/x
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \\
             --nproc_per_node 8 -m dafsl.pipeline ... --out /shared/runs/x

What changes under torchrun (``WORLD_SIZE`` > 1), and nothing else:

* **Data.** Every rank draws the same global batch of each step (the stages' seeded
  epoch orders and augmentations), then keeps its contiguous share of it
  (:func:`shard`). A run's data therefore does not depend on the number of processes.
* **Batch and learning rate.** ``<stage>.batch_size`` is the *global* batch, split over
  the ranks; the learning rates in the config are for that global batch, so a run on N
  processes optimises the same objective as a run on one. To train with a larger global
  batch, raise ``batch_size`` and the learning rate together (the linear scaling rule of
  Goyal et al., 2017: lr × k for batch × k, with the warm-up the configs already have).
* **Gradients** are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`
  (:func:`wrap`), with ``broadcast_buffers=False``: the GAN's discriminator runs on real
  and on generated images before one backward, and buffer broadcasting at the second
  forward is the known in-place failure; BatchNorm statistics stay per rank (as in
  torchvision's references without ``--sync-bn``), rank 0's are the ones saved.
* **Writing.** Rank 0 alone writes the run directory (config, ``metrics.jsonl``,
  checkpoints, outputs, reports); every other rank writes into a private scratch
  directory (``<run>/.ranks/<k>``) removed at the end. Logged losses are the mean over
  ranks, so each figure appears once. Every rank evaluates (the same figures), so
  state that depends on an evaluation (the GAN's kept snapshot) is the same everywhere.
* **Caches.** Zoo entries and rendered data are built by rank 0 alone (:func:`single`
  turns the collectives off while it builds) while the others wait at a barrier.
* **Restarts.** Under ``torchrun --max-restarts K`` a restarted worker group resumes
  from the last complete checkpoint by itself (:func:`restarted`).
"""
from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dafsl.errors import DafslError

_single = 0  # > 0 inside single(): this process acts alone


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if initialized() and not _single else 1


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def restarted() -> bool:
    """True in a worker group that torchrun restarted after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun; returns this rank's device
    (``cuda:<LOCAL_RANK>`` for CUDA). A no-op for a single process."""
    if env_world_size() <= 1 or initialized():
        return device
    if device.type == "cuda":
        torch.cuda.set_device(local_rank())
        device = torch.device("cuda", local_rank())
    # DDP's reducer warns when a conv's gradient layout differs from its bucket (1x1
    # convolutions after channels-last ops): a performance note, not an error
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # zoo builds by rank 0 keep the others at a barrier for minutes: a long timeout
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=datetime.timedelta(hours=2))
    return device


def shutdown() -> None:
    if initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def single():
    """Inside the block this process trains alone (no sharding, no collectives)."""
    global _single
    _single += 1
    try:
        yield
    finally:
        _single -= 1


def main_first(fn, *args, **kwargs):
    """Run ``fn`` on rank 0 alone first (building caches), then on the other ranks
    (which then read what rank 0 built). Returns ``fn``'s result on every rank."""
    if world_size() <= 1:
        return fn(*args, **kwargs)
    out = None
    if is_main():
        with single():
            out = fn(*args, **kwargs)
    dist.barrier()
    if not is_main():
        with single():
            out = fn(*args, **kwargs)
    return out


def wrap(model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` in DistributedDataParallel when training on several processes, else
    ``model`` itself. Keep the unwrapped module for ``state_dict`` and evaluation."""
    if world_size() <= 1 or not any(p.requires_grad for p in model.parameters()):
        return model
    dev = next(model.parameters()).device
    ddp = nn.parallel.DistributedDataParallel
    # newer torch: forward_sync_buffers=False (buffers still synced once at construction)
    no_sync = ({"forward_sync_buffers": False}
               if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else {"broadcast_buffers": False})
    return ddp(model, device_ids=[dev.index] if dev.type == "cuda" else None,
               find_unused_parameters=find_unused_parameters, **no_sync)


def _chunk(n: int) -> slice:
    w, r = world_size(), rank()
    if n < w:
        raise DafslError(f"a batch of {n} cannot be split over {w} processes; raise the "
                         f"stage's batch_size to at least {w}")
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (r < extra))


def shard(batch: Any) -> Any:
    """This rank's contiguous share of a global batch: tensors and lists are sliced along
    their first dimension, tuples and dicts element-wise (``views``, shaped (V, B, ...),
    along its second)."""
    if world_size() <= 1:
        return batch
    if isinstance(batch, (torch.Tensor, list)):
        return batch[_chunk(len(batch))]
    if isinstance(batch, tuple):
        return tuple(shard(b) for b in batch)
    if isinstance(batch, dict):
        return {k: (v[:, _chunk(v.shape[1])] if k == "views" else shard(v)) for k, v in batch.items()}
    raise TypeError(f"cannot shard a batch of type {type(batch).__name__}")


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each named figure over the ranks (every rank gets the same dict)."""
    if world_size() <= 1 or not values:
        return values
    keys = sorted(values)
    dev = torch.device("cuda", local_rank()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    t /= world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}
