"""KID (unbiased MMD^2, polynomial kernel), k-NN precision/recall, DiffAugment and the BCE losses."""
from __future__ import annotations

import math

import pytest
import torch

from dafsl.augmenter.diffaug import diff_augment, parse_policy
from dafsl.augmenter.loss import discriminator_loss, generator_loss
from dafsl.augmenter.quality import kid, polynomial_mmd2_unbiased, precision_recall
from dafsl.errors import DafslError


def test_mmd_matches_a_hand_computation():
    # d = 1, k(a, b) = (a * b + 1)^3. x = {0, 1}, y = {1, 2}:
    # xx off-diagonal: k(0,1) = 1 twice -> 1; yy: k(1,2) = 27 twice -> 27;
    # xy: k(0,1) = 1, k(0,2) = 1, k(1,1) = 8, k(1,2) = 27 -> mean 37/4.
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(1 + 27 - 2 * 37 / 4)


def test_kid_of_a_set_against_itself_is_near_zero_and_a_shift_is_not():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 16, generator=gen)
    b = torch.randn(400, 16, generator=gen)  # same distribution, other samples
    same, _ = kid(a, a, subsets=20, subset_size=100)
    twin, _ = kid(a, b, subsets=20, subset_size=100)
    shifted, std = kid(a, b + 0.5, subsets=20, subset_size=100)
    # Unbiased: equal distributions give ~0 (either sign), within the subset noise.
    assert abs(same) < 0.1 and abs(twin) < 0.1
    assert shifted > 10 * max(abs(twin), abs(same)) and shifted > 3 * std
    # More shift, more KID.
    assert kid(a, b + 1.0, subsets=20, subset_size=100)[0] > shifted


def test_kid_is_deterministic_and_needs_two_samples():
    a, b = torch.randn(50, 4), torch.randn(60, 4)
    assert kid(a, b, seed=3) == kid(a, b, seed=3)
    with pytest.raises(ValueError):
        kid(a[:1], b)


def test_precision_recall_on_nested_sets():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(300, 2, generator=gen)
    # Fakes collapsed onto a small part of the real manifold: precise but no recall.
    collapsed = real[:20] * 0.1
    p, r = precision_recall(collapsed, real, k=3)
    assert p > 0.9 and r < 0.3
    # Fakes far away: neither.
    p, r = precision_recall(real + 20.0, real, k=3)
    assert p == 0.0 and r == 0.0
    # The real set against a fresh draw of itself: both high.
    p, r = precision_recall(torch.randn(300, 2, generator=gen), real, k=3)
    assert p > 0.8 and r > 0.8


def test_diffaugment_is_differentiable_and_keeps_shapes():
    policy = parse_policy("color,translation,cutout")
    real = torch.rand(6, 3, 16, 16) * 2 - 1
    fake = (torch.rand(6, 3, 16, 16) * 2 - 1).requires_grad_(True)
    gen = torch.Generator().manual_seed(1)
    out_real, out_fake = diff_augment(real, policy, gen), diff_augment(fake, policy, gen)
    assert out_real.shape == real.shape and out_fake.shape == fake.shape
    out_fake.sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_cutout_gradient_is_zero_exactly_where_the_image_is_cut():
    x = (torch.rand(5, 3, 16, 16) + 0.5).requires_grad_(True)   # no zeros of its own
    out = diff_augment(x, ["cutout"], torch.Generator().manual_seed(2))
    out.sum().backward()
    cut = out.detach() == 0
    assert cut.any()
    assert torch.equal(x.grad == 0, cut)
    # at most a (16/2)^2 square per image: a quarter of the pixels
    assert cut[:, 0].flatten(1).float().mean(1).max() <= 0.25


def test_diffaugment_draws_per_image_and_reproducibly():
    x = torch.zeros(4, 3, 8, 8)
    a = diff_augment(x, ["color"], torch.Generator().manual_seed(5))
    b = diff_augment(x, ["color"], torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert len({round(float(v), 5) for v in a[:, 0, 0, 0]}) == 4  # one brightness per image
    assert diff_augment(x, [], None) is x


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img (H, W) moved by (dy, dx), zero fill: out[y, x] = img[y + dy, x + dx]."""
    h, w = img.shape
    out = torch.zeros_like(img)
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                out[y, x] = img[y + dy, x + dx]
    return out


def test_translation_is_an_integer_shift_with_zero_fill():
    img = torch.arange(1.0, 65.0).view(1, 1, 8, 8).repeat(32, 3, 1, 1)
    out = diff_augment(img, ["translation"], torch.Generator().manual_seed(0))
    shifts = set()
    for k in range(32):
        # 8 px * 1/8 = at most 1 px each way
        found = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if torch.equal(out[k, 0], _shift(img[k, 0], dy, dx))]
        assert len(found) == 1
        assert torch.equal(out[k, 1], out[k, 0]) and torch.equal(out[k, 2], out[k, 0])
        shifts.add(found[0])
    assert len(shifts) > 3  # drawn per image


def test_unknown_policy_is_a_one_line_error():
    assert parse_policy("") == []
    with pytest.raises(DafslError, match="unknown policy 'flip'"):
        parse_policy("color,flip")


def test_bce_losses_match_the_dcgan_definitions():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    loss_d, figs = discriminator_loss(real, fake)
    sig = torch.sigmoid
    expect_real = -(torch.log(sig(real))).mean()
    expect_fake = -(torch.log(1 - sig(fake))).mean()
    assert float(loss_d) == pytest.approx(float(expect_real + expect_fake), rel=1e-5)
    assert figs["d_real"] == pytest.approx(float(sig(real).mean()))
    assert figs["d_fake"] == pytest.approx(float(sig(fake).mean()))
    assert float(generator_loss(fake)) == pytest.approx(float(-(torch.log(sig(fake))).mean()), rel=1e-5)


def test_feature_net_features_pool_every_stage():
    from dafsl.augmenter.featnet import FeatureNet

    torch.manual_seed(0)
    net = FeatureNet(width=4, feature_dim=16, proj_dim=8).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    feats = net.features(x)
    assert feats.shape == (3, 4 + 8 + 16 + 16) and net.feature_dim == 44
    # the projection head reads the last stage's pooled activations only
    torch.testing.assert_close(net(x), net.proj(feats[:, -16:]))
    # the first stage's slice is the spatial mean of its activations
    torch.testing.assert_close(feats[:, :4], net.stages[0](x).mean(dim=(2, 3)))


def test_nt_xent_finds_twins_and_matches_a_hand_computation():
    from dafsl.augmenter.featnet import nt_xent

    # Orthogonal pairs: each view's twin is its most similar other view.
    z1 = torch.eye(3)
    loss, acc = nt_xent(z1, z1.clone(), temperature=1.0)
    assert acc == 1.0
    # Row 0 of the 6x6 similarity: twin (index 3) has cos 1, four others 0, itself masked:
    # CE = -log(e^1 / (e^1 + 4 e^0)), the same for every row.
    assert float(loss) == pytest.approx(-math.log(math.e / (math.e + 4)), rel=1e-6)
    # Swapped twins: each view is closest to the wrong one.
    _, acc = nt_xent(z1, z1[[1, 2, 0]], temperature=1.0)
    assert acc == 0.0
