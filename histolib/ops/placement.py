"""Blob placement (Basla et al., Sec. 3.2 and Algorithm 3) and the random baseline of Fig. 3.

``greedy_placement`` is Algorithm 3: an availability map ``A`` (1 = free), locations sampled from
``G = NORM(P * A)``, an exclusion radius ``z ~ S`` per placed blob, and the *first* offered blob
that fits at the sampled location. "Fits" (``CANHOST``) means every pixel of the blob, centred
on the location, lies inside the image on an available pixel. ``UPDATEAVAILABLE`` clears the
blob's pixels and the disc of radius ``z`` around its centre, so no later blob overlaps it or
comes closer to its centre than ``z``. The paper stops at the first sampled location where no
blob fits (``patience = 1``); ``patience`` allows a few retries, and ``top_fraction`` restricts
sampling to the highest ``G`` values as the authors' code does (top 16 %).

It is fast because each step is a handful of whole-array operations: ``G`` and its cumulative
sum for sampling, and ``CANHOST`` for *all* remaining blobs at once as one matrix-vector product
of the blobs (flattened, ``(L, S*S)``) with the blocked pixels of the window under them.

The spacing distribution ``S`` comes from real instance maps: for each nucleus ``i`` and its
nearest neighbour ``j`` (by centroid), ``d_ij - r_j`` with ``r_j = sqrt(area_j / pi)``. A later
blob must keep *all* its pixels outside the disc, so its centre lands at about ``z + r_new``:
subtracting the neighbour's radius makes placed centre distances follow the real ``d_ij``.
(The authors' code draws the radius from a 10-bin histogram of nearest-centroid distances; the
same histogram is used here, of ``d - r``; ``subtract_radius=False`` gives theirs.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

# --------------------------------------------------------------------------------------------
# Spacing distribution S
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpacingDistribution:
    """Histogram distribution of the exclusion radius ``z`` (pixels).

    Attributes:
        edges: ``(n_bins + 1,)`` increasing bin edges.
        probs: ``(n_bins,)`` bin probabilities, summing to 1.
    """

    edges: np.ndarray
    probs: np.ndarray

    def __post_init__(self):
        e, p = np.asarray(self.edges, float), np.asarray(self.probs, float)
        if e.ndim != 1 or p.ndim != 1 or len(e) != len(p) + 1 or np.any(np.diff(e) < 0) \
                or np.any(p < 0) or not np.isclose(p.sum(), 1.0) or e[0] < 0:
            raise ValueError("SpacingDistribution needs non-negative increasing edges (n+1,) and "
                             "probabilities (n,) summing to 1")
        object.__setattr__(self, "edges", e)
        object.__setattr__(self, "probs", p)

    @classmethod
    def constant(cls, z: float) -> SpacingDistribution:
        """Always ``z``."""
        return cls(np.array([z, z], float), np.array([1.0]))

    @classmethod
    def from_samples(cls, samples: np.ndarray, n_bins: int = 10) -> SpacingDistribution:
        """Histogram of ``samples`` (clipped at 0) with ``n_bins`` equal-width bins."""
        s = np.clip(np.asarray(samples, float), 0, None)
        if s.size == 0:
            raise ValueError("no spacing samples: the real masks need at least 2 nuclei")
        if s.max() == s.min():
            return cls.constant(float(s[0]))
        counts, edges = np.histogram(s, bins=n_bins)
        return cls(edges, counts / counts.sum())

    def sample(self, rng: np.random.Generator) -> float:
        """One draw: a bin by its probability, then uniform within it (two ``rng.random()``)."""
        u = rng.random(2)
        k = min(int(np.searchsorted(np.cumsum(self.probs), u[0], side="right")), len(self.probs) - 1)
        return float(self.edges[k] + u[1] * (self.edges[k + 1] - self.edges[k]))

    def to_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "probs": self.probs.tolist()}


def centroids_and_areas(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid ``(n, 2)`` in ``(y, x)`` and area ``(n,)`` of every instance id present, in id order."""
    inst = np.asarray(instances)
    ids = np.unique(inst)
    ids = ids[ids != 0]
    if ids.size == 0:
        return np.zeros((0, 2)), np.zeros(0)
    ys, xs = np.nonzero(inst)
    lab = np.searchsorted(ids, inst[ys, xs])
    area = np.bincount(lab, minlength=ids.size).astype(float)
    cy = np.bincount(lab, weights=ys, minlength=ids.size) / area
    cx = np.bincount(lab, weights=xs, minlength=ids.size) / area
    return np.stack([cy, cx], axis=1), area


def nearest_centroid_distances(instances: np.ndarray, subtract_radius: bool = False) -> np.ndarray:
    """Distance from each nucleus centroid to its nearest neighbour's (``(n,)``; empty if n < 2).

    With ``subtract_radius`` the neighbour's equivalent radius ``sqrt(area / pi)`` is subtracted
    (see the module docstring); results are clipped at 0.
    """
    c, area = centroids_and_areas(instances)
    if len(c) < 2:
        return np.zeros(0)
    d, j = cKDTree(c).query(c, k=2)
    out = d[:, 1]
    if subtract_radius:
        out = np.clip(out - np.sqrt(area[j[:, 1]] / np.pi), 0, None)
    return out


def spacing_distribution(instance_maps, n_bins: int = 10, subtract_radius: bool = True,
                         ) -> SpacingDistribution:
    """``S`` of Sec. 3.2 estimated from real instance maps (see the module docstring).

    Args:
        instance_maps: iterable of ``(H, W)`` integer instance maps.
        n_bins: histogram bins (10 in the authors' code).
        subtract_radius: subtract the neighbour's equivalent radius from each distance.

    Raises:
        ValueError: no map holds two nuclei.
    """
    samples = [nearest_centroid_distances(m, subtract_radius) for m in instance_maps]
    return SpacingDistribution.from_samples(np.concatenate(samples) if samples else np.zeros(0),
                                            n_bins)


# --------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlobStack:
    """Blobs centred on a common odd canvas, ready for placement.

    Attributes:
        masks: ``(L, S, S)`` bool, blob ``l`` with its rounded centroid at ``(S // 2, S // 2)``.
        flat: ``(L, S * S)`` float32 copy of ``masks`` (the ``CANHOST`` matrix).
    """

    masks: np.ndarray
    flat: np.ndarray = field(repr=False)

    @property
    def radius(self) -> int:
        return self.masks.shape[1] // 2

    def __len__(self) -> int:
        return len(self.masks)


def centred_stack(blobs: list[np.ndarray] | BlobStack) -> BlobStack:
    """Put cropped blob masks on one ``(S, S)`` canvas, each centred on its rounded centroid."""
    if isinstance(blobs, BlobStack):
        return blobs
    if len(blobs) == 0:
        return BlobStack(np.zeros((0, 1, 1), bool), np.zeros((0, 1), np.float32))
    centres, extents = [], 0
    for b in blobs:
        b = np.asarray(b, bool)
        if b.ndim != 2 or not b.any():
            raise ValueError("every blob must be a non-empty 2-D mask")
        ys, xs = np.nonzero(b)
        cy, cx = int(round(ys.mean())), int(round(xs.mean()))
        centres.append((cy, cx))
        extents = max(extents, cy, cx, b.shape[0] - 1 - cy, b.shape[1] - 1 - cx)
    s = 2 * extents + 1
    stack = np.zeros((len(blobs), s, s), bool)
    for i, (b, (cy, cx)) in enumerate(zip(blobs, centres, strict=True)):
        y0, x0 = extents - cy, extents - cx
        stack[i, y0:y0 + b.shape[0], x0:x0 + b.shape[1]] = b
    return BlobStack(stack, stack.reshape(len(blobs), -1).astype(np.float32))


@dataclass(frozen=True)
class Placement:
    """A generated ground truth ``M~``.

    Attributes:
        instances: ``(H, W)`` int32 instance map, ids ``1..n`` in placement order.
        centres: ``(n, 2)`` int ``(y, x)`` where each blob's centre was put.
        radii: ``(n,)`` exclusion radius ``z`` drawn for each placed blob (NaN for the baseline).
        blob_ids: ``(n,)`` index of each placed blob among those offered.
        attempts: locations sampled (placed + misses).
    """

    instances: np.ndarray
    centres: np.ndarray
    radii: np.ndarray
    blob_ids: np.ndarray
    attempts: int

    @property
    def n(self) -> int:
        return len(self.centres)


def _check_prior(prior: np.ndarray) -> np.ndarray:
    p = np.asarray(prior, dtype=np.float64)
    if p.ndim != 2 or p.size == 0:
        raise ValueError(f"prior must be a non-empty (H, W) array, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("prior must be finite and non-negative")
    return p


def greedy_placement(prior: np.ndarray, blobs: list[np.ndarray] | BlobStack,
                     spacing: SpacingDistribution, rng: np.random.Generator, *,
                     patience: int = 1, top_fraction: float | None = None) -> Placement:
    """``GREEDYPLACEMENT`` (Algorithm 3).

    Each step: ``G = P * A``; a location ``(y, x)`` is drawn with probability ``G / sum G``
    (``rng.random()``; with ``top_fraction`` only among the ``ceil(top_fraction * #{G > 0})``
    largest values of ``G``); ``z ~ spacing``; the first remaining blob that fits is placed and
    removed, and ``A`` is cleared on its pixels and on the disc ``|p - (y, x)| <= z``. Stops when
    ``patience`` consecutive locations host no blob, when no blob is left, or when ``A`` is
    empty where ``P > 0``.

    A location where no remaining blob fits never hosts one later (``A`` only loses pixels and
    the blob list only shrinks), so it is dropped from the sampling distribution (not from
    ``A``): after every miss, and, after every placement, each location near it whose *core*
    (the pixels shared by all offered blobs, centred) touches an unavailable pixel. With
    unlimited patience this changes nothing but speed (it is rejection sampling done once);
    with a finite one it stops fewer placements early. The paper's literal rule
    (stop at the first miss, ``patience = 1``) places only a handful of blobs in a 256 x 256
    field of 60 offered ones, because a draw close to a placed blob fails; the authors' code
    keeps drawing until a 60 s wall-clock cap, replaced here by a count of consecutive misses.

    Args:
        prior: ``(H, W)`` non-negative prior ``P`` (need not be normalised).
        blobs: offered blobs in order (the list ``{B~_l}``), cropped masks or a :class:`BlobStack`.
        spacing: distribution ``S`` of the exclusion radius.
        rng: the only source of randomness (draw order: location, then ``z``).
        patience: consecutive misses before stopping (1 = the paper).
        top_fraction: in ``(0, 1]`` to sample among the top values of ``G`` (authors' code: 0.16).

    Returns:
        :class:`Placement`; blobs never overlap and stay inside the image.
    """
    p = _check_prior(prior)
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    stack = centred_stack(blobs)
    sampler = LocationSampler(p, top_fraction)
    h, w = p.shape
    r, s = stack.radius, stack.masks.shape[1]
    avail_p = np.zeros((h + 2 * r, w + 2 * r))  # padding = unavailable: blobs stay inside
    avail = avail_p[r:r + h, r:r + w]
    avail[:] = 1.0
    inst_p = np.zeros(avail_p.shape, np.int32)
    alive = np.ones(len(stack), bool)
    # live = 0 where no remaining blob can ever fit (see docstring): such draws are skipped.
    live = np.ones_like(p)
    core = core_offsets(stack)
    reach = int(np.abs(core).max()) if len(core) else 0

    def prune(y0: int, y1: int, x0: int, x1: int) -> None:
        prune_dead_locations(live, avail_p, core, r, (y0, y1, x0, x1))

    prune(0, h, 0, w)
    eligible = np.empty_like(p)
    centres, radii, ids = [], [], []
    misses = attempts = 0
    while alive.any():
        np.multiply(avail, live, out=eligible)
        idx = sampler.draw(eligible, rng)
        if idx < 0:
            break
        y, x = divmod(idx, w)
        z = spacing.sample(rng)
        attempts += 1
        blocked = (avail_p[y:y + s, x:x + s] == 0).ravel().astype(np.float32)
        clash = stack.flat @ blocked
        fits = np.flatnonzero((clash == 0) & alive)
        if fits.size == 0:
            live[y, x] = 0.0
            misses += 1
            if misses >= patience:
                break
            continue
        misses = 0
        b = int(fits[0])
        alive[b] = False
        blob = stack.masks[b]
        inst_p[y:y + s, x:x + s][blob] = len(centres) + 1
        avail_p[y:y + s, x:x + s][blob] = 0.0
        rz = int(np.floor(z))
        y0, y1, x0, x1 = max(0, y - rz), min(h, y + rz + 1), max(0, x - rz), min(w, x + rz + 1)
        dy, dx = np.ogrid[y0 - y:y1 - y, x0 - x:x1 - x]
        avail[y0:y1, x0:x1][dy * dy + dx * dx <= z * z] = 0.0
        m = max(r, rz) + reach
        prune(max(0, y - m), min(h, y + m + 1), max(0, x - m), min(w, x + m + 1))
        centres.append((y, x))
        radii.append(z)
        ids.append(b)
    return Placement(instances=inst_p[r:r + h, r:r + w].copy(),
                     centres=np.array(centres, int).reshape(-1, 2), radii=np.array(radii, float),
                     blob_ids=np.array(ids, int), attempts=attempts)


def core_offsets(stack: BlobStack) -> np.ndarray:
    """``(n, 2)`` offsets ``(dy, dx)`` from the centre covered by *every* blob of ``stack``."""
    if len(stack) == 0:
        return np.zeros((0, 2), int)
    return np.argwhere(np.logical_and.reduce(stack.masks, axis=0)) - stack.radius


def prune_dead_locations(live: np.ndarray, avail_padded: np.ndarray, core: np.ndarray, radius: int,
                         box: tuple[int, int, int, int]) -> None:
    """Zero ``live`` (in place) at each location ``L`` of ``box = (y0, y1, x0, x1)`` where some
    ``L + o``, ``o`` in ``core``, is unavailable: no blob containing the core can sit there.

    Args:
        live: ``(H, W)`` float 0/1 map of locations still worth drawing.
        avail_padded: ``(H + 2r, W + 2r)`` availability, 0 in the padding.
        core: offsets from :func:`core_offsets` (all within ``radius``).
        radius: the padding ``r``.
    """
    y0, y1, x0, x1 = box
    r = radius
    dead = np.zeros((y1 - y0, x1 - x0), bool)
    for dy, dx in core:
        dead |= avail_padded[y0 + dy + r:y1 + dy + r, x0 + dx + r:x1 + dx + r] == 0
    live[y0:y1, x0:x1][dead] = 0.0


class LocationSampler:
    """Draws ``(y, x)`` from ``G = NORM(P * E)`` for a fixed prior ``P`` and a changing 0/1 map ``E``.

    With ``top_fraction = f`` the draw is restricted to the ``k = ceil(f * #{G > 0})`` largest
    values of ``G`` (ties by pixel order). Because ``E`` is 0/1 these are the first ``k``
    eligible pixels in the order of decreasing ``P``, sorted once, so no per-draw partition is
    needed.

    Args:
        prior: ``(H, W)`` non-negative prior.
        top_fraction: ``None`` (the whole map) or in ``(0, 1]``.
    """

    def __init__(self, prior: np.ndarray, top_fraction: float | None = None):
        if top_fraction is not None and not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        self.p = _check_prior(prior).ravel()
        self.top_fraction = top_fraction
        if top_fraction is not None:
            self.order = np.argsort(-self.p, kind="stable")
            self.p_sorted = self.p[self.order]

    def draw(self, eligible: np.ndarray, rng: np.random.Generator) -> int:
        """A flat pixel index (one ``rng.random()``), or -1 when ``G`` is zero everywhere."""
        e = eligible.ravel()
        if self.top_fraction is None:
            cdf = np.cumsum(self.p * e)
            if cdf[-1] <= 0:
                return -1
            return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), e.size - 1)
        g = self.p_sorted * e[self.order]
        positive = np.cumsum(g > 0)
        if positive[-1] == 0:
            return -1
        k = max(1, int(np.ceil(self.top_fraction * positive[-1])))
        last = int(np.searchsorted(positive, k))  # position of the k-th positive value
        cdf = np.cumsum(g[:last + 1])
        j = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), last)
        return int(self.order[j])


def random_placement(prior: np.ndarray, blobs: list[np.ndarray] | BlobStack, n_blobs: int,
                     rng: np.random.Generator) -> Placement:
    """The baseline of Fig. 3b: ``n_blobs`` centres drawn i.i.d. from ``P / sum P``, blob ``i mod L``
    pasted at each (clipped at the border), later blobs over earlier ones. Overlaps are allowed,
    so some ids may vanish; the map is relabelled ``1..n'`` in placement order of the survivors.
    """
    p = _check_prior(prior)
    stack = centred_stack(blobs)
    if len(stack) == 0 or n_blobs <= 0:
        return Placement(np.zeros(p.shape, np.int32), np.zeros((0, 2), int), np.zeros(0),
                         np.zeros(0, int), 0)
    h, w = p.shape
    r, s = stack.radius, stack.masks.shape[1]
    cdf = np.cumsum(p.ravel())
    if cdf[-1] <= 0:
        raise ValueError("prior is zero everywhere")
    idx = np.minimum(np.searchsorted(cdf, rng.random(n_blobs) * cdf[-1], side="right"), p.size - 1)
    inst_p = np.zeros((h + 2 * r, w + 2 * r), np.int32)
    centres = np.stack(np.divmod(idx, w), axis=1)
    ids = np.arange(n_blobs) % len(stack)
    for i, ((y, x), b) in enumerate(zip(centres, ids, strict=True)):
        inst_p[y:y + s, x:x + s][stack.masks[b]] = i + 1
    inst = inst_p[r:r + h, r:r + w]
    survivors = np.unique(inst)
    survivors = survivors[survivors != 0]
    relabel = np.zeros(n_blobs + 1, np.int32)
    relabel[survivors] = np.arange(1, survivors.size + 1)
    keep = survivors - 1
    return Placement(instances=relabel[inst], centres=centres[keep], radii=np.full(keep.size, np.nan),
                     blob_ids=ids[keep], attempts=n_blobs)


def prior_correlation(instances: np.ndarray, prior: np.ndarray, sigma: float) -> float:
    """How closely a placement follows its prior: Pearson correlation between the placed
    foreground blurred by a Gaussian of ``sigma`` pixels and the prior ``P``.

    ``r = cov(g * 1[M > 0], P) / (std(g * 1[M > 0]) std(P))`` over pixels; NaN when either map is
    constant (e.g. nothing placed).
    """
    p = _check_prior(prior)
    inst = np.asarray(instances)
    if inst.shape != p.shape:
        raise ValueError(f"instances {inst.shape} and prior {p.shape} must have the same shape")
    dens = ndimage.gaussian_filter((inst != 0).astype(np.float64), sigma, mode="reflect")
    a, b = dens - dens.mean(), p - p.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")
