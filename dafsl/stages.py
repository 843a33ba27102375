"""The stage registry and what every stage is handed: one definition each of the stages,
the transfer modes, the stage context, stage outputs and the device.

A stage is declared once, here, as a :class:`Stage`: its name, its ``run`` function
(``"module:function"``, imported only when the stage runs), the zoo entries it owns, the
entries it needs before it starts, the classes it trains on and its output keys. The
shared runner (:mod:`dafsl.runner`) does everything the stages have in common; the
pipeline (:mod:`dafsl.pipeline`) only chains them. This module imports no stage code,
so every stage, the zoo and the similarity check can import it without a cycle.

Adding a stage: write ``dafsl/<name>/train.py`` with ``run(ctx) -> StageResult`` and
add one :class:`Stage` to :data:`STAGES`.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from dafsl.config_schema import TRANSFER_MODES
from dafsl.errors import DafslError
from dafsl.runs import RunDir, atomic_write_json

#: the transfer modes (seed 001, section III); ``auto`` resolves to one of the others
CONCRETE_MODES = TRANSFER_MODES
MODES = (*CONCRETE_MODES, "auto")


def _zoo_source(section: str | None):
    """needs() for a stage whose pretrained source is a zoo entry when ``source == zoo``."""
    def needs(cfg: dict, mode: str, entry: str) -> list[str]:
        src = cfg[section]["source"] if section else cfg["transfer"]["source"]
        return [entry] if mode != "vanilla" and src == "zoo" else []
    return needs


@dataclass(frozen=True)
class Stage:
    name: str
    run: str                                # "module:function", run(ctx) -> StageResult
    zoo: dict[str, str]                     # zoo entries this stage owns: name -> "module:builder"
    source_entry: Callable[[dict], str]     # the zoo entry it transfers from (for --kd auto)
    needs_source: Callable[[dict, str, str], list[str]]  # (cfg, mode, entry) -> entries
    always_needs: tuple[str, ...] = ()      # zoo entries needed in every mode
    targets: str = "all"                    # classes it trains on: denough | dlack | all
    outputs: tuple[str, ...] = ()           # keys of its outputs.json
    description: str = ""

    def zoo_needs(self, cfg: dict, mode: str) -> list[str]:
        """Zoo entries this stage reads in ``mode``: resolved (built if needed) by the runner
        before the stage is seeded, so a cached and a freshly built entry give the same run."""
        entry = self.source_entry(cfg)
        return list(dict.fromkeys([*self.always_needs, *self.needs_source(cfg, mode, entry)]))

    def check_data(self, split_info: dict) -> None:
        """A stage that trains on classes needs at least two (a detection-only source has one)."""
        if self.targets != "denough" and len(split_info.get("counts", {})) < 2:
            raise DafslError(f"stage {self.name} needs a class attribute with two or more classes; "
                             f"{split_info.get('dataset', 'the dataset')} has only "
                             f"{', '.join(split_info.get('counts', {})) or 'none'} (detection only: "
                             f"use --stage detector or pipelines/evaluate_report.py)")

    def function(self) -> Callable:
        module, _, fn = self.run.partition(":")
        return getattr(importlib.import_module(module), fn)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("detector", "dafsl.detector.train:run",
          zoo={"detector-shapes": "dafsl.detector.zoo:build_entry",
               "detector-related": "dafsl.detector.zoo_related:build_related"},
          source_entry=lambda cfg: cfg["detector"]["zoo_entry"], needs_source=_zoo_source(None),
          targets="denough", outputs=("checkpoint",),
          description="BDRP Faster R-CNN face detector, trained on the Denough scenes"),
    Stage("augmenter", "dafsl.augmenter.train:run",
          zoo={"augmenter-gan": "dafsl.augmenter.zoo:build_source_gan",
               "augmenter-gan-related": "dafsl.augmenter.zoo_related:build_related_gan",
               "augmenter-featnet": "dafsl.augmenter.featnet:build_feature_net"},
          source_entry=lambda cfg: cfg["augmenter"]["zoo_entry"], needs_source=_zoo_source(None),
          always_needs=("augmenter-featnet",), targets="dlack",
          outputs=("generated_dir", "generated_manifest", "generator", "generated_denough_dir",
                   "generated_denough_manifest"),
          description="PG-GAN generator + DC-GAN discriminator filling the Dlack class"),
    Stage("classifier", "dafsl.classifier.train:run",
          zoo={"classifier-ssl": "dafsl.classifier.ssl_zoo:build_ssl_entry"},
          source_entry=lambda cfg: cfg["classifier"]["zoo_entry"],
          needs_source=_zoo_source("classifier"), targets="all",
          outputs=("checkpoint", "confusion_png", "system_report"),
          description="gender classifier on Denough + the filled Dlack"),
)}


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise DafslError(f"unknown stage '{name}' (known: {', '.join(STAGES)})")
    return STAGES[name]


def zoo_entries() -> dict[str, str]:
    """Every zoo entry of every stage: name -> ``"module:builder"``."""
    return {name: builder for s in STAGES.values() for name, builder in s.zoo.items()}


def resolve_device(name: str) -> torch.device:
    """``device`` config value -> torch.device (``auto``: cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DafslError("device: cuda requested but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise DafslError(f"device: expected auto, cpu or cuda, got {name!r}")
    return torch.device(name)


@dataclass
class StageResult:
    """What a stage's ``run`` returns to the runner, which writes the summary (one schema
    for every stage) and ``outputs.json``.

    ``figures``: the stage's own results (flat, JSON-serialisable); ``transfer``: the
    :class:`dafsl.transfer.TransferReport` as a dict (or None); ``train_time_s``: the
    training clock (evaluation and zoo builds excluded); ``outputs``: paths (under the
    run directory) and values the next stages read.
    """

    figures: dict
    outputs: dict
    train_time_s: float = 0.0
    transfer: dict | None = None


@dataclass
class StageContext:
    """Everything a stage's ``run`` needs; ``outputs`` collects what earlier stages produced."""

    cfg: dict
    run: RunDir
    mode: str
    device: torch.device
    split_info: dict
    resume: bool = False
    outputs: dict = field(default_factory=dict)
    from_run: Path | None = None

    def stage_output(self, stage: str) -> dict:
        """Outputs of an earlier stage: from this invocation, else ``--from RUN_DIR``.

        A stage's outputs are in ``<run>/<stage>/outputs.json`` (paths relative to the run
        directory); this returns that dict with paths made absolute.
        """
        if stage in self.outputs:
            return self.outputs[stage]
        for base in (self.from_run, self.run.path):
            if base is None:
                continue
            path = Path(base) / stage / "outputs.json"
            if path.is_file():
                return read_outputs(path)
        raise DafslError(f"{self.run.path}: no {stage} outputs found; run the {stage} stage "
                         f"first or pass --from RUN_DIR of a run that has them")

    def optional_output(self, stage: str, key: str):
        """``stage_output(stage)[key]``, or None when that stage has not run."""
        try:
            return self.stage_output(stage).get(key)
        except DafslError:
            return None


def write_outputs(run: RunDir, stage: str, outputs: dict) -> dict:
    """Record a stage's outputs (paths under the run dir) in ``<run>/<stage>/outputs.json``."""
    rel = {k: (str(Path(v).resolve().relative_to(run.path.resolve())) if isinstance(v, Path) else v)
           for k, v in outputs.items()}
    atomic_write_json(run.stage_dir(stage) / "outputs.json", rel)
    return read_outputs(run.stage_dir(stage) / "outputs.json")


def read_outputs(path: Path) -> dict:
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError:
        raise DafslError(f"{path}: invalid JSON") from None
    base = Path(path).parent.parent
    return {k: (base / v if isinstance(v, str) and (base / v).exists() else v)
            for k, v in raw.items()}
