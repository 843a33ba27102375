"""Which parameters each transfer mode trains: after one D+G step, frozen weights and
frozen BatchNorm statistics are unchanged and trainable ones moved; growth leaves the
not-yet-used resolutions untouched."""
from __future__ import annotations

import pytest
import torch

from dafsl import transfer
from dafsl.augmenter.networks import GAN
from dafsl.augmenter.train import frozen_modules
from dafsl.augmenter.trainer import GanTrainer, Growth
from dafsl.errors import DafslError

AUG = {"batch_size": 4, "steps_per_epoch": 1, "ema_beta": 0.9, "betas": [0.0, 0.99],
       "lr_g": 0.01, "lr_d": 0.01, "eval_every": 0, "g_frozen_blocks": 2}
TRANSFER = {"freeze_at": 2, "lr_factor": 0.5, "warmup_steps": 1}
CH = [8, 8, 8, 8]  # 4, 8, 16, 32 px


def make_gan(seed: int) -> GAN:
    torch.manual_seed(seed)
    return GAN(latent_dim=8, channels=CH, resolution=32, mbstd_group=2)


def step_once(mode: str) -> tuple[GAN, dict, dict, transfer.TransferReport]:
    """(gan after one step, its state before, the source state, the transfer report)."""
    source = make_gan(1).state_dict()
    gan = make_gan(0)
    report = transfer.apply_mode(gan, mode, source_state=None if mode == "vanilla" else source,
                                 frozen=frozen_modules(mode, gan, AUG, TRANSFER),
                                 required=("G.", "D."), log=lambda m: None)
    before = {k: v.clone() for k, v in gan.state_dict().items()}
    reals = torch.rand(6, 3, 32, 32) * 2 - 1
    trainer = GanTrainer(gan, reals, AUG, seed=0, epochs=1,
                         growth=Growth(gan.num_levels, 1, 1, grown=mode != "vanilla"),
                         policy=["color", "translation", "cutout"], device=torch.device("cpu"),
                         make_scheduler=lambda opt: transfer.build_scheduler(opt, mode, TRANSFER))
    torch.manual_seed(0)
    trainer.train_step(trainer.batches(0)[0])
    return gan, before, source, report


def changed(gan: GAN, before: dict, prefix: str) -> set[bool]:
    """For every state entry under ``prefix``: did it change? (set of answers)"""
    after = gan.state_dict()
    keys = [k for k in after if k.startswith(prefix) and not k.endswith("num_batches_tracked")]
    assert keys, prefix
    return {not torch.equal(after[k], before[k]) for k in keys}


def test_pretrained_loads_everything_and_trains_everything_in_use():
    gan, before, source, report = step_once("pretrained")
    assert all(torch.equal(before[k], source[k]) for k in source)   # loaded
    assert report.frozen_params == 0 and report.trainable_params == sum(p.numel() for p in gan.parameters())
    # full resolution from the start: the top block, to-RGB, from-RGB and every D block move
    for prefix in ("G.blocks.0.", "G.blocks.3.", "G.to_rgb.3.", "D.from_rgb.3.", "D.blocks.3.",
                   "D.blocks.1.", "D.final.", "D.classifier."):
        assert changed(gan, before, prefix) == {True}, prefix
    # resolutions not in use receive no gradient
    assert changed(gan, before, "G.to_rgb.0.") == {False}
    assert changed(gan, before, "D.from_rgb.0.") == {False}


def test_fixed_trains_only_d_classifier_and_g_upper_blocks():
    gan, before, source, report = step_once("fixed")
    assert all(torch.equal(before[k], source[k]) for k in source)
    for prefix in ("G.blocks.0.", "G.blocks.1.", "D.from_rgb.", "D.blocks.", "D.final."):
        assert changed(gan, before, prefix) == {False}, prefix  # weights AND BN running stats
    for prefix in ("G.blocks.2.", "G.blocks.3.", "G.to_rgb.3.", "D.classifier."):
        assert changed(gan, before, prefix) == {True}, prefix
    assert all(not m.training for m in gan.D.modules() if isinstance(m, torch.nn.BatchNorm2d))
    trainable = {n for n, p in gan.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("D.")} == {"D.classifier.weight", "D.classifier.bias"}
    assert report.frozen_params == sum(p.numel() for n, p in gan.named_parameters() if n not in trainable)


def test_finetune_freezes_the_lower_d_layers_only():
    # freeze_at 2: the from-RGB layers + the full-resolution block (32 -> 16 px).
    gan, before, _, report = step_once("finetune")
    for prefix in ("D.from_rgb.", "D.blocks.3."):
        assert changed(gan, before, prefix) == {False}, prefix
    for prefix in ("D.blocks.2.", "D.blocks.1.", "D.final.", "D.classifier.", "G.blocks.0.", "G.blocks.3."):
        assert changed(gan, before, prefix) == {True}, prefix
    assert not gan.D.blocks[3][1].training and gan.D.blocks[2][1].training
    assert report.frozen_modules == ["D.from_rgb", "D.blocks.3"]


def test_vanilla_is_random_init_and_grows_from_4px():
    gan, before, source, report = step_once("vanilla")
    # conv / linear weights differ from the source's (BatchNorm's init is the same 1s and 0s)
    assert not any(torch.equal(before[k], source[k]) for k in source if source[k].dim() > 1)
    assert report.frozen_params == 0 and report.loaded == []
    # level 0: only the 4x4 block, its to-RGB, the 4x4 from-RGB and D's head move
    for prefix in ("G.blocks.0.", "G.to_rgb.0.", "D.from_rgb.0.", "D.final.", "D.classifier."):
        assert changed(gan, before, prefix) == {True}, prefix
    for prefix in ("G.blocks.1.", "G.to_rgb.1.", "D.from_rgb.1.", "D.blocks.1."):
        assert changed(gan, before, prefix) == {False}, prefix


def test_freezing_counts_are_validated():
    gan = make_gan(0)
    with pytest.raises(DafslError, match="g_frozen_blocks"):
        frozen_modules("fixed", gan, {**AUG, "g_frozen_blocks": 4}, TRANSFER)
    with pytest.raises(DafslError, match="freeze_at"):
        frozen_modules("finetune", gan, AUG, {**TRANSFER, "freeze_at": 5})
    assert frozen_modules("finetune", gan, AUG, {**TRANSFER, "freeze_at": 4}) == [
        "D.from_rgb", "D.blocks.3", "D.blocks.2", "D.blocks.1"]
    assert frozen_modules("pretrained", gan, AUG, TRANSFER) == []


def test_a_mismatched_source_names_the_layer():
    gan = make_gan(0)
    other = GAN(latent_dim=8, channels=[8, 8, 8, 16], resolution=32).state_dict()
    with pytest.raises(DafslError, match="required layer does not transfer"):
        transfer.apply_mode(gan, "pretrained", source_state=other, required=("G.", "D."), log=lambda m: None)
