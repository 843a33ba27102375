"""The augmenter's two networks: a PG-GAN generator and a DC-GAN-style discriminator.

Generator (Karras et al. 2018, "Progressive Growing of GANs"):

* grows from 4x4 to the target resolution, one block per octave; every block and
  every to-RGB layer exists from the start (so the state dict never changes shape and
  a checkpoint transfers at any growth phase), the forward pass uses blocks
  ``0..level`` only;
* a new resolution fades in: ``rgb = alpha * to_rgb[level](block(x)) +
  (1 - alpha) * upsample(to_rgb[level - 1](x))``;
* pixel-wise feature normalisation after every convolution;
* equalised learning rate: weights are stored N(0, 1) and scaled by the He constant
  ``sqrt(2 / fan_in)`` at every forward, so Adam's per-parameter step sizes are the
  same for every layer.

Discriminator (Radford et al. 2016, DC-GAN), following the generator's growth with a
from-RGB layer per resolution:

* ``from_rgb[i]``: 1x1 conv + LeakyReLU from an image at resolution ``4 * 2**i``;
* ``blocks[i]`` (i >= 1) halves the resolution: 4x4 stride-2 conv + BatchNorm +
  LeakyReLU(0.2); the new resolution fades in on the input side;
* ``final``: minibatch-stddev feature map (PG-GAN), 3x3 conv + BatchNorm + LeakyReLU
  at 4x4 (the last layer of the feature extractor);
* ``classifier``: one linear layer to a single logit (BCE-with-logits outside).

Levels: level ``L`` means resolution ``4 * 2**L``; ``num_levels = log2(res) - 1``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dafsl.errors import DafslError


def check_architecture(resolution: int, channels: list[int], where: str = "augmenter") -> int:
    """Validate ``resolution`` (a power of two >= 8) against one channel count per level;
    returns the number of levels."""
    if resolution < 8 or resolution & (resolution - 1):
        raise DafslError(f"{where}.resolution: must be a power of two >= 8, got {resolution}")
    levels = int(math.log2(resolution)) - 1
    if len(channels) != levels:
        raise DafslError(f"{where}.channels: need one channel count per resolution "
                         f"4..{resolution} ({levels} values), got {len(channels)}")
    if any(int(c) < 1 for c in channels):
        raise DafslError(f"{where}.channels: every count must be >= 1, got {channels}")
    return levels


class PixelNorm(nn.Module):
    """Normalise each pixel's feature vector to unit average square (PG-GAN sec. 4.2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualizedConv2d(nn.Module):
    """Conv2d with equalised learning rate (PG-GAN sec. 4.1): runtime He scaling."""

    def __init__(self, c_in: int, c_out: int, kernel: int, padding: int = 0, gain: float = 2 ** 0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale = gain / math.sqrt(c_in * kernel * kernel)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """Linear layer with equalised learning rate."""

    def __init__(self, d_in: int, d_out: int, gain: float = 2 ** 0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.scale = gain / math.sqrt(d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class GeneratorBlock(nn.Module):
    """Level 0: latent (B, z) -> (B, C, 4, 4). Level > 0: (B, C_in, r, r) -> (B, C, 2r, 2r)."""

    def __init__(self, c_in: int, c_out: int, first: bool):
        super().__init__()
        self.first = first
        self.c_out = c_out
        if first:
            # PG-GAN's first layer: the latent as a 4x4 map through a dense layer
            # (gain sqrt(2)/4 as in the reference implementation).
            self.dense = EqualizedLinear(c_in, c_out * 16, gain=2 ** 0.5 / 4)
        else:
            self.conv0 = EqualizedConv2d(c_in, c_out, 3, padding=1)
        self.conv1 = EqualizedConv2d(c_out, c_out, 3, padding=1)
        self.norm = PixelNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self.dense(self.norm(x)).view(x.shape[0], self.c_out, 4, 4)
        else:
            x = self.conv0(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = self.norm(F.leaky_relu(x, 0.2))
        return self.norm(F.leaky_relu(self.conv1(x), 0.2))


def check_labels(labels: torch.Tensor | None, num_classes: int, where: str) -> None:
    """A conditional network needs labels in 0..num_classes-1; an unconditional one none."""
    if num_classes == 0:
        if labels is not None:
            raise DafslError(f"{where}: this network is unconditional (augmenter.conditional: false) "
                             f"and takes no class labels")
        return
    if labels is None:
        raise DafslError(f"{where}: this network is class-conditional ({num_classes} classes) "
                         f"and needs a class label per sample")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.max()) if int(labels.max()) >= num_classes else int(labels.min())
        raise DafslError(f"{where}: class {bad} was never trained; this network knows classes "
                         f"0..{num_classes - 1}")


class Generator(nn.Module):
    """PG-GAN generator. ``forward(z (B, latent_dim), level, alpha, labels) -> (B, 3, r, r)``
    with ``r = 4 * 2**level``; images are linear outputs meant to lie in [-1, 1].

    ``num_classes > 0`` makes it class-conditional (BAGAN-GP / conditional StyleGAN2-ADA
    style): a learnt class embedding (B, latent_dim) is added to ``z`` before the first
    pixel norm, so every class shares every other weight (and every artefact) and the
    classes differ by the embedding alone. The embedding starts at zero: a generator
    transferred from an unconditional source draws the source's faces for every class
    until training separates them; ``labels`` (B,) int64 are then required.

    The embedding is stored at 1/``EMBED_GAIN`` of its effect (equalised learning rate, as
    the other layers): with Adam at a fine-tuning rate of 5e-4, a plain embedding moves
    about 0.15 per coordinate in 300 steps, too little next to N(0, 1) latents to separate
    the classes; ``EMBED_GAIN`` = 10 lets it reach the latents' scale within the budget.
    """

    EMBED_GAIN = 10.0

    def __init__(self, latent_dim: int, channels: list[int], resolution: int, num_classes: int = 0):
        super().__init__()
        self.num_levels = check_architecture(resolution, channels)
        self.latent_dim = latent_dim
        self.resolution = resolution
        self.num_classes = int(num_classes)
        c_prev = [latent_dim, *channels[:-1]]
        self.blocks = nn.ModuleList(GeneratorBlock(ci, co, first=(i == 0))
                                    for i, (ci, co) in enumerate(zip(c_prev, channels)))
        self.to_rgb = nn.ModuleList(EqualizedConv2d(c, 3, 1, gain=1.0) for c in channels)
        if self.num_classes:
            self.class_embed = nn.Embedding(self.num_classes, latent_dim)
            nn.init.zeros_(self.class_embed.weight)

    def latent(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The first block's input: ``z`` (B, latent_dim) plus the class embedding of
        ``labels`` (B,) when conditional."""
        check_labels(labels, self.num_classes, "augmenter generator")
        if self.num_classes:
            return z + self.EMBED_GAIN * self.class_embed(labels.to(z.device))
        return z

    def forward(self, z: torch.Tensor, level: int | None = None, alpha: float = 1.0,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        level = self.num_levels - 1 if level is None else int(level)
        x = self.latent(z, labels)
        for i in range(level):
            x = self.blocks[i](x)
        prev = x
        x = self.blocks[level](x)
        rgb = self.to_rgb[level](x)
        if level > 0 and alpha < 1.0:
            low = F.interpolate(self.to_rgb[level - 1](prev), scale_factor=2, mode="nearest")
            rgb = alpha * rgb + (1.0 - alpha) * low
        return rgb


class MinibatchStddev(nn.Module):
    """Append the mean over features and pixels of the per-feature batch standard
    deviation as one extra channel (PG-GAN sec. 3); groups of ``group`` samples."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.group, b)
        if b % g:  # a batch that does not split into groups is one group
            g = b
        y = x.view(g, -1, c, h, w)
        y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))  # (b/g,)
        y = y.view(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """DC-GAN-style discriminator growing with the generator.
    ``forward(img (B, 3, r, r), level, alpha, labels) -> logits (B,)``.

    ``num_classes > 0``: a projection discriminator (Miyato & Koyama 2018), the one
    conditional StyleGAN2-ADA uses: ``logit = w . h + b + embed(y) . h`` on the final
    features ``h``. The embedding starts at zero, so a transferred D first judges like
    its unconditional source.
    """

    def __init__(self, channels: list[int], resolution: int, mbstd_group: int = 4, num_classes: int = 0):
        super().__init__()
        self.num_levels = check_architecture(resolution, channels)
        self.resolution = resolution
        self.num_classes = int(num_classes)
        # D's feature width at level i mirrors G's: channels[i] features at 4 * 2**i px.
        self.from_rgb = nn.ModuleList(nn.Sequential(nn.Conv2d(3, c, 1), nn.LeakyReLU(0.2))
                                      for c in channels)
        self.blocks = nn.ModuleList([nn.Identity()] + [
            nn.Sequential(nn.Conv2d(channels[i], channels[i - 1], 4, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(channels[i - 1]), nn.LeakyReLU(0.2))
            for i in range(1, self.num_levels)])
        c0 = channels[0]
        self.final = nn.Sequential(MinibatchStddev(mbstd_group),
                                   nn.Conv2d(c0 + 1, c0, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(c0), nn.LeakyReLU(0.2), nn.Flatten())
        self.classifier = nn.Linear(c0 * 16, 1)
        if self.num_classes:
            self.class_embed = nn.Embedding(self.num_classes, c0 * 16)
            nn.init.zeros_(self.class_embed.weight)

    def features(self, img: torch.Tensor, level: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        """(B, 3, r, r) -> (B, channels[0] * 16), the input of the final linear layer."""
        level = self.num_levels - 1 if level is None else int(level)
        x = self.blocks[level](self.from_rgb[level](img))
        if level > 0 and alpha < 1.0:
            low = self.from_rgb[level - 1](F.avg_pool2d(img, 2))
            x = alpha * x + (1.0 - alpha) * low
        for i in range(level - 1, 0, -1):
            x = self.blocks[i](x)
        return self.final(x)

    def forward(self, img: torch.Tensor, level: int | None = None, alpha: float = 1.0,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.num_classes, "augmenter discriminator")
        h = self.features(img, level, alpha)
        logits = self.classifier(h).squeeze(1)
        if self.num_classes:
            logits = logits + (self.class_embed(labels.to(h.device)) * h).sum(dim=1)
        return logits


class GAN(nn.Module):
    """G and D under one module, so one state dict (``G.*``, ``D.*``) carries a source
    GAN and one :func:`dafsl.transfer.apply_mode` call loads and freezes both."""

    def __init__(self, latent_dim: int, channels: list[int], resolution: int, mbstd_group: int = 4,
                 num_classes: int = 0):
        super().__init__()
        self.G = Generator(latent_dim, channels, resolution, num_classes)
        self.D = Discriminator(channels, resolution, mbstd_group, num_classes)

    @property
    def num_levels(self) -> int:
        return self.G.num_levels


# every layer a source GAN must supply; a conditional GAN's class embeddings are new layers
# (they start at zero, so the transferred GAN first behaves as its source)
SOURCE_LAYERS = ("G.blocks.", "G.to_rgb.", "D.from_rgb.", "D.blocks.", "D.final.", "D.classifier.")


def build_gan(aug_cfg: dict, num_classes: int = 0) -> GAN:
    """The GAN described by the ``augmenter`` config section; ``num_classes > 0``: the
    class-conditional G and projection D."""
    return GAN(int(aug_cfg["latent_dim"]), [int(c) for c in aug_cfg["channels"]],
               int(aug_cfg["resolution"]), int(aug_cfg["mbstd_group"]), num_classes)


def resize_images(img: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, r, r) -> (B, 3, size, size): average pooling down (as PG-GAN builds its
    lower-resolution reals), nearest-neighbour up (as G's fade-in path)."""
    r = img.shape[-1]
    if size == r:
        return img
    if size < r:
        return F.avg_pool2d(img, r // size)
    return F.interpolate(img, scale_factor=size // r, mode="nearest")
