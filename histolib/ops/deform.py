"""Grid-based random elastic deformation (Ronneberger et al., U-Net, MICCAI 2015), batched in torch.

Seed 000, Sec. II-A: "a 3x3 regular grid of control points, random displacements following a
Gaussian distribution at control points, and cubic spline interpolation of displacements between
control points [...] standard deviation of the displacements [...] 20 [...] symmetric padding along
the edges". The authors' tool is ``elasticdeform.deform_random_grid(X, sigma=20, points=3,
order=[3, 0], mode='reflect')`` (see ``reference/methods.md`` (a)); this module reproduces its
geometry exactly and its resampling up to the choice of cubic kernel, for a whole batch at once.

Geometry (identical to elasticdeform: dense fields agree to 1e-13 px in ``benchmarks/bench_deform.py``):

* control grid: ``P x P`` points spanning the image corner to corner; along an axis of length
  ``n`` control point ``k`` sits at pixel ``k (n - 1) / (P - 1)``;
* control displacements ``u_k ~ N(0, sigma^2)`` independently per axis and point;
* dense field: the interpolating cubic B-spline of the control values, mirror boundary
  (scipy ``spline_filter1d(order=3, mode='mirror')`` then order-3 evaluation at
  ``k = j (P - 1) / (n - 1)``), i.e. ``d = A_y u A_x^T`` with a fixed ``(n, P)`` matrix ``A``;
  the field passes exactly through the control values;
* backward mapping: ``out(y, x) = in(y + d_y(y, x), x + d_x(y, x))``;
* symmetric padding: a source coordinate outside the image is reflected about the outer pixel
  edges (``-0.5`` and ``n - 0.5``), i.e. numpy ``'symmetric'`` == scipy/elasticdeform ``'reflect'``.

Resampling (``interpolation``):

* ``"keys"`` (default): Keys cubic convolution with ``a = -0.75`` (torch ``grid_sample`` bicubic,
  also OpenCV's INTER_CUBIC), with per-tap symmetric padding. Interpolating and C1; it is not the
  scipy order-3 spline, which is C2 and slightly smoother: on 256 px images the two differ by a
  fraction of a grey level on average (about 0.6 on phantom patches; ``benchmarks/results/deform.json``).
  Fastest.
* ``"bspline"``: the interpolating cubic B-spline of the image (scipy
  ``map_coordinates(order=3, mode='reflect')``; elasticdeform ``order=3``): exact prefilter along
  each axis (a dense ``(n, n)`` solve, precomputed) and the 16-tap B-spline evaluated as four
  bilinear lookups (Sigg & Hadwiger, GPU Gems 2, ch. 20). About 2-3x slower than ``"keys"``.
  elasticdeform differs from it only where the source lies within a few pixels of the border: it
  prefilters with a mirror boundary (the difference decays as 0.27^k, k pixels in: 0.6 grey
  level at 2 px, < 0.01 at 6 px) and folds coordinates in ``(-1, 0)`` a second time.

Cubic kernels overshoot at edges, so images are clamped to each sample's and channel's input
``[min, max]``. Label maps are resampled with nearest neighbour (``floor(t + 0.5)`` like
elasticdeform's order 0), so their values stay within the input's classes.

Everything is deterministic for a seed: randomness only comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from histolib.errors import ParamError  # a leaf module: ops stays free of the rest of histolib

__all__ = [
    "INTERPOLATIONS",
    "random_displacement",
    "displacement_field",
    "warp",
    "elastic_deform",
    "elastic_deform_numpy",
]

INTERPOLATIONS = ("keys", "bspline")
_BLOCK = 8  # samples resampled together by :func:`warp`


# ----------------------------------------------------------------------------- spline matrices
def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    """Centred cubic B-spline beta3(t): (4 - 6t^2 + 3|t|^3)/6 on |t|<1, (2-|t|)^3/6 on 1<=|t|<2."""
    t = np.abs(t)
    return np.where(t < 1, (4 - 6 * t**2 + 3 * t**3) / 6, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


def _fold(index: np.ndarray, n: int, boundary: str) -> np.ndarray:
    """Map integer indices into ``[0, n)``: 'mirror' (d c b | a b c d | c b a, period 2n-2) or
    'symmetric' (c b a | a b c d | d c b, period 2n)."""
    if boundary == "mirror":
        period = 2 * n - 2
        i = np.abs(index) % period
        return np.where(i >= n, period - i, i)
    i = np.mod(index, 2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


@lru_cache(maxsize=32)
def _prefilter_matrix(n: int, boundary: str) -> np.ndarray:
    """``(n, n)`` matrix turning samples into cubic B-spline coefficients: the inverse of
    ``f_i = (c_{i-1} + 4 c_i + c_{i+1}) / 6`` with the given boundary extension of ``c``."""
    if n == 1:
        return np.ones((1, 1))
    system = np.zeros((n, n))
    rows = np.arange(n)
    for offset, weight in ((-1, 1 / 6), (0, 4 / 6), (1, 1 / 6)):
        np.add.at(system, (rows, _fold(rows + offset, n, boundary)), weight)
    return np.linalg.inv(system)


@lru_cache(maxsize=32)
def _control_to_dense_matrix(n: int, points: int) -> np.ndarray:
    """``(n, points)`` matrix ``A`` with ``dense = A @ control`` along one axis (elasticdeform's
    displacement interpolation: mirror-boundary cubic spline sampled at ``j (P-1)/(n-1)``)."""
    position = (points - 1) * np.arange(n) / (n - 1)
    base = np.floor(position).astype(np.int64)
    sample = np.zeros((n, points))
    rows = np.arange(n)
    for tap in range(-1, 3):
        index = base + tap
        np.add.at(sample, (rows, _fold(index, points, "mirror")), _cubic_bspline(position - index))
    return sample @ _prefilter_matrix(points, "mirror")


@lru_cache(maxsize=64)
def _as_tensor(matrix_fn, n: int, arg, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(matrix_fn(n, arg), dtype=dtype, device=device)


# ----------------------------------------------------------------------------- displacements
def _check_size(size) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ParamError(f"size must be (H, W), got {size!r}") from None
    if height < 2 or width < 2:
        raise ParamError(f"size must be at least (2, 2) pixels, got {size!r}")
    return height, width


def random_displacement(batch: int, size: tuple[int, int], sigma: float = 20.0, points: int = 3,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Random control-point displacements ``u ~ N(0, sigma^2)`` in pixels.

    Args:
        batch: number of samples ``B >= 0``.
        size: ``(H, W)`` of the images to deform. The control grid spans the image whatever its
            size (as in elasticdeform), so ``size`` is only validated; it keeps call sites explicit.
        sigma: standard deviation of each displacement component in pixels (seed 000: 20).
        points: control points per axis ``P >= 2`` (seed 000: 3).
        generator: source of randomness (on the device the result should live on); ``None`` uses
            torch's global generator, which a reproducible caller should avoid.

    Returns:
        ``(B, 2, P, P)`` float32 tensor: ``[:, 0]`` is the y (row) and ``[:, 1]`` the x (column)
        displacement of each control point.
    """
    _check_size(size)
    if batch < 0:
        raise ParamError(f"batch must be >= 0, got {batch}")
    if sigma < 0:
        raise ParamError(f"sigma must be >= 0, got {sigma}")
    if points < 2:
        raise ParamError(f"points must be >= 2, got {points}")
    device = generator.device if generator is not None else None
    return torch.randn(batch, 2, points, points, generator=generator, device=device) * sigma


def _check_control(control: torch.Tensor, name: str = "control") -> None:
    if not (isinstance(control, torch.Tensor) and control.ndim == 4 and control.shape[1] == 2
            and control.shape[2] >= 2 and control.shape[3] >= 2 and control.is_floating_point()):
        shape = tuple(control.shape) if isinstance(control, torch.Tensor) else type(control).__name__
        raise ParamError(f"{name} must be a float tensor (B, 2, Py>=2, Px>=2), got {shape}")


def displacement_field(control: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Dense displacement field interpolated from control-point displacements.

    ``d[b, c] = A_y @ control[b, c] @ A_x^T`` where ``A_n`` (``(n, P)``) evaluates the
    interpolating cubic B-spline (mirror boundary) of the control values at ``j (P-1)/(n-1)``,
    exactly as elasticdeform does; ``d`` equals ``control`` at the control pixels.

    Args:
        control: ``(B, 2, Py, Px)`` float displacements in pixels (``[:, 0]`` y, ``[:, 1]`` x).
        size: ``(H, W)`` of the output field, each at least 2.

    Returns:
        ``(B, 2, H, W)`` field ``(dy, dx)`` in pixels, same dtype and device as ``control``.
    """
    _check_control(control)
    height, width = _check_size(size)
    a_y = _as_tensor(_control_to_dense_matrix, height, control.shape[2], control.dtype, control.device)
    a_x = _as_tensor(_control_to_dense_matrix, width, control.shape[3], control.dtype, control.device)
    return a_y @ control @ a_x.T


# ----------------------------------------------------------------------------- resampling
def _source_coordinate(displacement: torch.Tensor, position: torch.Tensor, n: int) -> torch.Tensor:
    """``position + displacement`` folded into ``[-0.5, n - 0.5]`` by reflection about the outer
    pixel edges (symmetric padding, period ``2n``).

    Computed in the frame where the image spans ``[0, n]``: ``s -> n - |n - fold(s)|`` with
    ``fold = abs`` when ``-n <= s <= 2n`` (one reflection per side, the usual case) and
    ``fold = s mod 2n`` otherwise.
    """
    s = displacement + (position + 0.5)
    low, high = torch.aminmax(s)
    if low < -n or high > 2 * n:
        s.remainder_(2 * n)
    else:
        s.abs_()
    return s.sub_(n).abs_().neg_().add_(n - 0.5)


def _sample_keys(images: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Keys (a=-0.75) bicubic at folded coordinates ``y, x`` ``(B, H, W)``.

    Folded coordinates lie in ``[-0.5, n - 0.5]``, so the 4x4 taps reach at most 2 pixels past
    the edge: the image is padded symmetrically by 2 pixels (numpy ``pad(mode='symmetric')``, which
    the tests check) and sampled with ``align_corners=False``, where pixel ``i`` sits at ``i``.
    Channels-last input and 'border' padding (never reached, so a no-op guard) take the fastest
    grid_sample path: about 1.6x faster than per-tap 'reflection' on a contiguous batch.
    """
    height, width = images.shape[-2:]
    padded = _symmetric_pad(images, 2, torch.channels_last)
    grid = torch.empty((*x.shape, 2), dtype=images.dtype, device=images.device)
    torch.mul(x, 2 / (width + 4), out=grid[..., 0])  # writing into the slices: torch.stack is 5x slower here
    torch.mul(y, 2 / (height + 4), out=grid[..., 1])
    grid.add_(torch.tensor([5 / (width + 4) - 1, 5 / (height + 4) - 1], dtype=images.dtype,
                           device=images.device))
    return F.grid_sample(padded, grid, mode="bicubic", padding_mode="border", align_corners=False)


def _symmetric_pad(images: torch.Tensor, pad: int,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Symmetric (numpy 'symmetric') padding of ``(B, C, H, W)`` by ``pad <= min(H, W)`` on each side
    of the last two dimensions, written straight into a buffer of ``memory_format`` (for
    channels-last: one layout change for the interior instead of a concatenation and a conversion)."""
    batch, channels, height, width = images.shape
    out = torch.empty((batch, channels, height + 2 * pad, width + 2 * pad), dtype=images.dtype,
                      device=images.device, memory_format=memory_format)
    out[..., pad:-pad, pad:-pad] = images
    out[..., pad:-pad, :pad] = images[..., :pad].flip(-1)
    out[..., pad:-pad, -pad:] = images[..., -pad:].flip(-1)
    out[..., :pad, :] = out[..., pad:2 * pad, :].flip(-2)
    out[..., -pad:, :] = out[..., -2 * pad:-pad, :].flip(-2)
    return out


def _bspline_lookup(coordinate: torch.Tensor, pad: int, n_padded: int):
    """Per-axis weights and positions of the 4-tap cubic B-spline as two linear lookups:
    ``sum_k beta3(t - i - k) c_{i+k}`` (k=-1..2) = ``g0 lin(h0) + g1 lin(h1)``."""
    base = torch.floor(coordinate)
    f = coordinate - base
    z = 1 - f
    w0 = z**3 / 6
    w1 = (4 - 6 * f**2 + 3 * f**3) / 6
    w3 = f**3 / 6
    g0 = w0 + w1
    g1 = 1 - g0
    # positions in the padded array, normalised for align_corners=True
    scale = 2 / (n_padded - 1)
    h0 = (base + (pad - 1) + w1 / g0) * scale - 1
    h1 = (base + (pad + 1) + w3 / g1) * scale - 1
    return g0, g1, h0, h1


def _sample_bspline(images: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Interpolating cubic B-spline (scipy order 3, mode 'reflect') at folded coordinates."""
    batch, channels, height, width = images.shape
    p_y = _as_tensor(_prefilter_matrix, height, "symmetric", images.dtype, images.device)
    p_x = _as_tensor(_prefilter_matrix, width, "symmetric", images.dtype, images.device)
    coefficients = _symmetric_pad(p_y @ images @ p_x.T, 2)
    gy0, gy1, hy0, hy1 = _bspline_lookup(y, 2, height + 4)
    gx0, gx1, hx0, hx1 = _bspline_lookup(x, 2, width + 4)
    # the four bilinear lookups stacked along H: one grid_sample call
    grid = torch.stack((torch.cat((hx0, hx1, hx0, hx1), 1), torch.cat((hy0, hy0, hy1, hy1), 1)), dim=-1)
    lookups = F.grid_sample(coefficients, grid, mode="bilinear", padding_mode="border", align_corners=True)
    weights = torch.cat((gy0 * gx0, gy0 * gx1, gy1 * gx0, gy1 * gx1), 1)
    lookups = lookups.view(batch, channels, 4, height, width) * weights.view(batch, 1, 4, height, width)
    return lookups.sum(2)


def _sample_nearest(labels: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Nearest neighbour (``floor(t + 0.5)``, as elasticdeform order 0) of ``(B, H, W)`` labels of
    any dtype at folded coordinates; a gather, so values are copied exactly."""
    batch, height, width = labels.shape
    # flat index row * W + col built in float, one cast, one gather; float32 is exact below 2^24 px
    if height * width >= 2**24:
        y, x = y.double(), x.double()
    flat = y.add(0.5).floor_().clamp_(0, height - 1).mul_(width)
    flat.add_(x.add(0.5).floor_().clamp_(0, width - 1))
    return labels.reshape(batch, -1).gather(1, flat.view(batch, -1).long()).view(batch, height, width)


def _check_images_labels(images: torch.Tensor, labels: torch.Tensor | None) -> None:
    if not (isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point()):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        dtype = images.dtype if isinstance(images, torch.Tensor) else None
        raise ParamError(f"images must be a float tensor (B, C, H, W), got {shape} {dtype}")
    if images.shape[-2] < 2 or images.shape[-1] < 2:
        raise ParamError(f"images must be at least 2x2 pixels, got {tuple(images.shape)}")
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor):
        raise ParamError(f"labels must be a tensor or None, got {type(labels).__name__}")
    batch, _, height, width = images.shape
    if labels.is_floating_point() or labels.is_complex():
        raise ParamError(f"labels must hold integer or bool class values, got {labels.dtype}")
    if tuple(labels.shape) not in ((batch, height, width), (batch, 1, height, width)):
        raise ParamError(f"labels must be (B, H, W) or (B, 1, H, W) = ({batch}, {height}, {width}) "
                         f"to match images, got {tuple(labels.shape)}")


def warp(images: torch.Tensor, field: torch.Tensor, labels: torch.Tensor | None = None,
         interpolation: str = "keys") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample images and label maps by a dense displacement field (backward mapping).

    ``out(y, x) = in(y + field[:, 0](y, x), x + field[:, 1](y, x))`` with symmetric padding.

    Args:
        images: ``(B, C, H, W)`` float (any range; float16/bfloat16 are computed in float32).
        field: ``(B, 2, H, W)`` displacement ``(dy, dx)`` in pixels (see :func:`displacement_field`).
        labels: ``(B, H, W)`` or ``(B, 1, H, W)`` integer or bool class map, or ``None``.
        interpolation: ``"keys"`` or ``"bspline"`` for images (module docstring); labels always
            use nearest neighbour.

    Returns:
        ``(warped images, warped labels or None)``; images keep their dtype and are clamped to each
        sample's and channel's input ``[min, max]``; labels keep dtype and shape. An empty batch
        returns empty copies.
    """
    _check_images_labels(images, labels)
    if interpolation not in INTERPOLATIONS:
        raise ParamError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    batch, channels, height, width = images.shape
    if not (isinstance(field, torch.Tensor) and tuple(field.shape) == (batch, 2, height, width)):
        shape = tuple(field.shape) if isinstance(field, torch.Tensor) else type(field).__name__
        raise ParamError(f"field must be ({batch}, 2, {height}, {width}) to match images, got {shape}")
    if batch == 0 or channels == 0:
        return images.clone(), None if labels is None else labels.clone()

    work_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    source = images.to(work_dtype)
    field = field.to(device=images.device, dtype=work_dtype)
    flat_labels = None if labels is None else labels.reshape(batch, height, width)
    warped = torch.empty_like(source)
    warped_labels = None if labels is None else torch.empty_like(flat_labels)
    sample = _sample_keys if interpolation == "keys" else _sample_bspline
    # blocks of a few samples keep the per-pixel temporaries in cache (~10 % faster than one block)
    for start in range(0, batch, _BLOCK):
        block = slice(start, start + _BLOCK)
        _warp_block(source[block], field[block], sample, warped[block],
                    None if labels is None else flat_labels[block],
                    None if labels is None else warped_labels[block])
    return warped.to(images.dtype), None if labels is None else warped_labels.view(labels.shape)


def _warp_block(source, field, sample, out, labels=None, out_labels=None) -> None:
    """:func:`warp` of one block of samples, written into ``out`` (and ``out_labels``)."""
    height, width = source.shape[-2:]
    rows = torch.arange(height, dtype=source.dtype, device=source.device).view(1, height, 1)
    cols = torch.arange(width, dtype=source.dtype, device=source.device).view(1, 1, width)
    y = _source_coordinate(field[:, 0], rows, height)
    x = _source_coordinate(field[:, 1], cols, width)
    # amin/amax and maximum/minimum: several times faster than aminmax and a tensor-bounded clamp
    low, high = source.amin((2, 3), keepdim=True), source.amax((2, 3), keepdim=True)
    torch.maximum(sample(source, y, x), low, out=out)
    torch.minimum(out, high, out=out)
    if labels is not None:
        out_labels.copy_(_sample_nearest(labels, y, x))


# ----------------------------------------------------------------------------- entry points
def elastic_deform(images: torch.Tensor, labels: torch.Tensor | None = None, sigma: float = 20.0,
                   points: int = 3, generator: torch.Generator | None = None,
                   displacement: torch.Tensor | None = None,
                   interpolation: str = "keys") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random grid elastic deformation of a batch, the same geometry for each image and its labels.

    Seed 000, Sec. II-A (U-Net paper's augmentation): ``P x P`` control grid, Gaussian
    displacements of standard deviation ``sigma`` px, cubic-spline dense field, cubic image and
    nearest label resampling, symmetric padding. Each sample gets its own random grid.

    Args:
        images: ``(B, C, H, W)`` float images, any value range.
        labels: ``(B, H, W)`` or ``(B, 1, H, W)`` integer/bool label maps, or ``None``.
        sigma: displacement standard deviation in pixels (seed 000: 20; ignored when
            ``displacement`` is given).
        points: control points per axis (seed 000: 3; ignored when ``displacement`` is given).
        generator: explicit ``torch.Generator`` for reproducibility (``None``: global RNG).
        displacement: ``(B, 2, Py, Px)`` control displacements in pixels to use instead of random
            ones (e.g. from :func:`random_displacement`, or to share one draw between calls).
        interpolation: ``"keys"`` (default, fast) or ``"bspline"`` (scipy order 3): see module doc.

    Returns:
        ``(deformed images, deformed labels or None)`` with the inputs' shapes and dtypes. Label
        values are a subset of the input's values. Images are clamped to their input range.
    """
    _check_images_labels(images, labels)
    batch, _, height, width = images.shape
    if displacement is None:
        displacement = random_displacement(batch, (height, width), sigma, points, generator)
    else:
        _check_control(displacement, "displacement")
        if displacement.shape[0] != batch:
            raise ParamError(f"displacement must have batch size {batch} like images, "
                             f"got {tuple(displacement.shape)}")
    displacement = displacement.to(device=images.device)
    if not displacement.dtype == torch.float64:
        displacement = displacement.float()
    field = displacement_field(displacement, (height, width))
    return warp(images, field, labels, interpolation)


def elastic_deform_numpy(image: np.ndarray, label: np.ndarray | None, seed: int, sigma: float = 20.0,
                         points: int = 3, interpolation: str = "keys") -> tuple[np.ndarray, np.ndarray | None]:
    """One image/label pair in numpy: :func:`elastic_deform` with a generator seeded by ``seed``.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` uint8 image.
        label: ``(H, W)`` integer/bool label map, or ``None``.
        seed: seed of the displacement draw (same seed -> same deformation).
        sigma, points, interpolation: as in :func:`elastic_deform`.

    Returns:
        ``(uint8 image of the input's shape, label of the input's dtype or None)``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ParamError(f"image must be a uint8 (H, W, C) or (H, W) array, got {image.dtype} {image.shape}")
    chw = image[None, None] if image.ndim == 2 else image.transpose(2, 0, 1)[None]
    tensor = torch.from_numpy(np.ascontiguousarray(chw)).float()
    label_tensor = None
    if label is not None:
        label = np.asarray(label)
        if label.shape != image.shape[:2]:
            raise ParamError(f"label must have shape {image.shape[:2]} like image, got {label.shape}")
        label_tensor = torch.from_numpy(np.ascontiguousarray(label))[None]
    generator = torch.Generator().manual_seed(int(seed))
    warped, warped_label = elastic_deform(tensor, label_tensor, sigma, points, generator,
                                          interpolation=interpolation)
    out = warped[0].round().clamp(0, 255).to(torch.uint8).numpy()
    out = out[0] if image.ndim == 2 else out.transpose(1, 2, 0)
    return np.ascontiguousarray(out), None if warped_label is None else warped_label[0].numpy()
