"""PG-GAN generator / DC-GAN discriminator: shapes through every growth step, fade-in
blending, pixel norm, equalised learning rate, minibatch stddev, growth schedule."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dafsl.augmenter.networks import (GAN, EqualizedConv2d, MinibatchStddev, PixelNorm,
                                      check_architecture, resize_images)
from dafsl.augmenter.trainer import Growth, real_at
from dafsl.errors import DafslError


def tiny_gan(resolution: int = 32) -> GAN:
    torch.manual_seed(0)
    levels = int(math.log2(resolution)) - 1
    return GAN(latent_dim=8, channels=[8] * levels, resolution=resolution, mbstd_group=2)


@pytest.mark.parametrize("resolution", [16, 32])
def test_shapes_through_every_growth_step(resolution):
    gan = tiny_gan(resolution)
    z = torch.randn(4, 8)
    for level in range(gan.num_levels):
        r = 4 * 2 ** level
        for alpha in (0.0, 0.5, 1.0):
            img = gan.G(z, level, alpha)
            assert img.shape == (4, 3, r, r)
            assert gan.D(img, level, alpha).shape == (4,)
    assert gan.G(z).shape == (4, 3, resolution, resolution)  # default: full resolution


def test_generator_fade_in_blends_old_and_new_to_rgb():
    gan = tiny_gan(16)
    G, z = gan.G, torch.randn(3, 8)
    prev = G.blocks[0](z)                                     # (3, C, 4, 4)
    new = G.to_rgb[1](G.blocks[1](prev))                      # (3, 3, 8, 8)
    old = F.interpolate(G.to_rgb[0](prev), scale_factor=2, mode="nearest")
    for alpha in (0.0, 0.3, 1.0):
        torch.testing.assert_close(G(z, 1, alpha), alpha * new + (1 - alpha) * old)
    # alpha 0 at level 1 is exactly the level-0 image, upsampled: the fade starts seamlessly.
    torch.testing.assert_close(G(z, 1, 0.0), F.interpolate(G(z, 0), scale_factor=2, mode="nearest"))


def test_discriminator_fade_in_blends_from_rgb_paths():
    gan = tiny_gan(16)
    D = gan.D.eval()
    img = torch.randn(4, 3, 8, 8)
    new = D.blocks[1](D.from_rgb[1](img))
    old = D.from_rgb[0](F.avg_pool2d(img, 2))
    for alpha in (0.0, 0.25, 1.0):
        expect = D.classifier(D.final(alpha * new + (1 - alpha) * old)).squeeze(1)
        torch.testing.assert_close(D(img, 1, alpha), expect)


def test_pixel_norm_gives_unit_mean_square_per_pixel():
    x = torch.randn(2, 5, 3, 3) * 7
    y = PixelNorm()(x)
    torch.testing.assert_close(y.pow(2).mean(dim=1), torch.ones(2, 3, 3), rtol=1e-4, atol=1e-4)


def test_equalized_lr_scales_unit_weights_by_he_constant():
    conv = EqualizedConv2d(4, 2, 3, padding=1)
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.35)  # stored N(0, 1)
    assert conv.scale == pytest.approx(math.sqrt(2 / (4 * 9)))
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1))


def test_minibatch_stddev_appends_one_channel_of_group_stddev():
    x = torch.zeros(4, 2, 2, 2)
    x[1] = 2.0  # group of 2: samples (0, 2) and (1, 3) -> groups by stride: y.view(2, 2, ...)
    y = MinibatchStddev(group=2)(x)
    assert y.shape == (4, 3, 2, 2)
    torch.testing.assert_close(y[:, :2], x)
    # x.view(2, 2, ...): group member j of set s is sample s * 2 + j, so samples 0 and 2
    # form one stddev "column", 1 and 3 the other: column 1 has values (2, 0) -> std 1.
    col = y[:, 2, 0, 0]
    assert torch.allclose(col[[1, 3]], torch.full((2,), 1.0), atol=1e-3)
    assert torch.allclose(col[[0, 2]], torch.full((2,), 0.0), atol=1e-3)


def test_growth_schedule_levels_and_alpha():
    g = Growth(num_levels=3, stable_steps=2, fade_steps=4)
    seq = [g.at(s) for s in range(g.total_steps + 2)]
    assert seq[:2] == [(0, 1.0), (0, 1.0)]
    assert seq[2:6] == [(1, 0.25), (1, 0.5), (1, 0.75), (1, 1.0)]
    assert seq[6:8] == [(1, 1.0), (1, 1.0)]
    assert seq[8:12] == [(2, 0.25), (2, 0.5), (2, 0.75), (2, 1.0)]
    assert seq[12:] == [(2, 1.0)] * 4
    assert g.total_steps == 14 and g.phase(0) == "stable" and g.phase(3) == "fade" and g.phase(14) == "full"
    assert Growth(3, 2, 4, grown=True).at(0) == (2, 1.0)


def test_real_images_fade_like_the_generator():
    reals = torch.randn(2, 3, 16, 16)
    r8 = resize_images(reals, 8)
    torch.testing.assert_close(real_at(reals, 1, 1.0), r8)
    torch.testing.assert_close(real_at(reals, 1, 0.0), resize_images(resize_images(r8, 4), 8))
    assert real_at(reals, 2, 0.5).shape == (2, 3, 16, 16)


def test_bad_architecture_is_a_one_line_error():
    with pytest.raises(DafslError, match="power of two"):
        check_architecture(24, [8, 8, 8])
    with pytest.raises(DafslError, match="one channel count per resolution"):
        check_architecture(32, [8, 8])
