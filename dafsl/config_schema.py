"""Allowed values of every config key, checked once when the config is loaded.

``configs/default.yaml`` fixes the keys and their types; this module fixes their
values. :data:`SCHEMA` maps each dotted key to a rule (a choice, a range, a list
shape); :data:`CROSS_RULES` checks what one key cannot check alone (the GAN's
channel list against its resolution, ``similarity.dissimilar <= similar``, ...).
A bad value is one :class:`~dafsl.errors.DafslError` line naming the key and what it
allows, e.g. ``detector.optimizer: expected one of adamw, sgd, got 'adamm'``.

The enumerations below are the one place their choices are listed: to add a value
(a new imbalance method, say), append it to the tuple here. ``tests/test_config.py``
checks that the tuples the stages keep for themselves agree with these.

A leaf module: it imports nothing from ``dafsl`` but :mod:`dafsl.errors` and the rule types of
:mod:`dafsl.config_rules` (timm is
imported lazily, only to check a model name).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from dafsl.errors import DafslError

# ------------------------------------------------------------------ enumerations
DEVICES = ("auto", "cpu", "cuda")
STAGES = ("detector", "augmenter", "classifier")
TRANSFER_MODES = ("vanilla", "fixed", "finetune", "pretrained")
OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("cosine", "constant")
DETECTOR_BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101")
FPN_LAYERS = ("layer1", "layer2", "layer3", "layer4")
CROP_SOURCES = ("auto", "detector", "gt")
AUGMENTATIONS = ("none", "classic", "gan", "gan+classic")
CLASSIFIER_STEMS = ("imagenet", "small", "cifar")
IMBALANCE = ("none", "balanced_sampling", "weighted_loss", "logit_adjustment",
             "logit_adjustment_posthoc", "balanced_softmax", "crt", "ncm",
             "calibration")  # classifier/imbalance.py
CALIBRATION_MEANS = ("support", "paper")                 # classifier/calibration.py
DISTILLERS = ("none", "hinton", "ddgsd", "takd", "dgkd", "ensemble")  # classifier/distill.py
CHAIN_DISTILLERS = ("takd", "dgkd", "ensemble")   # train classifier.distill_chain first
PLAIN_CNNS = tuple(f"cnn{n}" for n in range(2, 11))  # classifier/plain_cnn.py
FEWSHOT_METHODS = ("siamese", "matching", "protonet")       # dafsl/fewshot/methods.py
FEWSHOT_DISTILL = ("none", "self")
CLASSIFIER_HEADS = ("linear", *FEWSHOT_METHODS)            # dafsl/classifier/heads.py
DIFFAUG_POLICIES = ("color", "translation", "cutout")
TRANSFER_SOURCES = ("zoo", "imagenet")                    # or a checkpoint path
CLASSIFIER_SOURCES = ("detector", "zoo", "imagenet")      # or a checkpoint path


# the rule types (dafsl/config_rules.py) are part of this module's API
from dafsl.config_rules import (COUNT, COUNT0, NON_NEGATIVE, POSITIVE, UNIT, Choice,  # noqa: F401
                                DenoughFill, DiffAugment, Int, ListOf, Nullable, Number,
                                PowerOfTwo, Rule, Source, Text, TimmModel, Transforms)


PRECISIONS = ("fp32", "bf16")

# ------------------------------------------------------------------ the schema
_GAN = {  # augmenter.* and its source-GAN growth share these
    "epochs": COUNT, "stable_epochs": COUNT0, "fade_epochs": COUNT0,
    "diffaug": DiffAugment(DIFFAUG_POLICIES),
}
SCHEMA: dict[str, Rule] = {
    "seed": Int(0),
    "device": Choice(*DEVICES),
    "out_root": Text(),
    "checkpoints.keep": COUNT0,
    "runtime.precision": Choice(*PRECISIONS),
    "runtime.prefetch": COUNT0,
    "data.manifest": Text(), "data.source_manifest": Text(),
    "data.cache_dir": Nullable(Text()),
    "data.imbalance_threshold": Number(0, 1, lo_open=True),
    "transfer.freeze_at": COUNT0,              # upper bound per stage (its number of blocks)
    "transfer.lr_factor": POSITIVE,
    "transfer.warmup_steps": COUNT0,
    "transfer.source": Source(*TRANSFER_SOURCES),
    "stages.all": ListOf(Choice(*STAGES), min_len=0, order=STAGES),
    "faces.crops": Choice(*CROP_SOURCES),
    "faces.score_threshold": UNIT,
    "faces.match_iou": UNIT,
    "faces.margin": NON_NEGATIVE,
    "detector.backbone": TimmModel(DETECTOR_BACKBONES, prefix="timm/"),
    "detector.image_size": Int(32),            # layer4 has stride 32
    "detector.fpn_layers": ListOf(Choice(*FPN_LAYERS), order=FPN_LAYERS),
    "detector.fpn_channels": COUNT,
    "detector.anchor_sizes": ListOf(ListOf(POSITIVE)),
    "detector.anchor_ratios": ListOf(POSITIVE),
    **{f"detector.{k}": COUNT for k in (
        "rpn_pre_nms_train", "rpn_post_nms_train", "rpn_pre_nms_test", "rpn_post_nms_test",
        "rpn_batch_per_image", "roi_batch_per_image", "roi_output_size", "box_head_width",
        "box_detections_per_img", "epochs", "batch_size", "eval_batch_size")},
    "detector.roi_sampling_ratio": COUNT0,     # 0: adaptive (torchvision)
    "detector.roi_canonical_scale": POSITIVE,
    "detector.box_score_thresh": UNIT,
    "detector.optimizer": Choice(*OPTIMIZERS),
    "detector.lr": POSITIVE,
    "detector.momentum": Number(0, 1, hi_open=True),
    "detector.weight_decay": NON_NEGATIVE,
    "detector.lr_schedule": Choice(*LR_SCHEDULES),
    "detector.grad_clip": NON_NEGATIVE,        # 0: off
    "detector.num_threads": COUNT0,
    "detector.eval_every_steps": COUNT0,       # 0: per-epoch validation only
    "detector.eval_subset": COUNT0,            # 0: every val image
    "detector.train_scenes": COUNT0,           # 0: every Denough scene
    "detector.test_subset": COUNT0,            # 0: every test image
    "detector.zoo_entry": Choice("detector-shapes", "detector-related"),
    "detector.augment.hflip": UNIT, "detector.augment.colour_jitter": UNIT,
    "zoo.dir": Nullable(Text()),
    "zoo.detector_epochs": COUNT, "zoo.detector_images": COUNT,
    "zoo.detector_lr": POSITIVE,
    "zoo.detector_related_manifest": Text(),
    "zoo.gan_related_manifest": Text(),
    "zoo.ssl_manifest": Text(),
    "zoo.ssl_epochs": COUNT, "zoo.ssl_batch_size": Int(2),   # NT-Xent needs a negative
    "zoo.ssl_lr": POSITIVE, "zoo.ssl_temperature": POSITIVE,
    "zoo.ssl_max_faces": COUNT0,               # 0: every face
    "augmenter.shots": COUNT0,                 # 0: every Dlack face
    "augmenter.resolution": PowerOfTwo(8),
    "augmenter.channels": ListOf(COUNT),
    **{f"augmenter.{k}": COUNT for k in ("latent_dim", "mbstd_group", "batch_size",
                                         "steps_per_epoch", "kid_subsets", "pr_k")},
    **{f"augmenter.{k}": rule for k, rule in _GAN.items()},
    "augmenter.lr_g": POSITIVE, "augmenter.lr_d": POSITIVE,
    "augmenter.betas": ListOf(Number(0, 1, hi_open=True), length=2),
    "augmenter.ema_beta": UNIT,
    "augmenter.num_threads": COUNT0,
    "augmenter.g_frozen_blocks": COUNT0,       # upper bound: a cross rule
    "augmenter.eval_every": COUNT0,            # 0: only after the last epoch
    # KID's unbiased estimate needs >= 2 faces per set
    **{f"augmenter.{k}": Int(2) for k in ("eval_samples", "final_samples", "reference_faces")},
    "augmenter.kid_subset_size": Int(2),
    "augmenter.sample_every": COUNT0,          # 0: only after the last epoch
    "augmenter.fill_ratio": NON_NEGATIVE,
    "augmenter.fill_count": Nullable(COUNT0),
    **{f"augmenter.source.{k}": rule for k, rule in _GAN.items()},
    "augmenter.source.max_faces": COUNT0,      # 0: every Denough face
    **{f"augmenter.featnet.{k}": COUNT for k in ("epochs", "batch_size", "width", "feature_dim")},
    "augmenter.featnet.lr": POSITIVE,
    "augmenter.featnet.temperature": POSITIVE,
    "augmenter.featnet.positives": Choice("identity", "self"),
    "augmenter.target.lr_g": Nullable(POSITIVE), "augmenter.target.lr_d": Nullable(POSITIVE),
    "augmenter.target.ema_beta": Nullable(Number(0, 1, hi_open=True)),
    "augmenter.target.steps_per_epoch": Nullable(COUNT),
    "augmenter.target.r1_gamma": NON_NEGATIVE, "augmenter.target.r1_every": COUNT,
    "augmenter.target.d_bn": Choice("train", "frozen"),
    "augmenter.target.ada_target": Number(0, 1, lo_open=True, hi_open=True),
    "augmenter.target.ada_interval": COUNT, "augmenter.target.ada_speed_imgs": POSITIVE,
    "augmenter.target.ada_p_max": UNIT,
    "augmenter.target.cdc_weight": NON_NEGATIVE, "augmenter.target.cdc_tau": POSITIVE,
    "augmenter.target.cdc_batch": Int(3),
    "augmenter.target.cdc_layers": Nullable(ListOf(COUNT0)),
    "augmenter.target.class_lr_mult": POSITIVE, "augmenter.target.aux_weight": NON_NEGATIVE,
    "augmenter.select": Choice("last", "best_val_kid", "best_val_tstr"),
    "augmenter.zoo_entry": Choice("augmenter-gan", "augmenter-gan-related"),
    "augmenter.dlack_share": Number(0, 1, lo_open=True, hi_open=True),
    "augmenter.denough_faces": COUNT0,         # 0: every Denough face
    "augmenter.tstr.faces": Int(2), "augmenter.tstr.eval_faces": Int(2),
    "augmenter.tstr.steps": COUNT, "augmenter.tstr.batch_size": Int(2),
    "augmenter.tstr.lr": POSITIVE,
    "augmenter.select_after": Number(0, 1, hi_open=True),
    "augmenter.degrade.blur_prob": UNIT, "augmenter.degrade.jpeg_prob": UNIT,
    "augmenter.degrade.blur_sigma": ListOf(NON_NEGATIVE, length=2),
    "augmenter.degrade.noise_std": ListOf(NON_NEGATIVE, length=2),
    "augmenter.degrade.jpeg_quality": ListOf(Int(1), length=2),
    "augmenter.denough_fill": DenoughFill(),
    "augmenter.probe.folds": Int(2),
    "classifier.backbone": TimmModel(("resnet10", *PLAIN_CNNS)),
    "classifier.source": Source(*CLASSIFIER_SOURCES),
    "classifier.zoo_entry": Text(),            # the names live in dafsl.zoo (not a leaf)
    "classifier.crop_size": Nullable(COUNT),
    "classifier.stem": Choice(*CLASSIFIER_STEMS),
    "classifier.lr_schedule": Choice(*LR_SCHEDULES),
    "classifier.warmup_steps": COUNT0,   # and a cross rule: = augmenter.resolution
    **{f"classifier.{k}": COUNT for k in ("input_size", "epochs", "batch_size")},
    "classifier.augmentation": Choice(*AUGMENTATIONS),
    "classifier.generated_count": Nullable(COUNT0),
    "classifier.real_share": Nullable(UNIT),
    "classifier.head_faces": Choice("all", "real", "weighted"),
    "classifier.imbalance": Choice(*IMBALANCE),
    "classifier.head": Choice(*CLASSIFIER_HEADS),
    "classifier.imbalance_params.tau": NON_NEGATIVE,
    "classifier.imbalance_params.crt_epochs": COUNT,
    "classifier.imbalance_params.crt_lr": POSITIVE,
    "classifier.imbalance_params.dc_lambda": POSITIVE,    # 0 (the paper's log) is not offered
    "classifier.imbalance_params.dc_alpha": NON_NEGATIVE,
    "classifier.imbalance_params.dc_mean": Choice(*CALIBRATION_MEANS),
    "classifier.imbalance_params.dc_samples": Nullable(COUNT),  # null: the base class's count
    "classifier.epoch_size": Nullable(COUNT),
    "classifier.lr": POSITIVE,
    "classifier.num_threads": COUNT0,
    "classifier.weight_decay": NON_NEGATIVE,
    "classifier.distill": Choice(*DISTILLERS),
    "classifier.distill_params.hinton.temperature": POSITIVE,
    "classifier.distill_params.hinton.alpha": UNIT,
    **{f"classifier.distill_params.ddgsd.{k}": NON_NEGATIVE for k in ("w_mmd", "w_kl", "w_ce")},
    "classifier.distill_params.ddgsd.distortion": Transforms(),
    **{f"classifier.distill_params.{m}.temperature": POSITIVE for m in CHAIN_DISTILLERS},
    **{f"classifier.distill_params.{m}.alpha": UNIT for m in CHAIN_DISTILLERS},
    "classifier.distill_params.dgkd.drop_prob": Number(0, 1, hi_open=True),
    "classifier.distill_chain": ListOf(TimmModel(("resnet10", *PLAIN_CNNS)), min_len=0),  # and a cross rule
    "classifier.teacher.checkpoints": ListOf(Text(), min_len=0),
    "classifier.teacher.backbone": TimmModel(("resnet10", *PLAIN_CNNS)),
    "classifier.teacher.mode": Choice(*TRANSFER_MODES),
    "classifier.teacher.epochs": COUNT,
    "classifier.system_score_threshold": UNIT,
    "similarity.p": Number(lo=1, inf=True),    # Minkowski exponent; inf = Chebyshev
    "similarity.n_objects": COUNT,
    "similarity.bootstrap": COUNT0,             # 0: the point estimate alone decides
    "similarity.confidence": Number(0, 1, lo_open=True, hi_open=True),
    "similarity.similar": UNIT, "similarity.dissimilar": UNIT,   # and a cross rule
    "similarity.min_target_size": COUNT0,
    "fewshot.method": Choice(*FEWSHOT_METHODS), "fewshot.distill": Choice(*FEWSHOT_DISTILL),
    "fewshot.manifest": Text(),
    "fewshot.image_size": Int(16),             # conv4 halves it four times
    **{f"fewshot.{k}": COUNT for k in ("shot", "query", "width", "epochs", "episodes_per_epoch",
                                       "val_episodes", "test_episodes")},
    "fewshot.way": Int(2), "fewshot.train_way": Nullable(Int(2)),
    "fewshot.train_query": Nullable(COUNT),
    "fewshot.test_shots": ListOf(COUNT, min_len=0),
    "fewshot.backbone": TimmModel(("conv4",)),
    "fewshot.lr": POSITIVE, "fewshot.weight_decay": NON_NEGATIVE,
    **{f"fewshot.alpha.{m}": NON_NEGATIVE for m in FEWSHOT_METHODS},
    "fewshot.temperature": POSITIVE,
    "fewshot.label_weight": NON_NEGATIVE,
    "fewshot.num_threads": COUNT0,
}

# Keys whose type (fixed by default.yaml) is all there is to check.
#: keys whose value may be of several types: the schema rule, not the default's type, decides
MIXED_TYPES = frozenset({"augmenter.denough_fill"})
TYPE_ONLY = frozenset({"detector.fpn_extra_pool", "classifier.system_eval", "augmenter.degrade.enabled",
                       "classifier.generated_denough", "classifier.probe", "fewshot.fce",
                       "augmenter.conditional", "augmenter.target.ada", "classifier.tstr"})


# ------------------------------------------------------------------ cross-key rules
def _gan_levels(cfg: dict) -> int:
    return int(math.log2(cfg["augmenter"]["resolution"])) - 1  # 4, 8, ..., resolution


def _channels(cfg):
    a, levels = cfg["augmenter"], _gan_levels(cfg)
    if len(a["channels"]) != levels:
        return "augmenter.channels", (f"one channel count per resolution 4..{a['resolution']} "
                                      f"({levels} values), got {len(a['channels'])}")


def _g_frozen(cfg):
    k, levels = cfg["augmenter"]["g_frozen_blocks"], _gan_levels(cfg)
    if k > levels - 1:
        return "augmenter.g_frozen_blocks", f"0..{levels - 1} at resolution " \
                                            f"{cfg['augmenter']['resolution']}, got {k}"


def _source_growth(cfg):
    s, levels = cfg["augmenter"]["source"], _gan_levels(cfg)
    need = s["stable_epochs"] + (levels - 1) * (s["fade_epochs"] + s["stable_epochs"])
    if s["epochs"] < need:
        res = cfg["augmenter"]["resolution"]
        return "augmenter.source.epochs", (f">= {need} (the source GAN's growth to {res} px), "
                                           f"got {s['epochs']}")


def _anchors(cfg):
    d = cfg["detector"]
    levels = len(d["fpn_layers"]) + int(d["fpn_extra_pool"])
    if len(d["anchor_sizes"]) != levels:
        return "detector.anchor_sizes", (f"one list per FPN level ({levels}: fpn_layers"
                                         f"{' + pool' if d['fpn_extra_pool'] else ''}), "
                                         f"got {len(d['anchor_sizes'])}")
    if len({len(level) for level in d["anchor_sizes"]}) > 1:
        return "detector.anchor_sizes", "the same number of sizes on every level (one RPN head)"


def _thresholds(cfg):
    s = cfg["similarity"]
    if s["dissimilar"] > s["similar"]:
        return "similarity.dissimilar", (f"<= similarity.similar ({s['similar']}), "
                                         f"got {s['dissimilar']}")


def _crop_size(cfg):
    size, res = cfg["classifier"]["crop_size"], cfg["augmenter"]["resolution"]
    if size is not None and size != res:
        return "classifier.crop_size", (f"null or augmenter.resolution ({res}): real and generated "
                                        f"faces pass through the same resolution, got {size}")


def _distill_chain(cfg):
    c = cfg["classifier"]
    if c["distill"] in CHAIN_DISTILLERS and not c["distill_chain"]:
        return "classifier.distill_chain", (f"at least one model (the teacher, large to small) for "
                                            f"classifier.distill {c['distill']}, got []")


CROSS_RULES: list[Callable[[dict], tuple[str, str] | None]] = [
    _channels, _g_frozen, _source_growth, _anchors, _thresholds, _crop_size, _distill_chain]


# ------------------------------------------------------------------ validation
def lookup(cfg: dict, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def validate(cfg: dict) -> dict:
    """Check every key of :data:`SCHEMA`, then :data:`CROSS_RULES`; normalise values in
    place (``3.0`` -> ``3`` for integers). Returns ``cfg``. Raises a one-line
    :class:`DafslError` ``"<key>: expected <what it allows>, got <value>"``."""
    for key, rule in SCHEMA.items():
        *parents, last = key.split(".")
        node = lookup(cfg, ".".join(parents)) if parents else cfg
        if not rule.ok(node[last]):
            raise DafslError(f"{key}: expected {rule.allows}, got {node[last]!r}")
        node[last] = rule.normalise(node[last])
    for check in CROSS_RULES:
        problem = check(cfg)
        if problem:
            raise DafslError(f"{problem[0]}: expected {problem[1]}")
    return cfg
