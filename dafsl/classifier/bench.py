"""A many-class benchmark for the distillation methods (seeds 002 and 004 in miniature).

Data: ``n_classes`` characters of the embedded Omniglot-like set (:mod:`dafsl.fewshot.data`,
manifest ``glyphs``), each character's 20 drawings split BY DRAWER into train / val /
test (default drawers 0-11 / 12-14 / 15-19), grey 28 px glyphs as RGB uint8 faces so that
the classifier's data pipeline (:class:`~dafsl.classifier.trainer.ClassifierTrainer`) runs
unchanged, with a light affine augmentation. Models: plain CNNs ``cnn2`` ... ``cnn10``.

:class:`BenchSeed` trains the models one seed needs, each once: a model is identified by
its provenance (name, method, the identities of its teachers), so the teacher ``cnn10``
is trained once per seed and shared by Hinton KD and the chains, and an assistant
distilled from one teacher is the same model under TAKD, DGKD and the ensemble (all three
are Hinton's loss with one teacher, bit for bit). Every model is an :func:`dafsl.engine.fit`
stage of the seed's run directory (checkpoint per epoch, ``resume``); its initial weights
depend on (seed, name) only, its data order on (seed, epoch), so methods are paired.
A method's cost is the training time of every model it needs, as if trained alone.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dafsl import engine
from dafsl.classifier.chain import run_chain
from dafsl.classifier.data import FaceSet
from dafsl.classifier.distill import build_distiller
from dafsl.classifier.distortion import build_distortion
from dafsl.classifier.plain_cnn import build_plain_cnn, count_parameters, is_plain_cnn  # noqa: F401
from dafsl.classifier.trainer import ClassifierTrainer, predict_probs
from dafsl.errors import DafslError
from dafsl.runs import RunDir, seed_everything
from dafsl.transfer import cosine_decay

METHODS = ("none", "hinton", "takd", "dgkd", "ensemble", "ddgsd")
KD_ONE_TEACHER = ("hinton", "takd", "dgkd", "ensemble")  # = Hinton's loss with one teacher
# light augmentation of the glyphs (no flips: a mirrored character is another character)
LIGHT_AUGMENT = ({"name": "Affine", "scale": [0.9, 1.1], "translate_percent": [-0.08, 0.08],
                  "rotate": [-10, 10], "shear": [-8, 8], "p": 0.8},)


@dataclass
class BenchConfig:
    """Training settings shared by every model of the benchmark."""

    chain: tuple[str, ...] = ("cnn10", "cnn6", "cnn4", "cnn2")  # teacher, assistants, student
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.003
    weight_decay: float = 5e-4
    warmup_steps: int = 20
    widths: tuple[int, int, int] = (16, 32, 64)
    temperature: float = 4.0
    alpha: float = 0.5
    drop_prob: float = 0.0
    ddgsd: dict = field(default_factory=lambda: {"w_mmd": 1.0, "w_kl": 1.0, "w_ce": 1.0})
    augment: tuple = LIGHT_AUGMENT


@dataclass
class BenchData:
    train: FaceSet
    val: FaceSet
    test: FaceSet
    classes: list[str]


def as_faces(images: torch.Tensor, labels: np.ndarray) -> FaceSet:
    """Grey glyphs float (N, 1, S, S) in [0, 1] -> uint8 RGB (N, S, S, 3)."""
    x = (images.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    return FaceSet(np.repeat(x[..., None], 3, axis=3), labels.astype(np.int64),
                   np.zeros(len(labels), dtype=bool))


def split_by_drawer(chars, n_classes: int = 100, split: tuple[int, int, int] = (12, 3, 5),
                    class_seed: int = 0) -> BenchData:
    """``n_classes`` characters of ``chars`` (a :class:`dafsl.fewshot.data.CharacterSet`:
    ``images``, ``labels``, ``classes``, ``drawers``), chosen by a permutation seeded with
    ``class_seed``, relabelled 0..n-1; drawers ``0..a-1`` train, the next ``b`` val, the
    next ``c`` test (``split`` = (a, b, c))."""
    labels, drawers = np.asarray(chars.labels), np.asarray(chars.drawers)
    available = np.unique(labels)
    if len(available) < n_classes:
        raise DafslError(f"--classes: the character set has {len(available)} characters, asked for {n_classes}")
    chosen = np.sort(np.random.default_rng(class_seed).permutation(available)[:n_classes])
    relabel = {int(c): i for i, c in enumerate(chosen)}
    a, b, c = split
    parts = []
    for lo, hi in ((0, a), (a, a + b), (a + b, a + b + c)):
        idx = np.where(np.isin(labels, chosen) & (drawers >= lo) & (drawers < hi))[0]
        if len(idx) == 0:
            raise DafslError(f"no drawings with drawer index in {lo}..{hi - 1} (split {split})")
        parts.append(as_faces(chars.images[idx], np.array([relabel[int(v)] for v in labels[idx]])))
    return BenchData(*parts, classes=[str(chars.classes[int(i)]) for i in chosen])


class GlyphTrainer(ClassifierTrainer):
    """The classifier trainer with top-1 accuracy on validation (100 classes, balanced)."""

    def evaluate(self, epoch: int) -> dict:
        probs = predict_probs(self.model, self.val.images, self.input_size)
        return {"val_accuracy": float((probs.argmax(1) == self.val.labels).mean())}


def method_params(c: BenchConfig, method: str) -> dict:
    """The distiller's keyword arguments for ``method`` under ``c``."""
    if method == "none":
        return {}
    if method == "ddgsd":
        return {**c.ddgsd, "distortion": list(c.augment)}
    kd = {"temperature": c.temperature, "alpha": c.alpha}
    return {**kd, "drop_prob": c.drop_prob} if method == "dgkd" else kd


def _slug(key: tuple) -> str:
    """A stage name: name-method[-hash of the teachers][-p hash of non-default parameters]."""
    name, method, teachers, params = key
    slug = f"{name}-{method}" + (f"-{zlib.crc32(repr(teachers).encode()):08x}" if teachers else "")
    return slug + (f"-p{zlib.crc32(params.encode()):08x}" if params else "")


class BenchSeed:
    """The models of one seed, trained on demand and memoised by provenance."""

    def __init__(self, data: BenchData, cfg: BenchConfig, seed: int, run_dir: Path,
                 resume: bool = False, log=None):
        self.data, self.cfg, self.seed = data, cfg, int(seed)
        self.run, self.resume, self.log = RunDir(run_dir), resume, log
        self.models: dict[tuple, torch.nn.Module] = {}
        self.info: dict[tuple, dict] = {}

    def params(self, method: str) -> dict:
        return method_params(self.cfg, method)

    def train(self, name: str, method: str, teachers: tuple = ()) -> tuple:
        """The key of model ``name`` trained with ``method`` from the models ``teachers``
        (keys, large -> small); trained now unless already trained this seed."""
        canonical = "kd" if method in KD_ONE_TEACHER and len(teachers) == 1 else method
        params = self.params(method)
        default = method_params(BenchConfig(), method)
        if canonical == "kd":  # one teacher: DGKD's teacher dropping does not apply
            params.pop("drop_prob", None)
            default.pop("drop_prob", None)
        key = (name, canonical, tuple(teachers), "" if params == default else repr(sorted(params.items())))
        if key in self.models:
            return key
        c, d = self.cfg, self.data
        torch.manual_seed(self.seed * 1000 + zlib.crc32(name.encode()) % 1000)  # init: (seed, name)
        student = build_plain_cnn(name, len(d.classes), widths=tuple(c.widths))
        seed_everything(self.seed)
        dist = build_distiller(method, student, [self.models[t] for t in teachers] or None, None,
                               **params)
        opt = torch.optim.AdamW(dist.trainable_parameters(), lr=c.lr, weight_decay=c.weight_decay)
        steps = c.epochs * (len(d.train) // c.batch_size + (len(d.train) % c.batch_size > 1))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_decay(steps, warmup=c.warmup_steps))
        # DDGSD's two views come from its distortion (the light augmentation itself)
        augment = None if method == "ddgsd" else build_distortion(list(c.augment), seed=self.seed)
        size = d.train.images.shape[1]
        trainer = GlyphTrainer(f"bench_{_slug(key)}", dist, opt, sched, d.train, d.val, d.classes,
                               d.classes[0], seed=self.seed, batch_size=c.batch_size,
                               input_size=size, balanced=False, epoch_size=None, augment=augment)
        records = engine.fit(trainer, self.run, c.epochs, mode="vanilla", resume=self.resume,
                             extra={"model": name, "distill": method})
        test = predict_probs(student, d.test.images, size).argmax(1) == d.test.labels
        last = records[-1] if records else {}
        self.models[key] = student
        self.info[key] = {"model": name, "method": canonical, "teachers": [_slug(t) for t in teachers],
                          "params": count_parameters(student),
                          "train_time_s": float(last.get("wall_clock_s", 0.0)),
                          "val_accuracy": last.get("val_accuracy"), "test_accuracy": float(test.mean())}
        if self.log:
            self.log(f"seed {self.seed} {_slug(key)}: val {last.get('val_accuracy', float('nan')):.3f}, "
                     f"{self.info[key]['train_time_s']:.0f}s")
        return key

    def method(self, method: str) -> dict:
        """Train what ``method`` needs; its student's figures and its total training time."""
        chain = list(self.cfg.chain)
        student = chain[-1]
        if method in ("none", "ddgsd"):
            keys = [self.train(student, method)]
        elif method == "hinton":
            keys = [self.train(chain[0], "none")]
            keys.append(self.train(student, "hinton", (keys[0],)))
        else:
            def train_one(i, name, dist, teachers):
                used = teachers[-1:] if dist == "takd" else teachers
                return self.train(name, dist, tuple(used)), {}

            keys, _ = run_chain(chain, method, train_one)
        needed = self.closure(keys[-1])
        final = self.info[keys[-1]]
        return {"method": method, "seed": self.seed, "student": student,
                "val_accuracy": final["val_accuracy"], "test_accuracy": final["test_accuracy"],
                "student_time_s": final["train_time_s"],
                "train_time_s": sum(self.info[k]["train_time_s"] for k in needed),
                "models": [self.info[k] for k in needed]}

    def closure(self, key: tuple) -> list[tuple]:
        """``key`` and every model it learnt from, directly or not, each once, in training order."""
        out: list[tuple] = []

        def visit(k):
            for t in k[2]:
                visit(t)
            if k not in out:
                out.append(k)
        visit(key)
        return out


def run_seed(data: BenchData, cfg: BenchConfig, seed: int, run_dir: Path, methods=METHODS,
             resume: bool = False, log=None) -> list[dict]:
    """Every method of ``methods`` on one seed; one result dict per method."""
    bench = BenchSeed(data, cfg, seed, run_dir, resume, log)
    t0 = time.perf_counter()
    out = [bench.method(m) for m in methods]
    for r in out:
        r["seed_wall_s"] = time.perf_counter() - t0
    return out


def fake_characters(n_classes: int = 10, drawers: int = 20, size: int = 28, seed: int = 0):
    """Random stand-in for the glyph set (tests): a noisy blob prototype per class."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(n_classes, 1, size, size, generator=g) > 0.7).float()
    images = (protos.repeat_interleave(drawers, 0)
              + 0.3 * torch.randn(n_classes * drawers, 1, size, size, generator=g)).clamp(0, 1)
    return SimpleNamespace(images=images, labels=torch.arange(n_classes).repeat_interleave(drawers),
                           classes=tuple(f"c{i}" for i in range(n_classes)),
                           drawers=torch.arange(drawers).repeat(n_classes))


