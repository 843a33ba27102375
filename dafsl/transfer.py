"""Transfer modes: the one place that applies vanilla / fixed / finetune / pretrained.

Every stage (detector, GAN, classifier) builds its model, decides which submodules a
mode freezes, and calls :func:`apply_mode`; the rules themselves live only here:

=============  ==================================================================
``vanilla``    random initialisation, nothing loaded, every layer trains
``fixed``      source weights loaded, the feature extractor frozen (weights *and*
               BatchNorm statistics); only the new heads train
``finetune``   source weights loaded, the lower blocks (``transfer.freeze_at``,
               like detectron2's FREEZE_AT) frozen; upper blocks and heads train
``pretrained`` every shape-matching tensor loaded, every layer trains with the
               learning rate × ``transfer.lr_factor`` and a linear warm-up
=============  ==================================================================

Where the source comes from (:func:`resolve_source`): the offline zoo
(:mod:`dafsl.zoo`), locally cached torchvision/timm ImageNet weights, or a checkpoint
file. A layer that must transfer (``required``) but does not match is an error naming
the layer and both shapes; optional layers that cannot load are listed, never hidden.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from dafsl.config_schema import TRANSFER_MODES
from dafsl.errors import DafslError
from dafsl.runs import load_checkpoint

MODES = TRANSFER_MODES


@dataclass
class TransferReport:
    """What :func:`apply_mode` did; ``as_dict()`` goes into ``summary.json``."""

    mode: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (tensor name, reason)
    frozen_modules: list[str] = field(default_factory=list)
    trainable_modules: list[str] = field(default_factory=list)
    trainable_params: int = 0
    frozen_params: int = 0
    lr_factor: float = 1.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["skipped"] = [list(s) for s in self.skipped]
        out["n_loaded"] = len(self.loaded)
        return out


# -- freezing ---------------------------------------------------------------------
_EVAL_NORM_CLASSES: dict[type, type] = {}


def _always_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    # model.train() recurses into children through .train(); answering False here keeps
    # the running statistics fixed no matter what the stage does to the parent.
    return nn.Module.train(self, False)


def _eval_class(cls: type) -> type:
    """A subclass of ``cls`` whose ``train()`` always means eval (cached per class)."""
    if cls not in _EVAL_NORM_CLASSES:
        _EVAL_NORM_CLASSES[cls] = type(f"Frozen{cls.__name__}", (cls,), {
            "train": _always_eval, "__module__": __name__})
    return _EVAL_NORM_CLASSES[cls]


def freeze_module(module: nn.Module) -> None:
    """Freeze ``module``: ``requires_grad=False`` on every parameter, and every BatchNorm
    inside kept in eval mode (running mean/var never update), even after ``model.train()``.

    The BatchNorm layers keep their class ancestry (``isinstance(m, nn.BatchNorm2d)``
    stays true) and their state-dict keys, so checkpoints load either way.
    """
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.__class__.train is not _always_eval:
            m.__class__ = _eval_class(m.__class__)
            m.train(False)


def is_frozen_norm(module: nn.Module) -> bool:
    """True for a BatchNorm that :func:`freeze_module` pinned to eval mode."""
    return type(module).train is _always_eval


# -- loading ----------------------------------------------------------------------
def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p.rstrip(".") or name.startswith(p if p.endswith(".") else p + ".")
               for p in prefixes)


def load_matching(model: nn.Module, source_state: dict[str, Tensor], required: Sequence[str] = (),
                  only: Sequence[str] | None = None,
                  ) -> tuple[list[str], list[tuple[str, str]]]:
    """Load every tensor of ``source_state`` whose name and shape match ``model``'s.

    ``required``: name prefixes (e.g. ``"backbone.body"``) whose tensors must all load;
    one that is missing from the source or shaped differently raises a
    :class:`DafslError` naming the layer and both shapes. ``only``: when given, tensors
    outside these prefixes are not transferred (new heads) and are listed as skipped.
    Returns ``(loaded names, [(skipped name, reason)])``.
    """
    target = model.state_dict()
    loaded, skipped, take = [], [], {}
    for name, here in target.items():
        if only is not None and not _under(name, only):
            skipped.append((name, "new layer in this mode, not transferred"))
            continue
        src = source_state.get(name)
        if src is None:
            reason = "missing in source"
        elif not isinstance(src, Tensor):
            reason = f"source value is a {type(src).__name__}, not a tensor"
        elif tuple(src.shape) != tuple(here.shape):
            reason = f"shape {tuple(src.shape)} in source vs {tuple(here.shape)} here"
        else:
            take[name] = src
            loaded.append(name)
            continue
        if _under(name, required):
            raise DafslError(f"{name}: required layer does not transfer ({reason}); the source "
                             f"checkpoint's architecture must match here")
        skipped.append((name, reason))
    with torch.no_grad():
        for name, src in take.items():
            target[name].copy_(src.to(dtype=target[name].dtype))
    return loaded, skipped


# -- the modes ----------------------------------------------------------------------
def module_groups(model: nn.Module, trainable: bool) -> list[str]:
    """Coarsest submodule names whose parameters are all trainable (or all frozen)."""
    out: list[str] = []

    def walk(mod: nn.Module, prefix: str) -> None:
        for name, child in mod.named_children():
            full = f"{prefix}{name}"
            flags = {p.requires_grad for p in child.parameters()}
            if not flags:
                continue
            if flags == {trainable}:
                out.append(full)
            elif len(flags) == 2:
                walk(child, full + ".")
        # parameters registered directly on a partly frozen module
        for name, p in mod.named_parameters(recurse=False):
            if p.requires_grad == trainable:
                out.append(f"{prefix}{name}")

    walk(model, "")
    return out


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter element counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def apply_mode(model: nn.Module, mode: str, *, source_state: dict | None,
               frozen: Sequence[str] = (), required: Sequence[str] = (),
               lr_factor: float = 1.0, load_only: Sequence[str] | None = None,
               log: Callable[[str], None] = print) -> TransferReport:
    """Apply transfer ``mode`` to ``model`` in place and report what happened.

    - ``vanilla``: ``source_state`` ignored, nothing frozen.
    - ``fixed`` / ``finetune``: load the source, then :func:`freeze_module` every
      submodule named in ``frozen`` (the stage chooses the names per mode).
    - ``pretrained``: load the source, nothing frozen; ``lr_factor`` is recorded for the
      optimiser (see :func:`build_scheduler`).
    ``required``/``load_only`` are passed to :func:`load_matching`.
    """
    if mode not in MODES:
        raise DafslError(f"--kd: unknown transfer mode '{mode}' (expected one of {', '.join(MODES)})")
    report = TransferReport(mode=mode, lr_factor=lr_factor if mode == "pretrained" else 1.0)
    if mode != "vanilla":
        if source_state is None:
            raise DafslError(f"transfer.source: mode '{mode}' needs a source checkpoint")
        report.loaded, report.skipped = load_matching(model, source_state, required, load_only)
        if not report.loaded:
            raise DafslError(f"transfer.source: no tensor of the source checkpoint matches "
                             f"this model (mode '{mode}')")
    if mode in ("fixed", "finetune"):
        modules = dict(model.named_modules())
        for name in frozen:
            if name not in modules:
                raise DafslError(f"transfer: cannot freeze '{name}', the model has no such module")
            freeze_module(modules[name])
    report.trainable_params, report.frozen_params = count_params(model)
    report.trainable_modules = module_groups(model, True)
    report.frozen_modules = module_groups(model, False)

    src = f"loaded {len(report.loaded)} tensors from the source" if mode != "vanilla" \
        else "random init, nothing loaded"
    log(f"[transfer] {mode}: {src}; trains {', '.join(report.trainable_modules) or 'nothing'} "
        f"({report.trainable_params:,} params); frozen "
        f"{', '.join(report.frozen_modules) or 'nothing'} ({report.frozen_params:,} params)"
        + (f"; lr x {report.lr_factor:g} with warm-up" if mode == "pretrained" else ""))
    if report.skipped:
        log(f"[transfer] {mode}: not loaded ({len(report.skipped)}): " + "; ".join(
            f"{n} [{r}]" for n, r in _compact(report.skipped)))
    return report


def _compact(skipped: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Collapse runs of same-reason skips under one module into ``module.*`` for the log."""
    out: list[tuple[str, str]] = []
    for name, reason in skipped:
        if reason.startswith("new layer"):
            parts = name.split(".")
            name = ".".join(parts[:2]) + ".*" if len(parts) > 2 else name
        if out and out[-1] == (name, reason):
            continue
        out.append((name, reason))
    return out


def build_scheduler(optimizer: torch.optim.Optimizer, mode: str, transfer_cfg: dict,
                    base: Callable[[int], float] | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate multiplier (call ``.step()`` after every optimiser step).

    ``pretrained``: ``lr_factor × min(1, (step + 1) / warmup_steps)``; other modes: 1.
    ``base`` is the stage's own schedule (e.g. cosine decay), multiplied in.
    """
    factor = float(transfer_cfg["lr_factor"]) if mode == "pretrained" else 1.0
    warmup = int(transfer_cfg["warmup_steps"]) if mode == "pretrained" else 0

    def multiplier(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return factor * ramp * (base(step) if base is not None else 1.0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def cosine_decay(total_steps: int, final: float = 0.05, warmup: int = 0) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps (from 1/warmup to 1), then cosine decay from 1 to
    ``final`` at ``total_steps`` (flat at ``final`` after)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))
    return f


# -- sources ------------------------------------------------------------------------
def resolve_source(cfg: dict, zoo_entry: str, arch: str | None = None) -> tuple[dict, dict]:
    """The source weights for a transfer run and a description of where they came from.

    ``cfg["transfer"]["source"]``:
    - ``"zoo"``: build or load the zoo entry ``zoo_entry`` (offline, see :mod:`dafsl.zoo`);
      meta has ``source_dataset``, ``descriptor``, ``build_time_s`` and ``built_now``;
    - ``"imagenet"``: torchvision/timm ImageNet weights of ``arch`` (e.g. ``"resnet18"``
      or ``"timm/resnet18"``) from the local cache, else a one-line error saying where the
      file must go (nothing is downloaded);
    - anything else: a checkpoint path (state dict, possibly under ``"model"``).
    Returns ``(state_dict, meta)``.
    """
    source = str(cfg["transfer"]["source"])
    if source == "zoo":
        from dafsl import zoo

        path, meta = zoo.get(zoo_entry, cfg)
        return _state_of(load_checkpoint(path), path), {"source": f"zoo:{zoo_entry}", **meta}
    if source == "imagenet":
        if not arch:
            raise DafslError("transfer.source=imagenet: this stage did not name a backbone")
        state, path = imagenet_state(arch)
        return state, {"source": "imagenet", "path": str(path), "source_dataset": "imagenet",
                       "build_time_s": 0.0, "built_now": False}
    path = Path(os.path.expanduser(source))
    obj = load_checkpoint(path)
    meta = {k: v for k, v in obj.items() if k != "model" and isinstance(v, (str, int, float))}
    return _state_of(obj, path), {"source": str(path), "build_time_s": 0.0, "built_now": False,
                                  **meta}


def _state_of(obj: dict, path: Path) -> dict[str, Tensor]:
    state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    bad = next((k for k, v in state.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise DafslError(f"{path}: not a state dict ('{bad}' is not a tensor); expected "
                         f"{{'model': state_dict}} or a plain state dict")
    return state


def imagenet_state(arch: str) -> tuple[dict[str, Tensor], Path]:
    """ImageNet weights of ``arch`` from the local torchvision or Hugging Face cache."""
    if arch.startswith("timm/"):
        return _timm_cached(arch[len("timm/"):])
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError):
        raise DafslError(f"transfer.source=imagenet: torchvision has no ImageNet weights for "
                         f"'{arch}'") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not path.is_file():
        raise DafslError(f"{path}: ImageNet weights for {arch} are not cached and this machine "
                         f"is offline; copy {os.path.basename(weights.url)} (from {weights.url}) "
                         f"there, or use transfer.source=zoo")
    return load_checkpoint(path), path


def _timm_cached(name: str) -> tuple[dict[str, Tensor], Path]:
    import timm

    try:
        hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    except (RuntimeError, AttributeError):
        hub_id = None
    if not hub_id:
        raise DafslError(f"transfer.source=imagenet: timm has no pretrained weights for '{name}'")
    from huggingface_hub import constants, try_to_load_from_cache

    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(hub_id, fname, cache_dir=constants.HF_HUB_CACHE)
        if isinstance(hit, str):
            if fname.endswith(".safetensors"):
                from safetensors.torch import load_file  # tensors only, no pickle

                return load_file(hit), Path(hit)
            return load_checkpoint(hit), Path(hit)
    where = Path(constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}"
    raise DafslError(f"{where}: ImageNet weights for timm/{name} are not cached and this machine "
                     f"is offline; put the Hugging Face snapshot of {hub_id} there, or use "
                     f"transfer.source=zoo")
