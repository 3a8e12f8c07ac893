"""Notebook 05: the expert-driven nuclei generator of Basla et al. (seed 004) and its Table 1.

Everything notebook 05 does beyond a call and a plot lives here, with tests in
``tests/studies/test_nuclei.py``. The pipeline (Algorithm 1) learns from ``J`` real images:

1. **Blobs** (Sec. 3.1, Algorithm 2): the ``K`` nuclei of the ``J`` images are interpolated into a
   pool of ``blobs_per_j`` new blobs (:func:`histolib.ops.blobs.interpolate_blobs`).
2. **Placement** (Sec. 3.2, Algorithm 3): a Perlin prior fitted to the blurred masks of the ``J``
   images (:mod:`histolib.ops.perlin`), the nearest-centroid spacing distribution, and the greedy
   placement with the authors' top-16 % sampling (:mod:`histolib.ops.placement`); each mask is
   offered a number of blobs drawn uniformly between the fewest and the most nuclei of a real
   tile (the authors' code).
3. **Images** (Sec. 3.3): AdaIN (:mod:`histolib.models.adain`) trained with the flattened
   generated masks as content and the real tiles as style; each generated mask is stylised with
   the real tile of closest nucleus count; the mask is the label, untouched.

Then HoVer-Net (:mod:`histolib.models.hovernet`) is trained on all real training images, on the
``J`` real images (standard augmentation), and on the data generated from those ``J`` images, and
tested on the held-out real test split with HoVer-Net's metrics (Table 1, Fig. 5).

Decisions where the paper is silent (written down here and in the notebook):

* The ``J`` images are the first ``J`` of one seeded permutation of the training *images* (nested:
  the 2 images are among the 5, the 5 among the 10), with all the tiles the builder cut from them
  (:func:`image_subsets`); seeds vary the networks' initialisation, the generated data and the
  training batches, not the real images (the paper reports one run).
* Scale: a real folder is rescaled by the builder so that its training masks' median nucleus has
  ``data.nucleus_diameter`` px. A cross-source test set (``cross_source``; the paper's NucleusSegData,
  here e.g. U2OS nuclei ~6x the BBBC ones) cannot use that factor (another microscope) nor its own
  test masks: ``cross_calibration`` of its images, drawn with the seed, give its factor and are never
  tested (:func:`load_cross_source`). Every HoVer-Net is scored on both test sets; Table 1 and the
  J-gain claims are reported for each (``table1.md``, ``table1_cross.md``, claims ``*-cross``).
* Table 1's "Training on our generated images": generated pairs only (``mix_real: false``); with
  ``mix_real: true`` the ``J`` real images are added, the "augment" reading of Sec. 3.3.
* Generator replicates (``protocol.n_gan_seeds``, seeds :func:`histolib.repro.replicate_seeds`):
  replicate ``g`` is the whole generation pipeline under its seed (blob pool, Perlin fit, placement
  draws, AdaIN training, style pairing) for each ``J``; every HoVer-Net seed trains on every
  replicate's set. ``Real`` and ``Full dataset`` have no generator (one level: the seeds).
* One AdaIN decoder per ``J`` and replicate; its content images are generated masks from a separate stream.
* Faithfulness: the ``Full dataset`` HoVer-Net of the first seed (real images only) segments each
  replicate's generated images; its AJI against the generating instance maps, beside its AJI on the
  real test images, gates the claims that rest on generated images.
* AdaIN keeps the polarity of its content: nuclei come out darker than the background only if
  the content mask is inverted for H&E (``invert_content: auto`` reads the polarity of the real
  images). The paper's fluorescence images have bright nuclei, where the plain mask is right.
* Every HoVer-Net trains for the same number of iterations; the last weights are tested.
* HoVer-Net's post-processing sizes (Sobel 21, marker opening 5, smallest object 10 px) suit
  ~27 px nuclei at 40x; they are scaled to the median nucleus diameter of each training set
  (on the cpu phantom's 9 px nuclei the unscaled ones lose two thirds of the nuclei even from
  perfect network outputs).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from histolib import report
from histolib.config import knob, section
from histolib.data.prepared import load_split
from histolib.errors import DataError, ParamError
from histolib.metrics import instance as IM
from histolib.metrics.faithfulness import faithfulness, per_image_mean
from histolib.metrics.segmentation import paired_test, summarize
from histolib.models.adain import AdaINStyleTransfer, EncoderInfo, nuclei_are_dark
from histolib.ops import blobs as B
from histolib.ops import placement as PL
from histolib.ops.instance import median_nucleus_diameter, postprocess_sizes, relabel_sequential
from histolib.ops.perlin import PerlinParams, density_target, fit_perlin_prior, perlin_prior
from histolib.repro import numpy_rng, replicate_seeds
from histolib.train.adain import AdaINTrainConfig, generate_images, train_adain
from histolib.train.hovernet import HoVerNetTrainConfig, evaluate_hovernet, predict_instances, train_hovernet

METRIC_KEYS = ("dice", "dice2", "aji", "aji_plus", "pq")
METRIC_LABELS = {"dice": "DICE", "dice2": "DICE2", "aji": "AJI", "aji_plus": "AJI+", "pq": "PQ"}


@section("nuclei")
class NucleiParams:
    """Notebook 05: expert-driven nuclei generation (Basla et al.) and HoVer-Net on its data."""

    j_values: list[int] = knob("numbers J of real training images to generate from (paper: 2, 5, 10)", min=1)
    n_seeds: int = knob("independent runs per configuration (networks, generated data, batches)", min=1)
    field_size: int = knob("side of generated masks and of the real style tiles, px (real images are "
                           "tiled to it)", min=16)
    n_points: int = knob("E, contour points per blob (authors' code: 500)", min=8)
    blobs_per_j: int = knob("L, interpolated blobs in the pool of each J (authors' code: up to 15,000)", min=10)
    min_area_fraction: float = knob("smallest generated blob, as a fraction of the median real nucleus area "
                                    "(authors' code: 50 px of ~155 px, ~0.33)", min=0.0, max=1.0)
    min_fill: float = knob("smallest bounding-box fill ratio of a generated blob (authors' code: 0.5)",
                           min=0.0, max=1.0)
    blur_sigma: float = knob("Gaussian sigma of the blurred real masks the Perlin prior is fitted to, px "
                             "(authors' code: radius 30 at ~14 px nuclei)", min=0.5)
    perlin_octaves: int = knob("Perlin octaves (authors' code: 4)", min=1, max=8)
    perlin_steps: int = knob("Adam steps of the Perlin fit (authors' code: 10,000)", min=1)
    perlin_lr: float = knob("Adam learning rate of the Perlin fit", min=0.0, max=1.0)
    perlin_batch: int = knob("prior maps drawn per fitting step", min=1)
    spacing_bins: int = knob("histogram bins of the spacing distribution S (authors' code: 10)", min=1)
    top_fraction: float = knob("locations drawn among the top fraction of P*A (authors' code: 0.16; 1 = the "
                               "whole map, Algorithm 3 as printed)", min=0.0, max=1.0)
    patience: int = knob("consecutive draws without a fitting blob before a mask is done (Algorithm 3: 1; "
                         "the authors' code: a 60 s cap)", min=1)
    n_generated: int = knob("N, generated image/mask pairs per J and seed (paper: not stated; 1,000 at paper "
                            "is a documented substitute)", min=1)
    n_placement_eval: int = knob("priors used to compare greedy and random placement (Fig. 3)", min=2)
    adain_width: float = knob("AdaIN encoder/decoder channel multiplier (1 = VGG19, the paper; must be 1 with "
                              "weights)", min=0.01, max=1.0)
    adain_depth: int = knob("AdaIN encoder depth: 4 = relu4_1 (paper), 3 = relu3_1, 2 = relu2_1 (the cpu "
                            "profile: at 64 px a random-init encoder's relu3_1 map is 16 px across, nuclei 2-3 px "
                            "in it, and the decoder renders blurred blobs with bright rims; measured on phantom "
                            "fluorescence, J = 5, replicate 0, 500 steps: faithfulness AJI ratio 0.27 at depth 3, "
                            "0.61 at depth 2, and 0.60-0.62 at depth 2 with 1,000 steps, width 0.5 or lambda_s 3)",
                            choices=(2, 3, 4))
    vgg_weights: str = knob("local torchvision VGG19 state dict for the AdaIN encoder (the paper's; '' = "
                            "documented substitute: random-init encoder, recorded with the results; nothing "
                            "is downloaded)")
    adain_size: int = knob("AdaIN training crop side, px (paper: silent; the AdaIN reference: 256)", min=8)
    adain_batch: int = knob("AdaIN minibatch (paper: silent; the AdaIN reference: 8)", min=1)
    adain_steps: int = knob("AdaIN decoder iterations (paper: 30,000, 'epochs' in its text, read as "
                            "iterations; the AdaIN reference code: 160,000)", min=1)
    adain_warmup: int = knob("first AdaIN iterations fitting the decoder as the encoder's inverse (0 = paper)",
                             min=0)
    adain_encoder_steps: int = knob("without vgg_weights: the first of the adain_warmup iterations also train the "
                                    "random-init encoder as an autoencoder on the content masks and real tiles, "
                                    "then frozen (DESIGN.md section 7: a feature network trained on the data at "
                                    "hand); 0 = random-init encoder (the paper: ImageNet VGG19). Measured on "
                                    "phantom fluorescence, 64 px, J = 5, 300 AdaIN steps, 2 replicates: "
                                    "faithfulness AJI ratio 0.00 / 0.04 with 100 encoder steps against 0.00 / 0.57 "
                                    "random-init: no gain, so 0 by default", min=0)
    adain_lr: float = knob("AdaIN Adam learning rate (paper: silent; the AdaIN reference: 1e-4)", min=0.0, max=1.0)
    style_weight: float = knob("lambda_s of the AdaIN loss (reference: 10)", min=0.0)
    invert_content: str = knob("content polarity: auto (from the real images), true (dark nuclei, H&E) or "
                               "false (bright nuclei, fluorescence)", choices=("auto", "true", "false"))
    mix_real: bool = knob("add the J real images to the generated training sets (Table 1: false)")
    hv_width: int = knob("HoVer-Net first-stage channels (paper: 64, HoVer-Net's preact-ResNet-50)", min=1)
    hv_blocks: list[int] = knob("HoVer-Net residual blocks per stage (paper: 3, 4, 6, 3)", min=1)
    hv_block: str = knob("HoVer-Net residual unit: bottleneck (paper: with width 64 and blocks 3, 4, 6, 3 "
                         "the preact-ResNet-50 encoder) or basic (two 3x3; the CPU profiles)",
                         choices=("basic", "bottleneck"))
    hv_crop: int = knob("HoVer-Net training crop, px (paper: 270 in, 80 out with valid convolutions; here "
                        "'same' padding, 256 at paper: documented substitute)", min=8)
    hv_batch: int = knob("HoVer-Net minibatch", min=1)
    hv_steps: int = knob("HoVer-Net iterations per training, the same for every configuration (paper: "
                         "silent; HoVer-Net's own schedule is 2 x 50 epochs: 10,000 at paper is a documented "
                         "substitute)", min=1)
    hv_lr: float = knob("HoVer-Net Adam learning rate (paper: 1e-4)", min=0.0, max=1.0)
    cross_source: str = knob("cross-source test set: a folder of real images with 16-bit instance masks from "
                             "another source ('' = none; the paper tests on NucleusSegData, here e.g. "
                             "../shared/data/real/fluo_u2os); relative to the project root")
    cross_calibration: int = knob("images of cross_source set apart (seeded) to measure its median nucleus "
                                  "diameter, hence its rescaling factor to data.nucleus_diameter; never tested "
                                  "on", min=1)
    threads: int = knob("torch CPU threads (0: torch's default)", min=0)
    n_grid: int = knob("generated pairs shown per sample grid", min=1)


# Table 1 of the paper (NucleusSegData test set; BBBC training images).
PAPER_TABLE1 = (
    {"setting": "Full dataset", "J": 815, "K": 46016, "dice": 0.94, "dice2": 0.70, "aji": 0.81, "aji_plus": 0.81},
    {"setting": "Real", "J": 2, "K": 52, "dice": 0.42, "dice2": 0.53, "aji": 0.22, "aji_plus": 0.22},
    {"setting": "Real", "J": 5, "K": 321, "dice": 0.89, "dice2": 0.58, "aji": 0.58, "aji_plus": 0.58},
    {"setting": "Real", "J": 10, "K": 952, "dice": 0.91, "dice2": 0.67, "aji": 0.70, "aji_plus": 0.72},
    {"setting": "Generated", "J": 2, "K": 52, "dice": 0.89, "dice2": 0.48, "aji": 0.49, "aji_plus": 0.49},
    {"setting": "Generated", "J": 5, "K": 321, "dice": 0.89, "dice2": 0.70, "aji": 0.73, "aji_plus": 0.74},
    {"setting": "Generated", "J": 10, "K": 952, "dice": 0.92, "dice2": 0.69, "aji": 0.75, "aji_plus": 0.76},
)
PAPER_CONDITIONS = ("815 BBBC fluorescence training images (~46,000 nuclei), NucleusSegData test set; "
                    "preact-ResNet-50 HoVer-Net; AdaIN with VGG19 to relu4_1, 30,000 'epochs'; one run per "
                    "configuration, no intervals")
# Sec. 4: "area (155px vs. 153px), aspect ratio (1.31 vs. 1.41) ... IQR (32px vs. 39px, 0.21 vs. 0.23)",
# in the paper's order (it does not say which of the two is the generated set).
PAPER_SHAPES = {"area": {"median": (155.0, 153.0), "iqr": (32.0, 39.0)},
                "aspect_ratio": {"median": (1.31, 1.41), "iqr": (0.21, 0.23)}}


def _bool_choice(value: str, auto: bool) -> bool:
    return auto if value == "auto" else value == "true"


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------

def nested_subsets(n_images: int, j_values, seed: int) -> dict[int, list[int]]:
    """The ``J`` real training images for each ``J``: the first ``J`` of one seeded permutation
    (so smaller sets are inside larger ones), sorted.

    Raises:
        ParamError: a ``J`` exceeds the training set.
    """
    j_values = sorted(set(int(j) for j in j_values))
    if j_values and j_values[-1] > n_images:
        raise ParamError(f"nuclei.j_values asks for J = {j_values[-1]} real images but the training "
                         f"split has {n_images}")
    perm = numpy_rng(seed, 5).permutation(n_images)
    return {j: sorted(int(i) for i in perm[:j]) for j in j_values}


def load_nuclei(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of the prepared ``nuclei`` dataset as ``(N, H, W, 3)`` uint8 and ``(N, H, W)`` int32."""
    pairs = load_split("nuclei", split, root)
    return as_stack(pairs.images, pairs.masks)


def source_images(root: str | Path, split: str) -> list[str]:
    """The real (or phantom) image each tile of a prepared split was cut from (``labels.csv``'s
    ``source_image``; a tile without one is its own image)."""
    pairs = load_split("nuclei", split, root)
    return [pairs.label(n, "source_image") or n for n in pairs.names]


def image_subsets(groups: list[str], j_values, seed: int) -> dict[int, list[int]]:
    """The tiles of the ``J`` real training *images* for each ``J`` (the paper's unit): the first ``J``
    images of one seeded permutation of the distinct images (nested), all their tiles, sorted.

    With one tile per image this is :func:`nested_subsets` exactly.

    Args:
        groups: the source image of every tile (:func:`source_images`).

    Raises:
        ParamError: a ``J`` exceeds the number of training images.
    """
    uniq = list(dict.fromkeys(groups))
    picked = nested_subsets(len(uniq), j_values, seed)
    out = {}
    for j, idx in picked.items():
        chosen = {uniq[i] for i in idx}
        out[j] = [t for t, g in enumerate(groups) if g in chosen]
    return out


def split_record(root: str | Path, cross: CrossSource | None = None) -> dict:
    """The image ids of every split (what ``split.json`` holds): ``{"train": [...], "val": [...], "test":
    [...]}`` (source images, sorted) and, with a cross-source set, ``cross_calibration`` and ``cross_test``."""
    out = {split: sorted(set(source_images(root, split))) for split in ("train", "val", "test")}
    if cross is not None:
        out["cross_source"] = cross.folder
        out["cross_calibration"], out["cross_test"] = list(cross.calibration), list(cross.test)
        out["cross_scale"] = cross.scale.to_dict()
    return out


@dataclass
class CrossSource:
    """A second real source, rescaled by its own calibration subset, as a test set.

    Attributes:
        images, masks: test tiles ``(T, S, S, 3)`` uint8 and ``(T, S, S)`` int32.
        folder: the folder read.
        scale: :class:`~histolib.data.nuclei_scale.NucleusScale` measured on the calibration images.
        calibration: names of the images used only for the scale; test: names of the tested images.
        skipped: ``(file, reason)`` of unreadable files.
    """

    images: np.ndarray
    masks: np.ndarray
    folder: str
    scale: object
    calibration: list[str]
    test: list[str]
    skipped: list = field(default_factory=list)

    def text(self) -> str:
        return (f"`{self.folder}`: {len(self.test)} images ({len(self.images)} tiles), rescaled "
                f"{self.scale.text()}; calibration images (not tested): {', '.join(self.calibration)}")


def load_cross_source(folder: str | Path, target_diameter: float, size: int, n_calibration: int, seed: int,
                      label: str | None = None) -> CrossSource:
    """Read a cross-source test folder (``images/``, 16-bit instance ``masks/``) at the study's scale.

    Its scale cannot come from the training masks (another microscope, another pixel size: the U2OS
    nuclei are ~6x the BBBC ones) nor from its own test masks. ``n_calibration`` of its images, drawn
    with ``seed``, are set apart: their median nucleus diameter gives the factor
    ``target_diameter / median`` (:func:`histolib.data.nuclei_scale.nucleus_scale`), as a user would
    annotate a few images of a new microscope; the other images are rescaled by it, cut into ``size``
    tiles (:func:`histolib.data.nuclei_scale.scaled_tiles`) and tested, the calibration ones never.

    Raises:
        DataError: unreadable folder, no nucleus in the calibration images, or no image left to test.
    """
    import warnings

    from histolib.data.folder import load_pairs
    from histolib.data.nuclei_scale import nucleus_scale, scaled_tiles

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # grey-as-RGB conversions: expected for fluorescence
        pairs = load_pairs(folder, "instances", strict=False)
    n = len(pairs)
    if n_calibration >= n:
        raise DataError(f"{folder}: nuclei.cross_calibration = {n_calibration} leaves none of its {n} images "
                        "to test on")
    order = numpy_rng(seed, 70).permutation(n)
    cal, rest = sorted(order[:n_calibration].tolist()), sorted(order[n_calibration:].tolist())
    scale = nucleus_scale([pairs.masks[i] for i in cal], target_diameter, measured_on="calibration")
    t = scaled_tiles([pairs.images[i] for i in rest], [pairs.masks[i] for i in rest],
                     [pairs.names[i] for i in rest], scale.factor, size)
    return CrossSource(np.stack(t["images"]).astype(np.uint8), np.stack(t["masks"]).astype(np.int32),
                       label or str(folder), scale, [pairs.names[i] for i in cal], [pairs.names[i] for i in rest],
                       list(pairs.skipped))


def as_stack(images, masks) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (arrays or lists of equal-size arrays) as ``(N, H, W, 3)`` uint8 and ``(N, H, W)`` int32."""
    try:
        return np.stack(list(images)).astype(np.uint8), np.stack(list(masks)).astype(np.int32)
    except ValueError as e:
        raise DataError(f"nuclei images of different sizes: tile or crop them to one size first ({e})") from e


def tiles(images: np.ndarray, masks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``size`` tiles of images and instance maps (remainders dropped, ids renumbered).

    Raises:
        ParamError: the images are smaller than ``size``.
    """
    n, h, w = masks.shape
    if h < size or w < size:
        raise ParamError(f"nuclei.field_size = {size} is larger than the real images ({h} x {w})")
    out_i, out_m = [], []
    for i in range(n):
        for y in range(0, h - size + 1, size):
            for x in range(0, w - size + 1, size):
                out_i.append(images[i, y:y + size, x:x + size])
                out_m.append(relabel_sequential(masks[i, y:y + size, x:x + size]))
    return np.stack(out_i), np.stack(out_m)


def count_nuclei(mask: np.ndarray) -> int:
    """Number of instance ids present."""
    ids = np.unique(mask)
    return int(np.count_nonzero(ids))


# --------------------------------------------------------------------------------------------
# Generation (Algorithm 1)
# --------------------------------------------------------------------------------------------

@dataclass
class Source:
    """What generation learned from ``J`` real images.

    Attributes:
        j, k: number of real images and of annotated nuclei in them.
        tile_images, tile_masks: the real style tiles ``(T, S, S, 3)`` and their instance maps.
        real_blobs: the nuclei used for interpolation (not touching a tile border).
        pool: the interpolated blobs ``{B~_l}``.
        perlin: fitted prior parameters; ``perlin_losses`` the fit's loss per step.
        spacing: the distribution ``S``; ``count_range`` fewest and most nuclei of a tile.
        invert_content: AdaIN content polarity (nuclei darker than the background).
        grey: every real tile is grey stored as RGB (fluorescence): generated images are made grey too
            (:func:`grey_as_rgb`), as a colour cast of the decoder is not in the data.
    """

    j: int
    k: int
    tile_images: np.ndarray
    tile_masks: np.ndarray
    real_blobs: list
    pool: list
    perlin: PerlinParams
    perlin_losses: list
    spacing: PL.SpacingDistribution
    count_range: tuple[int, int]
    invert_content: bool
    seconds: dict = field(default_factory=dict)
    grey: bool = False

    @property
    def style_counts(self) -> list[int]:
        return [count_nuclei(m) for m in self.tile_masks]


def fit_source(images: np.ndarray, masks: np.ndarray, C: NucleiParams, seed: int, j: int | None = None) -> Source:
    """Blobs, prior, spacing and counts from ``J`` real images (Algorithm 1 before its loop).

    Args:
        images, masks: the tiles of the ``J`` real images ``(T, H, W, 3)`` uint8 and instance maps.
        C: the ``nuclei`` params.
        seed: base seed (the streams used are derived from it).
        j: the number of real images the tiles come from (default: one image per tile).

    Raises:
        DataError: fewer than two usable nuclei in the images.
    """
    t0 = time.perf_counter()
    tile_i, tile_m = tiles(images, masks, C.field_size)
    real_blobs = [b for m in tile_m for b in B.extract_blobs(m)]
    if len(real_blobs) < 2:
        raise DataError(f"only {len(real_blobs)} nuclei away from the tile borders in the {len(images)} real "
                        "images: at least 2 are needed to interpolate blobs")
    median_area = float(np.median([b.sum() for b in real_blobs]))
    j = len(images) if j is None else int(j)
    pool = B.interpolate_blobs(real_blobs, C.blobs_per_j, numpy_rng(seed, 10, j),
                               n_points=C.n_points, min_area=int(round(C.min_area_fraction * median_area)),
                               min_fill=C.min_fill)
    t1 = time.perf_counter()
    targets = density_target(tile_m, C.blur_sigma)
    gen = torch.Generator().manual_seed(seed * 1000 + j)
    perlin, losses = fit_perlin_prior(targets, octaves=C.perlin_octaves, steps=C.perlin_steps, lr=C.perlin_lr,
                                      batch=C.perlin_batch, generator=gen)
    t2 = time.perf_counter()
    spacing = PL.spacing_distribution(list(tile_m), n_bins=C.spacing_bins)
    counts = [count_nuclei(m) for m in tile_m]
    invert = _bool_choice(C.invert_content, nuclei_are_dark(tile_i, tile_m))
    return Source(j=j, k=sum(count_nuclei(m) for m in masks), tile_images=tile_i, tile_masks=tile_m,
                  real_blobs=real_blobs, pool=pool, perlin=perlin, perlin_losses=losses, spacing=spacing,
                  count_range=(max(1, min(counts)), max(1, max(counts))), invert_content=invert,
                  grey=is_grey(tile_i),
                  seconds={"blobs": t1 - t0, "perlin_fit": t2 - t1})


@dataclass
class GeneratedMasks:
    """``N`` generated ground truths with their priors and placement records."""

    masks: np.ndarray         # (N, S, S) int32
    priors: np.ndarray        # (N, S, S) float32
    placements: list          # PL.Placement per mask
    offered: list             # number of blobs offered per mask


def generate_masks(source: Source, n: int, C: NucleiParams, seed: int, stream: int = 0) -> GeneratedMasks:
    """``N`` masks ``M~`` by greedy placement on fresh Perlin priors (Algorithm 1, lines 6-7)."""
    size = C.field_size
    priors = perlin_prior(source.perlin, n, size, size,
                          generator=torch.Generator().manual_seed(seed * 7919 + 31 * stream + source.j)).numpy()
    lo, hi = source.count_range
    masks, placements, offered = [], [], []
    top = None if C.top_fraction >= 1.0 else C.top_fraction
    for i in range(n):
        rng = numpy_rng(seed, 20 + stream, source.j, i)
        n_offer = int(rng.integers(lo, hi + 1))
        pick = rng.choice(len(source.pool), n_offer, replace=n_offer > len(source.pool))
        pl = PL.greedy_placement(priors[i], [source.pool[j] for j in pick], source.spacing, rng,
                                 patience=C.patience, top_fraction=top)
        masks.append(pl.instances)
        placements.append(pl)
        offered.append(n_offer)
    return GeneratedMasks(np.stack(masks).astype(np.int32), priors.astype(np.float32), placements, offered)


def adain_config(C: NucleiParams, invert: bool, seed: int) -> AdaINTrainConfig:
    """The AdaIN training options of the ``nuclei`` params."""
    return AdaINTrainConfig(width=C.adain_width, depth=C.adain_depth, weights_path=C.vgg_weights or None,
                            size=C.adain_size, batch_size=C.adain_batch, steps=C.adain_steps, lr=C.adain_lr,
                            style_weight=C.style_weight, invert_content=invert, warmup_steps=C.adain_warmup,
                            encoder_steps=C.adain_encoder_steps,
                            ckpt_every=max(1, C.adain_steps // 5), log_every=max(1, C.adain_steps // 50),
                            seed=seed)


def train_style(source: Source, C: NucleiParams, seed: int, folder: Path, progress: bool = True,
                ) -> tuple[AdaINStyleTransfer, EncoderInfo, GeneratedMasks]:
    """AdaIN for one ``J``: content = flattened generated masks (own stream), style = the real tiles."""
    contents = generate_masks(source, C.n_generated, C, seed, stream=500)
    model, info = train_adain(contents.masks, source.tile_images, adain_config(C, source.invert_content, seed),
                              folder, progress=progress)
    return model, info, contents


@dataclass
class GeneratedSet:
    """Generated image/mask pairs of one ``J`` and seed."""

    images: np.ndarray        # (N, S, S, 3) uint8
    masks: np.ndarray         # (N, S, S) int32
    style_index: np.ndarray   # (N,) real tile used as style R
    generated: GeneratedMasks


def generate_set(source: Source, model: AdaINStyleTransfer, C: NucleiParams, seed: int) -> GeneratedSet:
    """``N`` pairs ``(I~, M~)``: masks by :func:`generate_masks`, images by AdaIN with the real tile of
    closest nucleus count as style (Algorithm 1, lines 8-9)."""
    gm = generate_masks(source, C.n_generated, C, seed)
    images, chosen = generate_images(model, gm.masks, source.tile_images, source.style_counts,
                                     generator=torch.Generator().manual_seed(seed),
                                     invert_content=source.invert_content)
    if source.grey:
        images = grey_as_rgb(images)
    return GeneratedSet(images, gm.masks, chosen, gm)


def is_grey(images: np.ndarray) -> bool:
    """Whether ``(..., 3)`` uint8 images are grey stored as RGB (all three channels equal everywhere)."""
    images = np.asarray(images)
    return bool(images.size) and bool((images[..., 0] == images[..., 1]).all()
                                      and (images[..., 0] == images[..., 2]).all())


def grey_as_rgb(images: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 -> the same shape, every channel the rounded channel mean (grey stored as RGB)."""
    images = np.asarray(images)
    grey = np.round(images.astype(np.float32).mean(-1)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


# --------------------------------------------------------------------------------------------
# Blob shapes (Sec. 4) and the interpolation figure (Fig. 2)
# --------------------------------------------------------------------------------------------

def shape_rows(real_blobs: list, generated_blobs: list) -> list[dict]:
    """Median and IQR of area (px) and aspect ratio of generated and real blobs, with the paper's."""
    real, gen = B.blob_shape_stats(real_blobs), B.blob_shape_stats(generated_blobs)
    rows = []
    for q in ("area", "aspect_ratio"):
        r, g = B.summarise(real[q]), B.summarise(gen[q])
        for stat in ("median", "iqr"):
            p = PAPER_SHAPES[q][stat]
            rows.append({"quantity": q, "statistic": stat, "generated": g[stat], "real": r[stat],
                         "relative difference": (g[stat] - r[stat]) / r[stat] if r[stat] else math.nan,
                         "paper (as listed)": f"{p[0]:g} vs {p[1]:g}"})
    return rows


def interpolation_examples(real_blobs: list, n_points: int, alphas=(0.0, 0.25, 0.5, 0.75, 1.0), seed: int = 0,
                           ) -> dict:
    """Fig. 2 material: two real blobs, their registered contours and blobs at several ``alpha``."""
    rng = numpy_rng(seed, 30)
    areas = np.array([b.sum() for b in real_blobs])
    big = np.flatnonzero(areas >= np.median(areas))
    k1, k2 = rng.choice(big if len(big) >= 2 else np.arange(len(real_blobs)), 2, replace=False)
    c = B.contour_points([real_blobs[k1], real_blobs[k2]], n_points)
    c = c - c.mean(axis=1, keepdims=True)
    reg = B.icp(c[:1], c[1:])
    p1 = B.pair_cyclic(reg.aligned, c[1:])[0]
    contours = [B.interpolate_contours(p1, c[1], a) for a in alphas]
    return {"pair": (real_blobs[k1], real_blobs[k2]), "p1": p1, "p2": c[1], "alphas": list(alphas),
            "contours": contours, "blobs": B.fill_contours(np.stack(contours))}


def interpolation_figure(ex: dict):
    """Fig. 2: ``B_k1`` (blue), ``B_k2`` (green), the interpolation lines and new blobs (orange)."""
    import matplotlib.pyplot as plt

    n = len(ex["alphas"])
    fig, axes = plt.subplots(1, n + 1, figsize=(2.2 * (n + 1), 2.4))
    ax = axes[0]
    p1, p2 = ex["p1"], ex["p2"]
    for a, b in zip(p1[::2], p2[::2], strict=True):
        ax.plot([a[1], b[1]], [a[0], b[0]], color="0.75", lw=0.6)
    ax.plot(*np.vstack([p1, p1[:1]])[:, ::-1].T, color="tab:blue", label="B_k1 (registered)")
    ax.plot(*np.vstack([p2, p2[:1]])[:, ::-1].T, color="tab:green", label="B_k2")
    for cont in ex["contours"][1:-1]:
        ax.plot(*np.vstack([cont, cont[:1]])[:, ::-1].T, color="tab:orange", lw=1)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_title("contours", fontsize=9)
    ax.axis("off")
    from matplotlib.path import Path as MplPath

    allp = np.concatenate(ex["contours"])
    lo, hi = np.floor(allp.min(axis=0)) - 1, np.ceil(allp.max(axis=0)) + 1
    gy, gx = np.mgrid[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1]
    for ax, a, blob, cont in zip(axes[1:], ex["alphas"], ex["blobs"], ex["contours"], strict=True):
        # pixel centres inside the contour, on one grid for all panels (the blob's own fill,
        # cropped by fill_contours, has the pixel count in the title)
        inside = MplPath(cont[:, ::-1]).contains_points(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gy.shape)
        colour = "Oranges" if 0 < a < 1 else ("Blues" if a == 1 else "Greens")
        ax.imshow(inside, cmap=colour, vmin=0, vmax=1.5, extent=(lo[1] - 0.5, hi[1] + 0.5, hi[0] + 0.5, lo[0] - 0.5))
        ax.plot(*np.vstack([cont, cont[:1]])[:, ::-1].T, color="k", lw=0.8)
        ax.set_title(f"alpha = {a:g} ({int(blob.sum())} px)", fontsize=9)
        ax.axis("off")
    fig.suptitle("Fig. 2: interpolation between two real nuclei (ICP-registered, E points)", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Placement against the prior (Fig. 3)
# --------------------------------------------------------------------------------------------

def placement_study(source: Source, C: NucleiParams, seed: int) -> dict:
    """Greedy placement (authors' top-fraction sampling), greedy with sampling from all of ``G``
    (Algorithm 3 as printed), and the random prior-weighted baseline with as many blobs as the
    greedy one, on the same priors and offered blobs. Score: :func:`histolib.ops.placement.prior_correlation`
    with ``blur_sigma``.

    Returns:
        ``{"correlation": {method: [per prior]}, "blobs": {method: [...]}, "summary": {...}, "example": {...}}``;
        :func:`paired_evidence` compares two methods over the priors.
    """
    size = C.field_size
    n = C.n_placement_eval
    priors = perlin_prior(source.perlin, n, size, size, generator=torch.Generator().manual_seed(seed + 4242)).numpy()
    lo, hi = source.count_range
    methods = ("greedy", "greedy_all_of_G", "random")
    corr = {m: [] for m in methods}
    count = {m: [] for m in methods}
    example = None
    top = None if C.top_fraction >= 1.0 else C.top_fraction
    for i in range(n):
        rng = numpy_rng(seed, 40, i)
        n_offer = int(rng.integers(lo, hi + 1))
        pick = rng.choice(len(source.pool), n_offer, replace=n_offer > len(source.pool))
        stack = PL.centred_stack([source.pool[j] for j in pick])
        g = PL.greedy_placement(priors[i], stack, source.spacing, numpy_rng(seed, 41, i), patience=C.patience,
                                top_fraction=top)
        ga = PL.greedy_placement(priors[i], stack, source.spacing, numpy_rng(seed, 42, i), patience=C.patience,
                                 top_fraction=None)
        r = PL.random_placement(priors[i], stack, g.n, numpy_rng(seed, 43, i))
        for m, pl in zip(methods, (g, ga, r), strict=True):
            corr[m].append(PL.prior_correlation(pl.instances, priors[i], C.blur_sigma))
            count[m].append(pl.n)
        if example is None:
            example = {"prior": priors[i], "greedy": g.instances, "greedy_all_of_G": ga.instances,
                       "random": r.instances}
    corr = {m: [float(v) for v in np.nan_to_num(c)] for m, c in corr.items()}
    return {"correlation": corr, "blobs": count, "example": example,
            "summary": {m: summarize(corr[m]) for m in methods}}


def paired_evidence(a, b, alpha: float = 0.05, bounds: tuple[float, float] = (-2.0, 2.0),
                    unit: str = "") -> report.Evidence:
    """``mean(a - b)`` over paired units (the same priors), its interval at ``1 - alpha``, a paired
    t-test and the minimum detectable effect (the differences are one level: ``single_level``)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    s = report.two_level_summary(report.single_level(d), bounds=bounds, confidence=1 - alpha)
    t = paired_test(a, b)
    return report.Evidence(estimate=s["mean"], low=s["ci_low"], high=s["ci_high"], p=t["p"],
                           test=f"paired t-test over {d.size} priors", unit=unit,
                           mde=report.minimum_detectable_effect(s["se"], s["df"], alpha),
                           detail=f"{np.mean(a):.3f} vs {np.mean(b):.3f}")


def placement_figure(study: dict):
    """Fig. 3: the prior (a), random weighted placement (b), greedy placement (c), with scores."""
    import matplotlib.pyplot as plt

    ex, s = study["example"], study["summary"]
    panels = [("(a) prior P", ex["prior"], None), ("(b) random, P-weighted", ex["random"], "random"),
              ("(c) greedy (ours)", ex["greedy"], "greedy"),
              ("greedy, all of G", ex["greedy_all_of_G"], "greedy_all_of_G")]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, (title, img, key) in zip(axes, panels, strict=True):
        if key is None:
            ax.imshow(img, cmap="magma", vmin=0, vmax=1)
        else:
            ax.imshow(ex["prior"], cmap="magma", vmin=0, vmax=1, alpha=0.35)
            ax.imshow(np.ma.masked_equal(img > 0, False), cmap="Greens", vmin=0, vmax=1, alpha=0.9)
            title += f"\nr = {s[key]['mean']:.2f} (mean of {s[key]['n']} priors)"
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle("Fig. 3: placement against the prior (r: correlation of blurred placed nuclei with P)",
                 fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Segmentation experiments (Table 1, Fig. 5)
# --------------------------------------------------------------------------------------------

def hovernet_config(C: NucleiParams, seed: int) -> HoVerNetTrainConfig:
    """The HoVer-Net training options of the ``nuclei`` params."""
    return HoVerNetTrainConfig(width=C.hv_width, blocks=tuple(C.hv_blocks), block=C.hv_block, crop=C.hv_crop,
                               batch_size=C.hv_batch,
                               steps=C.hv_steps, lr=C.hv_lr, ckpt_every=max(1, C.hv_steps // 5),
                               log_every=max(1, C.hv_steps // 50), seed=seed)


def train_and_test(images: np.ndarray, masks: np.ndarray, test_images: np.ndarray, test_masks: np.ndarray,
                   C: NucleiParams, seed: int, folder: Path, progress: bool = True,
                   cross: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Train one HoVer-Net and score it on the test split (per image, then averaged), and on the
    cross-source test tiles ``cross`` when given (keys ``cross_<metric>``).

    The post-processing sizes are HoVer-Net's scaled to the median nucleus diameter of the
    *training* masks (:func:`~histolib.ops.instance.postprocess_sizes`): known to every
    configuration, never read from a test set (the cross-source tiles were rescaled to the same
    diameter by their calibration images).
    """
    t0 = time.perf_counter()
    model = train_hovernet(images, masks, hovernet_config(C, seed), folder, progress=progress)
    t1 = time.perf_counter()
    diameter = median_nucleus_diameter(masks)
    sizes = postprocess_sizes(diameter)
    scores = evaluate_hovernet(model, test_images, test_masks, postprocess=sizes)
    if cross is not None:
        xs = evaluate_hovernet(model, cross[0], cross[1], postprocess=sizes)
        scores = {**scores, **{f"cross_{k}": xs[k] for k in METRIC_KEYS}}
    return {**{k: scores[k] for k in scores if k in METRIC_KEYS or k.startswith("cross_")},
            "train_seconds": t1 - t0,
            "test_seconds": time.perf_counter() - t1, "n_train": int(len(images)),
            "train_nucleus_diameter": diameter, **{f"pp_{k}": v for k, v in sizes.items()}}


def experiment_row(setting: str, j: int, k: int, seed: int, scores: dict, replicate: int | None = None,
                   generator_seed: int | None = None) -> dict:
    """One row of the per-run table (``replicate``: the generator replicate, None without a generator)."""
    return {"setting": setting, "J": j, "K": k, "replicate": replicate, "generator_seed": generator_seed,
            "seed": seed, **scores}


def groups(rows: list[dict], setting: str, j: int, metric: str) -> list[list[float]]:
    """The two-level sample of one (setting, J): one list of seed scores per generator replicate
    for ``Generated``, :func:`histolib.report.single_level` of the seeds otherwise."""
    sel = [r for r in rows if r["setting"] == setting and r["J"] == j]
    if setting != "Generated":
        return report.single_level([r[metric] for r in sorted(sel, key=lambda r: r["seed"])])
    by: dict = {}
    for r in sorted(sel, key=lambda r: r["seed"]):
        by.setdefault(r["replicate"], []).append(r[metric])
    return [by[g] for g in sorted(by)]


def _configurations(rows: list[dict]) -> list[tuple[str, int, int]]:
    order = {"Full dataset": 0, "Real": 1, "Generated": 2}
    keys = {(r["setting"], r["J"], r["K"]) for r in rows}
    return sorted(keys, key=lambda k: (order.get(k[0], 3), k[1]))


def table1_summaries(rows: list[dict], alpha: float = 0.05, prefix: str = "") -> list[dict]:
    """Per (setting, J): :func:`histolib.report.two_level_summary` of every metric (mean of the
    generator means, interval at ``1 - alpha``). ``prefix="cross_"``: the cross-source test's scores,
    under the plain metric names."""
    return [{"setting": s, "J": j, "K": k,
             **{m: report.two_level_summary(groups(rows, s, j, prefix + m), confidence=1 - alpha)
                for m in METRIC_KEYS}}
            for s, j, k in _configurations(rows)]


def table1_means(rows: list[dict], prefix: str = "") -> list[dict]:
    """Two-level mean of every metric per (setting, J), as floats (``prefix``: see :func:`table1_summaries`)."""
    return [{"setting": t["setting"], "J": t["J"], "K": t["K"], **{m: t[m]["mean"] for m in METRIC_KEYS}}
            for t in table1_summaries(rows, prefix=prefix)]


def has_cross(rows: list[dict]) -> bool:
    """Whether the runs were also tested on a cross-source set."""
    return bool(rows) and all("cross_aji" in r for r in rows)


def table1(rows: list[dict], faith: dict | None = None, alpha: float = 0.05, prefix: str = "") -> list[dict]:
    """Table 1 equivalent: two-level mean and interval per (setting, J), generator replicates,
    faithfulness (``Generated`` rows) and the paper's numbers beside.

    Args:
        faith: :func:`faithfulness_all`'s result (``{(j, replicate): {"aji": ..., "dice": ...}}``).
        prefix: ``"cross_"`` for the scores on the cross-source test set (the paper's own Table 1 is a
            cross-source test: BBBC training images, NucleusSegData test images).
    """
    paper = {(p["setting"], p["J"] if p["setting"] != "Full dataset" else None): p for p in PAPER_TABLE1}
    out = []
    for t in table1_summaries(rows, alpha, prefix):
        setting, j = t["setting"], t["J"]
        ref = paper.get((setting, None if setting == "Full dataset" else j), {})
        gen = setting == "Generated"
        row = {"setting": setting, "J": j, "K": t["K"],
               "generator replicates": t["aji"]["n_generators"] if gen else "-",
               "seeds": t["aji"]["n_seeds"] if gen else t["aji"]["n_generators"]}
        for m in ("dice", "dice2", "aji", "aji_plus"):
            row[METRIC_LABELS[m]] = report.fmt_interval(t[m], scale=1, digits=3)
            row[f"paper {METRIC_LABELS[m]}"] = f"{ref[m]:.2f}" if ref else ""
        f = [faith[key] for key in sorted(faith or {}) if key[0] == j] if gen else []
        row["faithfulness AJI (per replicate)"] = (
            f"{np.mean([x['aji']['synthetic'] for x in f]):.3f} ("
            + ", ".join(f"{x['aji']['synthetic']:.3f}" for x in f) + ")") if f else ""
        row["segmenter AJI on real test"] = f"{f[0]['aji']['real']:.3f}" if f else ""
        row["faithfulness DICE"] = f"{np.mean([x['dice']['synthetic'] for x in f]):.3f}" if f else ""
        row["paper J / K"] = f"{ref['J']} / {ref['K']}" if ref else ""
        out.append(row)
    return out


def curve_rows(rows: list[dict], alpha: float = 0.05) -> list[dict]:
    """Fig. 5 data: per (setting, J) the two-level mean and interval of every metric, against K (long
    format for DVC plots)."""
    return [{"setting": t["setting"], "J": t["J"], "K": t["K"], "metric": METRIC_LABELS[m],
             "value": t[m]["mean"], "ci_low": t[m]["ci_low"], "ci_high": t[m]["ci_high"]}
            for t in table1_summaries(rows, alpha) for m in METRIC_KEYS]


def curve_tables(rows: list[dict]) -> dict[str, list[dict]]:
    """Fig. 5 data in wide form, one table per setting (``K`` then one column per metric): the
    files DVC plots."""
    out: dict[str, list[dict]] = {}
    for t in sorted(table1_means(rows), key=lambda r: r["K"]):
        out.setdefault(t["setting"], []).append({"K": t["K"], "J": t["J"],
                                                 **{METRIC_LABELS[m]: t[m] for m in METRIC_KEYS}})
    return out


def curve_figure(rows: list[dict], alpha: float = 0.05):
    """Fig. 5: each metric against the number K of real nuclei, two-level means with their intervals
    (error bars where defined); full dataset dashed, paper dotted."""
    import matplotlib.pyplot as plt

    summ = table1_summaries(rows, alpha)
    metrics = ("dice", "dice2", "aji", "aji_plus")
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), sharey=True)
    colours = {"Real": "tab:blue", "Generated": "tab:orange"}
    ks_measured = sorted({r["K"] for r in summ if r["setting"] != "Full dataset"})
    for ax, m in zip(axes, metrics, strict=True):
        for setting in ("Real", "Generated"):
            pts = sorted((r["K"], r[m]["mean"], r[m]["ci_low"], r[m]["ci_high"]) for r in summ
                         if r["setting"] == setting)
            if pts:
                k, mean, lo, hi = (np.array(v, float) for v in zip(*pts, strict=True))
                err = np.nan_to_num(np.stack([mean - lo, hi - mean]), nan=0.0)
                ax.errorbar(k, mean, yerr=err, fmt="o-", capsize=3, color=colours[setting],
                            label=f"{setting} (ours)")
            paper = sorted((p["J"], p[m]) for p in PAPER_TABLE1 if p["setting"] == setting)
            ks = sorted(r["K"] for r in summ if r["setting"] == setting)
            if paper and len(ks) == len(paper):
                ax.plot(ks, [v for _, v in paper], ":", color=colours[setting], alpha=0.6,
                        label=f"{setting} (paper, at our K)")
        full = [r[m]["mean"] for r in summ if r["setting"] == "Full dataset"]
        if full:
            ax.axhline(full[0], ls="--", color="k", lw=1, label="full dataset (ours)")
        ax.set_xscale("log")
        ax.set_xticks(ks_measured, [str(k) for k in ks_measured])  # the measured K, not crowded log minor labels
        ax.minorticks_off()
        ax.set_xlabel("K, real nuclei used")
        ax.set_title(METRIC_LABELS[m])
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Fig. 5: HoVer-Net test metrics by number of real nuclei (two-level {1 - alpha:.0%} intervals)",
                 fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Faithfulness of the generated images (segmenter trained on real images only)
# --------------------------------------------------------------------------------------------

def real_segmenter(train: tuple[np.ndarray, np.ndarray], C: NucleiParams, seed: int, models: Path,
                   progress: bool = False, n_train_images: int | None = None):
    """The ``Full dataset`` HoVer-Net of ``seed`` (trained on the real training images only), as
    ``segment(images) -> (N, H, W)`` instance maps with its post-processing sizes. Loads the model
    :func:`run_experiments` trained (same folder and config); trains it if missing."""
    images, masks = train
    model = train_hovernet(images, masks, hovernet_config(C, seed),
                           Path(models) / "hovernet" / f"full_J{n_train_images or len(images)}_s{seed}",
                           progress=progress)
    sizes = postprocess_sizes(median_nucleus_diameter(masks))
    cache: dict = {}

    def segment(x: np.ndarray) -> np.ndarray:
        key = id(x)  # the real test images are segmented once, not once per replicate
        if key not in cache:
            cache[key] = (x, np.stack(predict_instances(model, x, postprocess=sizes)))
        return cache[key][1]

    return segment


def faithfulness_all(segment, sets: dict, test: tuple[np.ndarray, np.ndarray]) -> dict:
    """Every replicate's faithfulness: the real-trained segmenter on its generated images against
    their generating instance maps (AJI per image then averaged, hover_net's ``(true, pred)`` order;
    and DICE), beside its score on the real test images.

    Returns:
        ``{(j, replicate): {"aji": faithfulness result, "dice": faithfulness result}}``.
    """
    scores = {"aji": per_image_mean(IM.aggregated_jaccard), "dice": per_image_mean(IM.dice)}
    return {key: {name: faithfulness(segment, gs.images, gs.masks, test[0], test[1], score=sc)
                  for name, sc in scores.items()}
            for key, gs in sets.items()}


def faithfulness_rows(faith: dict, gate: float) -> list[dict]:
    """One row per (J, replicate): AJI and DICE on generated vs real test images, ratio, gate."""
    return [{"J": j, "replicate": g, "AJI generated": f["aji"]["synthetic"], "AJI real test": f["aji"]["real"],
             "AJI ratio": f["aji"]["ratio"], "DICE generated": f["dice"]["synthetic"],
             "DICE real test": f["dice"]["real"], f"passes {gate:g} x real": bool(f["aji"]["ratio"] >= gate)}
            for (j, g), f in sorted(faith.items())]


def _gates(faith: dict, js, gate: float) -> list[report.Precondition]:
    return [p for j in js
            for p in report.faithfulness_gates([faith[(jj, g)]["aji"] for (jj, g) in sorted(faith) if jj == j], gate,
                                               name=f"J = {j} generator (AJI)")]


# --------------------------------------------------------------------------------------------
# Figures of generated data (Fig. 4, sample grids)
# --------------------------------------------------------------------------------------------

def style_figure(gs: GeneratedSet, source: Source, n: int = 3):
    """Fig. 4: generated mask (the condition), reference style R, generated image, for ``n`` examples."""
    from histolib import viz

    rows = []
    for i in range(min(n, len(gs.masks))):
        rows.append([viz.instances_to_rgb(gs.masks[i]), source.tile_images[gs.style_index[i]], gs.images[i],
                     viz.overlay(gs.images[i], gs.masks[i])])
    return viz.image_grid(rows, col_labels=["(a) generated mask M~", "(b) reference style R",
                                            "(c) I~ from M~", "I~ with M~ outlined"],
                          title="Fig. 4: style transfer of generated masks")


def save_png(image: np.ndarray, path: str | Path, zoom: int = 2) -> Path:
    """Write an ``(H, W, 3)`` uint8 mosaic as PNG, enlarged ``zoom`` times (nearest neighbour)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.repeat(np.repeat(np.asarray(image, np.uint8), zoom, axis=0), zoom, axis=1)
    Image.fromarray(img).save(path)
    return path


def sample_grid(gs: GeneratedSet, n: int) -> np.ndarray:
    """A mosaic of ``n`` generated pairs: image above, image with its mask outlined below."""
    from histolib import viz

    n = min(n, len(gs.images))
    top = [gs.images[i] for i in range(n)]
    bottom = [viz.overlay(gs.images[i], gs.masks[i]) for i in range(n)]
    return viz.tile_images(top + bottom, ncol=n)


# --------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------

SHAPE_TOLERANCE = {"median": 0.10, "iqr": 0.25}  # the paper's own gaps: medians 1-7 %, IQRs 10-18 %


def shape_evidence(real_blobs: list, generated_blobs: list, alpha: float = 0.05, n_boot: int = 1000,
                   seed: int = 0) -> report.Evidence:
    """Blob shapes against the tolerance: ``min over (area, aspect ratio) x (median, IQR) of
    tolerance - |relative difference|`` (positive: every statistic within its tolerance), with a
    percentile bootstrap interval over blobs (real and generated blobs resampled independently)."""
    real, gen = B.blob_shape_stats(real_blobs), B.blob_shape_stats(generated_blobs)

    def margins(ri, gi) -> dict:
        out = {}
        for q in ("area", "aspect_ratio"):
            r, g = B.summarise(real[q][ri]), B.summarise(gen[q][gi])
            for stat, tol in SHAPE_TOLERANCE.items():
                out[f"{q} {stat}"] = tol - abs((g[stat] - r[stat]) / r[stat]) if r[stat] else math.nan
        return out

    nr, ng = len(real_blobs), len(generated_blobs)
    point = margins(np.arange(nr), np.arange(ng))
    rng = numpy_rng(seed, 60)
    boot = np.array([min(margins(rng.integers(0, nr, nr), rng.integers(0, ng, ng)).values())
                     for _ in range(n_boot)])
    boot = boot[np.isfinite(boot)]
    lo, hi = (np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if boot.size else (math.nan, math.nan))
    se = float(boot.std(ddof=1)) if boot.size > 1 else math.nan
    return report.Evidence(
        estimate=min(point.values()), low=float(lo), high=float(hi),
        test=f"percentile bootstrap over blobs ({n_boot} resamples; {nr} real, {ng} generated)",
        mde=report.minimum_detectable_effect(se, nr - 1, alpha), unit="(fraction of the real value)",
        detail="margins " + ", ".join(f"{k} {v:+.3f}" for k, v in point.items())
               + "; tolerance: medians 10 %, IQRs 25 %")


def gain_contrast(gen_a, real_a, gen_b, real_b, alpha: float = 0.05, power: float = 0.8) -> dict:
    """``(gen_a - real_a) - (gen_b - real_b)``: the gain at one J minus the gain at another, the
    contrast ``(+1, -1, -1, +1)`` of four independent two-level samples
    (:func:`histolib.report.two_level_contrast`), clipped to [-2, 2]."""
    return report.two_level_contrast([gen_a, real_a, gen_b, real_b], [1, -1, -1, 1], bounds=(-2.0, 2.0),
                                     alpha=alpha, power=power, label="generated, real at each J")


def claim_list(js: list[int], metric: str = "aji") -> list[report.Claim]:
    """The paper's claims (and the study's extension) as data."""
    lab = METRIC_LABELS[metric]
    j0, jl = (js[0], js[-1]) if js else (2, 10)
    return [
        report.Claim("004-blob-shapes", "004", "Sec. 4 (experiments, blob analysis)",
                     "Generated blobs are close to real ones in the distributions of area and aspect ratio, in the "
                     "median (A: 155px vs. 153px, ar: 1.31 vs. 1.41) and in the Inter-Quartile Range (A: 32px vs. "
                     "39px, ar: 0.21 vs. 0.23).",
                     "blob area and aspect ratio (median, IQR)",
                     "tolerance - |relative difference| (generated vs real), the worst of the four statistics",
                     +1, "A 155 vs 153 px, ar 1.31 vs 1.41; IQR 32 vs 39 px, 0.21 vs 0.23"),
        report.Claim("004-greedy-placement", "004", "Sec. 3.2, Fig. 3",
                     "The proposed greedy procedure yields GTs that follow the prior more faithfully w.r.t. a random "
                     "placement weighted according to P.",
                     "correlation of the blurred placed nuclei with the prior P",
                     "greedy - random P-weighted (paired over priors)", +1, "qualitative (Fig. 3)"),
        report.Claim("004-gain-smallest-J", "004", "Sec. 4, Table 1, Fig. 5",
                     "When trained from a generated dataset starting from only two real images (52 blobs), HoVerNet "
                     "achieves 0.89 DICE score and 0.49 AJI score, compared to 0.42 and 0.22 when the same "
                     "architecture is trained only on the same two real images.",
                     f"test {lab}", f"Generated - Real at J = {j0}", +1,
                     "AJI 0.22 -> 0.49 (+0.27), DICE 0.42 -> 0.89 at J = 2"),
        report.Claim("004-gain-fades", "004", "Sec. 4, Table 1, Fig. 5",
                     "When increasing the number of real images this gap decreases, and the advantages of image "
                     "generation are lost starting from 10 real images (~1 000 blobs).",
                     f"test {lab}", f"(Generated - Real at J = {j0}) - (Generated - Real at J = {jl})", +1,
                     "AJI gain +0.27 at J = 2, +0.15 at J = 5, +0.05 at J = 10 (0.70 vs 0.75)"),
        report.Claim("004-topfraction-placement", "004", "Sec. 3.2, Algorithm 3 (study's question)",
                     "Sampling placement locations among the top 16 % of G (the authors' code) follows the prior "
                     "more closely than sampling from all of G (Algorithm 3 as printed).",
                     "correlation of the blurred placed nuclei with the prior P",
                     "greedy top-fraction - greedy all of G (paired over priors)", +1, "", extension=True),
    ]


def claims(rows: list[dict], source: Source, placement: dict, faith: dict, metric: str = "aji",
           alpha: float = 0.05, gate: float = report.FAITHFULNESS_GATE, seed: int = 0) -> list[dict]:
    """Every claim of :func:`claim_list` assessed by :func:`histolib.report.assess`.

    Args:
        rows: the per-run table (:func:`run_experiments`).
        source: replicate 0 of the largest ``J`` (blob shapes: its pool against its real nuclei).
        placement: :func:`placement_study` on that source.
        faith: :func:`faithfulness_all`; the J-gain claims rest on generated images and carry one
            faithfulness precondition per generator replicate they use. Blob shapes and placement
            rest on blobs and placement only (no gate).
    """
    js = sorted({r["J"] for r in rows if r["setting"] == "Generated"})
    c = {k.key: k for k in claim_list(js, metric)}
    corr = placement["correlation"]
    out = [report.assess(c["004-blob-shapes"], shape_evidence(source.real_blobs, source.pool, alpha, seed=seed),
                         alpha=alpha),
           report.assess(c["004-greedy-placement"], paired_evidence(corr["greedy"], corr["random"], alpha,
                                                                    unit="correlation"), alpha=alpha)]
    out += _gain_claims(rows, js, c["004-gain-smallest-J"], c["004-gain-fades"], faith, metric, alpha, gate)
    if has_cross(rows) and js:
        cc = {k.key: k for k in cross_claim_list(js, metric)}
        out += _gain_claims(rows, js, cc["004-gain-smallest-J-cross"], cc["004-gain-fades-cross"], faith,
                            "cross_" + metric, alpha, gate)
    out.append(report.assess(c["004-topfraction-placement"],
                             paired_evidence(corr["greedy"], corr["greedy_all_of_G"], alpha, unit="correlation"),
                             alpha=alpha))
    return out


def _gain_claims(rows: list[dict], js: list[int], c_small: report.Claim, c_fades: report.Claim, faith: dict,
                 metric: str, alpha: float, gate: float) -> list[dict]:
    """The two J-gain claims on one test set (``metric``: ``aji`` or ``cross_aji``)."""
    unit = METRIC_LABELS[metric.removeprefix("cross_")]
    ev = {j: report.evidence_from_test(report.two_level_difference(
        groups(rows, "Generated", j, metric), groups(rows, "Real", j, metric), alpha=alpha), unit=unit) for j in js}
    if not js:
        return []
    j0, jl = js[0], js[-1]
    out = [report.assess(c_small, ev[j0], _gates(faith, [j0], gate), alpha)]
    contrast = gain_contrast(*(groups(rows, s, j, metric) for j in (j0, jl) for s in ("Generated", "Real")),
                             alpha=alpha)
    pre = [report.Precondition("two J values to compare", jl != j0, f"J values measured: {js}"),
           *_gates(faith, [j0, jl], gate)]
    out.append(report.assess(c_fades, report.evidence_from_test(
        contrast, unit=unit, detail="gains " + ", ".join(f"J={j}: {e.estimate:+.3f}" for j, e in ev.items())),
        pre, alpha))
    return out


def cross_claim_list(js: list[int], metric: str = "aji") -> list[report.Claim]:
    """The two J-gain claims again, measured on the cross-source test set: the paper's own setting
    (trained on BBBC images, tested on NucleusSegData)."""
    base = {c.key: c for c in claim_list(js, metric)}
    out = []
    for key in ("004-gain-smallest-J", "004-gain-fades"):
        c = base[key]
        out.append(report.Claim(key + "-cross", c.paper, c.section + " (test set from another source, as the "
                                "paper's NucleusSegData)", c.text, "cross-source " + c.metric, c.comparison,
                                c.direction, c.paper_numbers))
    return out


def conditions(P, C: NucleiParams, train_side: int, seeds: list[int], n_train: int, n_test: int,
               encoder: dict | None = None, scale: dict | None = None, cross: CrossSource | None = None,
               n_train_images: int | None = None, n_test_images: int | None = None) -> report.Conditions:
    """The :class:`histolib.report.Conditions` of notebook 05's tables."""
    imgs = "" if n_train_images is None else f" tiles of {n_train_images} / {n_test_images} images"
    extra = {"images": f"{n_train} training, {n_test} test{imgs} ({P.data.nuclei_style}); generated "
                       f"{C.field_size} px",
             "split": ("by image, seeded (image ids: split.json)" if P.data.nuclei_source != "phantom"
                       else "phantom fields drawn per split"),
             "scale": ("phantom drawn at a median nucleus diameter of "
                       f"{P.data.nucleus_diameter:g} px" if scale is None else
                       f"x{scale['factor']:.3f}: training masks' median nucleus diameter "
                       f"{scale['median_diameter']:.1f} px -> {scale['target']:g} px (the same factor for "
                       "every split; measured on training masks only)"),
             "cross-source test": cross.text() if cross is not None else "none",
             "HoVer-Net": f"{C.hv_block} blocks {list(C.hv_blocks)}, width {C.hv_width}, {C.hv_steps} iterations of "
                          f"{C.hv_batch} x {C.hv_crop}-px crops",
             "generation": f"N = {C.n_generated} pairs per J and replicate, {C.blobs_per_j} blobs per pool"}
    if encoder:
        extra["AdaIN"] = f"{encoder.get('kind')} to {encoder.get('layer')}, {C.adain_steps} decoder iterations"
    return report.Conditions(profile=P.profile, resolution=train_side, data_source=P.data.nuclei_source,
                             seeds=seeds, generator_replicates=P.protocol.n_gan_seeds, extra=extra)


def metrics_summary(rows: list[dict], shapes: list[dict], placement: dict, claim_rows: list[dict],
                    encoders: dict, sources: dict, faith: dict, conds: report.Conditions, timings: dict,
                    split: dict | None = None, gate: float = report.FAITHFULNESS_GATE) -> dict:
    """What ``results/05/metrics.json`` holds (DVC metrics: the table's two-level means at the top level;
    ``table1_cross_means`` with a cross-source test set; ``split``: the image ids of every split;
    ``faithfulness``: one row per replicate, checked against ``gate`` = ``protocol.faithfulness_gate``)."""
    def flat(prefix: str) -> dict:
        return {f"{r['setting'].lower().replace(' ', '_')}_J{r['J']}_{m}": r[m]
                for r in table1_means(rows, prefix) for m in METRIC_KEYS}

    extra = {"table1_cross_means": flat("cross_")} if has_cross(rows) else {}
    return {
        "table1_means": flat(""),
        **extra,
        "split": split or {},
        "runs": rows,
        "blob_shapes": shapes,
        "placement": {"summary": placement["summary"],
                      "blobs": {k: float(np.mean(v)) for k, v in placement["blobs"].items()}},
        "faithfulness": [{**r, "AJI ratio": float(r["AJI ratio"])} for r in faithfulness_rows(faith, gate)],
        "claims": claim_rows,
        "conditions": conds.to_dict(),
        "adain_encoder": {f"J{j}_g{g}": e for (j, g), e in encoders.items()},
        "sources": {f"J{j}_g{g}": {"J": s.j, "K": s.k, "real_blobs": len(s.real_blobs), "pool": len(s.pool),
                                   "perlin": asdict(s.perlin), "count_range": list(s.count_range),
                                   "invert_content": s.invert_content, "grey": s.grey, "seconds": s.seconds}
                    for (j, g), s in sources.items()},
        "timings_seconds": timings,
    }


# --------------------------------------------------------------------------------------------
# Loops the notebook calls
# --------------------------------------------------------------------------------------------

def generator_seeds(seed: int, n: int) -> list[int]:
    """Seeds of the ``n`` generator replicates (replicate ``g`` is ``generator_seeds(...)[g]``)."""
    return replicate_seeds(seed, n)


def fit_sources(images: np.ndarray, masks: np.ndarray, subsets: dict[int, list[int]], C: NucleiParams,
                gan_seeds: list[int]) -> dict[tuple[int, int], Source]:
    """:func:`fit_source` for every ``J`` and generator replicate ``g`` (seed ``gan_seeds[g]``):
    ``{(j, g): Source}``."""
    return {(j, g): fit_source(images[idx], masks[idx], C, s, j=j) for j, idx in subsets.items()
            for g, s in enumerate(gan_seeds)}


def generate_all(sources: dict[tuple[int, int], Source], C: NucleiParams, gan_seeds: list[int], models: Path,
                 progress: bool = True) -> tuple[dict, dict]:
    """Replicate ``g`` of each ``J``: AdaIN trained under ``gan_seeds[g]`` in ``models/adain/J<j>/g<g>``
    (loaded when complete), then its generated set under the same seed.

    Returns:
        ``(sets, encoders)``: ``sets[(j, g)]`` a :class:`GeneratedSet`; ``encoders[(j, g)]`` the AdaIN
        encoder record and training seconds.
    """
    sets, encoders = {}, {}
    for (j, g), source in sources.items():
        t0 = time.perf_counter()
        model, info, _ = train_style(source, C, gan_seeds[g], Path(models) / "adain" / f"J{j}" / f"g{g}", progress)
        encoders[(j, g)] = {**info.to_dict(), "train_seconds": time.perf_counter() - t0,
                            "invert_content": source.invert_content}
        sets[(j, g)] = generate_set(source, model, C, gan_seeds[g])
    return sets, encoders


def run_experiments(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                    subsets: dict[int, list[int]], sources: dict, sets: dict, C: NucleiParams,
                    seeds: list[int], models: Path, gan_seeds: list[int] | None = None, progress: bool = True,
                    log=print, cross: tuple[np.ndarray, np.ndarray] | None = None,
                    n_train_images: int | None = None) -> list[dict]:
    """Every HoVer-Net of Table 1: full training set and ``J`` real images (per seed), and the data of
    every generator replicate (seeds crossed with replicates, in ``hovernet/generated_J<j>_s<s>/g<g>``).
    Each is tested on ``test`` and, when given, on the cross-source tiles ``cross`` (``cross_*`` keys).
    ``n_train_images``: the ``J`` of the full-dataset row (default: the number of training tiles).

    Returns:
        One :func:`experiment_row` per (setting, J, replicate, seed).
    """
    images, masks = train
    test_i, test_m = test
    rows = []
    k_full = sum(count_nuclei(m) for m in masks)
    reps = sorted({g for _, g in sets})
    for s in seeds:
        jobs = [("Full dataset", n_train_images or len(images), k_full, images, masks, None, "")]
        for j, idx in subsets.items():
            jobs.append(("Real", j, sources[(j, 0)].k, images[idx], masks[idx], None, ""))
            for g in reps:
                gi, gm = sets[(j, g)].images, sets[(j, g)].masks
                if C.mix_real:
                    gi, gm = _concat_pairs((gi, gm), (images[idx], masks[idx]), C.field_size)
                jobs.append(("Generated", j, sources[(j, g)].k, gi, gm, g, f"/g{g}"))
        for setting, j, k, x, y, g, sub in jobs:
            tag = f"{setting.split()[0].lower()}_J{j}_s{s}"
            scores = train_and_test(x, y, test_i, test_m, C, s, Path(models) / "hovernet" / (tag + sub), progress,
                                    cross=cross)
            rows.append(experiment_row(setting, j, k, s, scores, g, None if g is None or gan_seeds is None
                                       else gan_seeds[g]))
            xtra = f", cross-source AJI {scores['cross_aji']:.3f}" if "cross_aji" in scores else ""
            log(f"{tag}{sub}: AJI {scores['aji']:.3f}, DICE {scores['dice']:.3f}{xtra} "
                f"({scores['train_seconds']:.0f} s)")
    return rows


def _concat_pairs(a: tuple, b: tuple, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Generated pairs plus real ones, the real ones tiled to the generated size."""
    bi, bm = tiles(b[0], b[1], size)
    return np.concatenate([a[0], bi]), np.concatenate([a[1], bm])


def shape_comparison(sources: dict) -> list[dict]:
    """:func:`shape_rows` for replicate 0 of the largest ``J`` (generated pool against the nuclei it came from)."""
    j = max(j for j, _ in sources)
    return [{"J": j, **r} for r in shape_rows(sources[(j, 0)].real_blobs, sources[(j, 0)].pool)]


def placement_rows(study: dict, alpha: float = 0.05) -> list[dict]:
    """The Fig. 3 score table: mean correlation with the prior and blobs placed, per method, and the
    paired difference of greedy against each other method."""
    labels = {"greedy": "greedy (top-fraction sampling, authors' code)",
              "greedy_all_of_G": "greedy, sampling from all of G (Algorithm 3 as printed)",
              "random": "random, P-weighted (Fig. 3b)"}
    out = []
    for m, label in labels.items():
        s = study["summary"][m]
        diff = "" if m == "greedy" else paired_evidence(study["correlation"]["greedy"], study["correlation"][m],
                                                         alpha).text()
        out.append({"placement": label, "correlation with P": f"{s['mean']:.3f} ± {s['std']:.3f}",
                    "blobs placed": float(np.mean(study["blobs"][m])), "greedy minus this (paired)": diff})
    return out
