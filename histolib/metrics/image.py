"""Image-quality and diversity metrics of synthetic images (DESIGN.md section 6).

* :func:`kid`: Kernel Inception Distance (Binkowski et al., ICLR 2018) on feature vectors of any
  backbone (see ``histolib.train.features``; the backbone used is recorded with the number).
* :func:`mean_pairwise_distance`, :func:`diversity`: mode-collapse scores, the mean pairwise
  feature distance between outputs for different conditions and for different noise with the same
  condition.
* :func:`ssim`, :func:`psnr`, :func:`mae`, :func:`image_similarity`: paired full-reference scores
  via scikit-image with pinned settings.
* :func:`high_frequency_energy`: mean power above a radial frequency (speckle, grain).

Every function takes NumPy arrays (or anything ``np.asarray`` accepts) and returns Python floats.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# SSIM settings of Wang et al. (2004), pinned so numbers are comparable across runs and papers:
# 11x11 Gaussian window (sigma 1.5), population covariance, K1 = 0.01, K2 = 0.03.
SSIM_SETTINGS = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False,
                 "K1": 0.01, "K2": 0.03, "data_range": 255}


def _features(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) feature array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def mmd2_unbiased(x, y, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased squared MMD with the polynomial kernel ``k(a, b) = (a.b / d + coef0) ** degree``.

    ``MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j)
    - 2/(mn) sum_{i,j} k(x_i, y_j)``  (Binkowski et al. 2018, eq. 2 with their kernel).

    Args:
        x: ``(m, d)`` features, ``m >= 2``.
        y: ``(n, d)`` features, ``n >= 2``.

    Returns:
        The estimate; unbiased, so it can be slightly negative when the two sets match.
    """
    x, y = _features(x, "x"), _features(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y have different feature sizes: {x.shape[1]} vs {y.shape[1]}")
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 samples per set, got {m} and {n}")
    d = x.shape[1]
    kxx = (x @ x.T / d + coef0) ** degree
    kyy = (y @ y.T / d + coef0) ** degree
    kxy = (x @ y.T / d + coef0) ** degree
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid(real, fake, n_subsets: int = 100, subset_size: int = 1000,
        rng: np.random.Generator | int = 0) -> dict:
    """Kernel Inception Distance: mean and std of :func:`mmd2_unbiased` over random subsets.

    As in the StyleGAN2-ADA metric: ``n_subsets`` times, draw ``s = min(subset_size, N_real,
    N_fake)`` samples without replacement from each set and compute the unbiased MMD^2 with the
    cubic polynomial kernel. At small ``N`` KID is preferred over FID because it is unbiased for
    independent sets (subsets of one set compared with itself share samples, which pulls the
    estimate below 0).

    Args:
        real: ``(N_real, D)`` features of real images.
        fake: ``(N_fake, D)`` features of generated images.
        n_subsets: number of subsets (100).
        subset_size: samples per subset (1000, capped by the set sizes).
        rng: NumPy generator or seed for the subsets.

    Returns:
        ``{"kid": mean, "kid_std": std over subsets, "subset_size": s, "n_subsets": n_subsets}``.

    Raises:
        ValueError: fewer than 2 samples in a set, mismatched feature sizes, NaNs.
    """
    real, fake = _features(real, "real"), _features(fake, "fake")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    s = min(subset_size, len(real), len(fake))
    if s < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(real)} real and {len(fake)} fake")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    vals = np.array([mmd2_unbiased(real[rng.choice(len(real), s, replace=False)],
                                   fake[rng.choice(len(fake), s, replace=False)]) for _ in range(n_subsets)])
    return {"kid": float(vals.mean()), "kid_std": float(vals.std()), "subset_size": int(s),
            "n_subsets": int(n_subsets)}


def mean_pairwise_distance(feats, metric: str = "euclidean") -> float:
    """Mean distance over all unordered pairs ``i < j`` of rows of ``feats``.

    Args:
        feats: ``(N, D)`` features.
        metric: ``"euclidean"`` (``||a - b||_2``) or ``"cosine"`` (``1 - a.b / (|a||b|)``).

    Returns:
        The mean distance; ``nan`` when ``N < 2``.
    """
    f = _features(feats, "feats")
    n = len(f)
    if n < 2:
        return float("nan")
    if metric == "euclidean":
        sq = (f * f).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
        dist = np.sqrt(d2)
    elif metric == "cosine":
        unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        dist = 1.0 - unit @ unit.T
    else:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    iu = np.triu_indices(n, k=1)
    return float(dist[iu].mean())


def diversity(feats, metric: str = "euclidean") -> dict:
    """Mode-collapse scores of a conditional generator.

    Args:
        feats: ``(C, K, D)``: features of ``K`` outputs (different noise) for each of ``C``
            conditions (label maps).
        metric: see :func:`mean_pairwise_distance`.

    Returns:
        ``{"across_conditions": mean pairwise distance between outputs of different conditions
        (first noise of each), "within_condition": mean over conditions of the mean pairwise
        distance between the ``K`` noises (nan if K < 2)}``. A generator that ignores its noise has
        ``within_condition`` 0.
    """
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 3:
        raise ValueError(f"feats must be (conditions, noises, D), got shape {f.shape}")
    c, k, _ = f.shape
    across = mean_pairwise_distance(f[:, 0], metric) if c >= 2 else float("nan")
    within = float(np.mean([mean_pairwise_distance(f[i], metric) for i in range(c)])) if k >= 2 and c else float("nan")
    return {"across_conditions": across, "within_condition": within}


def _image_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"images must be uint8 in [0, 255], got {a.dtype} and {b.dtype}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"images must be (H, W, 3) or (N, H, W, 3), got {a.shape}")
    if min(a.shape[1:3]) < 11:
        raise ValueError(f"images must be at least 11x11 for the pinned 11x11 SSIM window, got {a.shape[1:3]}")
    return a, b


def ssim(a, b) -> float:
    """Mean SSIM (Wang et al. 2004) over image pairs, RGB channels averaged; settings
    :data:`SSIM_SETTINGS`. ``a``, ``b``: ``(N, H, W, 3)`` or ``(H, W, 3)`` uint8."""
    a, b = _image_pairs(a, b)
    return float(np.mean([structural_similarity(x, y, channel_axis=-1, **SSIM_SETTINGS)
                          for x, y in zip(a, b, strict=True)]))


def psnr(a, b) -> float:
    """Mean PSNR in dB over image pairs, ``10 log10(255^2 / MSE)`` per pair (inf for identical pairs)."""
    a, b = _image_pairs(a, b)
    with np.errstate(divide="ignore"):  # identical pairs: MSE 0 -> inf dB, on purpose
        return float(np.mean([peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b, strict=True)]))


def mae(a, b) -> float:
    """Mean absolute error in ``[0, 1]``: ``mean |a - b| / 255`` over all pixels and channels."""
    a, b = _image_pairs(a, b)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0)


def image_similarity(a, b) -> dict:
    """``{"ssim", "psnr", "mae"}`` of paired images (see the three functions)."""
    return {"ssim": ssim(a, b), "psnr": psnr(a, b), "mae": mae(a, b)}


def high_frequency_energy(images, cutoff: float = 0.25) -> float:
    """Mean power of an image set above a radial frequency: speckle and grain show here.

    For each image and channel ``x`` (scaled to ``[0, 1]`` when uint8, its mean removed), with
    ``X = FFT(x)`` over the 2D frequency grid ``f = (f_y, f_x)`` in cycles per pixel and ``n = H W``,

        HF = (1 / n^2) sum_{|f| > cutoff} |X(f)|^2  =  mean_p x_hp(p)^2

    (Parseval): the mean square of the image's high-pass part ``x_hp = IFFT(X 1[|f| > cutoff])``,
    averaged over images and channels. Pixel noise raises it, blur lowers it. Compare a synthetic set
    with real patches of the same size as ``high_frequency_energy(fake) / high_frequency_energy(real)``
    (1 = as much fine detail as real). A share of the total power would hide noise that comes with
    more contrast overall, so the power is absolute.

    Args:
        images: ``(N, H, W, C)`` or ``(N, H, W)`` array; uint8 is divided by 255, other types used as is.
        cutoff: radial frequency in cycles per pixel, in ``(0, 0.5)``; 0.25 = wavelengths under 4 px.

    Returns:
        The mean high-frequency power (in the input's units squared); 0 for constant images.

    Raises:
        ValueError: an empty set, a wrong shape or a cutoff outside ``(0, 0.5)``.
    """
    arr = np.asarray(images)
    x = arr.astype(np.float64) / (255.0 if arr.dtype == np.uint8 else 1.0)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or len(x) == 0 or min(x.shape[1:3]) < 4:
        raise ValueError(f"images must be a non-empty (N, H, W[, C]) stack of at least 4x4, got {x.shape}")
    if not 0.0 < cutoff < 0.5:
        raise ValueError(f"cutoff must lie in (0, 0.5) cycles per pixel, got {cutoff}")
    n = x.shape[1] * x.shape[2]
    x = x - x.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2
    fy = np.fft.fftfreq(x.shape[1])[:, None]
    fx = np.fft.fftfreq(x.shape[2])[None, :]
    high = (np.sqrt(fy ** 2 + fx ** 2) > cutoff)[None, :, :, None]
    return float((power * high).sum(axis=(1, 2)).mean() / n ** 2)
