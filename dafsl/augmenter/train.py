"""Stage 2 of DA-FSL: ``run(ctx)`` trains the GAN augmenter on the Dlack faces in the
context's transfer mode and fills Dlack with generated faces.

Flow: Dlack crops (detector or ground truth) -> quality probes (feature net +
validation and test Dlack faces, cut the same way) -> GAN built and put in its mode by
:func:`dafsl.transfer.apply_mode` -> :func:`dafsl.engine.fit` (fine-tuning settings of
``augmenter.target``, best-validation-KID snapshot) -> final KID / precision / recall ->
degraded generated faces (+ the source GAN's Denough fill) -> summary and outputs.

Which layers each mode freezes (:func:`frozen_modules`; table in docs/augmenter.md):

* vanilla: random init, nothing frozen, grows from 4x4;
* pretrained: G and D from the source GAN, everything trains (Transferring GANs);
* fixed: D's feature extractor (``from_rgb``, ``blocks``, ``final``) frozen with its
  BatchNorm statistics, only ``D.classifier`` trains; G's lowest
  ``augmenter.g_frozen_blocks`` blocks frozen, its upper blocks and to-RGB layers train;
* finetune (FreezeD): D's lower layers frozen, counted from the image side like
  detectron2's FREEZE_AT with ``transfer.freeze_at``: 1 = the from-RGB layers ("stem"),
  2 = + the highest-resolution block, ...; G trains entirely.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from dafsl import transfer
from dafsl.augmenter.classes import ClassFakes, TstrProbe, conditional_reals, real_faces_of
from dafsl.augmenter.data import DlackCrops, to_tensor, to_uint8
from dafsl.augmenter.denough import denough_count, denough_generator, write_denough_fill
from dafsl.augmenter.degrade import check_params, degrade_faces, scene_face_sides
from dafsl.augmenter.featnet import load_feature_net
from dafsl.augmenter.diffaug import parse_policy
from dafsl.augmenter.networks import GAN, SOURCE_LAYERS, build_gan
from dafsl.augmenter.quality import QualityProbe
from dafsl.augmenter.samples import write_generated, write_grid, write_real_vs_generated
from dafsl.augmenter.target import TargetTrainer, target_config
from dafsl.augmenter.trainer import GanTrainer, generate, growth_for
from dafsl.augmenter.reference import BestSnapshot, make_cropper
from dafsl.data import Split, load_split
from dafsl.engine import fit
from dafsl.errors import DafslError
from dafsl.faces import class_faces
from dafsl.log import get_logger
from dafsl.runs import save_checkpoint
from dafsl.stages import StageContext, StageResult

log = get_logger("augmenter")


def frozen_modules(mode: str, gan: GAN, aug_cfg: dict, transfer_cfg: dict) -> list[str]:
    """Names of the submodules of ``gan`` that ``mode`` freezes."""
    levels = gan.num_levels
    if mode == "fixed":
        k = int(aug_cfg["g_frozen_blocks"])
        if not 0 <= k < levels:
            raise DafslError(f"augmenter.g_frozen_blocks: must be in 0..{levels - 1} "
                             f"(G has {levels} blocks and the top one must train), got {k}")
        return [f"G.blocks.{i}" for i in range(k)] + ["D.from_rgb", "D.blocks", "D.final"]
    if mode == "finetune":
        k = int(transfer_cfg["freeze_at"])
        if not 0 <= k <= levels:
            raise DafslError(f"transfer.freeze_at: the augmenter's D has {levels} freezable stages "
                             f"(from-RGB + {levels - 1} strided blocks), got {k}")
        # D.blocks[levels - 1] sees the full-resolution image: it is the lowest block.
        return (["D.from_rgb"] if k >= 1 else []) + [f"D.blocks.{levels - j}" for j in range(1, k)]
    return []


def dlack_class(ctx: StageContext) -> str:
    dlack = ctx.split_info.get("dlack", [])
    if len(dlack) != 1:
        raise DafslError(f"{ctx.run.path / 'data_split.json'}: the augmenter fills exactly one "
                         f"Dlack class, the split has {len(dlack)} ({', '.join(dlack) or 'none'})")
    return dlack[0]


def collect_crops(crop, train: Split, cls: str, shots: int) -> DlackCrops:
    """The Dlack faces as (N, r, r, 3) uint8 crops, cut by ``crop`` (:func:`make_cropper`)."""
    faces = class_faces(train, cls, shots)
    if len(faces) < 2:
        raise DafslError(f"{train.label}: Dlack class '{cls}' has {len(faces)} usable face "
                         f"crop(s); the augmenter needs at least 2")
    return crop(train, faces)


def fill_count(aug: dict, split_info: dict, cls: str) -> int:
    """How many faces to generate: ``fill_count`` if set, else enough to bring Dlack up to
    ``fill_ratio`` x the largest Denough class count."""
    if aug["fill_count"] is not None:
        return max(0, int(aug["fill_count"]))
    counts = split_info["counts"]
    top = max(counts[c] for c in split_info["denough"])
    return max(0, math.ceil(float(aug["fill_ratio"]) * top) - int(counts[cls]))


def run(ctx: StageContext) -> StageResult:
    """Crops -> quality probes -> GAN in its mode -> fit -> :func:`finish`."""
    cfg, aug, mode = ctx.cfg, ctx.cfg["augmenter"], ctx.mode
    seed = int(cfg["seed"])
    out_dir = ctx.run.stage_dir("augmenter")
    cls = dlack_class(ctx)
    policy = parse_policy(str(aug["diffaug"]))
    train = load_split(cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"])
    crop = make_cropper(ctx)
    crops = collect_crops(crop, train, cls, int(aug["shots"]))
    reals = to_tensor(crops.images)
    classes = list(ctx.split_info["counts"])
    conditional = bool(aug["conditional"])
    labels, real_counts = None, {cls: len(crops.images)}
    if conditional:  # one generator for every class, trained on the real faces of each
        reals, labels, real_counts = conditional_reals(crop, train, crops, classes, cls,
                                                       int(aug["denough_faces"]))
        log.info(f"conditional GAN: real faces {real_counts}; {float(aug['dlack_share']):.0%} of each "
                 f"batch from '{cls}'")

    probe, test_probe, _ = quality_probes(cfg, cls, crop, ctx.device)  # val, test
    snapshot = BestSnapshot(str(aug["select"]), out_dir / "best_snapshot.pt", resume=ctx.resume,
                            first_epoch=int(float(aug["select_after"]) * int(aug["epochs"])))
    fakes = ClassFakes(classes, cls, conditional,
                       None if conditional else denough_generator(cfg).to(ctx.device))
    tstr_val = tstr_probe(cfg, crop, "val", classes, cls, ctx.device)

    torch.manual_seed(seed)
    gan = build_gan(aug, num_classes=len(classes) if conditional else 0)
    pos = classes.index(cls) if conditional else None  # G's label for the Dlack class
    source_state = None
    if mode != "vanilla":
        source_state, _ = transfer.resolve_source(cfg, str(aug["zoo_entry"]))
    report = transfer.apply_mode(gan, mode, source_state=source_state,
                                 frozen=frozen_modules(mode, gan, aug, cfg["transfer"]),
                                 required=SOURCE_LAYERS, lr_factor=float(cfg["transfer"]["lr_factor"]),
                                 log=log.info)
    growth = growth_for(target_config(aug), gan.num_levels, grown=(mode != "vanilla"))
    epochs = int(aug["epochs"])
    if growth.total_steps > epochs * int(aug["steps_per_epoch"]):
        log.info(f"{epochs} epochs end before G reaches {aug['resolution']} px (growth needs "
                 f"{growth.total_steps // int(aug['steps_per_epoch'])}); samples are upsampled")

    level0, alpha0 = growth.at(0)
    kid_start = probe.kid_of(generate(gan.G, probe.z_eval, level0, alpha0, labels=pos))[0]  # the source's
    sample_every = int(aug["sample_every"])
    per_class, select = int(aug["tstr"]["faces"]), str(aug["select"])

    def evaluate(g_ema, level: int, alpha: float, epoch: int) -> dict:
        gen_dlack = generate(g_ema, probe.z_eval, level, alpha, labels=pos)
        kid_mean, kid_std = probe.kid_of(gen_dlack)
        figures = {"kid": kid_mean, "kid_std": kid_std}
        if select == "best_val_tstr" and epoch >= snapshot.first_epoch:
            images, ys = fakes.draw(g_ema, per_class, seed * 1000 + epoch, level, alpha)
            t = tstr_val.score(images, ys, degrade_seed=seed * 1000 + epoch)
            figures.update(tstr_balanced_accuracy=t["balanced_accuracy"], tstr_auc=t["roc_auc"])
            snapshot.offer(g_ema, 1.0 - t["roc_auc"], epoch)
        else:
            snapshot.offer(g_ema, kid_mean, epoch)  # best_val_kid keeps the lowest
        if sample_every > 0 and ((epoch + 1) % sample_every == 0 or epoch == epochs - 1):
            write_grid(out_dir / "samples" / f"epoch{epoch + 1:04d}.png", to_uint8(gen_dlack[:64]))
        return figures

    target = aug.get("target") or {}  # fine-tuning-only settings (dafsl/augmenter/target.py)
    trainer = TargetTrainer(gan, reals, target_config(aug), seed=seed, epochs=epochs, growth=growth,
                            policy=policy, device=ctx.device, evaluate_fn=evaluate,
                            make_scheduler=lambda opt: transfer.build_scheduler(opt, mode, cfg["transfer"]),
                            r1_gamma=float(target.get("r1_gamma", 0.0)),
                            r1_every=int(target.get("r1_every", 1)), d_bn=str(target.get("d_bn", "train")),
                            ada={"target": target["ada_target"], "interval": target["ada_interval"],
                                 "speed_imgs": target["ada_speed_imgs"], "p_max": target["ada_p_max"]}
                            if target.get("ada") else None,
                            cdc={"weight": target.get("cdc_weight", 0.0), "tau": target.get("cdc_tau", 1.0),
                                 "batch": target.get("cdc_batch", 4), "layers": target.get("cdc_layers")},
                            labels=labels, positive=pos if conditional else 1,
                            positive_share=float(aug["dlack_share"]),
                            class_lr_mult=float(target.get("class_lr_mult", 1.0)),
                            aux_weight=float(target.get("aux_weight", 0.0)))
    records = fit(trainer, ctx.run, epochs, mode=mode, resume=ctx.resume)
    tstr_test = tstr_probe(cfg, crop, "test", classes, cls, ctx.device)
    return finish(ctx, trainer, (probe, test_probe), crops, records, report, kid_start, cls, snapshot,
                  fakes=fakes, tstr_probes=(tstr_val, tstr_test), real_counts=real_counts)


def tstr_probe(cfg: dict, crop, split_name: str, classes: list[str], cls: str,
               device: torch.device | str) -> TstrProbe:
    """TSTR against ``split_name``'s real faces of every class (``augmenter.tstr``), the
    generated faces degraded by the fill's chain."""
    aug, seed = cfg["augmenter"], int(cfg["seed"])
    t = aug["tstr"]
    split = load_split(cfg["data"]["manifest"], split_name, cfg["data"]["cache_dir"])
    images, labels = real_faces_of(crop, split, classes, int(t["eval_faces"]))
    train = load_split(cfg["data"]["manifest"], "train", cfg["data"]["cache_dir"])
    return TstrProbe(images, labels, classes.index(cls),
                     sides=scene_face_sides(train, float(cfg["faces"]["margin"])),
                     degrade=check_params(aug["degrade"]), faces_per_class=int(t["faces"]),
                     steps=int(t["steps"]), batch_size=int(t["batch_size"]), lr=float(t["lr"]),
                     seed=seed, device=device)


def quality_probes(cfg: dict, cls: str, crop, device: torch.device | str = "cpu"
                   ) -> tuple[QualityProbe, QualityProbe, dict]:
    """The feature net (zoo) and two references of up to ``reference_faces`` class-``cls``
    faces cut like the GAN's training faces: the validation split's (periodic KID, snapshot
    selection) and the test split's (final figure only). Returns (val, test, net meta)."""
    aug, seed = cfg["augmenter"], int(cfg["seed"])
    net, meta = load_feature_net(cfg, device)
    probes = []
    for name in ("val", "test"):
        split = load_split(cfg["data"]["manifest"], name, cfg["data"]["cache_dir"])
        faces = class_faces(split, cls, int(aug["reference_faces"]))
        if len(faces) < 2:
            raise DafslError(f"{split.label}: needs at least 2 '{cls}' faces as the quality reference")
        probes.append(QualityProbe(net, to_tensor(crop(split, faces).images), int(aug["latent_dim"]),
                                   eval_samples=int(aug["eval_samples"]),
                                   final_samples=int(aug["final_samples"]),
                                   subsets=int(aug["kid_subsets"]), subset_size=int(aug["kid_subset_size"]),
                                   k=int(aug["pr_k"]), seed=seed))
    return probes[0], probes[1], meta


def finish(ctx: StageContext, trainer: GanTrainer, probes: tuple[QualityProbe, QualityProbe],
           crops: DlackCrops, records: list[dict], report: transfer.TransferReport, kid_start: float,
           cls: str, snapshot: BestSnapshot, *, fakes: ClassFakes, tstr_probes: tuple[TstrProbe, TstrProbe],
           real_counts: dict) -> StageResult:
    """After training: the selected snapshot, final quality (validation and test references),
    the degraded generated faces + manifest, grids, the EMA G, summary.json; returns the
    recorded stage outputs."""
    aug, mode, seed = ctx.cfg["augmenter"], ctx.mode, int(ctx.cfg["seed"])
    out_dir = ctx.run.stage_dir("augmenter")
    g_ema = trainer.g_ema
    selected_epoch = snapshot.restore(g_ema)
    probe, test_probe = probes
    level, alpha = trainer.growth.at(max(trainer.step - 1, 0))
    classes = fakes.classes
    pos = classes.index(cls) if fakes.conditional else None  # the conditional G's Dlack label
    final_fakes = generate(g_ema, probe.z_final, level, alpha, labels=pos)
    final = probe.full_report(final_fakes)
    final_test = test_probe.full_report(final_fakes)
    real_crops = to_tensor(crops.images)  # the real Dlack crops: what a perfect copy scores
    ceiling, ceiling_test = probe.kid_of(real_crops), test_probe.kid_of(real_crops)
    n_fill = fill_count(aug, ctx.split_info, cls)
    gen = torch.Generator().manual_seed(seed * 1000 + 999)
    fill = to_uint8(generate(g_ema, torch.randn(n_fill, g_ema.latent_dim, generator=gen), level, alpha,
                             labels=pos))
    degrade = check_params(aug["degrade"])
    train = load_split(ctx.cfg["data"]["manifest"], "train", ctx.cfg["data"]["cache_dir"])
    sides = scene_face_sides(train, float(ctx.cfg["faces"]["margin"]))
    fill = degrade_faces(fill, sides, degrade, seed * 1000 + 998)
    final_degraded = probe.full_report(to_tensor(degrade_faces(to_uint8(final_fakes), sides, degrade,
                                                               seed * 1000 + 997)))
    manifest = write_generated(out_dir / "generated", fill, cls, out_dir / "generated.json",
                               extra={"mode": mode, "generator": "generator_ema.pt"})
    write_real_vs_generated(out_dir / "real_vs_generated.png", crops.images, fill[:len(crops.images)])
    # generated Denough faces, from the same conditional G (or the source GAN): "generated"
    # then says nothing of the class
    n_denough = denough_count(aug["denough_fill"], n_fill)
    other = ctx.split_info["denough"][0]
    denough_manifest = write_denough_fill(ctx.cfg, out_dir, other, n_denough, sides, degrade,
                                          generator=(g_ema, classes.index(other), level, alpha)
                                          if fakes.conditional else None)
    # TSTR: the small ConvNet trained on the generated faces of both classes, degraded as
    # the fill; scored on real validation and test faces (the classifier stage repeats it
    # with its own architecture and budget)
    per_class = int(aug["tstr"]["faces"])
    t_images, t_labels = fakes.draw(g_ema, per_class, seed * 1000 + 990, level, alpha)
    tstr_figs = {}
    for name, tp in zip(("val", "test"), tstr_probes):
        t = tp.score(t_images, t_labels, degrade_seed=seed * 1000 + 989)
        tstr_figs.update({f"tstr_{name}_balanced_accuracy": t["balanced_accuracy"],
                          f"tstr_{name}_auc": t["roc_auc"], f"tstr_{name}_recall_{cls}": t["recall_positive"]})
    log.info(f"TSTR (small ConvNet on {per_class} generated faces per class, real faces): balanced "
             f"accuracy {tstr_figs['tstr_val_balanced_accuracy']:.3f} val / "
             f"{tstr_figs['tstr_test_balanced_accuracy']:.3f} test, ROC-AUC {tstr_figs['tstr_val_auc']:.3f} val")
    generator_path = out_dir / "generator_ema.pt"
    save_checkpoint({"model": g_ema.state_dict(), "latent_dim": g_ema.latent_dim,
                     "channels": [int(c) for c in aug["channels"]], "resolution": g_ema.resolution,
                     "level": level, "alpha": alpha, "mode": mode,
                     "classes": classes if fakes.conditional else None}, generator_path)

    last = records[-1]
    figures = {
        "dlack_class": cls, "real_faces": len(crops.images), "crops": crops.source,
        "detector_missed": crops.missed, "diffaug": ",".join(trainer.policy) or "off",
        "epochs": trainer.epochs, "steps": trainer.step,
        "final_loss_g": last["loss_g"], "final_loss_d": last["loss_d"],
        "final_d_real": last["d_real"], "final_d_fake": last["d_fake"],
        **final, "kid_start": kid_start, "kid_real_crops": ceiling[0],
        "kid_test": final_test["kid"], "kid_test_std": final_test["kid_std"],
        "precision_test": final_test["precision"], "recall_test": final_test["recall"],
        "kid_real_crops_test": ceiling_test[0], "kid_degraded": final_degraded["kid"],
        "reference": "val", "reference_faces": len(probe.ref_features),
        "reference_faces_test": len(test_probe.ref_features), "select": snapshot.policy,
        "selected_epoch": None if selected_epoch is None else selected_epoch + 1,
        "degrade": bool(degrade["enabled"]), "generated_denough": n_denough,
        "trainable_params": report.trainable_params, "frozen_params": report.frozen_params,
        "generated": n_fill, "final_resolution": 4 * 2 ** level, "final_alpha": alpha,
        "conditional": fakes.conditional, "real_faces_by_class": real_counts, **tstr_figs}
    log.info(f"{mode}: KID {final['kid']:.4f} +- {final['kid_std']:.4f} (val), "
             f"{final_test['kid']:.4f} (test), precision {final['precision']:.3f}, recall "
             f"{final['recall']:.3f} ({len(probe.ref_features)} validation '{cls}' faces; the real "
             f"crops score {ceiling[0]:.4f}); wrote {n_fill} degraded faces to {out_dir / 'generated'}")
    outputs = {"generated_dir": out_dir / "generated", "generated_manifest": manifest,
               "generator": generator_path}
    if denough_manifest:
        outputs.update(generated_denough_manifest=denough_manifest,
                       generated_denough_dir=out_dir / "generated_denough")
    return StageResult(figures, outputs, train_time_s=float(last["wall_clock_s"]),
                       transfer=report.as_dict())
