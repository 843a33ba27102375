"""Few-shot GAN adaptation pieces: ADA's augmentation and its p controller
(dafsl/augmenter/ada.py), the cross-domain correspondence loss (dafsl/augmenter/cdc.py),
each against a hand computation."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from dafsl.augmenter.ada import AdaAugment, AdaController, translate
from dafsl.augmenter.cdc import (PatchD, anchor_latents, anchors, cdc_loss, cdc_term, d_patch_map,
                                 default_layers, generator_features, is_anchor_step)
from dafsl.augmenter.loss import discriminator_loss, generator_loss
from dafsl.augmenter.networks import Discriminator, Generator
from dafsl.errors import DafslError


# --- ADA controller -------------------------------------------------------------------

def logits_with_signs(pos: int, neg: int) -> torch.Tensor:
    return torch.tensor([2.5] * pos + [-0.7] * neg)


def test_ada_controller_follows_the_formula_and_clamps():
    batch, interval, speed, target, p_max = 4, 2, 40.0, 0.6, 0.5
    ctl = AdaController(target=target, interval=interval, speed_imgs=speed, p_max=p_max)
    step = batch * interval / speed  # 0.2 per adjustment
    # per D step: (positive, negative) real logits of a batch of 4
    steps = [(4, 0), (4, 0),   # r_t = 1.0 > 0.6: p 0 -> 0.2
             (4, 0), (3, 1),   # r_t = 0.875: -> 0.4
             (4, 0), (4, 0),   # r_t = 1: 0.6, clamped to p_max 0.5
             (0, 4), (1, 3),   # r_t = (-4 - 2) / 8 = -0.75 < 0.6: -> 0.3
             (2, 2), (2, 2),   # r_t = 0: -> 0.1
             (2, 2), (2, 2),   # r_t = 0: -> -0.1, clamped to 0
             (4, 0), (0, 4)]   # r_t = 0: stays 0
    p, expected = 0.0, []
    for k, (pos, neg) in enumerate(steps):
        got = ctl.update(logits_with_signs(pos, neg))
        if k % interval == interval - 1:  # an adjustment, computed by hand
            window = steps[k - interval + 1:k + 1]
            rt = sum(a - b for a, b in window) / (batch * interval)
            p = min(max(p + math.copysign(step, rt - target), 0.0), p_max)
            assert ctl.rt == pytest.approx(rt)
        expected.append(p)
        assert got == pytest.approx(p, abs=1e-12) and ctl.p == got
    assert expected == pytest.approx([0, 0.2, 0.2, 0.4, 0.4, 0.5, 0.5, 0.3, 0.3, 0.1, 0.1, 0.0, 0.0, 0.0])


def test_ada_controller_holds_p_when_rt_equals_target_and_counts_partial_batches():
    ctl = AdaController(target=0.5, interval=1, speed_imgs=100.0, p=0.3)
    assert ctl.update(logits_with_signs(3, 1)) == pytest.approx(0.3)  # r_t = 0.5: sign 0
    assert ctl.update(logits_with_signs(5, 0)) == pytest.approx(0.35)  # 5 images: + 5 / 100
    with pytest.raises(DafslError, match="augmenter.target.ada_target"):
        AdaController(target=1.2)
    with pytest.raises(DafslError, match="augmenter.target.ada_p_max"):
        AdaController(p_max=1.5)


def test_ada_controller_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(3)
    stream = [torch.randn(4, generator=gen) + 0.8 for _ in range(23)]
    a = AdaController(interval=4, speed_imgs=64.0)
    for x in stream[:10]:  # stops mid-interval: the partial accumulation must travel too
        a.update(x)
    b = AdaController(interval=4, speed_imgs=64.0)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.p == a.p > 0
    for x in stream[10:]:
        assert a.update(x) == b.update(x)
    assert a.state_dict() == b.state_dict()


# --- ADA augmentation -----------------------------------------------------------------

def images(b: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_ada_p0_is_the_identity_and_p1_changes_every_sample():
    ada, x = AdaAugment(), images(64)
    assert ada(x, 0.0) is x
    y = ada(x, 1.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    changed = (y - x).abs().flatten(1).amax(dim=1) > 0
    assert bool(changed.all())


def test_ada_is_seeded_by_its_generator_and_differentiable():
    ada, x = AdaAugment(), images(8).requires_grad_(True)
    y1 = ada(x, 0.5, torch.Generator().manual_seed(7))
    y2 = ada(x, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(y1, y2)
    (y1 * torch.randn_like(y1)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ada_gradient_reaches_the_generator_through_the_augmentation():
    torch.manual_seed(0)
    G = Generator(16, [16, 8], 8)
    fake = G(torch.randn(4, 16))
    AdaAugment()(fake, 0.8, torch.Generator().manual_seed(1)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.blocks[-1].parameters())


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation"])
def test_ada_applies_each_transform_to_a_share_p_of_the_samples(name):
    # Continuous transforms change every sample they are applied to, so the share of
    # changed samples is the application frequency: Binomial(20000, 0.3) has sd 0.0032,
    # the tolerance 0.015 is 4.6 sd.
    p, n = 0.3, 20000
    x = images(n, size=2)
    y = AdaAugment(transforms=[name])(x, p, torch.Generator().manual_seed(2))
    changed = ((y - x).abs().flatten(1).amax(dim=1) > 0).double().mean().item()
    assert changed == pytest.approx(p, abs=0.015)


def test_ada_switches_each_transform_on_independently_with_probability_p():
    p, n = 0.6, 20000
    params = AdaAugment().sample(n, 32, p, torch.Generator().manual_seed(4))
    ons = torch.stack([on for on, _ in params.values()]).double()
    assert ons.mean(dim=1).tolist() == pytest.approx([p] * 5, abs=0.015)
    # independent: both of two transforms on for p^2 of the samples
    assert (ons[0] * ons[1]).mean().item() == pytest.approx(p * p, abs=0.015)
    shifts = params["translate"][1]
    assert int(shifts.abs().max()) == 4  # round(U(-1/8, 1/8) * 32): at most 4 px


def test_ada_translation_and_flip_by_hand():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(2, 3, 1, 1)
    shift = torch.tensor([[1, 0], [0, -1]])
    y = translate(x, shift, "zero")
    assert torch.equal(y[0, 0, 1:], x[0, 0, :3]) and torch.equal(y[0, 0, 0], torch.zeros(4))
    assert torch.equal(y[1, 0, :, :3], x[1, 0, :, 1:]) and torch.equal(y[1, 0, :, 3], torch.zeros(4))
    r = translate(x, shift, "reflect")
    assert torch.equal(r[0, 0, 0], x[0, 0, 1])  # the row above row 0 reflects row 1
    assert torch.equal(r[1, 0, :, 3], x[1, 0, :, 2])
    ada = AdaAugment(transforms=["xflip"])
    params = {"xflip": (torch.tensor([True, False]), torch.tensor([True, True]))}
    out = ada.apply(x, params)
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1])


def test_ada_rejects_unknown_settings():
    with pytest.raises(DafslError, match="unknown transform 'rotate90'"):
        AdaAugment(transforms=["rotate90"])
    with pytest.raises(DafslError, match="ada_pad"):
        AdaAugment(pad="wrap")


# --- CDC ------------------------------------------------------------------------------

def cdc_by_hand(src: list[np.ndarray], tgt: list[np.ndarray], tau: float) -> float:
    """sum over layers, mean over i of KL(p_i^s || p_i^t), in plain numpy loops."""
    def dists(f):
        f = f.reshape(len(f), -1)
        rows = []
        for i in range(len(f)):
            sims = [float(f[i] @ f[j]) / (np.linalg.norm(f[i]) * np.linalg.norm(f[j]))
                    for j in range(len(f)) if j != i]
            e = [math.exp(s / tau) for s in sims]
            rows.append([v / sum(e) for v in e])
        return rows

    total = 0.0
    for s, t in zip(src, tgt):
        ps, pt = dists(s), dists(t)
        kls = [sum(a * math.log(a / b) for a, b in zip(ps_i, pt_i)) for ps_i, pt_i in zip(ps, pt)]
        total += sum(kls) / len(kls)
    return total


def test_cdc_loss_matches_a_hand_computation():
    src = [np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.5]]),
           np.array([[[1.0, 2.0]], [[0.5, -1.0]], [[2.0, 2.0]], [[-0.3, 0.1]]])]
    tgt = [np.array([[0.2, 1.0], [1.0, 1.0], [0.3, -0.9]]),
           np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]], [[0.5, 0.5]]])]
    for tau in (1.0, 0.5):
        got = cdc_loss([torch.tensor(a) for a in src], [torch.tensor(a) for a in tgt], tau)
        assert float(got) == pytest.approx(cdc_by_hand(src, tgt, tau), rel=1e-10)
    # one layer, N = 3, 2-dim features, tau = 1, worked out on paper:
    # cos source (0,1) 0.6, (0,2) -0.894, (1,2) -0.179; target 0.832, -0.868, -0.447
    # p^s rows [.8167 .1833] [.6854 .3146] [.3284 .6716]; p^t [.8456 .1544] [.7823 .2177] [.3963 .6037]
    # KL rows 0.00304, 0.02519, 0.00986 -> mean 0.012696
    one = float(cdc_loss([torch.tensor(src[0])], [torch.tensor(tgt[0])]))
    assert one == pytest.approx(0.012696, abs=5e-6)


def test_cdc_loss_is_zero_for_equal_features_and_needs_three_samples():
    f = [torch.randn(5, 4, 2, 2), torch.randn(5, 3)]
    assert float(cdc_loss(f, [t.clone() for t in f])) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DafslError, match="N >= 3"):
        cdc_loss([torch.randn(2, 4)], [torch.randn(2, 4)])
    with pytest.raises(DafslError, match="differ"):
        cdc_loss([torch.randn(3, 4)], [torch.randn(3, 5)])


def test_cdc_gradient_reaches_the_target_generator_only():
    torch.manual_seed(0)
    source = Generator(16, [16, 16, 8], 16)
    target = copy.deepcopy(source)
    with torch.no_grad():  # the adaptation has started: target differs from source
        for p in target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(4, 16)
    src = generator_features(source, z, None, [1, 2])  # with grad on purpose: cdc_loss detaches
    loss = cdc_loss(src, generator_features(target, z, None, [1, 2]))
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is None for p in source.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in target.blocks[0].parameters())
    # cdc_term: the same loss, the source under no_grad
    assert cdc_term(source, target, z, layers=[1, 2]).item() == pytest.approx(loss.item())
    assert cdc_term(source, copy.deepcopy(source), z).item() == pytest.approx(0.0, abs=1e-6)


def test_generator_features_shapes_for_plain_and_conditional_generators():
    z = torch.randn(3, 16)
    G = Generator(16, [16, 16, 8], 16)
    feats = generator_features(G, z, None, [0, 1, 2])
    assert [tuple(f.shape) for f in feats] == [(3, 16, 4, 4), (3, 16, 8, 8), (3, 8, 16, 16)]
    assert [tuple(f.shape) for f in generator_features(G, z, None, [2, 0])] == [(3, 8, 16, 16), (3, 16, 4, 4)]
    # the last block's features are those G's forward turns into the image
    assert torch.allclose(G.to_rgb[2](feats[2]), G(z))
    Gc = Generator(16, [16, 16, 8], 16, num_classes=2)
    labels = torch.tensor([0, 1, 1])
    assert [tuple(f.shape) for f in generator_features(Gc, z, labels, [1])] == [(3, 16, 8, 8)]
    with pytest.raises(DafslError, match="class-conditional"):
        generator_features(Gc, z, None, [1])
    with pytest.raises(DafslError, match="cdc_layers"):
        generator_features(G, z, None, [3])
    assert default_layers(4) == [1, 2] and default_layers(3) == [1] and default_layers(2) == [0, 1]


def test_cdc_term_compares_a_conditional_target_with_an_unconditional_source():
    torch.manual_seed(0)
    source = Generator(16, [16, 16, 8], 16)
    target = Generator(16, [16, 16, 8], 16, num_classes=2)
    target.load_state_dict(source.state_dict(), strict=False)  # class embedding starts at 0
    z, labels = torch.randn(4, 16), torch.tensor([0, 1, 0, 1])
    assert cdc_term(source, target, z, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_anchor_latents_stay_near_k_fixed_anchors():
    a = anchors(3, 8, seed=5)
    z = anchor_latents(200, 8, 3, torch.Generator().manual_seed(0), sigma=0.05, seed=5)
    assert z.shape == (200, 8) and torch.equal(anchors(3, 8, seed=5), a)
    nearest = torch.cdist(z, a).min(dim=1).values
    assert float(nearest.max()) < 0.05 * 8  # |N(0, 0.05^2 I_8)| is about 0.05 * sqrt(8)
    assert len(torch.cdist(z, a).argmin(dim=1).unique()) == 3
    assert [is_anchor_step(s, 4) for s in range(6)] == [True, False, False, False, True, False]


def test_patch_d_scores_every_position_of_ds_intermediate_map():
    torch.manual_seed(0)
    D, G = Discriminator([16, 16, 8], 16), Generator(16, [16, 16, 8], 16)
    D.eval()  # BatchNorm on running statistics: the two paths below see different batches
    img = images(4, size=16)
    # level 0 is what D's final layers take: the patch map agrees with D's own path
    assert torch.allclose(D.final(d_patch_map(D, img, 0)), D.features(img))
    assert tuple(d_patch_map(D, img, 2).shape) == (4, 8, 16, 16)
    D.train()
    head = PatchD([16, 16, 8], map_level=1)
    real_logits = head(D, img)
    assert tuple(real_logits.shape) == (4, 64)  # one logit per 8x8 position
    loss_d, _ = discriminator_loss(real_logits, head(D, G(torch.randn(4, 16)).detach()))
    loss_d.backward()
    assert head.head.weight.grad.abs().sum() > 0 and D.from_rgb[2][0].weight.grad.abs().sum() > 0
    generator_loss(head(D, G(torch.randn(4, 16)))).backward()
    assert G.blocks[0].conv1.weight.grad.abs().sum() > 0
    assert set(head.state_dict()) == {"head.weight", "head.bias"}
    with pytest.raises(DafslError, match="patch_level"):
        PatchD([16, 16, 8], map_level=3)
