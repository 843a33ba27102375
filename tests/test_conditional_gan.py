"""The class-conditional GAN (one generator for every class) and TSTR: the class
embedding changes the output, an unknown class is refused in one line, a transferred
conditional GAN starts as its unconditional source, conditional batches hold the
configured Dlack share, TSTR sits near chance on shuffled labels and near the oracle on
real faces standing in for generated ones, and the stage runs end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dafsl.augmenter.networks import GAN, SOURCE_LAYERS
from dafsl.augmenter.target import TargetTrainer
from dafsl.augmenter.trainer import Growth
from dafsl.config import CONFIG_DIR, load_config
from dafsl.errors import DafslError
from dafsl.pipeline import main
from dafsl.transfer import apply_mode
from dafsl.tstr import binary_auc, small_cnn, tstr

SMOKE = str(CONFIG_DIR / "smoke.yaml")


def tiny(num_classes: int = 2) -> GAN:
    torch.manual_seed(0)
    return GAN(latent_dim=8, channels=[8, 8, 8], resolution=16, mbstd_group=2, num_classes=num_classes)


def test_class_embedding_changes_the_generated_face():
    gan = tiny()
    with torch.no_grad():
        gan.G.class_embed.weight.normal_()
    z = torch.randn(4, 8)
    same = gan.G(z, labels=torch.zeros(4, dtype=torch.int64))
    other = gan.G(z, labels=torch.ones(4, dtype=torch.int64))
    assert (same - other).abs().mean() > 1e-3
    # the embedding is the only difference: equal classes give equal faces
    torch.testing.assert_close(same, gan.G(z, labels=torch.zeros(4, dtype=torch.int64)))


def test_projection_discriminator_adds_embed_dot_features():
    gan = tiny().eval()
    with torch.no_grad():
        gan.D.class_embed.weight.normal_()
    img, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 1, 0])
    h = gan.D.features(img)
    expect = gan.D.classifier(h).squeeze(1) + (gan.D.class_embed.weight[y] * h).sum(1)
    torch.testing.assert_close(gan.D(img, labels=y), expect)


@pytest.mark.parametrize("net", ["G", "D"])
def test_a_class_the_network_never_saw_is_refused_in_one_line(net):
    gan = tiny()
    bad = torch.tensor([0, 2])
    with pytest.raises(DafslError, match="class 2 was never trained.*0..1"):
        gan.G(torch.randn(2, 8), labels=bad) if net == "G" else gan.D(torch.randn(2, 3, 16, 16), labels=bad)
    with pytest.raises(DafslError, match="needs a class label"):
        gan.G(torch.randn(2, 8)) if net == "G" else gan.D(torch.randn(2, 3, 16, 16))


def test_unconditional_network_refuses_labels():
    gan = tiny(0)
    with pytest.raises(DafslError, match="unconditional"):
        gan.G(torch.randn(2, 8), labels=torch.tensor([0, 1]))


def test_transferred_conditional_gan_starts_as_its_unconditional_source():
    source = tiny(0)
    cond = GAN(latent_dim=8, channels=[8, 8, 8], resolution=16, mbstd_group=2, num_classes=2)
    report = apply_mode(cond, "pretrained", source_state=source.state_dict(),
                        required=SOURCE_LAYERS, log=lambda m: None)
    assert {name for name, _ in report.skipped} == {"G.class_embed.weight", "D.class_embed.weight"}
    z = torch.randn(3, 8)
    for y in (0, 1):
        labels = torch.full((3,), y)
        torch.testing.assert_close(cond.G(z, labels=labels), source.G(z))
        img = torch.randn(3, 3, 16, 16)
        torch.testing.assert_close(cond.D.eval()(img, labels=labels), source.D.eval()(img))


def _trainer(labels: torch.Tensor, share: float) -> TargetTrainer:
    cfg = {"batch_size": 8, "steps_per_epoch": 5, "ema_beta": 0.9, "betas": [0.0, 0.99],
           "lr_g": 1e-3, "lr_d": 1e-3, "eval_every": 0}
    sched = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # noqa: E731
    return TargetTrainer(tiny(), torch.randn(len(labels), 3, 16, 16), cfg, seed=0, epochs=1,
                         growth=Growth(3, 0, 0, grown=True), policy=[], device=torch.device("cpu"),
                         make_scheduler=sched, labels=labels, positive=1, positive_share=share)


def test_conditional_batches_hold_the_dlack_share_and_a_step_runs():
    labels = torch.tensor([1] * 3 + [0] * 40)
    trainer = _trainer(labels, 0.25)
    batches = trainer.batches(0)
    assert len(batches) == 5
    for idx in batches:
        assert int((labels[idx] == 1).sum()) == 2  # round(0.25 * 8)
    # every Dlack face appears (back-to-back shuffles), and only real indices are drawn
    assert set(torch.cat(batches).tolist()) >= {0, 1, 2}
    before = trainer.gan.G.class_embed.weight.clone()
    out = trainer.train_step(batches[0])
    assert np.isfinite(out["loss_g"]) and np.isfinite(out["loss_d"])
    assert not torch.equal(before, trainer.gan.G.class_embed.weight)  # the embedding learns


def test_conditional_trainer_needs_both_classes():
    with pytest.raises(DafslError, match="Dlack class and of at least one other"):
        _trainer(torch.zeros(10, dtype=torch.int64), 0.5)


def _blob_faces(n: int, seed: int, shuffle: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose class is a bright square on the left (0) or the right (1), with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 120, (n, 16, 16, 3)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 4:12, (0 if y == 0 else 8):(8 if y == 0 else 16)] += 100
    if shuffle:  # half of each true class gets each label: the labels say nothing of the class
        shuffled = labels.copy()
        for y in (0, 1):
            idx = rng.permutation(np.where(labels == y)[0])
            shuffled[idx[:len(idx) // 2]], shuffled[idx[len(idx) // 2:]] = 0, 1
        labels = shuffled
    return images, labels


def test_tstr_near_oracle_on_real_faces_and_near_chance_on_shuffled_labels():
    # no flip: the toy class is left/right, which a mirror would swap
    kwargs = dict(make_model=lambda: small_cnn(2, width=8), positive=1, steps=60, batch_size=32,
                  seed=0, flip=False)
    real_eval = _blob_faces(200, 1)
    oracle = tstr(*_blob_faces(400, 2), *real_eval, **kwargs)
    shuffled = tstr(*_blob_faces(400, 3, shuffle=True), *real_eval, **kwargs)
    assert oracle["balanced_accuracy"] > 0.95 and oracle["roc_auc"] > 0.98
    assert abs(shuffled["balanced_accuracy"] - 0.5) < 0.12 and abs(shuffled["roc_auc"] - 0.5) < 0.15
    # seeded: the same inputs give the same figures
    assert tstr(*_blob_faces(400, 2), *real_eval, **kwargs) == oracle


def test_binary_auc_matches_a_hand_count():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    positive = np.array([False, False, True, True, True])
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>both, 0.4>0.1, 0.4=0.4 (half) -> 4.5 / 6
    assert binary_auc(scores, positive) == pytest.approx(4.5 / 6)
    assert binary_auc(scores, np.zeros(5, dtype=bool)) is None


def test_tstr_refuses_one_generated_class():
    images, _ = _blob_faces(20, 0)
    with pytest.raises(DafslError, match="at least two classes"):
        tstr(images, np.zeros(20, dtype=np.int64), images, np.arange(20) % 2,
             make_model=lambda: small_cnn(2, 8), positive=1, steps=1)


def test_conditional_stage_fills_both_classes_from_one_generator(tmp_path):
    out = tmp_path / "cond"
    summary = main(["--stage", "augmenter", "--kd", "pretrained", "--config", SMOKE, "--out", str(out),
                    "--quiet", "--set", "augmenter.conditional=true", "--set", "augmenter.select=best_val_tstr",
                    "--set", "augmenter.tstr.steps=20", "--set", "augmenter.tstr.faces=16"])["augmenter"]
    assert summary["conditional"] is True and summary["select"] == "best_val_tstr"
    assert summary["real_faces_by_class"]["male"] > summary["real_faces_by_class"]["female"] >= 2
    for split in ("val", "test"):
        assert 0.0 <= summary[f"tstr_{split}_balanced_accuracy"] <= 1.0
    dl = json.loads((out / "augmenter" / "generated.json").read_text())
    de = json.loads((out / "augmenter" / "generated_denough.json").read_text())
    # both fills come from the run's own EMA generator, the Denough one with its class label
    assert dl["generator"] == de["generator"] == "generator_ema.pt" and de["mode"] == "conditional"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("tstr_auc" in r for r in records if r.get("stage") == "augmenter")


def test_ada_and_cdc_plug_into_the_target_trainer():
    labels = torch.tensor([1] * 3 + [0] * 13)
    cfg = {"batch_size": 8, "steps_per_epoch": 2, "ema_beta": 0.9, "betas": [0.0, 0.99],
           "lr_g": 1e-3, "lr_d": 1e-3, "eval_every": 0}
    sched = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # noqa: E731

    def make() -> TargetTrainer:
        torch.manual_seed(1)
        return TargetTrainer(tiny(), torch.randn(16, 3, 16, 16), cfg, seed=0, epochs=1,
                             growth=Growth(3, 0, 0, grown=True), policy=[], device=torch.device("cpu"),
                             make_scheduler=sched, labels=labels, positive=1, positive_share=0.5,
                             ada={"target": 0.6, "interval": 1, "speed_imgs": 80.0, "p_max": 0.8},
                             cdc={"weight": 1.0, "tau": 1.0, "batch": 4, "layers": None})
    trainer = make()
    source = {k: v.clone() for k, v in trainer.g_source.state_dict().items()}
    out = trainer.train_step(trainer.batches(0)[0])
    # the controller moved p by 8 images / 80 (up or down from 0, clamped at 0)
    assert out["ada_p"] in (0.0, pytest.approx(0.1))
    assert out["cdc"] >= 0.0 and np.isfinite(out["cdc"])
    # the frozen copy is the generator as transferred: unchanged by the step
    for k, v in trainer.g_source.state_dict().items():
        assert torch.equal(v, source[k])
    # a resumed trainer carries the controller and the frozen copy
    other = make()
    other.load_state_dict(trainer.state_dict())
    assert other.ada_ctl.p == trainer.ada_ctl.p


def test_class_rate_multiplier_and_auxiliary_classifier():
    labels = torch.tensor([1] * 3 + [0] * 13)
    cfg = {"batch_size": 8, "steps_per_epoch": 2, "ema_beta": 0.9, "betas": [0.0, 0.99],
           "lr_g": 1e-3, "lr_d": 2e-3, "eval_every": 0}
    sched = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # noqa: E731
    trainer = TargetTrainer(tiny(), torch.randn(16, 3, 16, 16), cfg, seed=0, epochs=1,
                            growth=Growth(3, 0, 0, grown=True), policy=[], device=torch.device("cpu"),
                            make_scheduler=sched, labels=labels, positive=1, positive_share=0.5,
                            class_lr_mult=10.0, aux_weight=1.0)
    # the class embeddings (and D's auxiliary head) train at 10x the rate, the rest as configured
    g_groups, d_groups = trainer.opt_g.param_groups, trainer.opt_d.param_groups
    assert [g["lr"] for g in g_groups] == [1e-3, pytest.approx(1e-2)]
    assert [g["lr"] for g in d_groups] == [2e-3, pytest.approx(2e-2)]
    assert g_groups[1]["params"] == [trainer.gan.G.class_embed.weight]
    assert set(map(id, d_groups[1]["params"])) == {id(trainer.gan.D.class_embed.weight),
                                                   *map(id, trainer.aux.parameters())}
    # the auxiliary logits come from the same features as the projection logit D computes
    img, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1])
    trainer.gan.D.eval()
    logits, aux = trainer._d(img, 2, 1.0, (y,))
    torch.testing.assert_close(logits, trainer.gan.D(img, labels=y))
    assert aux.shape == (4, 2)
    before = trainer.aux.weight.clone()
    out = trainer.train_step(trainer.batches(0)[0])
    assert {"aux_d", "aux_g", "aux_acc_real"} <= set(out) and not torch.equal(before, trainer.aux.weight)
