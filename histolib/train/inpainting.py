"""Training the sclerosed-glomerulus inpainting GAN and the mask DCGAN of He et al. (seed 003).

Both are :class:`histolib.train.gan.GanTask` s, run by :func:`histolib.train.gan.train_gan` (resume,
divergence guard, log, sample grids, complete marker).

:class:`InpaintTrainer`, one step on a batch ``(X_ori (B, 3, S, S) in [-1, 1], X_mask (B, 1, S, S))``:

1. random flips / 90-degree rotations of image and mask together (``augment``);
2. ``X_rec = G(merge(X_ori (1 - M), M))`` (Eqs. 1, 2, 5); ``R_ori``, ``R_rec`` (Eqs. 6, 7);
3. discriminator update on the *detached* fakes (LSGAN, Eqs. 3-4): the global network sees
   ``X_ori`` / ``X_rec``, the local one ``R_ori`` / ``R_rec``; with ``share_discriminators`` (the
   paper: "we set the network parameters of D and D_l to be the same") they are one network, called
   once on the stack of the four;
4. generator update with the discriminator frozen (``requires_grad_(False)``), Eq. 12::

       L = lambda_adv (E[(1 - D(X_rec))^2] + E[(1 - D_l(R_rec))^2]) + lambda_1g |X_ori - X_rec|_1
           + lambda_1l |R_ori - R_rec|_1 + lambda_per L_per + lambda_sty L_sty

   The discriminator never receives the generator's adversarial gradient (the AOT-GAN reference's
   backward order lets it; see ``tests/train/test_inpainting.py``).

Norms: ``L_1g`` is the mean absolute error over all pixels and channels; ``L_1l`` (weight not given by
the paper) is the mean absolute error over the *masked* pixels (``sum |R_ori - R_rec| / (3 sum M)``),
so that it measures the glomerulus itself whatever its size: outside the mask ``R_ori = R_rec = 1``.
``L_per`` (Eq. 10) is ``sum_i mean |phi_i(X_ori) - phi_i(X_rec)|`` over the feature network's stages
(equal weights, as Eq. 10); ``L_sty`` (Eq. 11) is the mean over stages of the mean absolute difference of
Gram matrices ``phi^T phi / (C H W)`` (the AOT-GAN normalisation). The feature network is an offline
:class:`histolib.train.features.FeatureNet` (VGG19 from local weights, else the recorded substitute).

:class:`MaskGanTrainer`: the DCGAN of the paper's Fig. 7 on binary masks in ``{-1, 1}``, non-saturating
BCE losses, D then G, random flips / rotations of the real masks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from histolib.errors import ParamError
from histolib.models.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init
from histolib.models.inpainting import InpaintGenerator, PatchDiscriminator
from histolib.ops.augment import random_flip_rot90
from histolib.ops.crops import gap_input, local_region
from histolib.train.features import FeatureNet
from histolib.train.spade import PRECISIONS, resolve_precision

__all__ = ["PRECISIONS", "LOSS_TERMS", "InpaintOptions", "InpaintTrainer", "MaskGanOptions", "MaskGanTrainer",
           "weighted_total", "gram", "feature_losses", "inpaint", "generate_masks", "crops_to_tensors", "random_affine"]

# Eq. 12: loss term -> the InpaintOptions weight that multiplies it
LOSS_TERMS = {"adv_global": "lambda_adv", "adv_local": "lambda_adv", "l1_global": "lambda_l1_global",
              "l1_local": "lambda_l1_local", "perceptual": "lambda_perceptual", "style": "lambda_style"}
CL = torch.channels_last


@dataclass
class InpaintOptions:
    """Options of the inpainting GAN; defaults are the paper's (``paper`` profile).

    Attributes:
        image_size: crop side (paper 256).
        ngf, n_blocks, rates, attention, skips: generator (:class:`InpaintGenerator`; 64, 8, (1, 2, 4, 8)).
        ndf, d_layers: discriminator width and convolutions (64, 6).
        share_discriminators: one network for the global and local discriminator (paper: yes).
        lr, beta1, beta2: Adam for both networks (1e-4, 0.5, 0.999).
        lambda_adv, lambda_l1_global, lambda_l1_local, lambda_perceptual, lambda_style: Eq. 12
            (0.02, 1, -, 0.1, 150; the local L1 weight is not given by the paper: ours is 1).
        augment: random flips and 90-degree rotations of each training crop and its mask.
        channels_last: channels-last layout for the convolutions.
        precision: ``fp32``, ``bf16`` (CPU bfloat16 autocast of the G and D forward passes; losses,
            weights and optimiser stay float32) or ``auto`` (bf16 only where the CPU has native bf16,
            :func:`histolib.train.spade.resolve_precision`; emulated bf16 is far slower than fp32).
    """

    image_size: int = 256
    ngf: int = 64
    n_blocks: int = 8
    rates: tuple[int, ...] = (1, 2, 4, 8)
    attention: bool = True
    skips: bool = True
    ndf: int = 64
    d_layers: int = 6
    share_discriminators: bool = True
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_adv: float = 0.02
    lambda_l1_global: float = 1.0
    lambda_l1_local: float = 1.0
    lambda_perceptual: float = 0.1
    lambda_style: float = 150.0
    augment: bool = True
    channels_last: bool = True
    precision: str = "fp32"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rates"] = list(d["rates"])
        return d


def weighted_total(terms: dict[str, torch.Tensor], options: InpaintOptions) -> torch.Tensor:
    """Eq. 12: ``sum_k lambda_k L_k`` over the terms present, each weight from :data:`LOSS_TERMS`."""
    unknown = set(terms) - set(LOSS_TERMS)
    if unknown:
        raise ParamError(f"unknown loss terms {sorted(unknown)}; known: {list(LOSS_TERMS)}")
    return sum(getattr(options, LOSS_TERMS[k]) * v for k, v in terms.items())


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``phi^T phi / (C H W)`` of ``(B, C, H, W)`` features -> ``(B, C, C)`` (float32)."""
    b, c, h, w = f.shape
    x = f.float().reshape(b, c, h * w)
    return x @ x.transpose(1, 2) / (c * h * w)


def feature_losses(net: FeatureNet, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eqs. 10-11 on one feature network: ``perceptual = sum_i mean|phi_i(real) - phi_i(fake)|`` and
    ``style = mean_i mean|G(phi_i(real)) - G(phi_i(fake))|``; ``fake``, ``real`` ``(B, 3, H, W)`` in
    ``[-1, 1]``; gradients flow into ``fake`` only."""
    with torch.no_grad():
        rf = net(real)
    ff = net(fake)
    per = sum(F.l1_loss(a.float(), b.float()) for a, b in zip(ff, rf, strict=True))
    sty = sum(F.l1_loss(gram(a), gram(b)) for a, b in zip(ff, rf, strict=True)) / len(ff)
    return {"perceptual": per, "style": sty}


class InpaintTrainer:
    """The inpainting GAN (module docstring); implements :class:`histolib.train.gan.GanTask`.

    Args:
        options: :class:`InpaintOptions`.
        seed: seed of the initial weights.
        features: the frozen feature network of the perceptual and style terms (``None``: no such terms).
    """

    def __init__(self, options: InpaintOptions, seed: int = 0, features: FeatureNet | None = None):
        self.opt = o = options
        if o.precision not in PRECISIONS:
            raise ParamError(f"InpaintOptions.precision must be one of {PRECISIONS}, got {o.precision!r}")
        # "auto": bf16 autocast only where the CPU computes bf16 natively; elsewhere it is emulated: at the
        # cpu profile 13.0 s per step against 1.6 s in fp32 (one thread, AMD EPYC without AVX512-BF16)
        self.precision = resolve_precision(o.precision)
        torch.manual_seed(seed)
        self.G = InpaintGenerator(o.ngf, o.n_blocks, tuple(o.rates), o.attention, o.skips)
        self.D = PatchDiscriminator(o.image_size, o.ndf, o.d_layers)
        self.D_local = self.D if o.share_discriminators else PatchDiscriminator(o.image_size, o.ndf, o.d_layers)
        if o.channels_last:
            for m in (self.G, self.D, self.D_local):
                m.to(memory_format=CL)
        self.modules = {"G": self.G, "D": self.D}
        d_params = list(self.D.parameters())
        if not o.share_discriminators:
            self.modules["D_local"] = self.D_local
            d_params += list(self.D_local.parameters())
        betas = (o.beta1, o.beta2)
        self.optimizers = {"G": torch.optim.Adam(self.G.parameters(), lr=o.lr, betas=betas),
                           "D": torch.optim.Adam(d_params, lr=o.lr, betas=betas)}
        self.features = features

    @property
    def backbone(self) -> str:
        return self.features.backbone if self.features is not None else "none"

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=CL) if self.opt.channels_last else x

    def generate(self, x_ori: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``X_rec = G(merge(X_ori (1 - M), M))`` as float32 (Eqs. 1, 2, 5)."""
        with self._autocast():
            return self.G(self._fmt(gap_input(x_ori, mask))).float()

    def discriminate(self, images: torch.Tensor, local: bool = False) -> torch.Tensor:
        net = self.D_local if local else self.D
        with self._autocast():
            return net(self._fmt(images)).float()

    def _scores(self, x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global scores of ``x`` and local scores of ``r`` (one call when the networks are shared)."""
        if self.opt.share_discriminators:
            out = self.discriminate(torch.cat([x, r]))
            return out[:len(x)], out[len(x):]
        return self.discriminate(x), self.discriminate(r, local=True)

    def d_loss(self, x_ori, x_rec, r_ori, r_rec) -> dict[str, torch.Tensor]:
        """Eqs. 3-4 (LSGAN) on detached fakes: ``E[D(fake)^2] + E[(1 - D(real))^2]`` per discriminator."""
        if self.opt.share_discriminators:
            out = self.discriminate(torch.cat([x_ori, x_rec.detach(), r_ori, r_rec.detach()]))
            real_g, fake_g, real_l, fake_l = out.chunk(4)
        else:
            real_g, fake_g = self.discriminate(torch.cat([x_ori, x_rec.detach()])).chunk(2)
            real_l, fake_l = self.discriminate(torch.cat([r_ori, r_rec.detach()]), local=True).chunk(2)
        return {"loss_D_global": fake_g.pow(2).mean() + (1 - real_g).pow(2).mean(),
                "loss_D_local": fake_l.pow(2).mean() + (1 - real_l).pow(2).mean(),
                "D_real": real_g.detach().mean(), "D_fake": fake_g.detach().mean()}

    def g_terms(self, x_ori, mask, x_rec, r_ori, r_rec) -> dict[str, torch.Tensor]:
        """The unweighted terms of Eq. 12 (module docstring); D must be frozen by the caller."""
        adv_g, adv_l = self._scores(x_rec, r_rec)
        terms = {"adv_global": (1 - adv_g).pow(2).mean(), "adv_local": (1 - adv_l).pow(2).mean(),
                 "l1_global": (x_ori - x_rec).abs().mean(),
                 "l1_local": (r_ori - r_rec).abs().sum() / (3 * mask.sum()).clamp_min(1.0)}
        if self.features is not None and (self.opt.lambda_perceptual or self.opt.lambda_style):
            terms.update(feature_losses(self.features, x_rec, x_ori))
        return terms

    def train_step(self, batch, step: int, generator: torch.Generator) -> dict[str, float]:
        """One D update then one G update (module docstring)."""
        x_ori, mask = batch
        if self.opt.augment:
            both = torch.cat([x_ori, mask], 1)
            both, _ = random_flip_rot90(both, None, p=0.5, generator=generator)
            x_ori, mask = both[:, :3], both[:, 3:]
        x_ori, mask = self._fmt(x_ori), self._fmt(mask)
        x_rec = self.generate(x_ori, mask)
        r_ori, r_rec = local_region(x_ori, mask), local_region(x_rec, mask)

        d = self.d_loss(x_ori, x_rec, r_ori, r_rec)
        loss_d = d["loss_D_global"] + d["loss_D_local"]
        opt_d = self.optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        frozen = [self.D, self.D_local]
        for m in frozen:
            m.requires_grad_(False)
        try:
            terms = self.g_terms(x_ori, mask, x_rec, r_ori, r_rec)
            loss_g = weighted_total(terms, self.opt)
            opt_g = self.optimizers["G"]
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        finally:
            for m in frozen:
                m.requires_grad_(True)
        stats = {k: float(v.detach()) for k, v in d.items()}
        stats.update({f"loss_G_{k}": float(v.detach()) for k, v in terms.items()})
        stats["loss_G"] = float(loss_g.detach())
        return stats

    @torch.no_grad()
    def sample(self, batch) -> list[torch.Tensor]:
        """Grid rows for a fixed batch ``(X_ori, M)``: gap input, mask, composite output, original,
        and the raw output on white outside the mask (``R_rec``)."""
        x_ori, mask = batch[0], batch[1]
        was = self.G.training
        self.G.eval()
        try:
            x_rec = self.generate(x_ori, mask)
        finally:
            self.G.train(was)
        comp = x_rec * mask + x_ori * (1 - mask)
        return [x_ori * (1 - mask), mask * 2 - 1, comp, x_ori, local_region(x_rec, mask)]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# Mask DCGAN
# --------------------------------------------------------------------------------------------------

@dataclass
class MaskGanOptions:
    """Options of the mask DCGAN (DCGAN reference values as defaults: z 100, widths 64, Adam 2e-4, 0.5).

    ``augment``: random flips and 90-degree rotations of the real masks; ``rotate``: in addition a random
    rotation by any angle and an anisotropic rescaling by up to +-``stretch`` (bilinear; our addition: the
    DCGAN sees a few dozen masks at CPU scale and collapses to one shape without it)."""

    size: int = 64
    z_dim: int = 100
    ngf: int = 64
    ndf: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    augment: bool = True
    rotate: bool = True
    stretch: float = 0.15

    def to_dict(self) -> dict:
        return asdict(self)


class MaskGanTrainer:
    """DCGAN on ``(B, 1, S, S)`` masks in ``{-1, 1}``; batches are 1-tuples ``(masks,)``."""

    def __init__(self, options: MaskGanOptions, seed: int = 0):
        self.opt = o = options
        g = torch.Generator().manual_seed(seed)
        self.G = DCGANGenerator(o.size, o.z_dim, o.ngf, 1)
        self.D = DCGANDiscriminator(o.size, o.ndf, 1)
        dcgan_init(self.G, g)
        dcgan_init(self.D, g)
        self.modules = {"G": self.G, "D": self.D}
        betas = (o.beta1, o.beta2)
        self.optimizers = {"G": torch.optim.Adam(self.G.parameters(), lr=o.lr, betas=betas),
                           "D": torch.optim.Adam(self.D.parameters(), lr=o.lr, betas=betas)}

    def train_step(self, batch, step: int, generator: torch.Generator) -> dict[str, float]:
        real = batch[0]
        if self.opt.augment:
            real, _ = random_flip_rot90(real, None, p=0.5, generator=generator)
        if self.opt.rotate:
            real = random_affine(real, self.opt.stretch, generator)
        z = torch.randn(len(real), self.opt.z_dim, generator=generator)
        fake = self.G(z)
        ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
        d_real, d_fake = self.D(real), self.D(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
        self.optimizers["D"].zero_grad(set_to_none=True)
        loss_d.backward()
        self.optimizers["D"].step()
        self.D.requires_grad_(False)
        try:
            loss_g = F.binary_cross_entropy_with_logits(self.D(fake), ones)
            self.optimizers["G"].zero_grad(set_to_none=True)
            loss_g.backward()
            self.optimizers["G"].step()
        finally:
            self.D.requires_grad_(True)
        return {"loss_D": float(loss_d.detach()), "loss_G": float(loss_g.detach()),
                "D_real": float(torch.sigmoid(d_real.detach()).mean()),
                "D_fake": float(torch.sigmoid(d_fake.detach()).mean())}

    @torch.no_grad()
    def sample(self, batch) -> list[torch.Tensor]:
        """Rows: real masks, then generated masks for the fixed noise ``batch[1]``."""
        was = self.G.training
        self.G.eval()
        try:
            fake = self.G(batch[1])
        finally:
            self.G.train(was)
        return [batch[0], fake]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def random_affine(x: torch.Tensor, stretch: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each ``(B, C, S, S)`` image in ``[-1, 1]`` by a uniform angle and scale its axes by factors in
    ``[1 - stretch, 1 + stretch]`` about the centre (bilinear; outside filled with -1, the mask background)."""
    b = len(x)
    theta = torch.rand(b, generator=generator) * 2 * torch.pi
    sy, sx = 1 + stretch * (2 * torch.rand(2, b, generator=generator) - 1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    mat = torch.stack([torch.stack([cos / sx, -sin / sx, torch.zeros(b)], 1),
                       torch.stack([sin / sy, cos / sy, torch.zeros(b)], 1)], 1)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


# --------------------------------------------------------------------------------------------------
# Use of the trained networks
# --------------------------------------------------------------------------------------------------

def crops_to_tensors(images, masks) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, S, S, 3)`` uint8 crops and ``(N, S, S)`` binary masks -> ``(N, 3, S, S)`` float in ``[-1, 1]``
    and ``(N, 1, S, S)`` float in ``{0, 1}``.

    Raises:
        ParamError: shapes do not match, or the set is empty.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ParamError(f"crops must be (N, S, S, 3) uint8, got {images.shape} {images.dtype}")
    if masks.shape != images.shape[:3]:
        raise ParamError(f"masks {masks.shape} do not match crops {images.shape}")
    if len(images) == 0:
        raise ParamError("no crops")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    m = torch.from_numpy((masks > 0).astype(np.float32))[:, None]
    return x.contiguous(), m.contiguous()


@torch.no_grad()
def inpaint(G: InpaintGenerator, images, masks, batch_size: int = 32, precision: str = "fp32") -> np.ndarray:
    """Fill the masked region of each crop with the generator's output (the paper's paste-back,
    Fig. 7): ``X_rec M + X (1 - M)``, in eval mode.

    Args:
        G: a trained generator.
        images: ``(N, S, S, 3)`` uint8 crops (the masked region's content is never seen by ``G``).
        masks: ``(N, S, S)`` binary masks of the regions to generate.
        batch_size: crops per forward.
        precision: ``fp32``, ``bf16`` autocast, or ``auto`` (bf16 where the CPU has native bf16).

    Returns:
        ``(N, S, S, 3)`` uint8 composites (outside the mask: the input, bit for bit).
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if len(images) == 0:
        return np.zeros_like(images)
    x, m = crops_to_tensors(images, masks)
    bf16 = resolve_precision(precision) == "bf16"
    was = G.training
    G.eval()
    out = []
    try:
        for i in range(0, len(x), batch_size):
            xb, mb = x[i:i + batch_size], m[i:i + batch_size]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                rec = G(gap_input(xb, mb).contiguous(memory_format=CL)).float()
            out.append(((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    finally:
        G.train(was)
    rec = np.concatenate(out)
    keep = (masks > 0)[..., None]
    return np.where(keep, rec, images).astype(np.uint8)


@torch.no_grad()
def generate_masks(G: DCGANGenerator, n: int, seed: int, batch_size: int = 64) -> np.ndarray:
    """``n`` raw DCGAN outputs in ``[0, 1]``, ``(n, S, S)`` float32 (eval mode; noise from ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    was = G.training
    G.eval()
    try:
        out = [G(torch.randn(min(batch_size, n - i), G.z_dim, generator=g)) for i in range(0, n, batch_size)]
    finally:
        G.train(was)
    if not out:
        return np.zeros((0, G.size, G.size), np.float32)
    return ((torch.cat(out)[:, 0] + 1) / 2).clamp(0, 1).numpy()


@dataclass
class TrainedInpainter:
    """A trained inpainting generator with what its training wrote (see ``histolib.studies.inpainting``)."""

    trainer: InpaintTrainer
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    folder: object = None
    backbone: str = "none"

    @property
    def G(self) -> InpaintGenerator:
        return self.trainer.G
