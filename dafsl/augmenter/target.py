"""Fine-tuning on the few Dlack faces: settings that apply to the target run only.

The source GAN (zoo entry ``augmenter-gan``) is keyed on ``augmenter.lr_g``, ``lr_d``,
``ema_beta``, ... so tuning those for the 10-face run would rebuild it. The
``augmenter.target`` section overrides them for the target run alone (null = keep), and
adds two regularisers of D that only matter with few images:

* ``r1_gamma``: the R1 gradient penalty (Mescheder et al. 2018),
  ``gamma / 2 * E ||grad_x D(x)||^2`` on the real images (before DiffAugment, as in
  StyleGAN2-ADA); 0 = off. ``r1_every`` = k applies it every k-th D step with weight
  ``k * gamma`` (StyleGAN2's lazy regularisation: the same average, 1/k of the cost);
* ``d_bn``: ``train`` (BatchNorm in D uses each batch's statistics: the real batch and the
  fake batch are normalised separately, which lets D compare batch statistics) or
  ``frozen`` (D's BatchNorm keeps the source GAN's running statistics, eval mode);

and the few-shot generation methods, each a term or a module in this one trainer:

* ``ada``: StyleGAN2-ADA's adaptive augmentation (:mod:`dafsl.augmenter.ada`), on every
  image D sees, with a probability its controller moves towards ``ada_target`` = E[sign
  D(real)];
* ``cdc_weight`` > 0: the cross-domain correspondence loss (:mod:`dafsl.augmenter.cdc`,
  Ojha et al. 2021) between the generator and its frozen copy as transferred, on
  ``cdc_batch`` latents per G step (the image-level term; the patch-level discriminator
  of the paper, ``cdc.PatchD``, is not wired in).

:class:`TargetTrainer` is :class:`dafsl.augmenter.trainer.GanTrainer` with these two
additions; the source GAN keeps using the plain trainer (its cache key hashes that code).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from dafsl import dist
from dafsl.augmenter.ada import AdaAugment, AdaController
from dafsl.augmenter.cdc import cdc_term
from dafsl.augmenter.diffaug import diff_augment
from dafsl.augmenter.loss import discriminator_loss, generator_loss
from dafsl.augmenter.trainer import GanTrainer, real_at, update_ema
from dafsl.errors import DafslError

OVERRIDES = ("lr_g", "lr_d", "ema_beta", "steps_per_epoch")
D_BN = ("train", "frozen")


def target_config(aug: dict) -> dict:
    """``augmenter`` with the non-null ``augmenter.target`` overrides applied."""
    t = aug.get("target") or {}
    out = dict(aug)
    for key in OVERRIDES:
        if t.get(key) is not None:
            out[key] = t[key]
    if t.get("d_bn", "train") not in D_BN:
        raise DafslError(f"augmenter.target.d_bn: expected one of {', '.join(D_BN)}, got {t.get('d_bn')!r}")
    if float(t.get("r1_gamma", 0.0)) < 0:
        raise DafslError(f"augmenter.target.r1_gamma: must be >= 0, got {t.get('r1_gamma')!r}")
    return out


class TargetTrainer(GanTrainer):
    """:class:`GanTrainer` plus the R1 penalty and frozen BatchNorm statistics in D, and
    the class-conditional case (``augmenter.conditional``).

    Conditional: ``labels`` (N,) gives each real face's class (the GAN's class index);
    every step's real batch holds ``round(positive_share * batch_size)`` faces of class
    ``positive`` (the Dlack class, from back-to-back shuffles of its few faces) and the
    rest from the other classes (shuffles of theirs), and the fakes of the step are drawn
    with the same labels, so D's projection compares real and generated faces class by
    class and the scarce class is seen in every step.
    """

    def __init__(self, *args, r1_gamma: float = 0.0, r1_every: int = 1, d_bn: str = "train",
                 labels: torch.Tensor | None = None, positive: int = 1, positive_share: float = 0.5,
                 ada: dict | None = None, cdc: dict | None = None, class_lr_mult: float = 1.0,
                 aux_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        # conditional GAN: the class embeddings start at zero and are the only path by which
        # G learns the class, so they may get a larger rate (class_lr_mult); AC-GAN's
        # auxiliary classifier on D's features (aux_weight > 0, Odena et al. 2017, trained on
        # the real faces only as in TAC-GAN / ReACGAN's lesson: D's classifier must not learn
        # the generated faces' artefacts as class cues) gives G a direct class signal
        self.aux = None
        if labels is not None and (class_lr_mult != 1.0 or aux_weight > 0):
            if aux_weight > 0:
                self.aux = nn.Linear(self.gan.D.classifier.in_features, self.gan.G.num_classes).to(self.device)
                if dist.world_size() > 1:
                    raise DafslError("augmenter.target.aux_weight > 0 is not supported under torchrun; set it to 0")
            self.opt_g, self.opt_d = self._class_groups(float(class_lr_mult))
            self.sched_g, self.sched_d = kwargs["make_scheduler"](self.opt_g), kwargs["make_scheduler"](self.opt_d)
        self.aux_weight = float(aux_weight)
        # ADA (dafsl/augmenter/ada.py): after DiffAugment, on every image D sees, with the
        # probability its controller sets from the sign of D's real logits
        self.ada = self.ada_ctl = None
        if ada:
            self.ada = AdaAugment(pad=str(ada.get("pad", "reflect")))
            self.ada_ctl = AdaController(float(ada["target"]), int(ada["interval"]),
                                         float(ada["speed_imgs"]), float(ada["p_max"]))
        # CDC (dafsl/augmenter/cdc.py): the generator as transferred, frozen beside the one
        # that trains; one extra term in G's step
        self.cdc = dict(cdc) if cdc and float(cdc.get("weight", 0.0)) > 0 else None
        self.g_source = copy.deepcopy(self.gan.G).eval().requires_grad_(False) if self.cdc else None
        if self.cdc and dist.world_size() > 1:
            raise DafslError("augmenter.target.cdc_weight > 0 is not supported under torchrun; set it to 0")
        self.r1_gamma, self.r1_every, self.d_bn = float(r1_gamma), max(1, int(r1_every)), d_bn
        if self.r1_gamma > 0 and dist.world_size() > 1:
            raise DafslError("augmenter.target.r1_gamma > 0 is not supported under torchrun "
                             "(the R1 penalty's double backward does not run through DDP); set it to 0")
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
        self.positive, self.positive_share = int(positive), float(positive_share)
        if self.labels is not None:
            if len(self.labels) != len(self.reals):
                raise DafslError(f"augmenter: {len(self.labels)} labels for {len(self.reals)} real faces")
            n_pos = int((self.labels == self.positive).sum())
            if n_pos == 0 or n_pos == len(self.labels):
                raise DafslError("augmenter.conditional: needs real faces of the Dlack class and of "
                                 "at least one other class")
            if not 0.0 < self.positive_share < 1.0:
                raise DafslError(f"augmenter.dlack_share: must be in (0, 1), got {positive_share}")

    def _class_groups(self, mult: float) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """G's and D's Adam with the class embeddings (and the auxiliary head) in a group at
        ``mult`` x the rate."""
        betas = tuple(float(b) for b in self.cfg["betas"])
        out = []
        for net, params, lr in ((self.gan.G, self.g_params, float(self.cfg["lr_g"])),
                                (self.gan.D, self.d_params, float(self.cfg["lr_d"]))):
            special = [p for p in net.class_embed.parameters() if p.requires_grad]
            if net is self.gan.D and self.aux is not None:
                special += list(self.aux.parameters())
            ids = {id(p) for p in special}
            groups = [{"params": [p for p in params if id(p) not in ids], "lr": lr},
                      {"params": special, "lr": lr * mult}]
            out.append(torch.optim.Adam(groups, lr=lr, betas=betas))
        return out[0], out[1]

    def _d(self, img: torch.Tensor, level: int, alpha: float, cond: tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's logits (B,) and, with the auxiliary classifier, its class logits (B, C)."""
        if self.aux is None:
            return self.D_train(img, level, alpha, *cond), None
        D = self.gan.D
        h = D.features(img, level, alpha)
        # the projection discriminator's logit (Discriminator.forward) from the same features
        logits = D.classifier(h).squeeze(1) + (D.class_embed(cond[0]) * h).sum(dim=1)
        return logits, self.aux(h)

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """Unconditional: as :class:`GanTrainer`. Conditional: per step ``k`` Dlack faces and
        ``batch_size - k`` others, each group from its own back-to-back shuffles."""
        if self.labels is None:
            return super().batches(epoch)
        gen = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        k = min(max(1, round(self.positive_share * self.batch_size)), self.batch_size - 1)
        steps = self.steps_per_epoch

        def draws(pool: torch.Tensor, per_step: int) -> torch.Tensor:
            need = steps * per_step
            order = torch.cat([pool[torch.randperm(len(pool), generator=gen)]
                               for _ in range(-(-need // len(pool)))])[:need]
            return order.view(steps, per_step)

        pos = draws(torch.where(self.labels == self.positive)[0], k)
        neg = draws(torch.where(self.labels != self.positive)[0], self.batch_size - k)
        return list(torch.cat([pos, neg], dim=1))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees of an image: DiffAugment's policy, then ADA at its current p."""
        x = diff_augment(x, self.policy)
        return x if self.ada is None else self.ada(x, self.ada_ctl.p)

    def generator_step(self, fake: torch.Tensor, level: int, alpha: float,
                       labels: torch.Tensor | None = None) -> float:
        """:meth:`GanTrainer.generator_step`, judged by D for ``labels`` when conditional,
        through :meth:`augment`, plus the CDC term when ``cdc`` is on."""
        cond = () if labels is None else (labels,)
        logits, aux = self._d(self.augment(fake), level, alpha, cond)
        loss_g = generator_loss(logits)
        if aux is not None:  # AC-GAN: the fakes should be classified as their label
            self.last_aux_g = F.cross_entropy(aux, labels)
            loss_g = loss_g + self.aux_weight * self.last_aux_g
        if self.cdc:
            n = int(self.cdc["batch"])
            z = torch.randn(n, self.gan.G.latent_dim).to(self.device)
            y = None if labels is None else labels[torch.arange(n) % len(labels)]
            self.last_cdc = cdc_term(self.g_source, self.gan.G, z, y, self.cdc.get("layers"),
                                     float(self.cdc["tau"]))
            loss_g = loss_g + float(self.cdc["weight"]) * self.last_cdc
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=self.g_params)
        self.opt_g.step()
        self.sched_g.step()
        update_ema(self.g_ema, self.gan.G, self.ema_beta)
        self.step += 1
        return loss_g.item()

    def train_step(self, idx: torch.Tensor) -> dict[str, float]:
        level, alpha = self.growth.at(self.step)
        G, D = self.G_train, self.D_train
        self.gan.train()
        if self.d_bn == "frozen":
            for m in self.gan.D.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        real = real_at(self.reals[idx.to(self.reals.device)], level, alpha)
        z = torch.randn(len(idx), self.gan.G.latent_dim).to(self.device)
        y = None if self.labels is None else self.labels[idx].to(self.device)
        cond = () if y is None else (y,)  # the unconditional networks take no label argument
        fake = G(z, level, alpha, *cond)

        r1_now = self.r1_gamma > 0 and self.step % self.r1_every == 0
        if r1_now:
            real = real.detach().requires_grad_(True)
        real_logits, real_aux = self._d(self.augment(real), level, alpha, cond)
        fake_logits, _ = self._d(self.augment(fake.detach()), level, alpha, cond)
        loss_d, figures = discriminator_loss(real_logits, fake_logits)
        if real_aux is not None:
            aux_d = F.cross_entropy(real_aux, y)
            loss_d = loss_d + self.aux_weight * aux_d
            figures["aux_d"] = float(aux_d.detach())
            figures["aux_acc_real"] = float((real_aux.argmax(1) == y).float().mean())
        if self.ada_ctl is not None:
            figures["ada_p"] = self.ada_ctl.update(real_logits.detach())
        bce_d = loss_d.item()  # logged as loss_d (the BCE terms); the penalty is logged as r1
        if r1_now:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grad.pow(2).sum(dim=(1, 2, 3)).mean()
            loss_d = loss_d + 0.5 * self.r1_gamma * self.r1_every * r1
            figures["r1"] = float(r1.detach())
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward(inputs=self.d_params + ([] if self.aux is None else list(self.aux.parameters())))
        self.opt_d.step()
        self.sched_d.step()

        loss_g = self.generator_step(fake, level, alpha, y)
        if self.cdc:
            figures["cdc"] = float(self.last_cdc.detach())
        if self.aux is not None:
            figures["aux_g"] = float(self.last_aux_g.detach())
        return {"loss_g": loss_g, "loss_d": bce_d, **figures}

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.ada_ctl is not None:
            state["ada"] = self.ada_ctl.state_dict()
        if self.g_source is not None:
            state["g_source"] = self.g_source.state_dict()
        if self.aux is not None:
            state["aux"] = self.aux.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.ada_ctl is not None:
            self.ada_ctl.load_state_dict(state["ada"])
        if self.g_source is not None:
            self.g_source.load_state_dict(state["g_source"])
        if self.aux is not None:
            self.aux.load_state_dict(state["aux"])
