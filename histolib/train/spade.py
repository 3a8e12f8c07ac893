"""SPADE training: losses, the ADA-augmented update step, and synthesis (seed 000, section II-B).

Losses (Park et al. 2019 / pix2pixHD, as in the SPADE reference; ``reference/methods.md`` (a)),
with ``D_k`` the ``k``-th of ``num_D`` scales, ``D_k^{(l)}`` its ``l``-th activation and ``A`` the
ADA augmentation applied to every discriminator input ``(m, x)`` (label map, image):

* discriminator, hinge: ``L_D = 1/num_D sum_k ( E[relu(1 - D_k(A(m, x)))] + E[relu(1 + D_k(A(m, G(m, z))))] )``
* generator, hinge: ``L_G_adv = -1/num_D sum_k E[D_k(A(m, G(m, z)))]``
* feature matching: ``L_FM = lambda_fm / num_D sum_k sum_l mean|D_k^{(l)}(A(m, G)) - D_k^{(l)}(A(m, x))|``
  over every activation but the logits, with the same augmentation draw for the fake and the real
  pair so the activations are comparable;
* perceptual (only with a feature network): ``L_P = lambda_p sum_i w_i mean|F_i(G(m, z)) - F_i(x)|``
  (VGG19 relu1_1..relu5_1 with ``w = 1/32, 1/16, 1/8, 1/4, 1`` when local weights exist, else the
  recorded substitute of ``histolib.train.features``).

``L_G = L_G_adv + L_FM + L_P``. Adam with ``beta = (0, 0.9)``, two time-scale learning rates
(``lr_G = 1e-4``, ``lr_D = 4e-4``).

Sampling generator. With ``ema_kimg > 0`` a copy of ``G`` holds an exponential moving average of
its weights (StyleGAN2-ADA's ``G_ema``: half-life ``ema_kimg`` thousand images, ramped up to at most
``ema_rampup`` times the images seen so far; buffers such as batch-norm statistics and spectral-norm
vectors are copied), and :attr:`SpadeTrainer.sampling_G` (sample grids, synthesis) is that copy.

Update order and cost. Each step draws one ``G(m, z)``, updates ``D`` on it (detached) and on the
reals, then updates ``G`` against the *updated* ``D``: alternating gradient descent, the same
sequence of updates as the reference (which updates G first, then D on a fresh fake of the updated
G; both alternate D and G, each facing the other's latest weights). Doing D first lets one
generator forward serve both updates, where the reference runs the generator twice per step.
During the G update D's weights are frozen, so no discriminator weight gradients are computed
there; networks run in channels-last layout (faster oneDNN convolutions on CPU).

ADA: ``p`` is adapted from the sign of ``D`` on the augmented reals of each D update
(:class:`~histolib.ops.ada.AdaController`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from histolib.errors import ParamError
from histolib.models.spade import MultiscaleDiscriminator, SPADEGenerator, one_hot, to_channels_last
from histolib.ops.ada import PAPER_OPS, AdaController, AugmentPipe
from histolib.train.ema import ema_beta, ema_update
from histolib.train.features import FeatureNet, images_to_tensor

CL = torch.channels_last


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------

def _logits(outputs: list) -> list[torch.Tensor]:
    return [o[-1] if isinstance(o, (list, tuple)) else o for o in outputs]


def hinge_d_loss(real: list, fake: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge discriminator loss, averaged over scales.

    ``L_real = 1/K sum_k mean(relu(1 - r_k))``, ``L_fake = 1/K sum_k mean(relu(1 + f_k))``.

    Args:
        real, fake: per scale either the logits ``(B, 1, H_k, W_k)`` or the list of activations of
            :class:`MultiscaleDiscriminator` (its last item is used).

    Returns:
        ``(L_real, L_fake)``; the discriminator minimises their sum.
    """
    real, fake = _logits(real), _logits(fake)
    if not real or len(real) != len(fake):
        raise ValueError(f"need the same non-zero number of scales, got {len(real)} real and {len(fake)} fake")
    lr = sum(F.relu(1.0 - r).mean() for r in real) / len(real)
    lf = sum(F.relu(1.0 + f).mean() for f in fake) / len(fake)
    return lr, lf


def hinge_g_loss(fake: list) -> torch.Tensor:
    """Hinge generator loss ``-1/K sum_k mean(f_k)`` (same input conventions as :func:`hinge_d_loss`)."""
    fake = _logits(fake)
    if not fake:
        raise ValueError("need at least one scale")
    return -sum(f.mean() for f in fake) / len(fake)


def feature_matching_loss(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]],
                          weight: float = 10.0) -> torch.Tensor:
    """pix2pixHD feature matching: ``weight / K sum_k sum_l mean|f_k^l - r_k^l|`` over every
    activation except the last (the logits); ``real`` is detached.

    Args:
        fake, real: ``list[K]`` of ``list[L]`` activations from :class:`MultiscaleDiscriminator`.
        weight: ``lambda_fm`` (reference 10).
    """
    if len(fake) != len(real) or not fake:
        raise ValueError(f"need the same non-zero number of scales, got {len(fake)} and {len(real)}")
    total = fake[0][0].new_zeros(())
    for fk, rk in zip(fake, real, strict=True):
        for f, r in zip(fk[:-1], rk[:-1], strict=True):
            total = total + F.l1_loss(f, r.detach())
    return total * (weight / len(fake))


class PerceptualLoss(nn.Module):
    """``sum_i w_i mean|F_i(fake) - F_i(real)|`` on a frozen :class:`FeatureNet` (VGG loss of
    pix2pixHD/SPADE when ``net`` is VGG19; ``w`` defaults to ``net.layer_weights``).

    Shapes: ``fake``, ``real`` ``(B, 3, H, W)`` in ``[-1, 1]``; returns a scalar.
    """

    def __init__(self, net: FeatureNet, weights: tuple[float, ...] | None = None):
        super().__init__()
        self.net = net
        self.weights = tuple(weights or net.layer_weights)
        if len(self.weights) != len(net.stages):
            raise ValueError(f"{len(self.weights)} weights for {len(net.stages)} feature stages")

    @property
    def backbone(self) -> str:
        return self.net.backbone

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            rf = self.net(real)
        ff = self.net(fake)
        return sum(w * F.l1_loss(f, r) for w, f, r in zip(self.weights, ff, rf, strict=True))


# --------------------------------------------------------------------------------------------------
# The trainer (a histolib.train.gan.GanTask)
# --------------------------------------------------------------------------------------------------

@dataclass
class SpadeOptions:
    """Options of one SPADE model; the reference values are the defaults (``paper`` profile).

    Attributes:
        n_classes: label-map classes (2: binary mask; 4: structure map).
        image_size: patch side (256 in the seed).
        ngf, ndf: generator / discriminator base widths (64, 64).
        z_dim: noise channels (256; 0: deterministic generator).
        norm_G: ``"batch"`` or ``"instance"`` parameter-free norm in SPADE (reference default
            ``spectralspadesyncbatch3x3``: batch).
        spade_hidden: SPADE hidden width (128).
        num_D, n_layers_D: discriminator scales and layers (2, 4).
        lr_G, lr_D: TTUR learning rates (1e-4, 4e-4); Adam ``beta1``, ``beta2`` (0, 0.9).
        lambda_fm: feature-matching weight (10).
        lambda_perceptual: perceptual weight (10; used only when a feature net is given).
        ada_target, ada_interval, ada_kimg: the ADA controller (0.6, 4, 500).
        ada_ops: names of the augmentations (``histolib.ops.ada.OPS``); default the seed's own set
            :data:`~histolib.ops.ada.PAPER_OPS` (flips, rotations, grid deformation); empty: no ADA.
        ema_kimg: half-life of the exponential moving average of G's weights used for sampling, in
            thousands of images (StyleGAN2-ADA: ``batch * 10 / 32``); 0: no average, sample ``G``.
        ema_rampup: the half-life is at most ``ema_rampup`` x the images seen so far (StyleGAN2-ADA:
            0.05), so early weights are forgotten fast; 0: no ramp-up.
        channels_last: run the networks in channels-last layout.
        precision: ``"fp32"``, ``"bf16"``: the forward passes of G and D run under CPU bfloat16
            autocast (convolutions in bf16, about 3x faster on CPUs with AVX512-BF16/AMX); their
            outputs, the losses, the optimiser state and the weights stay float32; not
            bit-identical to fp32, compare results, not bytes. ``"auto"``: bf16 where the CPU has
            native bf16 instructions (:func:`native_bf16`), else fp32.
    """

    n_classes: int = 2
    image_size: int = 256
    ngf: int = 64
    ndf: int = 64
    z_dim: int = 256
    norm_G: str = "batch"
    spade_hidden: int = 128
    num_D: int = 2
    n_layers_D: int = 4
    lr_G: float = 1e-4
    lr_D: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    lambda_fm: float = 10.0
    lambda_perceptual: float = 10.0
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    ada_ops: tuple[str, ...] = PAPER_OPS
    ema_kimg: float = 0.0
    ema_rampup: float = 0.05
    channels_last: bool = True
    precision: str = "fp32"


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16() -> bool:
    """True when this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX tiles), where bf16
    autocast makes SPADE's convolutions faster; False when unknown."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except (RuntimeError, AttributeError):  # pragma: no cover - private probe missing or failing
            continue
    return False


def resolve_precision(precision: str) -> str:
    """``"auto"`` -> ``"bf16"`` where :func:`native_bf16`, else ``"fp32"``; other values unchanged.

    Raises:
        ParamError: not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ParamError(f"SpadeOptions.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision


class SpadeTrainer:
    """SPADE generator + multiscale discriminator with hinge, feature-matching, optional perceptual
    losses and ADA; implements :class:`histolib.train.gan.GanTask`.

    Args:
        options: :class:`SpadeOptions`.
        seed: seed of the initial weights.
        perceptual: a :class:`PerceptualLoss`, or ``None`` for no perceptual term.

    Batches are ``(labels (B, H, W) int64 in [0, n_classes), images (B, 3, H, W) float in [-1, 1])``.
    """

    def __init__(self, options: SpadeOptions, seed: int = 0, perceptual: PerceptualLoss | None = None):
        self.opt = o = options
        self.precision = resolve_precision(o.precision)
        if o.ema_kimg < 0 or o.ema_rampup < 0:
            raise ParamError(f"SpadeOptions.ema_kimg and ema_rampup must be >= 0, got {o.ema_kimg}, {o.ema_rampup}")
        g = torch.Generator().manual_seed(seed)
        self.G = SPADEGenerator(o.n_classes, o.ngf, o.image_size, o.z_dim, o.norm_G, o.spade_hidden, generator=g)
        self.D = MultiscaleDiscriminator(o.n_classes, 3, o.ndf, o.n_layers_D, o.num_D, generator=g)
        if o.channels_last:
            to_channels_last(self.G)
            to_channels_last(self.D)
        self.modules = {"G": self.G, "D": self.D}
        self.G_ema = None
        if o.ema_kimg > 0:
            self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
            self.modules["G_ema"] = self.G_ema
        # fused: one multi-tensor kernel per optimiser step instead of ~10 ops per parameter
        self.optimizers = {
            "G": torch.optim.Adam(self.G.parameters(), lr=o.lr_G, betas=(o.beta1, o.beta2), fused=True),
            "D": torch.optim.Adam(self.D.parameters(), lr=o.lr_D, betas=(o.beta1, o.beta2), fused=True),
        }
        self.perceptual = perceptual
        self.augment = AugmentPipe.from_ops(list(o.ada_ops)) if o.ada_ops else None
        self.ada = AdaController(o.ada_target, o.ada_interval, o.ada_kimg) if o.ada_ops else None

    # -- helpers --------------------------------------------------------------------------------
    @property
    def sampling_G(self) -> SPADEGenerator:
        """The generator to sample from: the weight average with ``ema_kimg > 0``, else ``G``."""
        return self.G_ema if self.G_ema is not None else self.G

    @property
    def p(self) -> float:
        """Current augmentation probability (0 without ADA)."""
        return self.ada.p if self.ada is not None else 0.0

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=CL) if self.opt.channels_last else x

    def encode(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` int labels -> one-hot in the networks' layout."""
        return self._fmt(one_hot(labels, self.opt.n_classes))

    def noise(self, batch: int, generator: torch.Generator | None) -> torch.Tensor | None:
        return torch.randn(batch, self.opt.z_dim, generator=generator) if self.opt.z_dim else None

    def _augment(self, label: torch.Tensor, image: torch.Tensor, generator, repeat: int = 1):
        """Augment a stack of ``repeat`` batches with one draw per pair (same draw across copies)."""
        if self.augment is None or self.ada.p <= 0:
            return label, image
        b = image.shape[0] // repeat
        params = self.augment.sample(b, self.ada.p, image.shape[-2], image.shape[-1], generator)
        if repeat > 1:
            params = params.repeat(repeat)
        image, label = self.augment.apply(image, label, params)
        return label, image

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def generate(self, onehot: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """``G(onehot, z)`` as float32 (under bf16 autocast when the precision is bf16)."""
        with self._autocast():
            return self.G(onehot, z).float()

    def discriminate(self, label: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        with self._autocast():
            out = self.D(self._fmt(torch.cat([label, image], dim=1)))
        return [[f.float() for f in scale] for scale in out]

    # -- losses at given tensors (no update; used by the step and by tests) ----------------------
    def d_losses(self, onehot: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Discriminator losses on one augmented stack ``[fake, real]`` (independent draws)."""
        b = fake.shape[0]
        lab, img = self._augment(torch.cat([onehot, onehot]), torch.cat([fake.detach(), real]), generator)
        out = self.discriminate(lab, img)
        fake_out = [[f[:b] for f in scale] for scale in out]
        real_out = [[f[b:] for f in scale] for scale in out]
        loss_real, loss_fake = hinge_d_loss(real_out, fake_out)
        return {"loss_D_real": loss_real, "loss_D_fake": loss_fake, "real_logits": _logits(real_out),
                "fake_logits": _logits(fake_out)}

    def g_losses(self, onehot: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Generator losses; the fake and real pairs share one augmentation draw."""
        b = fake.shape[0]
        lab, img = self._augment(torch.cat([onehot, onehot]), torch.cat([fake, real]), generator, repeat=2)
        # one spectral-norm evaluation (and power iteration) for both D calls, as when the
        # reference runs D once on [fake, real]
        with parametrize.cached():
            with torch.no_grad():
                real_out = self.discriminate(lab[b:], img[b:])
            fake_out = self.discriminate(lab[:b], img[:b])
        losses = {"loss_G_adv": hinge_g_loss(fake_out),
                  "loss_G_fm": feature_matching_loss(fake_out, real_out, self.opt.lambda_fm)}
        if self.perceptual is not None:
            losses["loss_G_perceptual"] = self.opt.lambda_perceptual * self.perceptual(fake, real)
        return losses

    # -- GanTask --------------------------------------------------------------------------------
    def train_step(self, batch, step: int, generator: torch.Generator) -> dict[str, float]:
        """One D update then one G update on ``batch = (labels, images)`` (see module docstring)."""
        o = self.opt
        labels, real = batch
        real = self._fmt(real)
        onehot = self.encode(labels)
        z = self.noise(len(labels), generator)
        fake = self.generate(onehot, z)

        d = self.d_losses(onehot, fake, real, generator)
        loss_d = d["loss_D_real"] + d["loss_D_fake"]
        opt_d = self.optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        stats = {"loss_D_real": float(d["loss_D_real"].detach()), "loss_D_fake": float(d["loss_D_fake"].detach()),
                 "D_real": float(sum(r.detach().mean() for r in d["real_logits"]) / len(d["real_logits"])),
                 "D_fake": float(sum(f.detach().mean() for f in d["fake_logits"]) / len(d["fake_logits"]))}
        if self.ada is not None:
            self.ada.accumulate(d["real_logits"])
            self.ada.step(len(labels))

        self.D.requires_grad_(False)
        try:
            g = self.g_losses(onehot, fake, real, generator)
        finally:
            self.D.requires_grad_(True)
        loss_g = sum(g.values())
        opt_g = self.optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if self.G_ema is not None:
            beta = ema_beta(len(labels), o.ema_kimg, (step + 1) * len(labels), o.ema_rampup)
            ema_update(self.G_ema, self.G, beta)
        stats.update({k: float(v.detach()) for k, v in g.items()})
        stats["loss_G"] = float(loss_g.detach())
        stats["p"] = self.p
        if self.ada is not None and self.ada.r_t == self.ada.r_t:  # NaN until the first adjustment
            stats["r_t"] = self.ada.r_t
        return stats

    @torch.no_grad()
    def sample(self, batch) -> list[torch.Tensor]:
        """Grid rows for a fixed batch ``(labels, images[, z])``: label map (grey levels), real,
        and :attr:`sampling_G`'s output for each fixed noise (``z`` of shape ``(R, B, z_dim)``,
        default two draws from seed 0)."""
        labels, real = batch[0], batch[1]
        zs = batch[2] if len(batch) > 2 else None
        onehot = self.encode(labels)
        if self.opt.z_dim and zs is None:
            zs = torch.randn(2, len(labels), self.opt.z_dim, generator=torch.Generator().manual_seed(0))
        G = self.sampling_G
        was = G.training
        G.eval()
        try:
            with self._autocast():
                fakes = [G(onehot, z).float() for z in (zs if self.opt.z_dim else [None])]
        finally:
            G.train(was)
        grey = labels.float()[:, None] / max(self.opt.n_classes - 1, 1) * 2 - 1
        return [grey, real, *fakes]

    def state_dict(self) -> dict:
        return {"ada": self.ada.state_dict() if self.ada is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.ada is not None and state.get("ada"):
            self.ada.load_state_dict(state["ada"])


# --------------------------------------------------------------------------------------------------
# Data conversion and synthesis
# --------------------------------------------------------------------------------------------------

def training_tensors(images, labels, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, H, W, 3)`` uint8 images and ``(N, H, W)`` integer label maps -> ``(labels int64,
    images float (N, 3, H, W) in [-1, 1])``.

    Raises:
        ValueError: mismatched counts or sizes, labels outside ``[0, n_classes)``, empty set.
    """
    imgs = images_to_tensor(images)
    lab = torch.as_tensor(np.asarray(labels)).long()
    if lab.dim() != 3 or len(lab) != len(imgs) or lab.shape[-2:] != imgs.shape[-2:]:
        raise ValueError(f"labels {tuple(lab.shape)} do not match images {tuple(imgs.shape)}")
    if len(lab) == 0:
        raise ValueError("empty training set")
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"label values [{lo}, {hi}] outside [0, {n_classes})")
    return lab, imgs


@torch.no_grad()
def synthesize(G: SPADEGenerator, labels, seed: int = 0, batch_size: int = 32) -> np.ndarray:
    """Generate one image per label map, in eval mode (batch norm uses its running statistics).

    Args:
        G: a trained generator.
        labels: ``(N, H, W)`` integer label maps in ``[0, G.n_classes)``.
        seed: noise seed; image ``i`` gets noise from ``(seed, i // batch_size)`` batches, so the
            output does not depend on anything but ``seed``, ``batch_size`` and the labels.
        batch_size: maps per forward.

    Returns:
        ``(N, H, W, 3)`` uint8 images; ``(0, H, W, 3)`` for no labels.
    """
    lab = torch.as_tensor(np.asarray(labels)).long()
    if lab.dim() != 3:
        raise ValueError(f"labels must be (N, H, W), got {tuple(lab.shape)}")
    was = G.training
    G.eval()
    out = []
    try:
        for i in range(0, len(lab), batch_size):
            chunk = lab[i:i + batch_size]
            onehot = one_hot(chunk, G.n_classes)
            g = torch.Generator().manual_seed(seed * 1_000_003 + i // batch_size)
            z = torch.randn(len(chunk), G.z_dim, generator=g) if G.z_dim else None
            x = G(onehot, z)
            out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    finally:
        G.train(was)
    if not out:
        return np.zeros((0, *lab.shape[1:], 3), np.uint8)
    return np.concatenate(out)
