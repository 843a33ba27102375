"""Target-only fine-tuning settings, the R1 penalty and the best-snapshot selection."""
from __future__ import annotations

import pytest
import torch

from dafsl.augmenter.reference import BestSnapshot
from dafsl.augmenter.target import TargetTrainer, target_config
from dafsl.augmenter.networks import GAN
from dafsl.augmenter.trainer import Growth
from dafsl.errors import DafslError

AUG = {"lr_g": 0.002, "lr_d": 0.0005, "ema_beta": 0.99, "steps_per_epoch": 10, "batch_size": 4,
       "betas": [0.0, 0.99], "eval_every": 0}


def test_target_overrides_apply_only_where_set():
    out = target_config({**AUG, "target": {"lr_g": 0.001, "lr_d": None, "d_bn": "frozen"}})
    assert (out["lr_g"], out["lr_d"], out["ema_beta"]) == (0.001, 0.0005, 0.99)
    with pytest.raises(DafslError, match="augmenter.target.d_bn"):
        target_config({**AUG, "target": {"d_bn": "sometimes"}})
    with pytest.raises(DafslError, match="augmenter.target.r1_gamma"):
        target_config({**AUG, "target": {"r1_gamma": -1}})


def make_trainer(**kw) -> TargetTrainer:
    torch.manual_seed(0)
    gan = GAN(8, [8, 8], 8)
    reals = torch.rand(4, 3, 8, 8) * 2 - 1
    return TargetTrainer(gan, reals, AUG, seed=0, epochs=1, growth=Growth(2, 0, 0, grown=True), policy=[],
                         device=torch.device("cpu"),
                         make_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0), **kw)


def test_r1_penalty_is_the_squared_input_gradient_of_d_on_reals():
    t = make_trainer(r1_gamma=10.0)
    real = t.reals.clone().requires_grad_(True)
    t.gan.train()
    (grad,) = torch.autograd.grad(t.gan.D(real).sum(), real)
    expect = float(grad.pow(2).sum(dim=(1, 2, 3)).mean())
    figs = t.train_step(torch.arange(4))
    assert figs["r1"] == pytest.approx(expect, rel=1e-4)
    assert "r1" not in make_trainer().train_step(torch.arange(4))


def test_frozen_d_batchnorm_keeps_the_source_statistics():
    t = make_trainer(d_bn="frozen")
    before = {k: v.clone() for k, v in t.gan.D.state_dict().items() if "running" in k}
    t.train_step(torch.arange(4))
    after = t.gan.D.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    t2 = make_trainer()
    t2.train_step(torch.arange(4))
    assert not all(torch.equal(v, t2.gan.D.state_dict()[k]) for k, v in before.items())


def test_best_snapshot_keeps_the_lowest_kid_and_survives_a_resume(tmp_path):
    g = torch.nn.Linear(2, 2)
    snap = BestSnapshot("best_val_kid", tmp_path / "best.pt")
    for epoch, (kid, value) in enumerate([(0.3, 1.0), (0.1, 2.0), (0.2, 3.0)]):
        torch.nn.init.constant_(g.weight, value)
        snap.offer(g, kid, epoch)
    resumed = BestSnapshot("best_val_kid", tmp_path / "best.pt", resume=True)
    assert snap.restore(g) == 1 and float(g.weight.detach()[0, 0]) == 2.0
    torch.nn.init.constant_(g.weight, 9.0)
    assert resumed.restore(g) == 1 and float(g.weight.detach()[0, 0]) == 2.0
    torch.nn.init.constant_(g.weight, 9.0)
    last = BestSnapshot("last")
    last.offer(g, 0.0, 0)
    assert last.restore(g) is None and float(g.weight.detach()[0, 0]) == 9.0
    late = BestSnapshot("best_val_kid", first_epoch=2)
    for epoch, (kid, value) in enumerate([(0.0, 1.0), (0.5, 2.0), (0.4, 3.0), (0.6, 4.0)]):
        torch.nn.init.constant_(g.weight, value)
        late.offer(g, kid, epoch)
    assert late.restore(g) == 2 and float(g.weight.detach()[0, 0]) == 3.0
    with pytest.raises(DafslError, match="augmenter.select"):
        BestSnapshot("best_test_kid")


def test_lazy_r1_runs_every_kth_step():
    t = make_trainer(r1_gamma=1.0, r1_every=2)
    steps = [t.train_step(torch.arange(4)) for _ in range(3)]
    assert ["r1" in f for f in steps] == [True, False, True]
