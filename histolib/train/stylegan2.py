"""Training StyleGAN2-ADA (Karras et al., NeurIPS 2020), the generative backbone of seed 002 (HDGAN).

Seed 002 trains StyleGAN2-ADA on unlabelled 4096-px tiles and names no option of it, so the
reference's defaults hold (``reference/methods.md`` (c), ``train.py``'s ``auto`` configuration); what
the CPU changes is listed in ``params.yaml``'s ``stylegan2`` block. :class:`StyleGAN2Trainer` is a
:class:`histolib.train.gan.GanTask`, run by :func:`histolib.train.gan.train_gan` (progress bar, exact
resume, divergence guard, JSON-lines log, sample grids, ``COMPLETE.json``).

Losses (``D`` logits, ``A`` the ADA augmentation of every discriminator input, ``softplus(t) = log(1 + e^t)``):

* discriminator, non-saturating logistic: ``L_D = E[softplus(D(A(G(z))))] + E[softplus(-D(A(x)))]``;
* lazy R1 (Mescheder et al. 2018) on every ``r1_interval``-th step:
  ``L_R1 = r1_interval * gamma / 2 * E[ ||grad_x D(A(x))||^2 ]`` (gradient with respect to the real image
  before augmentation, as the reference);
* generator, non-saturating: ``L_G = E[softplus(-D(A(G(z))))]``;
* optional lazy path-length regularisation on every ``pl_interval``-th step (half the batch):
  ``L_pl = pl_interval * pl_weight * E[(||J_w^T y||_2 - a)^2]``, ``y ~ N(0, I) / sqrt(H W)``, ``a`` the
  running mean of the lengths (decay 0.01). It is off at ``cpu``: it costs a second generator pass with
  double back-propagation through every modulated convolution on its steps, and what it buys (a smoother
  ``w -> image`` map for interpolation and projection) is not used by DatasetGAN.

Optimisers: Adam ``lr`` 0.0025, ``betas (0, 0.99)``, for both networks. ``G_ema``: weights averaged with
a half-life of ``ema_kimg`` thousand images, ramped up to ``ema_rampup`` x the images seen
(:func:`histolib.train.spade.ema_beta` / :func:`~histolib.train.spade.ema_update`, shared with SPADE);
buffers (``w_avg``, noise) are copied. Style mixing: with probability ``style_mixing`` the ``ws`` after a
random cut-off come from a second latent. ``w_avg`` moves towards the batch mean (decay 0.995) on every
training forward of the mapping network.

ADA: :class:`histolib.ops.ada.AugmentPipe` (the pipeline notebook 01 uses) with the transformations
``ada_ops``; the default is StyleGAN2-ADA's own default, ``bgc`` (:data:`BGC`: blitting, general geometry,
colour; without the elastic deformation seed 000 added): seed 002 says only that it trains StyleGAN2-ADA,
whose default pipeline is ``bgc``. :class:`~histolib.ops.ada.AdaController` moves ``p`` with
``r_t = E[sign(D(A(x)))]`` towards 0.6 every ``ada_interval`` steps.

Decisions and differences from the reference's ``training_loop`` / ``loss.py``:

* One step draws one batch of fakes, updates ``D`` on them (detached) and on the reals, then updates ``G``
  on the *same* fakes against the updated ``D``, as :class:`histolib.train.spade.SpadeTrainer` does (the
  reference draws new latents for each phase: one generator forward fewer here). ``D`` is frozen during
  the ``G`` update.
* The lazy regularisers are added to the main loss of their step (one Adam step) instead of being their
  own phase with its own Adam step; the reference scales ``lr`` and ``betas`` by ``interval / (interval
  + 1)`` to compensate for the extra steps, which one combined step does not need.
* On an R1 step the real pass that serves ``L_D`` and ``L_R1`` runs in float32 even under bf16 (double
  back-propagation through bf16 convolutions is noisy); every other forward runs under bf16 autocast
  when ``precision`` is ``bf16`` (weights, losses and optimiser state stay float32).
* The discriminator sees fakes and reals in separate calls so that the minibatch standard deviation
  groups never mix the two.
* Networks and images are in channels-last layout during training (faster oneDNN convolutions on CPU).
* Every random draw of step ``t`` (batch, latents, noise, augmentation, mixing) comes from
  :func:`histolib.train.gan.step_generator` ``(seed, t)``: a resumed run reaches the same weights as an
  uninterrupted one (CPU, same thread count).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from histolib.config import knob
from histolib.errors import CheckpointError, DataError, ParamError
from histolib.models.stylegan2 import Discriminator, Generator
from histolib.ops.ada import OPS, AdaController, AugmentPipe
from histolib.train.checkpoint import COMPLETE_FILE, Checkpointer, fingerprint
from histolib.train.gan import TensorBatches, train_gan
from histolib.train.spade import PRECISIONS, ema_beta, ema_update, resolve_precision

__all__ = ["BGC", "NON_IDENTITY_KEYS", "StyleGAN2Options", "StyleGAN2Trainer", "TrainedStyleGAN2", "build_generator",
           "generate", "load_generator", "path_length_penalty", "r1_penalty", "run_args", "train_stylegan2"]

#: StyleGAN2-ADA's default augmentation pipeline ``bgc``: every op of :data:`histolib.ops.ada.OPS` but the elastic
#: deformation (seed 000's addition).
BGC = tuple(op for op in OPS if op != "elastic")
#: options that say how often to save or what to draw, not what is trained: left out of a run's identity
NON_IDENTITY_KEYS = ("checkpoint_every", "n_grid")
PL_DECAY = 0.01  # running mean of the path lengths (reference pl_decay)
PL_BATCH_SHRINK = 2  # the path-length pass uses batch // 2 (reference pl_batch_shrink)
CL = torch.channels_last


@dataclass(frozen=True)
class StyleGAN2Options:
    """Options of one StyleGAN2-ADA run: the ``stylegan2`` section of ``params.yaml`` (registered by
    ``histolib.studies.datasetgan`` with ``section("stylegan2")(StyleGAN2Options)``); reference values in
    the help texts (StyleGAN2-ADA ``train.py``, ``auto`` configuration, ``reference/methods.md`` (c))."""

    resolution: int = knob("image side R, a power of 2; training images must be R x R (seed 002: 4096-px tiles, "
                           "out of reach here: see params.yaml)", min=8, max=1024)
    z_dim: int = knob("latent z size (reference 512)", min=1)
    w_dim: int = knob("intermediate latent w size (reference 512)", min=1)
    mapping_layers: int = knob("fully connected layers of the mapping network (reference auto config: 2; "
                               "StyleGAN2: 8)", min=1, max=8)
    mapping_lr: float = knob("learning-rate multiplier of the mapping network (reference 0.01)", min=1e-4, max=1.0)
    channel_base: int = knob("synthesis/discriminator channels at resolution r: min(channel_base // r, "
                             "channel_max) (reference auto config below 512 px: 16384)", min=16)
    channel_max: int = knob("maximum channels per layer (reference 512)", min=1)
    mbstd_group: int = knob("minibatch standard deviation group size (reference 4; 1: layer off); must divide "
                            "the batch", min=1)
    batch_size: int = knob("images per step (reference auto: min(4096 / R, 32) per GPU)", min=1)
    steps: int = knob("optimisation steps of G and D (kimg = steps x batch_size / 1000)", min=0)
    lr: float = knob("Adam learning rate of G and D (reference auto: 0.0025)", min=0.0, max=1.0)
    beta1: float = knob("Adam beta1 (reference 0)", min=0.0, max=1.0)
    beta2: float = knob("Adam beta2 (reference 0.99)", min=0.0, max=1.0)
    r1_gamma: float = knob("R1 weight gamma (reference auto: 0.0002 R^2 / batch)", min=0.0)
    r1_interval: int = knob("steps between lazy R1 evaluations (reference 16)", min=1)
    pl_weight: float = knob("path-length regularisation weight (reference 2; 0: off, as at cpu)", min=0.0)
    pl_interval: int = knob("steps between lazy path-length evaluations (reference 4)", min=1)
    style_mixing: float = knob("probability of style mixing per step (reference 0.9)", min=0.0, max=1.0)
    ema_kimg: float = knob("half-life of G_ema in thousands of images (reference auto: batch * 10 / 32)", min=0.0)
    ema_rampup: float = knob("G_ema half-life at most ema_rampup x images seen (reference auto: 0.05; 0: none)",
                             min=0.0)
    ada_ops: list[str] = knob("ADA transformations (histolib.ops.ada.OPS); StyleGAN2-ADA's default 'bgc' = all "
                              "but elastic; [] = no augmentation")
    ada_target: float = knob("ADA target of r_t = E[sign(D(real))] (reference 0.6)", min=0.0, max=1.0)
    ada_interval: int = knob("steps between ADA p adjustments (reference 4)", min=1)
    ada_kimg: float = knob("thousands of images for p to go 0 -> 1 (reference 500; smaller for short runs)",
                           min=1e-3)
    precision: str = knob("fp32, bf16 (CPU bfloat16 autocast of the G and D forward passes) or auto (bf16 where "
                          "the CPU has native bf16)", choices=PRECISIONS)
    checkpoint_every: int = knob("steps between checkpoints and sample grids", min=1)
    n_grid: int = knob("fixed latents (and reals) per row of the sample grids", min=1, max=64)


def _check_options(o: StyleGAN2Options) -> None:
    if o.resolution < 4 or o.resolution & (o.resolution - 1):
        raise ParamError(f"stylegan2.resolution must be a power of 2 >= 4, got {o.resolution}")
    bad = [op for op in o.ada_ops if op not in OPS]
    if bad:
        raise ParamError(f"stylegan2.ada_ops: unknown transformation(s) {bad}; known: {list(OPS)}")
    g = min(o.mbstd_group, o.batch_size)
    if o.mbstd_group > 1 and o.batch_size % g:
        raise ParamError(f"stylegan2.batch_size = {o.batch_size} must be divisible by stylegan2.mbstd_group = "
                         f"{o.mbstd_group} (minibatch standard deviation groups)")
    if o.precision not in PRECISIONS:
        raise ParamError(f"stylegan2.precision must be one of {PRECISIONS}, got {o.precision!r}")


def build_generator(cfg: StyleGAN2Options | dict) -> Generator:
    """A :class:`~histolib.models.stylegan2.Generator` with the architecture of ``cfg`` (options, or the
    ``args`` dict a checkpoint stores); weights from torch's current random state."""
    c = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return Generator(z_dim=int(c["z_dim"]), w_dim=int(c["w_dim"]), resolution=int(c["resolution"]),
                     channel_base=int(c["channel_base"]), channel_max=int(c["channel_max"]),
                     mapping_layers=int(c["mapping_layers"]), mapping_lr=float(c["mapping_lr"]))


# --------------------------------------------------------------------------------------------------
# Regularisers
# --------------------------------------------------------------------------------------------------

def r1_penalty(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty ``||grad_x sum D(x)||^2`` per sample (differentiable: ``create_graph``).

    Args:
        logits: ``(N, 1)`` (or ``(N,)``) discriminator outputs computed from ``images``.
        images: ``(N, C, H, W)`` with ``requires_grad``; sample ``n``'s logit depends on image ``n`` only.

    Returns:
        ``(N,)``: ``sum_{c,h,w} (d D(x_n) / d x_{n,c,h,w})^2``. For ``D(x) = sum(a * x)``: ``sum(a^2)``.
    """
    if not images.requires_grad:
        raise ValueError("r1_penalty: images must require grad (images.requires_grad_(True) before D)")
    (grad,) = torch.autograd.grad(logits.float().sum(), images, create_graph=True)
    return grad.float().square().sum(dim=tuple(range(1, grad.dim())))


def path_length_penalty(images: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor,
                        noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2's path-length penalty (Eq. 4): ``(||J_w^T y|| - a)^2`` per sample.

    Args:
        images: ``(N, 3, H, W)`` generated from ``ws`` (differentiable).
        ws: ``(N, num_ws, w_dim)`` in the graph of ``images``.
        pl_mean: running mean ``a`` (scalar tensor), *not* updated here.
        noise: ``(N, 3, H, W)`` ``y``: ``N(0, 1) / sqrt(H W)``.

    Returns:
        ``(penalty (N,), lengths (N,))`` with ``lengths = sqrt(mean_l sum_d (J^T y)^2)`` (over the ``ws`` copies).
    """
    (grad,) = torch.autograd.grad((images.float() * noise).sum(), ws, create_graph=True)
    lengths = grad.float().square().sum(dim=2).mean(dim=1).sqrt()
    return (lengths - pl_mean).square(), lengths


# --------------------------------------------------------------------------------------------------
# The trainer (a histolib.train.gan.GanTask)
# --------------------------------------------------------------------------------------------------

class StyleGAN2Trainer:
    """StyleGAN2 generator and discriminator with ADA, R1, optional path-length regularisation, style
    mixing and ``G_ema`` (module docstring); implements :class:`histolib.train.gan.GanTask`.

    Args:
        options: :class:`StyleGAN2Options`.
        seed: seed of the initial weights (and of the constant noise buffers).

    Batches are 1-tuples ``(images,)``, images ``(B, 3, R, R)`` float in ``[-1, 1]``.
    """

    def __init__(self, options: StyleGAN2Options, seed: int = 0):
        _check_options(options)
        self.opt = o = options
        self.precision = resolve_precision(o.precision)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.G = build_generator(o)
            self.D = Discriminator(o.resolution, o.channel_base, o.channel_max, o.mbstd_group)
        self.G.to(memory_format=CL)  # channels-last: faster oneDNN convolutions on CPU (1.3x per step here)
        self.D.to(memory_format=CL)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.modules = {"G": self.G, "D": self.D, "G_ema": self.G_ema}
        betas = (o.beta1, o.beta2)
        self.optimizers = {"G": torch.optim.Adam(self.G.parameters(), lr=o.lr, betas=betas),
                           "D": torch.optim.Adam(self.D.parameters(), lr=o.lr, betas=betas)}
        self.augment = AugmentPipe.from_ops(list(o.ada_ops)) if o.ada_ops else None
        self.ada = AdaController(o.ada_target, o.ada_interval, o.ada_kimg) if o.ada_ops else None
        self.pl_mean = torch.zeros(())

    @property
    def p(self) -> float:
        """Current augmentation probability (0 without ADA)."""
        return self.ada.p if self.ada is not None else 0.0

    def _autocast(self, enabled: bool = True):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled and self.precision == "bf16")

    def _augment(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.augment is None or self.ada.p <= 0:
            return images
        return self.augment(images, None, self.ada.p, generator)[0]

    def discriminate(self, images: torch.Tensor, generator: torch.Generator | None = None,
                     autocast: bool = True) -> torch.Tensor:
        """``D(A(images))`` as float32 ``(N, 1)`` (augmented with the current ``p``)."""
        x = self._augment(images, generator)
        with self._autocast(autocast):
            return self.D(x).float()

    def mapping(self, z: torch.Tensor, generator: torch.Generator | None, update_w_avg: bool = True) -> torch.Tensor:
        """Training ``ws`` for ``z``: ``w_avg`` tracked, style mixing with probability ``style_mixing``."""
        ws = self.G.mapping(z, update_w_avg=update_w_avg)
        o = self.opt
        if o.style_mixing > 0:
            n = self.G.num_ws
            cutoff = int(torch.randint(1, n, (), generator=generator))
            mix = float(torch.rand((), generator=generator)) < o.style_mixing
            z2 = torch.randn(z.shape, generator=generator)
            if mix:
                ws = torch.cat([ws[:, :cutoff], self.G.mapping(z2)[:, cutoff:]], dim=1)
        return ws

    def generate(self, z: torch.Tensor, generator: torch.Generator | None, update_w_avg: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward of ``G``: ``(images float32 (N, 3, R, R), ws)``, random noise from ``generator``."""
        ws = self.mapping(z, generator, update_w_avg)
        with self._autocast():
            img = self.G.synthesis(ws, noise_mode="random", generator=generator)
        return img.float(), ws

    # -- GanTask --------------------------------------------------------------------------------
    def train_step(self, batch, step: int, generator: torch.Generator) -> dict[str, float]:
        """One D update (with lazy R1) then one G update (with lazy path length) (module docstring)."""
        o = self.opt
        real = batch[0].contiguous(memory_format=CL)
        b = real.shape[0]
        z = torch.randn(b, o.z_dim, generator=generator)
        fake, _ = self.generate(z, generator)

        # -- D: L_D (+ L_R1 every r1_interval steps)
        do_r1 = o.r1_gamma > 0 and step % o.r1_interval == 0
        fake_logits = self.discriminate(fake.detach(), generator)
        real_in = real.detach().requires_grad_(do_r1)
        real_logits = self.discriminate(real_in, generator, autocast=not do_r1)
        loss_d_fake = F.softplus(fake_logits).mean()
        loss_d_real = F.softplus(-real_logits).mean()
        loss_d = loss_d_fake + loss_d_real
        stats = {"loss_D_fake": float(loss_d_fake.detach()), "loss_D_real": float(loss_d_real.detach()),
                 "D_real": float(real_logits.detach().mean()), "D_fake": float(fake_logits.detach().mean())}
        if do_r1:
            r1 = r1_penalty(real_logits, real_in)
            loss_d = loss_d + r1.mean() * (o.r1_gamma / 2) * o.r1_interval
            stats["r1"] = float(r1.detach().mean())
        opt_d = self.optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        stats["loss_D"] = float(loss_d.detach())
        if self.ada is not None:
            self.ada.accumulate(real_logits)
            self.ada.step(b)

        # -- G: L_G (+ L_pl every pl_interval steps), D frozen
        self.D.requires_grad_(False)
        try:
            gen_logits = self.discriminate(fake, generator)
            loss_g = F.softplus(-gen_logits).mean()
            stats["loss_G_adv"] = float(loss_g.detach())
            if o.pl_weight > 0 and step % o.pl_interval == 0:
                n = max(b // PL_BATCH_SHRINK, 1)
                img, ws = self.generate(torch.randn(n, o.z_dim, generator=generator), generator, update_w_avg=False)
                noise = torch.randn(img.shape, generator=generator) / math.sqrt(img.shape[2] * img.shape[3])
                penalty, lengths = path_length_penalty(img, ws, self.pl_mean, noise)
                self.pl_mean = self.pl_mean.lerp(lengths.detach().mean(), PL_DECAY)
                loss_g = loss_g + penalty.mean() * o.pl_weight * o.pl_interval
                stats["pl_penalty"] = float(penalty.detach().mean())
            opt_g = self.optimizers["G"]
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        finally:
            self.D.requires_grad_(True)
        stats["loss_G"] = float(loss_g.detach())
        ema_update(self.G_ema, self.G, ema_beta(b, o.ema_kimg, (step + 1) * b, o.ema_rampup))
        stats["p"] = self.p
        if self.ada is not None and self.ada.r_t == self.ada.r_t:  # NaN until the first adjustment
            stats["r_t"] = self.ada.r_t
        return stats

    @torch.no_grad()
    def sample(self, batch) -> list[torch.Tensor]:
        """Grid rows for a fixed batch ``(reals (n, 3, R, R), z (n, z_dim))``: the reals, then ``G_ema`` at
        the fixed latents without truncation and with ``psi = 0.7`` (seed 002's truncation), constant noise."""
        real, z = batch[0], batch[1]
        with self._autocast():
            rows = [self.G_ema(z, truncation_psi=psi, noise_mode="const").float() for psi in (1.0, 0.7)]
        return [real, *rows]

    def state_dict(self) -> dict:
        return {"ada": self.ada.state_dict() if self.ada is not None else None, "pl_mean": self.pl_mean.clone()}

    def load_state_dict(self, state: dict) -> None:
        if self.ada is not None and state.get("ada"):
            self.ada.load_state_dict(state["ada"])
        if "pl_mean" in state:
            self.pl_mean = torch.as_tensor(state["pl_mean"]).float().clone()


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------

@dataclass
class TrainedStyleGAN2:
    """What :func:`train_stylegan2` returns.

    Attributes:
        G: the ``G_ema`` generator (eval mode, no gradients): what to sample and extract features from.
        trainer: the :class:`StyleGAN2Trainer` with ``G``, ``D`` and optimisers at the final step.
        log: the rows of ``log.jsonl``.
        seconds: training time of this call (or of the finished run found).
        skipped: a complete run with the same options was found and loaded (nothing was trained or written).
        out_dir: the run's folder.
    """

    G: Generator
    trainer: StyleGAN2Trainer
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    skipped: bool = False
    out_dir: Path | None = None


def _check_images(images: Any, resolution: int) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise DataError(f"train_stylegan2: images must be (N, H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    if len(arr) == 0:
        raise DataError("train_stylegan2: no training images")
    if arr.shape[1:3] != (resolution, resolution):
        raise DataError(f"train_stylegan2: images are {arr.shape[1]}x{arr.shape[2]} px, stylegan2.resolution is "
                        f"{resolution}: resize the tiles first")
    return arr


def run_args(opts: StyleGAN2Options, images: np.ndarray) -> dict:
    """The identity of a run: its options (less :data:`NON_IDENTITY_KEYS`) and the data's fingerprint."""
    args = {k: v for k, v in dataclasses.asdict(opts).items() if k not in NON_IDENTITY_KEYS}
    return {"model": "stylegan2", **args, "data": fingerprint(images)}


def train_stylegan2(images, out_dir: str | Path, opts: StyleGAN2Options, seed: int,
                    summary: dict | None = None, progress: bool = True) -> TrainedStyleGAN2:
    """Train (or resume, or load a finished run of) StyleGAN2-ADA on unlabelled images.

    Args:
        images: ``(N, R, R, 3)`` uint8 training images, ``R = opts.resolution``.
        out_dir: the run's folder: ``checkpoints/last.pt`` (+ ``COMPLETE.json``), ``log.jsonl``,
            ``samples/step_XXXXXXX.png`` (rows: ``n_grid`` reals, ``G_ema`` at fixed latents with
            ``psi = 1`` and ``0.7``).
        opts: :class:`StyleGAN2Options`.
        seed: initial weights and every step's randomness; the fixed latents of the grids come from it too.
        summary: JSON-able values recorded in ``COMPLETE.json``.
        progress: show a progress bar.

    Returns:
        :class:`TrainedStyleGAN2` (``.G`` is the EMA generator).

    Raises:
        DataError: images of the wrong type, shape or size.
        ParamError: inconsistent options (named).
        TrainingDiverged: a NaN/inf loss or weight (the last good checkpoint is kept).
    """
    arr = _check_images(images, opts.resolution)
    task = StyleGAN2Trainer(opts, seed)
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()
    batches = TensorBatches(x, batch_size=opts.batch_size)
    if batches.batch_size != opts.batch_size:
        g = min(opts.mbstd_group, batches.batch_size)
        if opts.mbstd_group > 1 and batches.batch_size % g:
            raise ParamError(f"stylegan2.batch_size = {opts.batch_size} is more than the {len(arr)} training "
                             f"images, and {len(arr)} is not divisible by stylegan2.mbstd_group = {opts.mbstd_group}")
    n = min(opts.n_grid, len(arr))
    z = torch.randn(n, opts.z_dim, generator=torch.Generator().manual_seed(int(seed)))
    result = train_gan(task, batches, steps=opts.steps, out_dir=out_dir, seed=seed, args=run_args(opts, arr),
                       fixed_batch=(x[:n], z), checkpoint_every=opts.checkpoint_every,
                       sample_every=opts.checkpoint_every, images_per_step=batches.batch_size, progress=progress,
                       desc="StyleGAN2", summary=summary)
    return TrainedStyleGAN2(task.G_ema.eval(), task, result.log, result.seconds, result.skipped, Path(out_dir))


def load_generator(run_dir: str | Path, require_complete: bool = True) -> Generator:
    """The ``G_ema`` generator of a run written by :func:`train_stylegan2` (``weights_only`` loading).

    Args:
        run_dir: the run's folder (holding ``checkpoints/``).
        require_complete: only a finished run whose ``COMPLETE.json`` still vouches for ``last.pt``
            (sha256); ``False``: the latest ``last.pt`` of an unfinished run too.

    Returns:
        The generator in eval mode, gradients off.

    Raises:
        CheckpointError: no checkpoint, no (valid) completion record, or an unreadable file (named).
    """
    folder = Path(run_dir) / "checkpoints"
    args = None
    marker = folder / COMPLETE_FILE
    if marker.is_file():
        try:
            args = json.loads(marker.read_text()).get("args")
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{marker} is not readable ({e}); retrain or pass require_complete=False") from e
    ckpt = Checkpointer(folder, args)
    if require_complete:
        if args is None or ckpt.completion() is None:
            raise CheckpointError(f"{folder}: no finished StyleGAN2 run ({COMPLETE_FILE} missing, or its last.pt "
                                  "changed since); train it first or pass require_complete=False")
    state = ckpt.load_last()
    if state is None:
        raise CheckpointError(f"{folder / 'last.pt'}: no checkpoint")
    if state["args"].get("model") != "stylegan2" or "G_ema" not in state.get("modules", {}):
        raise CheckpointError(f"{folder / 'last.pt'} is not a StyleGAN2 checkpoint of train_stylegan2")
    G = build_generator(state["args"])
    G.load_state_dict(state["modules"]["G_ema"])
    return G.eval().requires_grad_(False)


@torch.no_grad()
def generate(G: Generator, n: int, seed: int, truncation_psi: float = 1.0, batch_size: int = 32,
             noise_mode: str = "const", precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """``n`` images and their latents: ``z`` from ``seed`` (one ``(n, z_dim)`` draw), truncated by ``psi``.

    Returns:
        ``(images (n, R, R, 3) uint8, z (n, z_dim) float32)``; the same ``seed`` gives the same latents
        whatever ``batch_size``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(int(seed)))
    out = []
    for i in range(0, n, batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            img = G(z[i:i + batch_size], truncation_psi=truncation_psi, noise_mode=noise_mode).float()
        out.append(((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    images = np.concatenate(out) if out else np.zeros((0, G.resolution, G.resolution, 3), np.uint8)
    return images, z.numpy()
