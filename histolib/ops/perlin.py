"""Perlin-noise prior maps of nuclei density, fitted by gradient to blurred real masks.

Basla et al. (Sec. 4) model each prior ``P_n`` of Algorithm 1 (``GETPRIOR``) as a realisation of
Perlin noise (Perlin 2002, "Improving noise") whose parameters "maximise the similarity with
blurred masks from training data". Their modules for this (``perlin_torch``, ``optimizator``)
were never published; this module re-derives them.

Decisions (the re-derivation):

* Noise: classic 2-D gradient noise. Random unit gradients on an integer lattice, a per-sample
  random lattice phase, the quintic fade ``6t^5 - 15t^4 + 10t^3``; the value at a pixel is a
  smooth function of its lattice coordinate, so it is differentiable with respect to the
  lattice *frequency* as well. Fractal sum of ``octaves`` (4, as the reference) with
  frequencies ``f, 2f, 4f, ...`` and amplitudes ``1, g, g^2, ...`` (persistence ``g``),
  normalised to unit variance of the weights.
* Prior: ``P = sigmoid(gain * fractal + bias)`` in ``(0, 1)``, one independent realisation per
  generated mask.
* "Similarity with blurred masks": a prior is a *random field*, so it is fitted to the
  distribution of the blurred masks (the masks convolved with a Gaussian, i.e. local nuclear
  fraction), not to one mask pixel by pixel. The loss matches (1) the marginal distribution,
  as the mean squared difference of 33 quantiles, and (2) the spatial scale, as the squared
  difference of log radially averaged power spectra over the frequencies where the target has
  power (within 4 decades of its peak). Adam on ``(log cell size, logit persistence,
  log gain, bias)``, fresh noise every step (a stochastic gradient of the expected loss).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(height: int, width: int, frequency: float | torch.Tensor, *, batch: int = 1,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """2-D Perlin gradient noise.

    Args:
        height, width: output size in pixels.
        frequency: lattice cells per pixel (``1 / cell size``), ``> 0``; a tensor with
            ``requires_grad`` receives gradients.
        batch: number of independent realisations.
        generator: source of the random gradients and lattice phases.

    Returns:
        ``(batch, height, width)`` float32, roughly in ``[-1, 1]`` (scaled by ``sqrt 2``), zero
        on lattice nodes.
    """
    f = torch.as_tensor(frequency, dtype=torch.float32)
    f_val = float(f.detach())
    if not f_val > 0:
        raise ValueError(f"frequency must be > 0, got {f_val}")
    gh, gw = int(math.floor(height * f_val)) + 3, int(math.floor(width * f_val)) + 3
    angle = torch.rand(batch, gh, gw, generator=generator) * (2 * math.pi)
    grad_y, grad_x = torch.sin(angle), torch.cos(angle)
    phase = torch.rand(batch, 2, generator=generator)
    y = (torch.arange(height, dtype=torch.float32) + 0.5)[None] * f + phase[:, :1]  # (B, H)
    x = (torch.arange(width, dtype=torch.float32) + 0.5)[None] * f + phase[:, 1:]  # (B, W)
    y0, x0 = torch.floor(y.detach()), torch.floor(x.detach())
    fy, fx = (y - y0)[:, :, None], (x - x0)[:, None, :]  # (B, H, 1), (B, 1, W)
    iy, ix = y0.long()[:, :, None], x0.long()[:, None, :]
    b = torch.arange(batch)[:, None, None]

    def corner(dy: int, dx: int) -> torch.Tensor:
        return grad_y[b, iy + dy, ix + dx] * (fy - dy) + grad_x[b, iy + dy, ix + dx] * (fx - dx)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0) + u * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + u * (corner(1, 1) - corner(1, 0))
    return math.sqrt(2.0) * (top + v * (bottom - top))


def fractal_noise(height: int, width: int, frequency: float | torch.Tensor,
                  persistence: float | torch.Tensor, *, octaves: int = 4, lacunarity: float = 2.0,
                  batch: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sum of ``octaves`` Perlin layers: ``sum_o g^o n_o(f l^o) / sqrt(sum_o g^(2o))``.

    Args:
        frequency: ``f`` of the coarsest octave (cells per pixel).
        persistence: ``g``, amplitude ratio of consecutive octaves, in ``(0, 1]`` typically.
        octaves, lacunarity: number of layers and frequency ratio ``l``.

    Returns:
        ``(batch, height, width)`` float32.
    """
    if octaves < 1:
        raise ValueError(f"octaves must be >= 1, got {octaves}")
    f = torch.as_tensor(frequency, dtype=torch.float32)
    g = torch.as_tensor(persistence, dtype=torch.float32)
    total = 0.0
    norm = 0.0
    for o in range(octaves):
        amp = g ** o
        total = total + amp * perlin_noise(height, width, f * lacunarity ** o, batch=batch,
                                           generator=generator)
        norm = norm + amp * amp
    return total / torch.sqrt(norm)


@dataclass(frozen=True)
class PerlinParams:
    """Parameters of the prior ``P = sigmoid(gain * fractal_noise(1 / cell, persistence) + bias)``.

    Attributes:
        cell: lattice cell size of the coarsest octave, in pixels.
        persistence: amplitude ratio of consecutive octaves.
        gain, bias: contrast and offset before the sigmoid.
        octaves, lacunarity: fixed structure of the fractal sum.
    """

    cell: float
    persistence: float
    gain: float
    bias: float
    octaves: int = 4
    lacunarity: float = 2.0

    def to_dict(self) -> dict:
        return asdict(self)


def perlin_prior(params: PerlinParams, n: int, height: int, width: int, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` prior maps ``P_n`` (``GETPRIOR`` of Algorithm 1): ``(n, height, width)`` in ``(0, 1)``."""
    noise = fractal_noise(height, width, 1.0 / params.cell, params.persistence,
                          octaves=params.octaves, lacunarity=params.lacunarity, batch=n,
                          generator=generator)
    return torch.sigmoid(params.gain * noise + params.bias)


def density_target(masks: np.ndarray, sigma: float) -> np.ndarray:
    """Blurred masks, the fitting target: each foreground mask convolved with a Gaussian.

    Args:
        masks: ``(N, H, W)`` or ``(H, W)``; non-zero = nucleus (instance maps work as they are).
        sigma: Gaussian standard deviation in pixels (reflecting borders).

    Returns:
        ``(N, H, W)`` float32 in ``[0, 1]``: the local fraction of nuclear pixels.
    """
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) or (H, W), got {m.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    fg = (m != 0).astype(np.float32)
    return ndimage.gaussian_filter(fg, sigma=(0, sigma, sigma), mode="reflect").astype(np.float32)


# --------------------------------------------------------------------------------------------
# Field statistics and fitting
# --------------------------------------------------------------------------------------------

_QUANTILES = torch.linspace(0.02, 0.98, 33)


class _Spectrum:
    """Radially averaged power spectrum on fixed log-spaced frequency bins for one image size."""

    def __init__(self, height: int, width: int, n_bins: int = 24):
        fy = torch.fft.fftfreq(height)[:, None]
        fx = torch.fft.rfftfreq(width)[None, :]
        radius = torch.sqrt(fy ** 2 + fx ** 2)
        edges = torch.logspace(math.log10(1.0 / max(height, width)), math.log10(0.5), n_bins + 1)
        self.index = torch.bucketize(radius.flatten(), edges) - 1  # -1 = DC and below
        valid = (self.index >= 0) & (self.index < n_bins)
        self.index = torch.where(valid, self.index, torch.full_like(self.index, n_bins))
        self.count = torch.bincount(self.index, minlength=n_bins + 1)[:n_bins].float()
        self.n_bins = n_bins

    def __call__(self, fields: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` -> ``(n_bins,)`` log10 mean power (batch-averaged), empty bins NaN."""
        x = fields - fields.mean(dim=(1, 2), keepdim=True)
        power = torch.fft.rfft2(x).abs().pow(2).mean(dim=0).flatten() / fields[0].numel()
        sums = torch.zeros(self.n_bins + 1, dtype=power.dtype).index_add(0, self.index, power)
        mean = sums[:self.n_bins] / self.count.clamp(min=1)
        mean = torch.where(self.count > 0, mean, torch.full_like(mean, float("nan")))
        return torch.log10(mean + 1e-12)


@dataclass(frozen=True)
class FieldStats:
    """Targets of the fit: ``quantiles (33,)`` of the values and ``log_spectrum (n_bins,)``."""

    quantiles: torch.Tensor
    log_spectrum: torch.Tensor
    spectrum_mask: torch.Tensor


def field_stats(fields: np.ndarray | torch.Tensor, spectrum: _Spectrum | None = None) -> FieldStats:
    """Quantiles and log power spectrum of a stack ``(N, H, W)`` of fields (e.g. blurred masks)."""
    t = torch.as_tensor(np.asarray(fields, dtype=np.float32))
    spectrum = spectrum or _Spectrum(t.shape[1], t.shape[2])
    with torch.no_grad():
        q = torch.quantile(_subsample(t.flatten()), _QUANTILES)
        log_s = spectrum(t)
    mask = torch.isfinite(log_s) & (log_s >= torch.nan_to_num(log_s, nan=-99).max() - 4.0)
    return FieldStats(quantiles=q, log_spectrum=log_s, spectrum_mask=mask)


def _subsample(values: torch.Tensor, limit: int = 1 << 20) -> torch.Tensor:
    if values.numel() <= limit:
        return values
    step = -(-values.numel() // limit)
    return values[::step]


def stats_loss(fields: torch.Tensor, target: FieldStats, spectrum: _Spectrum,
               spectrum_weight: float = 1.0) -> torch.Tensor:
    """``mean (q(P) - q(T))^2 / var(q(T)) + w * mean_bins (log S_P - log S_T)^2``.

    The quantile term is scaled by the spread of the target quantiles so both terms are O(1).
    """
    q = torch.quantile(_subsample(fields.flatten()), _QUANTILES)
    scale = target.quantiles.var().clamp(min=1e-8)
    marginal = ((q - target.quantiles) ** 2).mean() / scale
    log_s = spectrum(fields)
    m = target.spectrum_mask
    spectral = ((log_s[m] - target.log_spectrum[m]) ** 2).mean()
    return marginal + spectrum_weight * spectral


def fit_perlin_prior(targets: np.ndarray, *, octaves: int = 4, steps: int = 300, lr: float = 0.05,
                     batch: int = 8, spectrum_weight: float = 1.0, init: PerlinParams | None = None,
                     generator: torch.Generator | None = None) -> tuple[PerlinParams, list[float]]:
    """Fit :class:`PerlinParams` so prior maps look like ``targets`` (see the module docstring).

    Args:
        targets: ``(N, H, W)`` blurred masks in ``[0, 1]`` (:func:`density_target`); the priors
            are fitted at the same ``(H, W)``.
        octaves: fixed number of octaves.
        steps, lr, batch: Adam steps, learning rate, prior maps drawn per step.
        spectrum_weight: weight of the spectral term of :func:`stats_loss`.
        init: starting point; default a cell of a quarter of the image, persistence 0.5 and
            gain/bias from the targets' mean.
        generator: noise source (the fit is deterministic for a seeded generator).

    Returns:
        ``(params, losses)``, the loss of every step.
    """
    t = np.asarray(targets, dtype=np.float32)
    if t.ndim != 3 or t.size == 0:
        raise ValueError(f"targets must be a non-empty (N, H, W) array, got {t.shape}")
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got {steps}, {batch}")
    _, h, w = t.shape
    spectrum = _Spectrum(h, w)
    target = field_stats(t, spectrum)
    if init is None:
        mean = float(np.clip(t.mean(), 1e-3, 1 - 1e-3))
        init = PerlinParams(cell=max(h, w) / 4.0, persistence=0.5, gain=2.0,
                            bias=math.log(mean / (1 - mean)), octaves=octaves)
    log_cell = torch.tensor(math.log(init.cell), requires_grad=True)
    logit_g = torch.tensor(math.log(init.persistence / (1 - init.persistence)), requires_grad=True)
    log_gain = torch.tensor(math.log(max(init.gain, 1e-3)), requires_grad=True)
    bias = torch.tensor(float(init.bias), requires_grad=True)
    opt = torch.optim.Adam([log_cell, logit_g, log_gain, bias], lr=lr)
    losses = []
    for _ in range(steps):
        noise = fractal_noise(h, w, torch.exp(-log_cell), torch.sigmoid(logit_g), octaves=octaves,
                              batch=batch, generator=generator)
        fields = torch.sigmoid(torch.exp(log_gain) * noise + bias)
        loss = stats_loss(fields, target, spectrum, spectrum_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # a cell between 2 px and 4x the image keeps the lattice sane
            log_cell.clamp_(math.log(2.0), math.log(4.0 * max(h, w)))
        losses.append(float(loss.detach()))
    with torch.no_grad():
        params = PerlinParams(cell=float(torch.exp(log_cell)), persistence=float(torch.sigmoid(logit_g)),
                              gain=float(torch.exp(log_gain)), bias=float(bias), octaves=octaves)
    return params, losses
