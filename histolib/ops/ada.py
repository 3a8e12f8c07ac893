"""Adaptive discriminator augmentation (ADA; Karras et al., NeurIPS 2020) for (label map, image) pairs.

Seed 000 (section II-B, "Training and synthesis") trains SPADE with ADA and adds the grid elastic
deformations of its section II-A to the augmentations. Every discriminator input, real and fake,
goes through :class:`AugmentPipe` with probability ``p``; :class:`AdaController` moves ``p`` with
the sign of the discriminator's output on reals (ADA's overfitting heuristic ``r_t``).

The seed's own augmentation set is :data:`PAPER_OPS`: rotations (by 90 degrees and arbitrary),
flips and the grid deformation, no colour operation. :data:`BGC_OPS` is StyleGAN2-ADA's ``bgc``
pipeline with the elastic deformation added. The pipeline follows StyleGAN2-ADA's ``bgc`` order,
each enabled transformation applied to a sample with probability ``p * multiplier`` (multiplier 0
disables it):

* pixel blitting: x-flip, 90-degree rotations, integer translation (up to 0.125 of the size);
* general geometric: isotropic scaling (log2-normal, sd 0.2), rotation (uniform, applied before and
  after the anisotropic scaling with probability ``1 - sqrt(1 - p)`` each), anisotropic scaling
  (log2-normal, sd 0.2), fractional translation (normal, sd 0.125 of the size);
* the seed's addition: an elastic grid deformation (``points x points`` control points with
  normal displacements of sd ``elastic_sigma x size``; 20 px at 256 px in the seed);
* colour: brightness (additive, sd 0.2), contrast (log2-normal, sd 0.5), luma flip, hue rotation
  (uniform in ``[-pi, pi]``), saturation (log2-normal, sd 1).

The label map follows exactly the same geometry, sampled by nearest neighbour (so one-hot maps stay
one-hot and class indices stay in their set); colour transformations touch the image only.

Decisions and differences from the reference code:

* All geometric transformations are composed into one inverse matrix per sample and applied with a
  single ``grid_sample`` (bilinear, reflection padding) instead of ADA's 2x-upsampled wavelet
  resampling: cheaper, and at the probabilities ADA settles at the difference is a slight blur of
  the augmented samples, seen by the discriminator equally for reals and fakes.
* The elastic displacement field is the bicubic interpolation (``align_corners=True``) of the
  control-point displacements over the image, added to the affine sampling positions; the seed's
  elasticdeform uses a cubic B-spline through the same control grid.
* :meth:`AugmentPipe.sample` and :meth:`AugmentPipe.apply` are separate, so a training step can
  apply the same draw to a fake pair and to the real pair of the same label map (the SPADE
  feature-matching loss compares discriminator features of the two).
* ``p`` is clipped to ``[0, 1]`` (the reference only clips at 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "elastic")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
OPS = GEOMETRIC + COLOUR
#: Seed 000's own set (section II-B): "rotations, flips and spatial deformations" -- no colour ops.
PAPER_OPS = ("xflip", "rotate90", "rotate", "elastic")
#: StyleGAN2-ADA's ``bgc`` pipeline plus the seed's elastic deformation (every op of :data:`OPS`).
BGC_OPS = OPS

_LUMA = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3.0)


# --------------------------------------------------------------------------------------------------
# Batched homogeneous matrices
# --------------------------------------------------------------------------------------------------

def _eye(n: int, b: int) -> torch.Tensor:
    return torch.eye(n).expand(b, n, n).clone()


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(3, tx.shape[0])
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(3, sx.shape[0])
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(3, theta.shape[0])
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _translate3d(t: torch.Tensor) -> torch.Tensor:
    m = _eye(4, t.shape[0])
    m[:, 0, 3] = m[:, 1, 3] = m[:, 2, 3] = t
    return m


def _scale3d(s: torch.Tensor) -> torch.Tensor:
    m = _eye(4, s.shape[0])
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def _rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` about the unit ``axis`` (Rodrigues), as 4x4 homogeneous matrices."""
    x, y, z = axis[0], axis[1], axis[2]
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    m = _eye(4, theta.shape[0])
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c
    return m


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------

@dataclass
class AugmentParams:
    """One draw of the pipeline for a batch.

    Attributes:
        geom: ``(B, 3, 3)`` inverse geometric matrices in centred pixel coordinates (output pixel
            -> input pixel).
        elastic: ``(B, 2, P, P)`` control-point displacements in pixels (x, y), zero where the
            elastic deformation is off for that sample.
        colour: ``(B, 4, 4)`` colour matrices acting on homogeneous RGB in ``[-1, 1]``.
        geom_on, colour_on: ``(B,)`` bool, samples that any geometric / colour op touched.
    """

    geom: torch.Tensor
    elastic: torch.Tensor
    colour: torch.Tensor
    geom_on: torch.Tensor
    colour_on: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.geom.shape[0]

    def repeat(self, n: int) -> AugmentParams:
        """The same draw for ``n`` stacked copies of the batch (``torch.cat`` order)."""
        return AugmentParams(*(t.repeat(n, *([1] * (t.dim() - 1))) for t in
                               (self.geom, self.elastic, self.colour, self.geom_on, self.colour_on)))


class AugmentPipe:
    """StyleGAN2-ADA's ``bgc`` augmentations plus elastic deformation, for ``(image, label)`` pairs.

    Args:
        xflip, rotate90, xint, scale, rotate, aniso, xfrac, elastic, brightness, contrast,
            lumaflip, hue, saturation: probability multipliers (1 = ADA's ``bgc``; 0 = off).
        xint_max: integer translation range, fraction of the size (0.125).
        scale_std, aniso_std: log2 standard deviation of the scalings (0.2).
        rotate_max: rotation range, fraction of pi (1).
        xfrac_std: fractional translation sd, fraction of the size (0.125).
        brightness_std (0.2), contrast_std (log2, 0.5), hue_max (fraction of pi, 1),
            saturation_std (log2, 1): colour strengths.
        elastic_sigma: sd of the control-point displacements, fraction of the size (20 / 256:
            the seed's 20 px at 256 px).
        elastic_points: control points per side (3, the seed's 3x3 grid).

    Example::

        pipe = AugmentPipe()
        params = pipe.sample(batch_size=8, p=0.3, generator=g)
        image_aug, label_aug = pipe.apply(image, label, params)
    """

    def __init__(self, xflip: float = 1, rotate90: float = 1, xint: float = 1, scale: float = 1,
                 rotate: float = 1, aniso: float = 1, xfrac: float = 1, elastic: float = 1,
                 brightness: float = 1, contrast: float = 1, lumaflip: float = 1, hue: float = 1,
                 saturation: float = 1, *, xint_max: float = 0.125, scale_std: float = 0.2,
                 rotate_max: float = 1.0, aniso_std: float = 0.2, xfrac_std: float = 0.125,
                 brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1.0,
                 saturation_std: float = 1.0, elastic_sigma: float = 20 / 256, elastic_points: int = 3):
        self.strength = {"xflip": xflip, "rotate90": rotate90, "xint": xint, "scale": scale,
                         "rotate": rotate, "aniso": aniso, "xfrac": xfrac, "elastic": elastic,
                         "brightness": brightness, "contrast": contrast, "lumaflip": lumaflip,
                         "hue": hue, "saturation": saturation}
        for name, value in self.strength.items():
            if not value >= 0:
                raise ValueError(f"AugmentPipe: multiplier {name!r} must be >= 0, got {value!r}")
        if elastic_points < 2:
            raise ValueError(f"elastic_points must be >= 2, got {elastic_points}")
        self.xint_max, self.scale_std, self.rotate_max = xint_max, scale_std, rotate_max
        self.aniso_std, self.xfrac_std = aniso_std, xfrac_std
        self.brightness_std, self.contrast_std = brightness_std, contrast_std
        self.hue_max, self.saturation_std = hue_max, saturation_std
        self.elastic_sigma, self.elastic_points = elastic_sigma, elastic_points

    @classmethod
    def from_ops(cls, ops: list[str] | tuple[str, ...], **kwargs) -> AugmentPipe:
        """A pipe with exactly the named transformations on (multiplier 1), e.g.
        ``AugmentPipe.from_ops(["xflip", "rotate90", "rotate", "elastic"])``.

        Raises:
            ValueError: an unknown name (listing the known ones).
        """
        unknown = [o for o in ops if o not in OPS]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; known: {list(OPS)}")
        return cls(**{name: float(name in ops) for name in OPS}, **kwargs)

    def __repr__(self) -> str:
        on = [k for k, v in self.strength.items() if v > 0]
        return f"AugmentPipe({', '.join(on)})"

    # ----------------------------------------------------------------------------------------------
    def sample(self, batch_size: int, p: float, height: int, width: int,
               generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the transformations of one batch.

        Args:
            batch_size: ``B``.
            p: augmentation probability in ``[0, 1]``.
            height, width: image size (translations and elastic displacements scale with it).
            generator: the random stream (CPU).

        Returns:
            :class:`AugmentParams`; with ``p = 0`` every sample is the identity.
        """
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        b, g = batch_size, generator

        def rand(*shape):
            return torch.rand(b, *shape, generator=g)

        def randn(*shape):
            return torch.randn(b, *shape, generator=g)

        def gate(name: str, prob: float | None = None) -> torch.Tensor:
            prob = p * self.strength[name] if prob is None else prob
            return rand() < prob

        s = self.strength
        geom = _eye(3, b)
        geom_on = torch.zeros(b, dtype=torch.bool)
        ident = torch.zeros(b)
        one = torch.ones(b)

        if s["xflip"] > 0:
            on = gate("xflip") & (rand() < 0.5)
            geom = geom @ _scale2d(torch.where(on, -one, one), one)
            geom_on |= on
        if s["rotate90"] > 0:
            k = torch.where(gate("rotate90"), torch.floor(rand() * 4), ident)
            geom = geom @ _rotate2d(-math.pi / 2 * k)
            geom_on |= k > 0
        if s["xint"] > 0:
            on = gate("xint")
            t = (rand(2) * 2 - 1) * self.xint_max
            t = torch.where(on[:, None], t, 0.0)
            geom = geom @ _translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
            geom_on |= on
        if s["scale"] > 0:
            on = gate("scale")
            sc = torch.where(on, torch.exp2(randn() * self.scale_std), one)
            geom = geom @ _scale2d(1 / sc, 1 / sc)
            geom_on |= on
        p_rot = 1 - math.sqrt(max(1 - p * s["rotate"], 0.0))
        if s["rotate"] > 0:
            on = gate("rotate", p_rot)
            theta = torch.where(on, (rand() * 2 - 1) * math.pi * self.rotate_max, ident)
            geom = geom @ _rotate2d(-theta)
            geom_on |= on
        if s["aniso"] > 0:
            on = gate("aniso")
            sc = torch.where(on, torch.exp2(randn() * self.aniso_std), one)
            geom = geom @ _scale2d(1 / sc, sc)
            geom_on |= on
        if s["rotate"] > 0:
            on = gate("rotate", p_rot)
            theta = torch.where(on, (rand() * 2 - 1) * math.pi * self.rotate_max, ident)
            geom = geom @ _rotate2d(-theta)
            geom_on |= on
        if s["xfrac"] > 0:
            on = gate("xfrac")
            t = torch.where(on[:, None], randn(2) * self.xfrac_std, 0.0)
            geom = geom @ _translate2d(-t[:, 0] * width, -t[:, 1] * height)
            geom_on |= on
        n = self.elastic_points
        elastic = torch.zeros(b, 2, n, n)
        if s["elastic"] > 0:
            on = gate("elastic")
            size = torch.tensor([width, height], dtype=torch.float32)[None, :, None, None]
            elastic = torch.where(on[:, None, None, None], randn(2, n, n) * self.elastic_sigma * size, 0.0)
            geom_on |= on

        colour = _eye(4, b)
        colour_on = torch.zeros(b, dtype=torch.bool)
        if s["brightness"] > 0:
            on = gate("brightness")
            colour = _translate3d(torch.where(on, randn() * self.brightness_std, ident)) @ colour
            colour_on |= on
        if s["contrast"] > 0:
            on = gate("contrast")
            colour = _scale3d(torch.where(on, torch.exp2(randn() * self.contrast_std), one)) @ colour
            colour_on |= on
        v = _LUMA
        vv = torch.outer(v, v)
        if s["lumaflip"] > 0:
            on = gate("lumaflip") & (rand() < 0.5)
            colour = (torch.eye(4) - 2 * vv * on.float()[:, None, None]) @ colour
            colour_on |= on
        if s["hue"] > 0:
            on = gate("hue")
            theta = torch.where(on, (rand() * 2 - 1) * math.pi * self.hue_max, ident)
            colour = _rotate3d(v, theta) @ colour
            colour_on |= on
        if s["saturation"] > 0:
            on = gate("saturation")
            sat = torch.where(on, torch.exp2(randn() * self.saturation_std), one)
            colour = (vv + (torch.eye(4) - vv) * sat[:, None, None]) @ colour
            colour_on |= on
        return AugmentParams(geom, elastic, colour, geom_on, colour_on)

    # ----------------------------------------------------------------------------------------------
    def apply(self, images: torch.Tensor, labels: torch.Tensor | None, params: AugmentParams
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply one draw to a batch.

        Args:
            images: ``(B, C, H, W)`` float in ``[-1, 1]`` (``C = 3`` when colour ops are on);
                gradients flow through.
            labels: ``(B, K, H, W)`` float one-hot map, or ``(B, H, W)`` integer map, or ``None``.
            params: from :meth:`sample` with the same ``B`` (use :meth:`AugmentParams.repeat` for
                stacked copies).

        Returns:
            ``(images, labels)`` of the same shapes and types; untouched samples are returned as is.
        """
        if images.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
        b, c, h, w = images.shape
        if params.batch_size != b:
            raise ValueError(f"params were drawn for batch {params.batch_size}, images have batch {b}")
        if labels is not None and (labels.shape[0] != b or labels.shape[-2:] != images.shape[-2:]):
            raise ValueError(f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}")
        if b == 0:
            return images, labels
        idx = torch.nonzero(params.geom_on).flatten()
        if idx.numel():
            grid = self._grid(params.geom[idx], params.elastic[idx], h, w).to(images.dtype)
            warped = F.grid_sample(images[idx], grid, mode="bilinear", padding_mode="reflection",
                                   align_corners=False)
            images = warped if idx.numel() == b else images.index_copy(0, idx, warped)
            if labels is not None:
                labels = self._warp_labels(labels, idx, grid)
        idx = torch.nonzero(params.colour_on).flatten()
        if idx.numel():
            if c != 3:
                raise ValueError(f"colour augmentations need RGB images, got {c} channels")
            m = params.colour[idx].to(images)
            sub = images[idx]
            flat = sub.reshape(idx.numel(), 3, h * w)
            out = torch.baddbmm(m[:, :3, 3:], m[:, :3, :3], flat).reshape(idx.numel(), 3, h, w)
            images = out if idx.numel() == b else images.index_copy(0, idx, out)
        return images, labels

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None, p: float,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draw and apply in one call (see :meth:`sample` and :meth:`apply`)."""
        params = self.sample(images.shape[0], p, images.shape[-2], images.shape[-1], generator)
        return self.apply(images, labels, params)

    @staticmethod
    def _grid(geom: torch.Tensor, elastic: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n = geom.shape[0]
        # output pixel centres in centred pixel coordinates
        ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
        xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        pts = torch.stack([xx, yy, torch.ones_like(xx)], dim=0).reshape(3, h * w)
        src = (geom @ pts)[:, :2]  # (n, 2, HW) input positions in pixels
        if elastic.abs().amax() > 0:
            disp = F.interpolate(elastic, size=(h, w), mode="bicubic", align_corners=True)
            src = src + disp.reshape(n, 2, h * w)
        scale = torch.tensor([2.0 / w, 2.0 / h])[None, :, None]
        return (src * scale).permute(0, 2, 1).reshape(n, h, w, 2)

    @staticmethod
    def _warp_labels(labels: torch.Tensor, idx: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        integer = not labels.dtype.is_floating_point
        sub = labels[idx]
        sub = sub[:, None].float() if integer else sub
        warped = F.grid_sample(sub, grid.to(sub.dtype), mode="nearest", padding_mode="reflection",
                               align_corners=False)
        if integer:
            warped = warped[:, 0].round().to(labels.dtype)
        warped = warped.to(labels.dtype)
        return warped if idx.numel() == labels.shape[0] else labels.index_copy(0, idx, warped)


# --------------------------------------------------------------------------------------------------
# The p controller
# --------------------------------------------------------------------------------------------------

class AdaController:
    """Adjusts the augmentation probability ``p`` from the overfitting heuristic ``r_t``.

    ``r_t = E[sign(D(x_real))]`` over the last ``interval`` minibatches (for a PatchGAN: over every
    patch logit of every scale); every ``interval`` minibatches (ADA eq. in section 3,
    ``training_loop.py``)::

        p <- clip(p + sign(r_t - target) * (batch_size * interval) / (kimg * 1000), 0, 1)

    so ``p`` can go from 0 to 1 in ``kimg`` thousand real images. ADA uses ``target = 0.6``,
    ``interval = 4``, ``kimg = 500``; short runs need a smaller ``kimg`` for ``p`` to move at all.

    Args:
        target: the ``r_t`` to hold (0.6).
        interval: minibatches between adjustments (4).
        kimg: thousands of images for a full 0 -> 1 sweep of ``p`` (500).
        p: initial probability (0).
    """

    def __init__(self, target: float = 0.6, interval: int = 4, kimg: float = 500.0, p: float = 0.0):
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target must be in [0, 1], got {target}")
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if not kimg > 0:
            raise ValueError(f"kimg must be > 0, got {kimg}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.target, self.interval, self.kimg = target, interval, kimg
        self.p = float(p)
        self.r_t = float("nan")
        self._sign_sum = 0.0
        self._count = 0
        self._batches = 0

    def accumulate(self, real_logits: torch.Tensor | list) -> None:
        """Add the signs of the discriminator's logits on (augmented) reals, any nesting of lists."""
        if isinstance(real_logits, (list, tuple)):
            for x in real_logits:
                self.accumulate(x)
            return
        x = real_logits.detach()
        self._sign_sum += float(torch.sign(x).sum())
        self._count += x.numel()

    def step(self, batch_size: int) -> float:
        """Count one minibatch; adjust ``p`` every ``interval`` of them. Returns the current ``p``."""
        self._batches += 1
        if self._batches % self.interval == 0 and self._count:
            self.r_t = self._sign_sum / self._count
            adjust = math.copysign(1.0, self.r_t - self.target) if self.r_t != self.target else 0.0
            self.p = min(max(self.p + adjust * batch_size * self.interval / (self.kimg * 1000), 0.0), 1.0)
            self._sign_sum, self._count = 0.0, 0
        return self.p

    def state_dict(self) -> dict:
        return {"p": self.p, "r_t": self.r_t, "sign_sum": self._sign_sum, "count": self._count,
                "batches": self._batches}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.r_t = float(state["p"]), float(state["r_t"])
        self._sign_sum, self._count, self._batches = state["sign_sum"], state["count"], state["batches"]
