"""The GAN's :class:`dafsl.engine.Trainer`: progressive growth, one D step and one G
step per batch, EMA generator, periodic KID.

An "epoch" here is ``augmenter.steps_per_epoch`` optimisation steps, each drawing
``batch_size`` real faces from per-epoch shuffles of the (few) Dlack crops: with 10
faces, batch 16 and 10 steps, one epoch shows D 160 real images, 16 passes over the
data. (A pass over 10 images would be a single step, too short to log or time.)

Growth (PG-GAN): level 0 (4x4) trains for ``stable_epochs``; each further level fades
in over ``fade_epochs`` (alpha rising linearly per step from 1/fade_steps to 1) and
then trains for ``stable_epochs``; afterwards the full resolution trains. During a
fade the real images are blended the same way (alpha * r + (1 - alpha) * upsampled
r/2), as in PG-GAN. A transferred GAN starts fully grown: its source was grown to the
target resolution already.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from dafsl import dist
from dafsl.augmenter.diffaug import diff_augment
from dafsl.augmenter.loss import discriminator_loss, generator_loss
from dafsl.augmenter.networks import GAN, Generator, resize_images


@dataclass(frozen=True)
class Growth:
    """Growth schedule in optimisation steps: ``at(step) -> (level, alpha)``."""

    num_levels: int
    stable_steps: int
    fade_steps: int
    grown: bool = False  # start at the full resolution (transferred GANs)

    @property
    def total_steps(self) -> int:
        """Steps until the full resolution is stable (0 when it starts grown)."""
        if self.grown:
            return 0
        return self.stable_steps + (self.num_levels - 1) * (self.fade_steps + self.stable_steps)

    def at(self, step: int) -> tuple[int, float]:
        if self.grown:
            return self.num_levels - 1, 1.0
        s = step - self.stable_steps
        if s < 0:
            return 0, 1.0
        for level in range(1, self.num_levels):
            if s < self.fade_steps:
                return level, (s + 1) / self.fade_steps
            s -= self.fade_steps
            if s < self.stable_steps:
                return level, 1.0
            s -= self.stable_steps
        return self.num_levels - 1, 1.0

    def phase(self, step: int) -> str:
        level, alpha = self.at(step)
        if level == self.num_levels - 1 and alpha == 1.0:
            return "full"
        return "fade" if alpha < 1.0 else "stable"


def real_at(reals: torch.Tensor, level: int, alpha: float) -> torch.Tensor:
    """Full-resolution reals (B, 3, R, R) as D sees them at (level, alpha): (B, 3, r, r)."""
    res = 4 * 2 ** level
    x = resize_images(reals, res)
    if level > 0 and alpha < 1.0:
        x = alpha * x + (1.0 - alpha) * resize_images(resize_images(x, res // 2), res)
    return x


@torch.no_grad()
def update_ema(ema: Generator, model: Generator, beta: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - beta)


@torch.no_grad()
def generate(G: Generator, z: torch.Tensor, level: int | None = None, alpha: float = 1.0,
             batch_size: int = 256, labels: torch.Tensor | int | None = None) -> torch.Tensor:
    """Images from latents ``z`` (N, latent_dim), upsampled to G's full resolution:
    (N, 3, R, R) on the CPU. ``labels``: the classes of a conditional G, (N,) or one int
    for all (None for an unconditional G)."""
    out = []
    device = next(G.parameters()).device
    if isinstance(labels, int):
        labels = torch.full((len(z),), labels, dtype=torch.int64)
    for i in range(0, len(z), batch_size):
        cond = () if labels is None else (labels[i:i + batch_size].to(device),)
        img = G(z[i:i + batch_size].to(device), level, alpha, *cond)
        out.append(resize_images(img, G.resolution).cpu())
    return torch.cat(out)


class GanTrainer:
    """D step + G step per batch on ``reals`` (N, 3, R, R) in [-1, 1].

    ``make_scheduler(optimizer)`` supplies the mode's learning-rate schedule
    (:func:`dafsl.transfer.build_scheduler`); ``evaluate_fn(G_ema, level, alpha, epoch)``
    returns the figures logged every ``eval_every`` epochs and at the last one.
    """

    stage = "augmenter"

    def __init__(self, gan: GAN, reals: torch.Tensor, aug_cfg: dict, *, seed: int, epochs: int,
                 growth: Growth, policy: list[str], device: torch.device,
                 make_scheduler: Callable, evaluate_fn: Callable | None = None,
                 stage: str = "augmenter"):
        self.stage = stage
        self.gan = gan.to(device)
        self.reals = reals.to(device)
        self.cfg = aug_cfg
        self.seed, self.epochs, self.growth, self.policy, self.device = seed, epochs, growth, policy, device
        self.batch_size = int(aug_cfg["batch_size"])
        self.steps_per_epoch = int(aug_cfg["steps_per_epoch"])
        self.ema_beta = float(aug_cfg["ema_beta"])
        self.g_ema = copy.deepcopy(gan.G).eval().requires_grad_(False)
        self.g_params = [p for p in gan.G.parameters() if p.requires_grad]
        self.d_params = [p for p in gan.D.parameters() if p.requires_grad]
        betas = tuple(float(b) for b in aug_cfg["betas"])
        self.opt_g = torch.optim.Adam(self.g_params, lr=float(aug_cfg["lr_g"]), betas=betas)
        self.opt_d = torch.optim.Adam(self.d_params, lr=float(aug_cfg["lr_d"]), betas=betas)
        self.sched_g, self.sched_d = make_scheduler(self.opt_g), make_scheduler(self.opt_d)
        self.evaluate_fn = evaluate_fn
        self.step = 0
        # DDP under torchrun (else the modules themselves): layers of resolutions not yet
        # grown get no gradient, hence find_unused_parameters; broadcast_buffers is off
        # (dist.wrap) because D runs on real and on generated images before one backward
        self.G_train = dist.wrap(gan.G, find_unused_parameters=True)
        self.D_train = dist.wrap(gan.D, find_unused_parameters=True)

    # -- Trainer protocol ----------------------------------------------------------
    def batches(self, epoch: int) -> list[torch.Tensor]:
        """``steps_per_epoch`` index batches from back-to-back shuffles of the reals."""
        gen = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        need = self.steps_per_epoch * self.batch_size
        n = len(self.reals)
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-need // n))])[:need]
        return list(order.view(self.steps_per_epoch, self.batch_size))

    def train_step(self, idx: torch.Tensor) -> dict[str, float]:
        level, alpha = self.growth.at(self.step)
        G, D = self.G_train, self.D_train
        self.gan.train()
        real = real_at(self.reals[idx.to(self.reals.device)], level, alpha)
        z = torch.randn(len(idx), self.gan.G.latent_dim).to(self.device)
        fake = G(z, level, alpha)

        real_logits = D(diff_augment(real, self.policy), level, alpha)
        fake_logits = D(diff_augment(fake.detach(), self.policy), level, alpha)
        loss_d, figures = discriminator_loss(real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.sched_d.step()

        loss_g = self.generator_step(fake, level, alpha)
        return {"loss_g": loss_g, "loss_d": loss_d.item(), **figures}

    def generator_step(self, fake: torch.Tensor, level: int, alpha: float) -> float:
        """G step on the same fakes, judged by the updated D (as the DCGAN example);
        backward only into G's trainable weights (D's gradients are not needed), then the
        EMA update and the step count. Returns the generator loss."""
        loss_g = generator_loss(self.gan.D(diff_augment(fake, self.policy), level, alpha))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=self.g_params)
        self.opt_g.step()
        self.sched_g.step()
        update_ema(self.g_ema, self.gan.G, self.ema_beta)
        self.step += 1
        return loss_g.item()

    def growth_state(self) -> dict:
        """Where growth stands for the *next* step: level, resolution, alpha, phase."""
        level, alpha = self.growth.at(self.step)
        return {"level": level, "resolution": 4 * 2 ** level, "alpha": float(alpha),
                "growth_phase": self.growth.phase(self.step)}

    def end_epoch(self, epoch: int) -> dict:
        # The state the epoch *ended* in (its last step), so the record describes it.
        level, alpha = self.growth.at(max(self.step - 1, 0))
        return {"level": level, "resolution": 4 * 2 ** level, "alpha": float(alpha),
                "growth_phase": self.growth.phase(max(self.step - 1, 0)),
                "lr_g": self.opt_g.param_groups[0]["lr"], "lr_d": self.opt_d.param_groups[0]["lr"]}

    def evaluate(self, epoch: int) -> dict:
        every = int(self.cfg["eval_every"])
        if self.evaluate_fn is None or not ((every > 0 and (epoch + 1) % every == 0)
                                            or epoch == self.epochs - 1):
            return {}
        level, alpha = self.growth.at(max(self.step - 1, 0))
        return self.evaluate_fn(self.g_ema, level, alpha, epoch)

    def state_dict(self) -> dict:
        level, alpha = self.growth.at(self.step)
        return {"gan": self.gan.state_dict(), "g_ema": self.g_ema.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
                "step": self.step, "level": level, "alpha": alpha, "grown": self.growth.grown}

    def load_state_dict(self, state: dict) -> None:
        if bool(state["grown"]) != self.growth.grown:
            raise ValueError("checkpoint growth start (grown) differs from this run's mode")
        self.gan.load_state_dict(state["gan"])
        self.g_ema.load_state_dict(state["g_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.step = int(state["step"])
        level, alpha = self.growth.at(self.step)
        if (level, alpha) != (int(state["level"]), float(state["alpha"])):
            raise ValueError(f"checkpoint growth (level {state['level']}, alpha {state['alpha']}) "
                             f"does not match step {self.step} of this schedule ({level}, {alpha})")


def growth_for(aug_cfg: dict, num_levels: int, grown: bool) -> Growth:
    spe = int(aug_cfg["steps_per_epoch"])
    return Growth(num_levels, int(aug_cfg["stable_epochs"]) * spe, int(aug_cfg["fade_epochs"]) * spe,
                  grown=grown)
