"""Losses and the training step of the mode-seeking Pix2Pix of Allender et al. (seed 001), Eq. (2)-(5).

The generator minimises (Eq. 5)::

    L_G = L_cGAN(G)  +  lambda_l1 * L_L1(G)  +  mu_ms * L_ms(G),      lambda_l1 = mu_ms = 10

and the discriminator maximises Eq. (2). D sees only the image (the paper's unconditional D) or,
for the ablation of their Fig. 7, the condition concatenated to the image.

Pairs for the mode-seeking term. Eq. (4) compares the outputs for two *different conditions*
``x1, x2`` drawn from the data. We take every unordered pair ``i < j`` of a batch (``B (B-1) / 2``
pairs, no extra generator pass); with the paper's batch of 1 there is no pair inside the batch, so the
caller passes ``partner`` conditions (one more condition per example, drawn from the data): the
generator then runs on the ``2B`` conditions in one call and pairs ``(i, B + i)`` enter L_ms, while
the GAN and L1 terms use the first ``B`` only. Pairs whose two conditions are identical carry no
information about mode seeking and are left out.

Difference from the MSGAN reference code (Mao et al.; HelenMao/MSGAN, and its issues #2, #17): MSGAN
duplicates the batch with two noise codes ``z1, z2`` for the *same* condition and minimises the
reciprocal ``1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + 1e-5)``; the paper's Eq. (4) is the plain
ratio ``||x1 - x2||_1 / ||G(x1) - G(x2)||_1`` over two conditions. We implement the paper's form, with
``eps`` added to the denominator only to keep it finite when two outputs coincide.

Speed (``benchmarks/bench_pix2pix.py``): the step updates D on real and fake images in one batched
call (exact for instance normalisation and the linear head, which act per image; separate calls are
kept for ``norm="batch"``), freezes D's parameters while G's loss is backpropagated through D, and uses
the fused CPU Adam. Channels-last was measured slower for these networks on this CPU and is not used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from histolib.errors import ParamError
from histolib.models.pix2pix import Pix2PixDiscriminator, Pix2PixGenerator
from histolib.train.ema import ema_beta, ema_update


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The discriminator's side of Eq. (2), as a loss to minimise.

    ``L_D = -log sigmoid(D(y)) - log(1 - sigmoid(D(G(x))))``, averaged over images (and patches for
    a PatchGAN head); computed stably as binary cross-entropy on logits. Pix2Pix's reference code
    halves this sum; with Adam a constant factor changes almost nothing, and we keep Eq. (2) as written.

    Args:
        real_logits: D's logits on real images, ``(B, 1)`` or ``(B, 1, h, w)``.
        fake_logits: D's logits on generated images, same shape.

    Returns:
        ``{"loss_d", "loss_d_real", "loss_d_fake"}``, scalar tensors.
    """
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return {"loss_d": real + fake, "loss_d_real": real, "loss_d_fake": fake}


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of Eq. (2) in its non-saturating form: ``-log sigmoid(D(G(x)))``, mean.

    Minimising ``log(1 - D(G(x)))`` as written gives vanishing gradients early in training
    (Goodfellow et al. 2014); every Pix2Pix implementation, the paper's included, uses this form.
    """
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def l1_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Eq. (3): ``L_L1 = mean |y - G(x)|`` over pixels, channels and images (images in [-1, 1])."""
    if fake.shape != real.shape:
        raise ParamError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} must have the same shape")
    return (fake - real).abs().mean()


def pair_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per pair: ``d_p = mean |a_p - b_p|`` over all but the first dimension.

    Args:
        a, b: ``(P, ...)`` tensors of the same shape.

    Returns:
        ``(P,)`` distances (the L1 norm of Eq. 4 divided by the element count, as MSGAN does, so that
        condition and image distances are on comparable scales).
    """
    if a.shape != b.shape:
        raise ParamError(f"pair tensors must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a - b).abs().flatten(1).mean(dim=1)


def all_pairs(n: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index tensors ``(i, j)`` of every unordered pair ``i < j`` of ``n`` items (empty for n < 2)."""
    i, j = torch.triu_indices(n, n, offset=1, device=device)
    return i, j


def mode_seeking_loss(cond_a: torch.Tensor, cond_b: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """Eq. (4), the mode-seeking term over pairs of different conditions.

    ``L_ms = mean_p  d(x1_p, x2_p) / (d(G(x1_p), G(x2_p)) + eps)``, with ``d`` the per-element mean
    absolute difference (:func:`pair_distances`). It falls as the two outputs move apart relative to
    how far apart their conditions are, so the generator is penalised for answering different
    conditions with similar images. Pairs with identical conditions (``d(x1, x2) = 0``) are left out.

    Args:
        cond_a, cond_b: ``(P, C, H, W)`` conditions of the two members of each pair, in [-1, 1].
        fake_a, fake_b: ``(P, 3, H, W)`` generated images for them, in [-1, 1].
        eps: added to the image distance so the ratio stays finite when two outputs coincide.

    Returns:
        Scalar tensor. With no pair of different conditions, 0 (still attached to the graph).
    """
    if cond_a.shape[0] != fake_a.shape[0]:
        raise ParamError(f"cond_a has {cond_a.shape[0]} pairs but fake_a has {fake_a.shape[0]}")
    d_x = pair_distances(cond_a, cond_b)
    d_y = pair_distances(fake_a, fake_b)
    different = d_x > 0
    if not bool(different.any()):
        return (fake_a.sum() + fake_b.sum()) * 0.0
    return (d_x[different] / (d_y[different] + eps)).mean()


def mode_seeking_in_batch(conditions: torch.Tensor, fakes: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Eq. (4) over every pair ``i < j`` of a batch; 0 for a batch of one (see the module docstring).

    Args:
        conditions: ``(B, C, H, W)`` in [-1, 1].
        fakes: ``(B, 3, H, W)`` the generator's outputs for them.
    """
    i, j = all_pairs(conditions.shape[0], conditions.device)
    return mode_seeking_loss(conditions[i], conditions[j], fakes[i], fakes[j], eps)


def input_sensitivity(conditions: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """How much the output moves when the input moves, over every pair of different conditions.

    ``s_p = d(G(x_i), G(x_j)) / d(x_i, x_j)`` for pairs ``i < j`` with ``x_i != x_j``: the reciprocal
    of the ratio in Eq. (4). A collapsed generator (Fig. 2 of the paper: "the same texture content, no
    matter the input") has ``s`` near 0; an identity-like map has ``s`` of the order of 1.

    Args:
        conditions: ``(N, C, H, W)`` in [-1, 1].
        outputs: ``(N, 3, H, W)`` the generator's outputs for them, in [-1, 1].

    Returns:
        ``(P,)`` per-pair sensitivities (empty when no two conditions differ).
    """
    if conditions.shape[0] != outputs.shape[0]:
        raise ParamError(f"conditions ({conditions.shape[0]}) and outputs ({outputs.shape[0]}) differ in count")
    i, j = all_pairs(conditions.shape[0], conditions.device)
    d_x = pair_distances(conditions[i], conditions[j])
    d_y = pair_distances(outputs[i], outputs[j])
    keep = d_x > 0
    return d_y[keep] / d_x[keep]


@dataclass(frozen=True)
class Pix2PixLossWeights:
    """Weights of Eq. (5). ``lambda_l1 = mu_ms = 10`` in the paper; ``mu_ms = 0`` is the 'no L_ms' ablation."""

    lambda_l1: float = 10.0
    mu_ms: float = 10.0
    eps: float = 1e-5


def make_optimizers(generator: nn.Module, discriminator: nn.Module, lr: float = 2e-4,
                    betas: tuple[float, float] = (0.5, 0.999), fused: bool = True
                    ) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for G and D with the paper's settings (lr 2e-4, betas (0.5, 0.999)).

    ``fused=True`` uses torch's fused Adam kernel (same update, about a quarter of a CPU step saved
    at 64 px); ``False`` is the per-parameter loop, kept for the benchmark's reference.
    """
    if lr <= 0:
        raise ParamError(f"lr must be > 0, got {lr}")
    kw = {"fused": True} if fused else {}
    return (torch.optim.Adam(generator.parameters(), lr=lr, betas=betas, **kw),
            torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas, **kw))


def _d_logits(discriminator: nn.Module, image: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    return discriminator(image, condition) if discriminator.conditional else discriminator(image)


def _per_image_norm(module: nn.Module) -> bool:
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def discriminator_logits(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                         condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D's logits on real and fake images; one batched call when D normalises per image."""
    if _per_image_norm(discriminator):
        both = torch.cat([real, fake])
        cond = torch.cat([condition, condition]) if discriminator.conditional else condition
        logits = _d_logits(discriminator, both, cond)
        return logits[: real.shape[0]], logits[real.shape[0]:]
    return _d_logits(discriminator, real, condition), _d_logits(discriminator, fake, condition)


def generator_losses(discriminator: nn.Module, condition: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                     weights: Pix2PixLossWeights, partner: torch.Tensor | None = None,
                     fake_partner: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every term of Eq. (5) for a batch, and their weighted sum ``loss_g``.

    Args:
        discriminator: D (its parameters may be frozen; gradients flow through it to ``fake``).
        condition: ``(B, C, H, W)`` in [-1, 1].
        real: ``(B, 3, H, W)`` the real images paired with ``condition``.
        fake: ``(B, 3, H, W)`` G's outputs for ``condition``.
        weights: ``lambda_l1``, ``mu_ms`` and ``eps``.
        partner, fake_partner: optional ``(B, C, H, W)`` second conditions and G's outputs for them:
            L_ms then uses pairs ``(condition_i, partner_i)``; otherwise every pair of the batch.

    Returns:
        ``{"loss_g", "loss_g_gan", "loss_l1", "loss_ms"}``, scalar tensors; with ``mu_ms = 0``,
        ``loss_ms`` is still computed (without gradient) for the log, and left out of ``loss_g``.
    """
    gan = generator_adversarial_loss(_d_logits(discriminator, fake, condition))
    l1 = l1_loss(fake, real)
    if partner is not None:
        ms = mode_seeking_loss(condition, partner, fake, fake_partner, weights.eps)
    elif weights.mu_ms == 0:  # not optimised, still logged: it shows the outputs drawing together
        with torch.no_grad():
            ms = mode_seeking_in_batch(condition, fake, weights.eps)
    else:
        ms = mode_seeking_in_batch(condition, fake, weights.eps)
    total = gan + weights.lambda_l1 * l1 + (weights.mu_ms * ms if weights.mu_ms else 0.0)
    return {"loss_g": total, "loss_g_gan": gan, "loss_l1": l1, "loss_ms": ms}


def train_step(generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, condition: torch.Tensor, real: torch.Tensor,
               weights: Pix2PixLossWeights = Pix2PixLossWeights(), partner: torch.Tensor | None = None,
               rng: torch.Generator | None = None) -> dict[str, float]:
    """One Pix2Pix iteration: G forward once, a D update on (real, G(x).detach()), then a G update.

    Args:
        generator, discriminator: the networks (put in ``train()`` mode by the caller).
        opt_g, opt_d: their optimisers (:func:`make_optimizers`).
        condition: ``(B, C, H, W)`` float in [-1, 1] (mask ++ structure map, or mask only).
        real: ``(B, 3, H, W)`` float in [-1, 1].
        weights: Eq. (5) weights.
        partner: ``(B, C, H, W)`` second conditions for L_ms; required when ``B == 1`` and
            ``mu_ms > 0`` (the paper's batch of one), optional otherwise.
        rng: random source of the generator's dropout.

    Returns:
        Floats: ``loss_d``, ``loss_d_real``, ``loss_d_fake``, ``loss_g``, ``loss_g_gan``, ``loss_l1``,
        ``loss_ms``, and ``d_real`` / ``d_fake`` (mean D probability on real / generated images).
    """
    if condition.ndim != 4 or real.ndim != 4 or condition.shape[0] != real.shape[0] \
            or condition.shape[-2:] != real.shape[-2:]:
        raise ParamError(f"condition {tuple(condition.shape)} and real {tuple(real.shape)} must be "
                         "(B, C, H, W) with the same B, H, W")
    batch = condition.shape[0]
    if partner is not None and partner.shape != condition.shape:
        raise ParamError(f"partner must have the condition's shape {tuple(condition.shape)}, "
                         f"got {tuple(partner.shape)}")
    if partner is None and batch < 2 and weights.mu_ms > 0:
        raise ParamError("a batch of one has no pair of conditions for L_ms (Eq. 4): pass `partner` "
                         "conditions or use batch_size >= 2")
    out = generator(condition if partner is None else torch.cat([condition, partner]), rng)
    fake, fake_partner = (out, None) if partner is None else (out[:batch], out[batch:])

    real_logits, fake_logits = discriminator_logits(discriminator, real, fake.detach(), condition)
    d_losses = discriminator_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    d_losses["loss_d"].backward()
    opt_d.step()

    discriminator.requires_grad_(False)  # G's loss flows through D; D's own gradients are not needed
    try:
        g_losses = generator_losses(discriminator, condition, real, fake, weights, partner, fake_partner)
        opt_g.zero_grad(set_to_none=True)
        g_losses["loss_g"].backward()
        opt_g.step()
    finally:
        discriminator.requires_grad_(True)

    stats = {k: float(v.detach()) for k, v in {**d_losses, **g_losses}.items()}
    stats["d_real"] = float(torch.sigmoid(real_logits.detach()).mean())
    stats["d_fake"] = float(torch.sigmoid(fake_logits.detach()).mean())
    return stats


def reference_train_step(generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                         opt_d: torch.optim.Optimizer, condition: torch.Tensor, real: torch.Tensor,
                         weights: Pix2PixLossWeights = Pix2PixLossWeights(),
                         rng: torch.Generator | None = None) -> dict[str, float]:
    """The same iteration written the obvious way, for the benchmark and the equivalence test.

    Two D calls (real, then fake), D's parameter gradients computed in the G pass and thrown away;
    the caller pairs it with the non-fused Adam. Same losses and, for per-image normalisation, the
    same updates as :func:`train_step` up to float rounding.
    """
    fake = generator(condition, rng)
    d_losses = discriminator_loss(_d_logits(discriminator, real, condition),
                                  _d_logits(discriminator, fake.detach(), condition))
    opt_d.zero_grad()
    d_losses["loss_d"].backward()
    opt_d.step()
    g_losses = generator_losses(discriminator, condition, real, fake, weights)
    opt_g.zero_grad()
    g_losses["loss_g"].backward()
    opt_g.step()
    return {k: float(v.detach()) for k, v in {**d_losses, **g_losses}.items()}


# --------------------------------------------------------------------------------------------------
# Data conversion, batches and synthesis
# --------------------------------------------------------------------------------------------------

def condition_tensor(masks, structure=None) -> torch.Tensor:
    """Binary maps -> the generator's input: ``(N, C, H, W)`` float32 with 0 -> -1 and 1 -> +1.

    Args:
        masks: ``(N, H, W)`` binary glomerulus masks (``{0, 1}`` or ``{0, 255}``, any integer/bool dtype).
        structure: ``(N, H, W)`` binary structure maps (the thresholded image, paper Fig. 3), or
            ``None`` for the mask-only ablation.

    Returns:
        ``C = 2`` (mask, structure map) or ``C = 1`` (mask only).

    Raises:
        ParamError: shapes differ, or values other than two levels.
    """
    maps = {"masks": masks} if structure is None else {"masks": masks, "structure": structure}
    out, shape = [], None
    for name, m in maps.items():
        t = torch.as_tensor(np.asarray(m))
        if t.ndim != 3:
            raise ParamError(f"{name} must be (N, H, W), got {tuple(t.shape)}")
        if shape is not None and tuple(t.shape) != shape:
            raise ParamError(f"structure {tuple(t.shape)} must match masks {shape}")
        shape = tuple(t.shape)
        values = set(torch.unique(t).tolist())
        if values <= {0, 1}:
            on = t == 1
        elif values <= {0, 255}:
            on = t == 255
        else:
            raise ParamError(f"{name} must be binary ({{0, 1}} or {{0, 255}}), got values {sorted(values)[:6]}")
        out.append(on.float()[:, None] * 2 - 1)
    return torch.cat(out, dim=1)


class PairBatches:
    """Random minibatches ``(condition, image[, partner])`` for :func:`histolib.train.gan.train_gan`.

    ``B`` distinct examples per step (without replacement within the batch); with ``partners=True``
    each example also gets a partner condition from another example, for L_ms at a batch of one.

    Args:
        conditions: ``(N, C, H, W)`` from :func:`condition_tensor`.
        images: ``(N, 3, H, W)`` float in [-1, 1].
        batch_size: ``B`` (capped at ``N``).
        partners: add partner conditions (needs ``N >= 2``).
    """

    def __init__(self, conditions: torch.Tensor, images: torch.Tensor, batch_size: int, partners: bool = False):
        if len(conditions) != len(images) or len(conditions) == 0:
            raise ParamError(f"conditions ({len(conditions)}) and images ({len(images)}) must be equal and > 0")
        if batch_size < 1:
            raise ParamError(f"batch_size must be >= 1, got {batch_size}")
        if partners and len(conditions) < 2:
            raise ParamError("partners need at least 2 training examples")
        self.conditions, self.images = conditions, images
        self.n, self.batch_size, self.partners = len(conditions), min(batch_size, len(conditions)), partners

    def __call__(self, generator: torch.Generator):
        idx = torch.randperm(self.n, generator=generator)[: self.batch_size]
        batch = (self.conditions[idx], self.images[idx])
        if not self.partners:
            return batch
        # a uniform draw among the other N - 1 examples
        shift = torch.randint(1, self.n, (len(idx),), generator=generator)
        return (*batch, self.conditions[(idx + shift) % self.n])


def dropout_seed_generator(seed: int, index: int) -> torch.Generator:
    """The dropout random stream of synthesis batch ``index`` under ``seed`` (order-free)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@torch.no_grad()
def synthesize(generator: nn.Module, conditions: torch.Tensor, seed: int = 0, batch_size: int = 32,
               as_uint8: bool = True):
    """Run a trained generator on conditions, with Pix2Pix's test-time dropout drawn from ``seed``.

    Args:
        generator: a :class:`~histolib.models.pix2pix.Pix2PixGenerator` (switched to ``eval()`` for
            the call: instance norm is unaffected, batch norm uses running statistics; dropout stays
            on when ``dropout_at_inference``).
        conditions: ``(N, C, H, W)`` from :func:`condition_tensor`.
        seed: dropout seed; batch ``k`` uses :func:`dropout_seed_generator` ``(seed, k)``.
        batch_size: conditions per forward.
        as_uint8: return ``(N, H, W, 3)`` uint8 (else ``(N, 3, H, W)`` float in [-1, 1]).

    Returns:
        The images; an empty array/tensor for ``N = 0``.
    """
    if batch_size < 1:
        raise ParamError(f"batch_size must be >= 1, got {batch_size}")
    was = generator.training
    generator.eval()
    try:
        outs = [generator(conditions[i:i + batch_size], dropout_seed_generator(seed, k))
                for k, i in enumerate(range(0, len(conditions), batch_size))]
    finally:
        generator.train(was)
    out = torch.cat(outs) if outs else torch.zeros(0, 3, *conditions.shape[-2:])
    if not as_uint8:
        return out
    return ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------------------------------------
# The trainer (a histolib.train.gan.GanTask)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pix2PixOptions:
    """Options of one Pix2Pix model; the defaults are the paper's (``paper`` profile).

    Attributes:
        in_channels: 2 (mask ++ structure map) or 1 (mask only: the "no structure maps" ablation).
        image_size: patch side (256); the generator's depth is ``log2(image_size)``.
        ngf, ndf: generator / discriminator base widths (64, 64).
        kernel_size: 4 (Isola et al.) or 5 (the paper's appendix tables).
        n_dropout, dropout: dropout after the innermost up-blocks (3, 0.5).
        norm: ``"instance"`` or ``"batch"`` (see :mod:`histolib.models.pix2pix`).
        conditional_d: feed the condition to D (the Fig. 7 ablation); the paper's model: ``False``.
        d_head: ``"linear"`` (Table 2) or ``"patch"`` (PatchGAN).
        n_layers_d: stride-2 convolutions of D (3).
        lr, beta1, beta2: Adam (2e-4, 0.5, 0.999).
        lambda_l1, mu_ms: Eq. (5) weights (10, 10); ``mu_ms = 0`` is the "no L_ms" ablation.
        eval_every: steps between validation evaluations (0: none); the generator with the best
            (lowest) score is kept in the trainer's state, hence in every checkpoint.
        select_from: fraction of the run's steps before which an evaluation is logged but cannot be
            chosen (0: every evaluation is eligible).
        ema_kimg: half-life, in thousands of images, of an exponential moving average of G's weights
            (:mod:`histolib.train.ema`) that is evaluated, chosen and sampled instead of G; 0 (the paper,
            and Pix2Pix): no average.
        ema_rampup: the half-life is at most ``ema_rampup`` x the images seen so far (StyleGAN2-ADA: 0.05).
        upsample: the generator's up-sampling, ``"transpose"`` (the paper), ``"resize"`` or ``"bilinear"``
            (:class:`~histolib.models.pix2pix.Pix2PixGenerator`).
    """

    in_channels: int = 2
    image_size: int = 256
    ngf: int = 64
    ndf: int = 64
    kernel_size: int = 4
    n_dropout: int = 3
    dropout: float = 0.5
    norm: str = "instance"
    conditional_d: bool = False
    d_head: str = "linear"
    n_layers_d: int = 3
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_l1: float = 10.0
    mu_ms: float = 10.0
    eval_every: int = 0
    select_from: float = 0.0
    ema_kimg: float = 0.0
    ema_rampup: float = 0.05
    upsample: str = "transpose"


class Pix2PixTrainer:
    """Pix2Pix G and D with the losses of Eq. (5); implements :class:`histolib.train.gan.GanTask`.

    Batches are ``(condition (B, C, H, W), image (B, 3, H, W)[, partner (B, C, H, W)])`` in [-1, 1]
    (:class:`PairBatches`). The step is :func:`train_step`; dropout masks come from the step's
    generator, so a resumed run repeats an uninterrupted one.

    Checkpoint choice. The paper picked "twelve epochs with appealing results" by eye; here, when
    ``options.eval_every > 0`` and an ``evaluator`` is given, every ``eval_every`` steps (and at
    ``steps``) ``evaluator(G)`` returns a score to minimise (the study uses KID against the real
    validation patches) and the best generator's weights are kept (``best_state``), with the history
    of scores; evaluations before ``select_from * steps`` are logged but not eligible. They live in
    :meth:`state_dict`, so the driver checkpoints and resumes them. With ``options.ema_kimg > 0`` the
    evaluated, chosen and sampled generator is the weight average ``G_ema`` (:attr:`sampling_G`).

    Args:
        options: :class:`Pix2PixOptions`.
        seed: seed of the initial weights.
        evaluator: ``evaluator(G) -> float`` (lower is better), or ``None``.
        steps: the run's total steps (to evaluate at the end as well).
    """

    def __init__(self, options: Pix2PixOptions, seed: int = 0, evaluator=None, steps: int | None = None):
        self.opt = o = options
        g = torch.Generator().manual_seed(seed)
        self.G = Pix2PixGenerator(o.in_channels, 3, o.image_size, o.ngf, o.kernel_size, o.n_dropout, o.dropout,
                                  o.norm, generator=g, upsample=o.upsample)
        self.D = Pix2PixDiscriminator(3, o.in_channels if o.conditional_d else 0, o.image_size, o.ndf,
                                      o.n_layers_d, o.kernel_size, o.norm, o.d_head, generator=g)
        opt_g, opt_d = make_optimizers(self.G, self.D, o.lr, (o.beta1, o.beta2))
        self.modules = {"G": self.G, "D": self.D}
        if o.ema_kimg < 0 or o.ema_rampup < 0:
            raise ParamError(f"Pix2PixOptions.ema_kimg and ema_rampup must be >= 0, got {o.ema_kimg}, {o.ema_rampup}")
        self.G_ema = None
        if o.ema_kimg > 0:
            self.G_ema = copy.deepcopy(self.G).requires_grad_(False)
            self.modules["G_ema"] = self.G_ema
        self.optimizers = {"G": opt_g, "D": opt_d}
        self.weights = Pix2PixLossWeights(o.lambda_l1, o.mu_ms)
        self.evaluator, self.steps = evaluator, steps
        self.best_step, self.best_score, self.best_state = -1, float("inf"), None
        self.history: list[dict] = []

    @property
    def sampling_G(self) -> Pix2PixGenerator:
        """The generator that is evaluated, chosen and sampled: ``G_ema`` with ``ema_kimg > 0``, else ``G``."""
        return self.G_ema if self.G_ema is not None else self.G

    def _should_evaluate(self, done: int) -> bool:
        return (self.evaluator is not None and self.opt.eval_every > 0
                and (done % self.opt.eval_every == 0 or done == self.steps))

    def evaluate(self, done: int) -> float:
        """Score the current generator and keep it if it is the best so far."""
        G = self.sampling_G
        score = float(self.evaluator(G))
        self.history.append({"step": done, "score": score})
        eligible = done >= self.opt.select_from * (self.steps or 0)
        if eligible and score < self.best_score:
            self.best_step, self.best_score = done, score
            self.best_state = {k: v.detach().clone() for k, v in G.state_dict().items()}
        return score

    def train_step(self, batch, step: int, generator: torch.Generator) -> dict[str, float]:
        self.G.train()
        self.D.train()
        cond, real = batch[0], batch[1]
        partner = batch[2] if len(batch) > 2 else None
        stats = train_step(self.G, self.D, self.optimizers["G"], self.optimizers["D"], cond, real,
                           self.weights, partner, generator)
        if self.G_ema is not None:
            b = cond.shape[0]
            ema_update(self.G_ema, self.G, ema_beta(b, self.opt.ema_kimg, (step + 1) * b, self.opt.ema_rampup))
        if self._should_evaluate(step + 1):
            stats["val_score"] = self.evaluate(step + 1)
        return stats

    @torch.no_grad()
    def sample(self, batch) -> list[torch.Tensor]:
        """Grid rows for a fixed batch: each condition channel (mask, structure map), the real
        image, and two outputs with different test-time dropout (rows 4-5 differ only by dropout)."""
        cond, real = batch[0], batch[1]
        fakes = [synthesize(self.sampling_G, cond, seed=s, batch_size=len(cond), as_uint8=False) for s in (0, 1)]
        return [*(cond[:, c:c + 1] for c in range(cond.shape[1])), real, *fakes]

    def best_generator_state(self) -> dict:
        """Weights of the validation-chosen generator (the current :attr:`sampling_G` if none was evaluated)."""
        return self.best_state if self.best_state is not None else self.sampling_G.state_dict()

    def state_dict(self) -> dict:
        return {"best_step": self.best_step, "best_score": self.best_score, "best_state": self.best_state,
                "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.best_step = state.get("best_step", -1)
        self.best_score = state.get("best_score", float("inf"))
        self.best_state = state.get("best_state")
        self.history = list(state.get("history", []))
