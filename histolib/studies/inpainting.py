"""Notebook 04: GAN inpainting of sclerosed glomeruli and the EfficientNet-B3 U-Net of He et al. (seed 003).

Everything notebooks ``04_inpainting_train`` and ``04_inpainting`` do beyond a call and a plot lives
here, with tests in ``tests/studies/test_inpainting.py``.

Pipeline (paper sections "Methods" and "Experiments"):

1. **Data.** Phantom mode (``inpainting.source: phantom``): the prepared ``inpainting`` tiles (class maps
   0 other / 1 normal / 2 sclerosed glomerulus) and their ``compartments`` twins, downsampled by
   ``inpainting.downsample`` (the paper downsamples its slides "two times" before cropping); ``train``
   trains the segmenters and everything generative, ``val`` chooses each segmenter's step, the test sets
   are only scored. ``extra_val_tiles`` / ``extra_test_tiles`` more tiles are rendered here from the phantom
   with the builder's settings (the builder's ``cpu`` val and test splits hold 2 and 4 sclerosed glomeruli).
   Test sets: the test tiles in the data's stain (the paper's PAS Test1), and the *same tiles* rendered in
   the other stain (``stain_shift``: the paper's H&E Test3, a pure stain shift).
   Real mode (``source`` = a folder of glomerulus crops with ``labels.csv`` ``class`` GS / nonGS and
   ``slide``): crops resized to ``data.crop_size``, split by slide, label map = mask x (2 if GS else 1).
2. **Crops** (Fig. 3): a ``data.crop_size`` window centred on the minimum enclosing circle of every
   sclerosed glomerulus of the training tiles (:func:`histolib.ops.crops.object_crops`).
3. **Inpainting GAN** (Figs. 5-6, Eq. 12) and **mask DCGAN** (Fig. 7), trained together as one generator
   replicate, ``protocol.n_gan_seeds`` times (seeds :func:`histolib.repro.replicate_seeds`), by
   :func:`train_replicates` (stage ``nb04_train``).
4. **Masks**: DCGAN samples greyscaled, thresholded, cleaned of small regions, scaled so sizes spread
   evenly over the real range (:mod:`histolib.ops.masks`).
5. **Synthesis** (Fig. 7): new sclerosed glomeruli at free tissue positions of the training tiles
   (phantom: discs entirely in tubulointerstitium, from the compartment ground truth, away from every
   glomerulus and vessel), inpainted from the crop around the position and pasted back inside the mask,
   labelled 2; ``+30 / +60 / +100 %`` of the real sclerosed count. The sets are nested (the +60 % set
   holds the +30 % glomeruli) and each generator replicate inpaints the same planned positions and masks
   of its own mask generator. Real mode: synthetic sclerosed glomeruli replace the glomerulus of normal
   training crops (mask = DCGAN mask united with the normal glomerulus), as new crops.
6. **Segmentation** (Fig. 8, Eq. 14; :mod:`histolib.train.segmenters`): EfficientNet-B3 U-Net with and
   without traditional augmentation on the real tiles (Table 3), on each synthetic set (Table 4), and
   U-Net / U-Net++ beside it on the +100 % sets (Table 5); ``inpainting.n_seeds`` seeds, crossed with the
   generator replicates for every synthetic set.
7. **Evidence** (``histolib.report``): Table 2 (region MAE / PSNR / SSIM of inpainted held-out crops),
   faithfulness (the real-trained EfficientNet-B3 U-Net segments inpainted test crops against their
   generating masks, beside its score on real sclerosed crops), Tables 3-5 beside the paper's with
   conditions, and the claims with the one verdict rule.

Decisions where the paper is silent are listed in :data:`DECISIONS` (printed by the notebook).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from histolib import report
from histolib.config import knob, section
from histolib.errors import DataError, ParamError
from histolib.report import Claim, Precondition, single_level
from histolib.repro import replicate_seeds
from histolib.train.spade import PRECISIONS, resolve_precision

# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------

PERCEPTUAL_KINDS = ("auto", "vgg19", "encoder", "random", "none")


@section("inpainting")
class InpaintingParams:
    """Notebook 04: GAN inpainting of sclerosed glomeruli + EfficientNet-B3 U-Net (He et al., Sci. Rep. 2024)."""

    source: str = knob("'phantom' (prepared tiles) or a folder of glomerulus crops with labels.csv class GS/nonGS "
                       "and slide (real mode; never the default pipeline)")
    real_split: list[float] = knob("real mode: train / val / test fractions of the slides", min=0.0)
    downsample: int = knob("tile downsampling before everything (paper: slides downsampled 'two times')", min=1,
                           max=8)
    extra_val_tiles: int = knob("phantom validation tiles rendered here beside the prepared val split (the best "
                                "step is chosen on more than a couple of sclerosed glomeruli)", min=0)
    extra_test_tiles: int = knob("phantom test tiles rendered here beside the prepared test split (more "
                                 "sclerosed glomeruli to score)", min=0)
    stain_shift: bool = knob("also score a stain-shifted twin of the test tiles (PAS <-> H&E; the paper's Test3)")
    # inpainting GAN (Figs. 5-6, Eq. 12)
    ngf: int = knob("generator width after the 7x7 conv; AOT blocks run at 4 ngf (AOT reference: 64)", min=1)
    n_blocks: int = knob("AOT blocks (paper: 8)", min=0)
    attention: bool = knob("SAGAN self-attention before the decoder (paper: yes)")
    ndf: int = knob("discriminator base width (paper: 64)", min=1)
    d_layers: int = knob("discriminator 4x4 convolutions (paper: 6)", min=2, max=8)
    share_discriminators: bool = knob("one network (and weights) for the global and local discriminator (paper)")
    batch_size: int = knob("crops per step (paper: 16)", min=1)
    epochs: float = knob("epochs over the training crops (paper: 100); steps = ceil(epochs * crops / batch)",
                         min=0.001)
    lr: float = knob("Adam learning rate of G and D (paper: 1e-4)", min=0.0, max=1.0)
    beta1: float = knob("Adam beta1 (paper: 0.5)", min=0.0, max=1.0)
    beta2: float = knob("Adam beta2 (paper: 0.999)", min=0.0, max=1.0)
    lambda_adv: float = knob("adversarial weight, both discriminators (paper: 0.02)", min=0.0)
    lambda_l1_global: float = knob("global L1 weight (paper: 1)", min=0.0)
    lambda_l1_local: float = knob("local L1 weight (not given by the paper; ours: 1, on the masked-pixel mean)",
                                  min=0.0)
    lambda_perceptual: float = knob("perceptual weight (paper: 0.1)", min=0.0)
    lambda_style: float = knob("style weight (paper: 150; AOT reference: 250)", min=0.0)
    perceptual: str = knob("feature network of the perceptual/style terms: auto (VGG19 with local weights, else "
                           "an encoder trained here), vgg19, encoder, random, none", choices=PERCEPTUAL_KINDS)
    perceptual_weights: str = knob("local VGG19 weights file ('' = torch hub cache); never downloaded")
    feature_steps: int = knob("training steps of the in-pipeline feature encoder", min=1)
    precision: str = knob("fp32, bf16 (CPU bfloat16 autocast of G and D forward passes) or auto (bf16 only where "
                          "the CPU has native bf16: emulated bf16 is far slower)", choices=PRECISIONS)
    checkpoint_every: int = knob("GAN steps between checkpoints and sample grids", min=1)
    # mask DCGAN (Fig. 7)
    mask_size: int = knob("DCGAN resolution (a power of 2 <= crop size; outputs are upsampled bilinearly to the "
                          "crop before the clean-up: smooth contours)", min=8)
    mask_z: int = knob("DCGAN noise size (DCGAN: 100)", min=1)
    mask_ngf: int = knob("DCGAN generator width (DCGAN: 64)", min=1)
    mask_ndf: int = knob("DCGAN discriminator width (DCGAN: 64)", min=1)
    mask_batch: int = knob("DCGAN masks per step (DCGAN: 128)", min=1)
    mask_epochs: float = knob("DCGAN epochs over the real masks", min=0.001)
    mask_lr: float = knob("DCGAN Adam learning rate (DCGAN: 2e-4, beta1 0.5)", min=0.0, max=1.0)
    mask_threshold: float = knob("grey level above which a generated pixel is mask", min=0.0, max=1.0)
    mask_min_area: float = knob("regions smaller than this fraction of the mean real mask area are removed",
                                min=0.0, max=1.0)
    size_bins: int = knob("size bins that receive equal numbers of masks (contour scaling)", min=1)
    # synthesis
    synthetic_fractions: list[float] = knob("synthetic sclerosed glomeruli as fractions of the real count "
                                            "(paper: 0.3, 0.6, 1.0)", min=0.0)
    max_per_tile: int = knob("most new glomeruli per training tile", min=1)
    margin: float = knob("free tissue around a new glomerulus, as a fraction of its radius", min=0.0)
    # segmentation (Fig. 8, Eq. 14)
    models: list[str] = knob("segmentation models: effb3_unet (the paper's), unet, unetpp (Table 5); Swin-Unet "
                             "does not fit the budget")
    n_seeds: int = knob("segmentation seeds per configuration (paper: 10 trainings)", min=1)
    seg_steps: int = knob("optimisation steps per segmentation run (paper: 200 epochs; 5000 = 200 epochs of the 200 "
                          "paper-profile tiles at batch 8)", min=1)
    seg_batch: int = knob("windows per segmentation step (paper: 8)", min=1)
    seg_crop: int = knob("training window side in px (0: whole tiles, the paper's 1024-px inputs)", min=0)
    seg_lr: float = knob("segmentation Adam learning rate (not given by the paper)", min=0.0, max=1.0)
    seg_eta_min: float = knob("cosine annealing floor (paper: 1e-5)", min=0.0)
    seg_eval_every: int = knob("steps between validations (best validation model kept)", min=1)
    augment_p: float = knob("flip / 90-degree rotation probability of 'traditional augmentation'", min=0.0, max=1.0)
    seg_precision: str = knob("fp32, bf16 (autocast) or auto: bf16 for U-Net and U-Net++ (faster here), fp32 for "
                              "EfficientNet-B3 (its depthwise convolutions are slower in bf16 on this CPU)",
                              choices=("fp32", "bf16", "auto"))
    decoder_channels: list[int] = knob("smp decoder widths, 5 (smp default 256, 128, 64, 32, 16)", min=1)
    unet_width: int = knob("first-level width of the classic U-Net (paper: 64)", min=1)
    unetpp_encoder: str = knob("smp encoder of U-Net++ (smp default resnet34; the paper does not say)")
    encoder_weights: str = knob("local EfficientNet-B3 encoder weights ('' = random init); never downloaded")
    bn_momentum: float = knob("batch-norm running-statistics momentum of every segmenter (0: each network's own; "
                              "smp's EfficientNet keeps TF's 0.01, too slow for short runs from random weights)",
                              min=0.0, max=1.0)
    fg_fraction: float = knob("share of training windows centred near a glomerulus (0: uniform windows)",
                              min=0.0, max=1.0)
    threads: int = knob("torch CPU threads (0: torch's default; 1 at smoke, where tiny ops only pay for "
                        "thread synchronisation)", min=0)
    n_grid: int = knob("items in figures and sample grids", min=1, max=64)


DECISIONS = (
    "Local L1 (weight not given): lambda_1l = 1 on the mean absolute error over the masked pixels, so the term "
    "measures the glomerulus itself whatever its size.",
    "Perceptual and style terms: VGG19 only with local weights; otherwise an encoder trained in the pipeline on "
    "training-tile windows (recorded with every run). Style Gram matrices are normalised by C H W (AOT-GAN).",
    "Discriminators: LSGAN; one network for global and local (the paper sets their parameters 'to be the same'); "
    "at inputs below 256 px the last layers keep stride 1 so the patch map stays 4 x 4; fakes are detached for D "
    "and D is frozen for G (the AOT-GAN reference lets D receive G's adversarial gradient).",
    "Generator: the input hole is X (1 - M) (Eq. 1); skip connections by concatenation; decoder of transposed "
    "convolutions and a 7x7 output convolution mirroring the encoder; self-attention at a quarter of the input "
    "side (64 x 64 at 256 px).",
    "Masks: DCGAN on the complete training masks (1 channel, so greyscaling is the identity) at mask_size, its "
    "output upsampled bilinearly to the crop; the real masks are also rotated by any angle and stretched by up to "
    "15 % while it trains (a few dozen masks otherwise collapse it to one shape); threshold 0.5, regions below "
    "mask_min_area of the mean real area removed, holes filled; sizes scaled to equal counts in size_bins "
    "equal-width bins over the real min-max range (our reading of 'evenly distributed').",
    "Positions (phantom): discs of the mask's enclosing radius x (1 + margin) entirely in tubulointerstitium "
    "(compartment ground truth), disjoint from each other; new glomeruli are painted into the training tiles in "
    "place (the training set keeps its tiles and only gains sclerosed glomeruli).",
    "Segmentation: a fixed number of steps per run (equal compute for every training set) on random windows, half "
    "of them centred near a glomerulus at cpu (fg_fraction); the best validation step by mean NG/SG Dice (the "
    "paper's 'lowest Dice' read as a slip); a fixed val split instead of a new random 8:2 split per run; learning "
    "rate not given (1e-3 at paper, 3e-3 for the short cpu runs); batch-norm momentum 0.1 (smp's EfficientNet "
    "keeps TF's 0.01, whose running statistics do not settle in a few hundred steps from random weights).",
    "Crops for the GANs and for Table 2: complete glomeruli only (not cut by the tile border).",
    "Metrics: precision, recall and Dice pooled over the test set (micro); F1 per image then averaged "
    "(micro-imagewise), which is why F1 differs from Dice as in the paper. MAE of Table 2: mean |difference| over "
    "the generated region in [0, 1]; the AOT-GAN relative MAE beside it.",
)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------

STAINS = {"pas": "PAS", "he": "H&E"}


@dataclass
class TileSet:
    """Images with three-class label maps at the study's scale.

    Attributes:
        images: ``(N, H, W, 3)`` uint8.
        labels: ``(N, H, W)`` uint8: 0 other, 1 normal, 2 sclerosed glomerulus.
        allowed: ``(N, H, W)`` bool, where new glomeruli may be painted (phantom: tubulointerstitium), or ``None``.
        names: item names.
        kind: ``"tiles"`` (phantom) or ``"crops"`` (real glomerulus crops).
    """

    images: np.ndarray
    labels: np.ndarray
    allowed: np.ndarray | None
    names: list[str]
    kind: str = "tiles"

    def __len__(self) -> int:
        return len(self.images)

    def count(self, cls: int) -> int:
        """Objects (8-connected components) of class ``cls`` over the set."""
        from scipy import ndimage as ndi

        return int(sum(ndi.label(lab == cls, structure=np.ones((3, 3), bool))[1] for lab in self.labels))


@dataclass
class StudyData:
    """``train``, ``val`` and the test sets ``{name: TileSet}`` (first = in-domain), with the stains."""

    train: TileSet
    val: TileSet
    tests: dict[str, TileSet]
    source: str
    scale: str

    @property
    def test_roles(self) -> dict[str, str]:
        """``{test name: "in-domain" | "stain-shifted"}``."""
        names = list(self.tests)
        return {n: "in-domain" if i == 0 else "stain-shifted" for i, n in enumerate(names)}


def downsample(images: np.ndarray, labels: np.ndarray | None, factor: int):
    """Box-average images and take the centre sample of each ``factor x factor`` block of label maps.

    Args:
        images: ``(N, H, W, 3)`` uint8 with ``H``, ``W`` divisible by ``factor``.
        labels: ``(N, H, W)`` or ``None``.
    """
    if factor == 1:
        return images, labels
    n, h, w, _ = images.shape
    if h % factor or w % factor:
        raise ParamError(f"tile size {h}x{w} is not divisible by inpainting.downsample = {factor}")
    img = images.reshape(n, h // factor, factor, w // factor, factor, 3).astype(np.float32).mean((2, 4))
    img = np.round(img).clip(0, 255).astype(np.uint8)
    return img, None if labels is None else _down_labels(labels, factor)


def _down_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    return np.ascontiguousarray(labels[:, factor // 2::factor, factor // 2::factor]) if factor > 1 else labels


def _render_tiles(P, seeds: list[int], stain: str):
    from histolib.data import phantom
    from histolib.data.builder import phantom_calibration_of

    d = P.data
    # data.calibration applies to tiles of data.stain (a calibration is of one stain)
    cal = phantom_calibration_of(P) if stain == d.stain else None
    images, labels, comps = [], [], []
    for s in seeds:
        t = phantom.render_tile(s, size=(d.tile_size, d.tile_size), stain=stain,
                                glomerulus_diameter=d.glomerulus_diameter, sclerosed_fraction=d.sclerosed_fraction,
                                calibration=cal)
        cls = np.zeros(t.glomeruli.shape, np.uint8)
        for gid, kind in t.glomerulus_class.items():
            cls[t.glomeruli == gid] = 2 if kind == "sclerosed" else 1
        images.append(t.image)
        labels.append(cls)
        comps.append(t.compartments)
    shape = (0, d.tile_size, d.tile_size)
    return (np.stack(images) if images else np.zeros((*shape, 3), np.uint8),
            np.stack(labels) if labels else np.zeros(shape, np.uint8),
            np.stack(comps) if comps else np.zeros(shape, np.uint8))


def testset_tile_seeds(P) -> list[int]:
    """Seeds of the phantom test tiles: the builder's ``test`` split, then ``extra_test_tiles`` more from a
    stream of this study (``SeedSequence([seed, 4, 3, i])``: disjoint from the builder's)."""
    from histolib.data.builder import item_seed

    n_test = P.data.n_tiles[2]
    return [item_seed(P.seed, "tiles", "test", i) for i in range(n_test)] + _extra_seeds(P.seed, 3,
                                                                                       P.inpainting.extra_test_tiles)


def _extra_seeds(seed: int, split: int, n: int) -> list[int]:
    return [int(np.random.SeedSequence([seed, 4, split, i]).generate_state(1)[0]) for i in range(n)]


def _phantom_data(P, root, tests: bool = True) -> StudyData:
    from histolib.data.prepared import ensure_prepared, load_split

    c, d = P.inpainting, P.data
    prepared = ensure_prepared(P, root)
    sets = {}
    for split in ("train", "val"):
        pairs = load_split("inpainting", split, prepared)
        comp = load_split("compartments", split, prepared)
        if comp.names != pairs.names:
            raise DataError(f"{prepared}: the inpainting and compartments {split} splits differ")
        images, labels, comps = np.asarray(pairs.images), np.asarray(pairs.masks), np.asarray(comp.masks)
        names = list(pairs.names)
        if split == "val" and c.extra_val_tiles and tests:  # more validation tiles, rendered with the same settings
            e_img, e_lab, e_cmp = _render_tiles(P, _extra_seeds(P.seed, 2, c.extra_val_tiles), d.stain)
            images, labels, comps = (np.concatenate([a, b]) for a, b in ((images, e_img), (labels, e_lab),
                                                                        (comps, e_cmp)))
            names += [f"val_extra_{i:05d}" for i in range(c.extra_val_tiles)]
        img, lab = downsample(images, labels, c.downsample)
        sets[split] = TileSet(img, lab, _down_labels(comps, c.downsample) == 1, names)
    seeds = testset_tile_seeds(P) if tests else []
    names = [f"test_{i:05d}" for i in range(len(seeds))]
    stains = [d.stain] + ([next(s for s in STAINS if s != d.stain)] if c.stain_shift else [])
    tests = {}
    for stain in stains if seeds else []:
        img, lab, cmp_ = _render_tiles(P, seeds, stain)
        img, lab = downsample(img, lab, c.downsample)
        tests[STAINS[stain]] = TileSet(img, lab, _down_labels(cmp_, c.downsample) == 1, names)
    scale = f"{d.tile_size // c.downsample}-px tiles ({d.tile_size} px / {c.downsample})"
    return StudyData(sets["train"], sets["val"], tests, "phantom", scale)


def _real_data(P, root) -> StudyData:
    from PIL import Image

    from histolib.data.builder import _slide_of, split_by_group
    from histolib.data.folder import load_pairs

    c, size = P.inpainting, P.data.crop_size
    folder = (Path(root) / c.source).resolve()
    pairs = load_pairs(folder, "binary", strict=False)
    if not len(pairs):
        raise DataError(f"{folder}: no readable image/mask pairs")
    classes = [pairs.label(n, "class") for n in pairs.names]
    bad = sorted({k for k in classes if k not in ("GS", "nonGS")})
    if bad:
        raise DataError(f"{folder}/labels.csv: class must be GS or nonGS for every crop, found {bad}")
    slides = [_slide_of(n, pairs) for n in pairs.names]
    parts = split_by_group(slides, list(c.real_split), P.seed)

    def resize(i):
        im = np.asarray(Image.fromarray(np.asarray(pairs.images[i])).resize((size, size), Image.BILINEAR))
        m = np.asarray(Image.fromarray((np.asarray(pairs.masks[i]) > 0).astype(np.uint8) * 255)
                       .resize((size, size), Image.NEAREST)) > 0
        return im, (m * (2 if classes[i] == "GS" else 1)).astype(np.uint8)

    sets = []
    for split, idx in zip(("train", "val", "test"), parts, strict=True):
        if not idx:
            raise DataError(f"{folder}: real_split {c.real_split} leaves the {split!r} split empty")
        items = [resize(i) for i in idx]
        sets.append(TileSet(np.stack([a for a, _ in items]), np.stack([b for _, b in items]), None,
                            [pairs.names[i] for i in idx], kind="crops"))
    return StudyData(sets[0], sets[1], {"Test": sets[2]}, str(c.source), f"{size}-px crops (resized)")


def load_data(P, root: Path | None = None, tests: bool = True) -> StudyData:
    """The study's data in phantom or real mode (module docstring, step 1); ``tests=False`` skips rendering the
    extra phantom validation and test tiles (the training stage needs only ``train``)."""
    from histolib.paths import project_root

    root = Path(root or project_root())
    return _phantom_data(P, root, tests) if P.inpainting.source == "phantom" else _real_data(P, root)


def data_table(data: StudyData) -> list[dict]:
    """Per set: items, size, normal and sclerosed glomeruli."""
    rows = []
    for name, ts in [("train", data.train), ("val", data.val), *data.tests.items()]:
        rows.append({"set": name if name in ("train", "val") else f"test {name}", "items": len(ts),
                     "size": f"{ts.images.shape[1]} px" if len(ts) else "-", "normal (NG)": ts.count(1),
                     "sclerosed (SG)": ts.count(2)})
    return rows


# --------------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------------

@dataclass
class CropSet:
    """Object-centred crops (Fig. 3): ``images`` ``(N, S, S, 3)``, ``masks`` ``(N, S, S)`` (the object),
    ``labels`` (the window's class map), ``origins`` (window top-left in its item), ``items`` (item index)."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    origins: list[tuple[int, int]]
    items: list[int]

    def __len__(self) -> int:
        return len(self.images)


def crops_of(ts: TileSet, cls: int, size: int, min_area: int = 4, complete: bool | None = None) -> CropSet:
    """Every object of class ``cls`` of a set, cropped at ``size`` on its minimum enclosing circle. By default
    (``complete=None``), in tiles only complete objects (not cut by the tile border: a half glomerulus would
    teach the mask DCGAN half discs), or every object when no complete one exists; glomerulus crops (real mode)
    keep every object."""
    from histolib.ops.crops import object_crops

    if complete is None:
        if ts.kind != "tiles":
            return crops_of(ts, cls, size, min_area, False)
        full = crops_of(ts, cls, size, min_area, True)
        return full if len(full) else crops_of(ts, cls, size, min_area, False)
    imgs, masks, labels, origins, items = [], [], [], [], []
    for i, (im, lab) in enumerate(zip(ts.images, ts.labels, strict=True)):
        for oc in object_crops(im, lab, cls, size, min_area, complete=complete):
            imgs.append(oc.image)
            masks.append(oc.mask)
            labels.append(oc.labels)
            origins.append(oc.origin)
            items.append(i)
    if not imgs:
        return CropSet(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint8),
                       np.zeros((0, size, size), np.uint8), [], [])
    return CropSet(np.stack(imgs), np.stack(masks), np.stack(labels), origins, items)


def feature_windows(ts: TileSet, size: int, n: int, seed: int) -> np.ndarray:
    """``n`` random ``size`` windows of a set's images (training data of the substitute feature encoder)."""
    rng = np.random.default_rng(seed)
    _, h, w, _ = ts.images.shape
    out = []
    for _ in range(n):
        i = int(rng.integers(len(ts)))
        y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        out.append(ts.images[i, y:y + size, x:x + size])
    return np.stack(out)


# --------------------------------------------------------------------------------------------------
# Generator replicates: inpainting GAN + mask DCGAN
# --------------------------------------------------------------------------------------------------

def inpaint_options(P):
    from histolib.train.inpainting import InpaintOptions

    c = P.inpainting
    return InpaintOptions(image_size=P.data.crop_size, ngf=c.ngf, n_blocks=c.n_blocks, attention=c.attention,
                          ndf=c.ndf, d_layers=c.d_layers, share_discriminators=c.share_discriminators, lr=c.lr,
                          beta1=c.beta1, beta2=c.beta2, lambda_adv=c.lambda_adv, lambda_l1_global=c.lambda_l1_global,
                          lambda_l1_local=c.lambda_l1_local, lambda_perceptual=c.lambda_perceptual,
                          lambda_style=c.lambda_style, precision=c.precision)


def mask_options(P):
    from histolib.train.inpainting import MaskGanOptions

    c = P.inpainting
    if c.mask_size > P.data.crop_size:
        raise ParamError(f"inpainting.mask_size {c.mask_size} must not exceed data.crop_size {P.data.crop_size}")
    return MaskGanOptions(size=c.mask_size, z_dim=c.mask_z, ngf=c.mask_ngf, ndf=c.mask_ndf, lr=c.mask_lr)


def gan_steps(epochs: float, n_items: int, batch_size: int) -> int:
    """``ceil(epochs * n_items / min(batch_size, n_items))`` optimisation steps (at least 1)."""
    return max(1, math.ceil(epochs * n_items / max(1, min(batch_size, n_items))))


def perceptual_kind(c: InpaintingParams) -> str:
    """The feature network of the perceptual/style terms, known without building it."""
    from histolib.train.features import VGG19_FILE, _hub_file

    if c.perceptual == "none" or (c.lambda_perceptual == 0 and c.lambda_style == 0):
        return "none"
    if c.perceptual == "auto":
        return "vgg19" if (c.perceptual_weights or _hub_file(VGG19_FILE)) else "encoder"
    return c.perceptual


def feature_net(P, windows: np.ndarray):
    """The frozen feature network (:func:`perceptual_kind`); the encoder substitute is trained on ``windows``
    with the study seed + 1 (one network shared by every replicate: it is the loss's instrument)."""
    from histolib.train.features import load_feature_net

    c = P.inpainting
    kind = perceptual_kind(c)
    if kind == "none":
        return None
    return load_feature_net(kind, weights=c.perceptual_weights or None, images=windows, seed=P.seed + 1,
                            steps=c.feature_steps, purpose="perceptual")


@dataclass
class Replicate:
    """One generator replicate: the inpainting GAN and the mask DCGAN trained with ``seed``."""

    g: int
    seed: int
    inpainter: object  # histolib.train.inpainting.TrainedInpainter
    mask_gan: object   # histolib.train.inpainting.MaskGanTrainer
    mask_log: list[dict] = field(default_factory=list)
    mask_seconds: float = 0.0

    @property
    def G(self):
        return self.inpainter.G

    @property
    def mask_G(self):
        return self.mask_gan.G


def _args(P, kind: str, opts, crops: CropSet, extra: dict) -> dict:
    from histolib.train.checkpoint import fingerprint

    return {"kind": kind, "options": opts.to_dict(), **extra, "data": fingerprint(crops.images, crops.masks)}


def train_inpainter(P, crops: CropSet, out_dir, seed: int, features=None, progress: bool = True):
    """Train (or resume, or load) one inpainting GAN on the sclerosed crops.

    Args:
        P: loaded params.
        crops: the training crops (:func:`crops_of` of the training set, class 2).
        out_dir: checkpoints, ``log.jsonl``, ``samples/`` (rows: gap input, mask, composite, original,
            raw output on white).
        seed: the replicate's seed.
        features: a zero-argument callable returning the feature network (called only when training).

    Returns:
        :class:`histolib.train.inpainting.TrainedInpainter`.
    """
    from histolib.train.gan import TensorBatches, complete_run, load_task_state, read_log, train_gan
    from histolib.train.inpainting import InpaintTrainer, TrainedInpainter, crops_to_tensors

    c = P.inpainting
    if len(crops) == 0:
        raise DataError("no sclerosed glomerulus in the training set: the inpainting GAN has nothing to learn from")
    opts = inpaint_options(P)
    steps = gan_steps(c.epochs, len(crops), c.batch_size)
    kind = perceptual_kind(c)
    args = _args(P, "inpainting", opts, crops, {
        "batch_size": c.batch_size, "features": {"net": kind, "weights": c.perceptual_weights,
                                                 "encoder_steps": c.feature_steps if kind == "encoder" else 0}})
    trainer = InpaintTrainer(opts, seed)
    done = complete_run(out_dir, args, steps, seed)
    if done is not None:  # a finished run (e.g. the nb04_train stage's output): load, write nothing
        load_task_state(trainer, done.checkpoint)
        trainer.G.eval()
        return TrainedInpainter(trainer, read_log(out_dir), float(done.summary.get("seconds", 0.0)), Path(out_dir),
                                done.summary.get("backbone", kind))
    trainer.features = features() if features is not None else None
    x, m = crops_to_tensors(crops.images, crops.masks)
    n = min(c.n_grid, len(x))
    result = train_gan(trainer, TensorBatches(x, m, batch_size=c.batch_size), steps=steps, out_dir=out_dir,
                       seed=seed, args=args, fixed_batch=(x[:n], m[:n]),
                       checkpoint_every=min(c.checkpoint_every, steps), sample_every=min(c.checkpoint_every, steps),
                       log_every=max(1, steps // 500), progress=progress, desc=f"inpainting GAN seed {seed}",
                       summary={"backbone": trainer.backbone})  # recorded with the completion, read back on load
    trainer.G.eval()
    return TrainedInpainter(trainer, result.log, result.seconds, Path(out_dir), trainer.backbone)


def train_mask_gan(P, masks: np.ndarray, out_dir, seed: int, progress: bool = True):
    """Train (or load) the mask DCGAN on the real sclerosed masks ``(N, S, S)``; returns
    ``(MaskGanTrainer, log, seconds)``."""
    from histolib.train.checkpoint import fingerprint
    from histolib.train.gan import TensorBatches, complete_run, load_task_state, read_log, train_gan
    from histolib.train.inpainting import MaskGanTrainer

    c = P.inpainting
    masks = (np.asarray(masks) > 0).astype(np.uint8)
    if len(masks) == 0:
        raise DataError("no sclerosed glomerulus mask to train the mask DCGAN on")
    opts = mask_options(P)
    steps = gan_steps(c.mask_epochs, len(masks), c.mask_batch)
    args = {"kind": "mask_dcgan", "options": opts.to_dict(), "batch_size": c.mask_batch,
            "data": fingerprint(masks)}
    trainer = MaskGanTrainer(opts, seed)
    done = complete_run(out_dir, args, steps, seed)
    if done is not None:
        load_task_state(trainer, done.checkpoint)
        trainer.G.eval()
        return trainer, read_log(out_dir), float(done.summary.get("seconds", 0.0))
    x = torch.from_numpy(masks.astype(np.float32))[:, None]
    if opts.size != x.shape[-1]:  # area-average to the DCGAN's size: soft edges
        x = torch.nn.functional.interpolate(x, size=(opts.size, opts.size), mode="area")
    x = x * 2 - 1
    n = min(c.n_grid, len(x))
    z = torch.randn(n, opts.z_dim, generator=torch.Generator().manual_seed(seed))
    result = train_gan(trainer, TensorBatches(x, batch_size=c.mask_batch), steps=steps, out_dir=out_dir, seed=seed,
                       args=args, fixed_batch=(x[:n], z), checkpoint_every=steps, sample_every=max(1, steps // 4),
                       log_every=max(1, steps // 200), progress=progress, desc=f"mask DCGAN seed {seed}")
    trainer.G.eval()
    return trainer, result.log, result.seconds


def generator_seeds(P) -> list[int]:
    """Seeds of the ``protocol.n_gan_seeds`` generator replicates (replicate 0 = the study seed)."""
    return replicate_seeds(P.seed, P.protocol.n_gan_seeds)


def replicate_folder(folder, g: int) -> Path:
    return Path(folder) / f"g{int(g)}"


def train_replicates(P, data: StudyData, folder, progress: bool = True) -> list[Replicate]:
    """Train (or load) every generator replicate: ``folder/g<k>/{inpainting,masks}``."""
    size = P.data.crop_size
    crops = crops_of(data.train, 2, size)
    cache = {}

    def features():
        if "net" not in cache:
            cache["net"] = feature_net(P, feature_windows(data.train, size, max(64, 4 * len(crops)), P.seed))
        return cache["net"]

    out = []
    for g, seed in enumerate(generator_seeds(P)):
        inp = train_inpainter(P, crops, replicate_folder(folder, g) / "inpainting", seed, features, progress)
        mg, log, secs = train_mask_gan(P, crops.masks, replicate_folder(folder, g) / "masks", seed, progress)
        out.append(Replicate(g, seed, inp, mg, log, secs))
    return out


def network_table(P) -> list[dict]:
    """Sizes of the generative networks at this profile."""
    from histolib.models.inpainting import count_parameters
    from histolib.train.inpainting import InpaintTrainer, MaskGanTrainer

    o = inpaint_options(P)
    with torch.device("meta"):
        t = InpaintTrainer(o)
        m = MaskGanTrainer(mask_options(P))
    s = o.image_size
    return [{"network": "inpainting G", "input": f"{s} px, 4 channels (gap image ++ mask)",
             "parameters": count_parameters(t.G),
             "layout": f"ngf {o.ngf}; {o.n_blocks} AOT blocks at {4 * o.ngf} ch, {s // 4} px; self-attention "
                       f"{'at ' + str(s // 4) + ' px' if o.attention else 'off'}; skips {'on' if o.skips else 'off'}"},
            {"network": "D (global = local)" if o.share_discriminators else "D global / D local",
             "input": f"{s} px", "parameters": count_parameters(t.D) * (1 if o.share_discriminators else 2),
             "layout": f"{o.d_layers} convs 4x4 ({t.D.n_down} stride 2), ndf {o.ndf}, patch map 4 x 4"},
            {"network": "mask DCGAN G / D", "input": f"z {m.opt.z_dim} -> {m.opt.size} px mask (upsampled to {s} px)",
             "parameters": f"{count_parameters(m.G)} / {count_parameters(m.D)}",
             "layout": f"ngf {m.opt.ngf}, ndf {m.opt.ndf}"}]


# --------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------

@dataclass
class MaskBank:
    """Generated masks through the paper's steps: ``raw`` DCGAN output in [0, 1] (upsampled to the crop), ``clean``
    (thresholded, small regions removed, holes filled; empty ones dropped), ``scaled`` (sizes spread evenly);
    sizes are equivalent diameters (px). ``n_real_fallback`` masks at the end are real training masks (flipped /
    rotated) that filled the bank because the DCGAN gave too few usable masks (only tiny runs, e.g. ``smoke``)."""

    raw: np.ndarray
    clean: np.ndarray
    scaled: np.ndarray
    clean_sizes: np.ndarray
    scaled_sizes: np.ndarray
    real_sizes: np.ndarray
    n_dropped: int
    n_real_fallback: int = 0


def mask_bank(mask_G, n: int, real_masks: np.ndarray, P, seed: int, max_rounds: int = 8) -> MaskBank:
    """``n`` usable generated masks (module docstring, step 4).

    Raw masks are drawn in rounds (noise from ``seed``), upsampled bilinearly to the real masks' size, and
    kept when something survives the clean-up, until there are ``n``; after ``max_rounds`` rounds the bank is
    filled with flipped / rotated real masks (counted in ``n_real_fallback``). The real masks'
    equivalent-diameter range is the range of the scaled sizes.
    """
    from histolib.ops.masks import clean_mask, equivalent_diameter, scale_to_even_sizes
    from histolib.train.inpainting import generate_masks

    c = P.inpainting
    real_masks = (np.asarray(real_masks) > 0).astype(np.uint8)
    if len(real_masks) == 0:
        raise DataError("mask_bank needs at least one real mask")
    side = real_masks.shape[-1]
    real_sizes = np.array([equivalent_diameter(m) for m in real_masks])
    min_area = int(round(c.mask_min_area * float(np.mean([np.count_nonzero(m) for m in real_masks]))))
    raws, cleans, dropped = [], [], 0
    for r in range(max_rounds):
        if len(cleans) >= n:
            break
        raw = generate_masks(mask_G, max(2 * (n - len(cleans)), 8), seed * 7919 + r)
        if raw.shape[-1] != side:
            raw = torch.nn.functional.interpolate(torch.from_numpy(raw)[:, None], size=(side, side), mode="bilinear",
                                                  align_corners=False)[:, 0].numpy()
        for x in raw:
            m = clean_mask(x, c.mask_threshold, min_area)
            if not m.any():
                dropped += 1
            elif len(cleans) < n:
                raws.append(x)
                cleans.append(m)
    fallback = n - len(cleans)
    rng = np.random.default_rng(seed)
    for k in range(fallback):
        m = np.rot90(real_masks[k % len(real_masks)], int(rng.integers(4)))
        m = np.ascontiguousarray(m[:, ::-1] if rng.random() < 0.5 else m)
        raws.append(m.astype(np.float32))
        cleans.append(m)
    if n == 0:
        z = np.zeros((0, side, side), np.uint8)
        return MaskBank(z.astype(np.float32), z, z, np.zeros(0), np.zeros(0), real_sizes, dropped)
    clean = np.stack(cleans)
    scaled, sizes = scale_to_even_sizes(clean, float(real_sizes.min()), float(real_sizes.max()), c.size_bins, rng)
    return MaskBank(np.stack(raws), clean, scaled, np.array([equivalent_diameter(m) for m in clean]), sizes,
                    real_sizes, dropped, fallback)


# --------------------------------------------------------------------------------------------------
# Synthesis (Fig. 7)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """A new sclerosed glomerulus: the host item, the crop window's ``origin``, its ``centre``, and the
    bank mask index ``k`` (the mask itself is the replicate's bank mask ``k``)."""

    item: int
    centre: tuple[int, int]
    origin: tuple[int, int]
    k: int


def synthetic_counts(n_real: int, fractions) -> list[int]:
    """``round(f * n_real)`` new glomeruli per fraction (at least 1 for a positive fraction when ``n_real > 0``)."""
    return [max(1, int(round(f * n_real))) if f > 0 and n_real > 0 else 0 for f in fractions]


def plan_placements(ts: TileSet, radii: np.ndarray, size: int, margin: float, max_per_tile: int,
                    rng: np.random.Generator) -> list[Placement]:
    """Where ``len(radii)`` new glomeruli go (phantom mode), in order.

    Glomerulus ``k`` (enclosing radius ``radii[k]``) goes to the next tile of a random tile order
    (round-robin, at most ``max_per_tile`` per tile) at a uniform position whose disc of radius
    ``radii[k] (1 + margin)`` lies in the tile's ``allowed`` region and clear of the glomeruli already
    placed there. A glomerulus that fits in no tile is left out (fewer placements are returned).

    Returns:
        :class:`Placement` s; ``k`` indexes ``radii``.
    """
    from histolib.ops.crops import crop_origin, sample_centre

    if ts.allowed is None:
        raise ParamError("plan_placements needs the allowed regions of the tiles (phantom mode)")
    n = len(ts)
    order = rng.permutation(n)
    free = [a.copy() for a in ts.allowed]
    used = np.zeros(n, int)
    h, w = ts.allowed.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    out, t = [], 0
    for k, r in enumerate(radii):
        rad = float(r) * (1 + margin)
        for attempt in range(n):
            i = int(order[(t + attempt) % n])
            if used[i] >= max_per_tile:
                continue
            c = sample_centre(free[i], rad, rng)
            if c is None:
                continue
            out.append(Placement(i, c, crop_origin(c[0], c[1], size), k))
            free[i] &= (yy - c[0]) ** 2 + (xx - c[1]) ** 2 > (2 * rad) ** 2
            used[i] += 1
            t = (t + attempt + 1) % n
            break
    return out


def window(ts_images: np.ndarray, item: int, origin: tuple[int, int], size: int, mode: str = "reflect") -> np.ndarray:
    """The ``size`` window at ``origin`` of item ``item`` (reflect-padded outside the item)."""
    from histolib.ops.crops import centred_crop

    cy, cx = origin[0] + size // 2, origin[1] + size // 2
    return centred_crop(ts_images[item], cy, cx, size, mode)


def inpaint_placements(G, ts: TileSet, placements: list[Placement], masks: np.ndarray, size: int,
                       precision: str = "fp32") -> np.ndarray:
    """The inpainted windows of every placement, ``(K, S, S, 3)`` uint8, each from the original item's
    context with the bank mask ``masks[p.k]`` (Eq. 13 and the paste-back of Fig. 7)."""
    from histolib.train.inpainting import inpaint

    if not placements:
        return np.zeros((0, size, size, 3), np.uint8)
    crops = np.stack([window(ts.images, p.item, p.origin, size) for p in placements])
    return inpaint(G, crops, np.stack([masks[p.k] for p in placements]), precision=precision)


def apply_placements(ts: TileSet, placements: list[Placement], inpainted: np.ndarray, masks: np.ndarray):
    """Paste the inpainted windows into copies of the tiles (inside the masks) and label them 2.

    Returns:
        ``(images, labels)`` of the whole set; placements must not overlap (:func:`plan_placements`).
    """
    from histolib.ops.crops import paste

    images, labels = ts.images.copy(), ts.labels.copy()
    for p, content in zip(placements, inpainted, strict=True):
        m = masks[p.k]
        images[p.item] = paste(images[p.item], content, m, p.origin)
        labels[p.item] = paste(labels[p.item], np.full(m.shape, 2, np.uint8), m, p.origin)
    return images, labels


def real_mode_synthesis(G, ts: TileSet, masks: np.ndarray, n: int, size: int, rng: np.random.Generator,
                        precision: str = "fp32"):
    """Real mode: ``n`` normal crops (random order, cycled) each get a synthetic sclerosed glomerulus in the
    union of a bank mask and its own glomerulus; returns ``(images, labels, generating masks, hosts)`` of
    the new crops (label 2 in the union; the window's other labels kept)."""
    from histolib.train.inpainting import inpaint

    hosts = crops_of(ts, 1, size)
    if n == 0 or len(hosts) == 0:
        z = np.zeros((0, size, size), np.uint8)
        return np.zeros((0, size, size, 3), np.uint8), z, z, []
    idx = [int(i) for i in np.resize(rng.permutation(len(hosts)), n)]
    union = np.stack([np.maximum(masks[j % len(masks)], hosts.masks[i]) for j, i in enumerate(idx)]).astype(np.uint8)
    imgs = inpaint(G, hosts.images[idx], union, precision=precision)
    labels = hosts.labels[idx].copy()
    labels[union > 0] = 2
    return imgs, labels, union, idx


@dataclass
class SyntheticSets:
    """The training sets of one generator replicate: ``{"+30%": (images, labels), ...}``, the placements and
    inpainted windows (phantom) for the figures."""

    sets: dict[str, tuple[np.ndarray, np.ndarray]]
    placements: list[Placement]
    inpainted: np.ndarray
    masks: np.ndarray
    originals: np.ndarray


def fraction_name(f: float) -> str:
    return f"+{round(100 * f):d}%"


def build_synthetic_sets(P, data: StudyData, rep: Replicate, bank: MaskBank, placements: list[Placement] | None,
                         seed: int) -> SyntheticSets:
    """Replicate ``rep``'s synthetic training sets for ``inpainting.synthetic_fractions`` (nested)."""
    c, size = P.inpainting, P.data.crop_size
    counts = synthetic_counts(data.train.count(2), c.synthetic_fractions)
    masks = bank.scaled
    if data.train.kind == "crops":
        n = max(counts) if counts else 0
        imgs, labs, union, _ = real_mode_synthesis(rep.G, data.train, masks, n, size, np.random.default_rng(seed),
                                                   c.precision)
        sets = {fraction_name(f): (np.concatenate([data.train.images, imgs[:k]]),
                                   np.concatenate([data.train.labels, labs[:k]]))
                for f, k in zip(c.synthetic_fractions, counts, strict=True)}
        return SyntheticSets(sets, [], imgs, union, np.zeros_like(imgs))
    placements = placements or []
    inpainted = inpaint_placements(rep.G, data.train, placements, masks, size, c.precision)
    originals = (np.stack([window(data.train.images, p.item, p.origin, size) for p in placements])
                 if placements else np.zeros((0, size, size, 3), np.uint8))
    sets = {}
    for f, k in zip(c.synthetic_fractions, counts, strict=True):
        sel = [i for i, p in enumerate(placements) if p.k < k]
        sets[fraction_name(f)] = apply_placements(data.train, [placements[i] for i in sel], inpainted[sel], masks)
    return SyntheticSets(sets, placements, inpainted, masks, originals)


def plan_for(P, data: StudyData, bank_radii: np.ndarray, seed: int) -> list[Placement]:
    """The shared placement plan (phantom mode): positions for the largest fraction's count, drawn once with
    the study seed and reused by every replicate (with its own masks of the same bank index)."""
    c = P.inpainting
    if data.train.kind == "crops":
        return []
    counts = synthetic_counts(data.train.count(2), c.synthetic_fractions)
    n = max(counts) if counts else 0
    return plan_placements(data.train, bank_radii[:n], P.data.crop_size, c.margin, c.max_per_tile,
                           np.random.default_rng(seed))


def bank_radii(banks: list[MaskBank]) -> np.ndarray:
    """Per bank index, the largest enclosing radius over the replicates' scaled masks (the plan must fit all)."""
    from histolib.ops.crops import mask_circle

    n = min(len(b.scaled) for b in banks)
    return np.array([max(mask_circle(b.scaled[k]).radius + 0.5 if b.scaled[k].any() else 0.0 for b in banks)
                     for k in range(n)])


# --------------------------------------------------------------------------------------------------
# Segmentation experiments (Tables 3-5)
# --------------------------------------------------------------------------------------------------

REAL, REAL_NOAUG = "Real", "Real, no trad. aug."


def seg_options(P, model: str, augment: bool):
    from histolib.train.segmenters import SegOptions

    c = P.inpainting
    return SegOptions(model=model, steps=c.seg_steps, batch_size=c.seg_batch, crop=c.seg_crop, lr=c.seg_lr,
                      eta_min=c.seg_eta_min, augment_p=c.augment_p if augment else 0.0, eval_every=c.seg_eval_every,
                      decoder_channels=tuple(c.decoder_channels), unet_width=c.unet_width,
                      unetpp_encoder=c.unetpp_encoder, encoder_weights=c.encoder_weights, bn_momentum=c.bn_momentum,
                      fg_fraction=c.fg_fraction, precision=seg_precision(c.seg_precision, model))


def seg_precision(setting: str, model: str) -> str:
    """The autocast precision of ``model`` under ``inpainting.seg_precision``: ``auto`` is bf16 for U-Net and
    U-Net++ on a CPU with native bf16 (measured faster there), fp32 for EffB3 (bf16 measured 1.7x slower) and
    on every CPU without native bf16 (emulated bf16 is far slower than fp32)."""
    if setting == "auto" and model == "effb3_unet":
        return "fp32"
    return resolve_precision(setting)


@dataclass(frozen=True)
class RunSpec:
    """One segmentation configuration: model, training set (base name), generator replicate (``None`` for
    real data), traditional augmentation."""

    model: str
    set: str
    g: int | None
    augment: bool = True

    @property
    def folder(self) -> str:
        s = "".join(ch if ch.isalnum() else "_" for ch in self.set).strip("_")
        return f"{self.model}/{s}" + (f"_g{self.g}" if self.g is not None else "")


def run_specs(P) -> list[RunSpec]:
    """Every configuration of Tables 3-5, EfficientNet-B3 U-Net first."""
    c = P.inpainting
    bad = [m for m in c.models if m not in ("effb3_unet", "unet", "unetpp")]
    if bad or "effb3_unet" not in c.models:
        raise ParamError(f"inpainting.models must include effb3_unet and only effb3_unet, unet, unetpp; got {c.models}")
    gens = range(P.protocol.n_gan_seeds)
    fractions = [fraction_name(f) for f in c.synthetic_fractions]
    specs = [RunSpec("effb3_unet", REAL, None, True), RunSpec("effb3_unet", REAL_NOAUG, None, False)]
    specs += [RunSpec("effb3_unet", f, g, True) for f in fractions for g in gens]
    if fractions:
        specs += [RunSpec(m, fractions[-1], g, True) for m in c.models if m != "effb3_unet" for g in gens]
    return specs


def seg_seeds(P) -> list[int]:
    return [P.seed + k for k in range(P.inpainting.n_seeds)]


def _score_row(spec: RunSpec, seed: int, test: str, scores: dict) -> dict:
    row = {"model": spec.model, "set": spec.set, "g": spec.g, "seed": seed, "augment": spec.augment, "test": test}
    for cls in ("NG", "SG", "mean"):
        for k in ("precision", "recall", "f1", "dice"):
            row[f"{cls}_{k}"] = scores[cls][k]
    return row


def run_segmentation(P, specs: list[RunSpec], train_sets: dict, data: StudyData, out_dir,
                     progress: bool = False) -> tuple[list[dict], dict]:
    """Train every (spec, seed) and score it on every test set.

    Args:
        specs: :func:`run_specs`.
        train_sets: ``{(set, g): (images, labels)}`` (``(REAL, None)`` and ``(REAL_NOAUG, None)`` are the real
            tiles; synthetic sets keyed by replicate).
        data: the study's data (validation and test sets).
        out_dir: ``<out_dir>/<model>/<set>[_g<k>]/seed<s>`` per run; ``runs.json`` holds the rows so far.

    Returns:
        ``(rows, models)``: one row per run and test set (per-class precision, recall, F1, Dice and their
        means, plus ``best_step``, ``val_dice``, ``seconds``); ``models[(spec, seed)]`` the trained
        :class:`histolib.train.segmenters.SegResult` s.
    """
    from histolib.fileio import write_json
    from histolib.train.segmenters import evaluate_classes, train_segmenter

    out_dir = Path(out_dir)
    rows, models = [], {}
    for spec in specs:
        images, labels = train_sets[(spec.set, spec.g)]
        for seed in seg_seeds(P):
            opts = seg_options(P, spec.model, spec.augment)
            res = train_segmenter(images, labels, data.val.images, data.val.labels, opts, seed,
                                  out_dir / spec.folder / f"seed{seed}", progress=progress)
            models[(spec, seed)] = res
            for test, ts in data.tests.items():
                row = _score_row(spec, seed, test, evaluate_classes(res.segmenter, ts.images, ts.labels,
                                                                    opts.precision))
                rows.append({**row, "best_step": res.best_step, "val_dice": res.best_val, "seconds": res.seconds,
                             "n_train": len(images), "encoder": res.segmenter.encoder})
            write_json(out_dir / "runs.json", rows)
    return rows, models


def training_sets(data: StudyData, synthetic: list[SyntheticSets]) -> dict:
    """``{(set, g): (images, labels)}`` for :func:`run_segmentation`."""
    out = {(REAL, None): (data.train.images, data.train.labels), (REAL_NOAUG, None): (data.train.images,
                                                                                      data.train.labels)}
    for g, s in enumerate(synthetic):
        out.update({(name, g): v for name, v in s.sets.items()})
    return out


# --------------------------------------------------------------------------------------------------
# Grouping results: two-level samples
# --------------------------------------------------------------------------------------------------

def _select(rows, model, set_, test):
    return [r for r in rows if r["model"] == model and r["set"] == set_ and r["test"] == test]


def groups(rows: list[dict], model: str, set_: str, test: str, key: str) -> list[list[float]]:
    """Values of ``key`` as groups for :func:`histolib.report.two_level_summary`: one list of seed values per
    generator replicate; real sets (no replicate) as :func:`single_level`. ``[]`` when absent."""
    sel = _select(rows, model, set_, test)
    if not sel:
        return []
    if all(r["g"] is None for r in sel):
        return single_level([r[key] for r in sorted(sel, key=lambda r: r["seed"])])
    by: dict = {}
    for r in sel:
        by.setdefault(r["g"], {})[r["seed"]] = float(r[key])
    return [[by[g][s] for s in sorted(by[g])] for g in sorted(by)]


def paired_groups(rows: list[dict], terms: list[tuple[str, str, str, str, float]]) -> list[list[float]]:
    """A linear combination ``sum_k w_k value_k`` computed per (generator replicate, seed), as groups.

    Args:
        terms: ``(model, set, test, key, weight)``. Terms from real sets (no replicate) are paired by seed
            with every replicate.

    Returns:
        Groups per replicate (or :func:`single_level` when no term has replicates); combinations with a
        missing term are left out.
    """
    index = []
    gens: set = set()
    for model, set_, test, key, w in terms:
        d = {(r["g"], r["seed"]): float(r[key]) for r in _select(rows, model, set_, test)}
        if not d:
            return []
        index.append((d, w))
        gens |= {g for g, _ in d if g is not None}
    seeds = sorted({s for d, _ in index for _, s in d})
    out: dict = {}
    for g in sorted(gens) or [None]:
        for s in seeds:
            vals = []
            for d, w in index:
                v = d.get((g, s), d.get((None, s)))
                if v is None:
                    break
                vals.append(w * v)
            else:
                out.setdefault(g, []).append(sum(vals))
    if not out:
        return []
    if list(out) == [None]:
        return single_level(out[None])
    return [out[g] for g in sorted(out)]


def _summary(rows, model, set_, test, key):
    g = groups(rows, model, set_, test, key)
    return report.two_level_summary(g) if g else None


# --------------------------------------------------------------------------------------------------
# The paper's numbers (mean, sd over ten trainings)
# --------------------------------------------------------------------------------------------------

_M = ("precision", "recall", "f1", "dice")


def _t(*v):
    return {k: (v[2 * i], v[2 * i + 1]) for i, k in enumerate(_M)}


PAPER_TABLE2 = {"mae": 0.0152, "psnr": 22.6943, "ssim": 0.8086}  # the abstract gives PSNR 22.8943
PAPER_TABLE3 = {
    "Test1 (PAS)": {False: {"NG": _t(.8952, .0018, .9169, .0031, .9059, .0010, .9036, .0005),
                            "SG": _t(.8492, .0020, .4089, .0025, .5520, .0014, .5145, .0006)},
                    True: {"NG": _t(.9028, .0013, .9228, .0017, .9127, .0006, .9134, .0003),
                           "SG": _t(.8451, .0021, .5353, .0016, .6534, .0009, .6218, .0004)}},
    "Test2 (PAS)": {False: {"NG": _t(.9328, .0023, .7727, .0020, .8452, .0009, .8445, .0004),
                            "SG": _t(.7531, .0019, .5577, .0028, .6408, .0014, .6355, .0007)},
                    True: {"NG": _t(.9202, .0030, .7768, .0021, .8424, .0011, .8406, .0005),
                           "SG": _t(.8409, .0032, .5820, .0019, .6879, .0012, .6828, .0006)}},
    "Test3 (H&E)": {False: {"NG": _t(.9725, .0028, .6770, .0022, .7983, .0011, .7956, .0005),
                            "SG": _t(.7496, .0029, .2585, .0030, .3844, .0023, .3637, .0008)},
                    True: {"NG": _t(.9779, .0027, .6871, .0021, .8071, .0010, .8052, .0005),
                           "SG": _t(.7353, .0041, .2334, .0032, .3543, .0027, .3439, .0010)}},
}
PAPER_TABLE4 = {  # SG only
    "Test1 (PAS)": {"+30%": _t(.8813, .0014, .6025, .0038, .7157, .0016, .7010, .0007),
                    "+60%": _t(.8924, .0016, .6426, .0032, .7472, .0013, .7328, .0006),
                    "+100%": _t(.8947, .0021, .6408, .0029, .7468, .0012, .7491, .0006)},
    "Test2 (PAS)": {"+30%": _t(.8825, .0023, .6023, .0012, .7160, .0008, .7313, .0004),
                    "+60%": _t(.9022, .0019, .6219, .0027, .7363, .0012, .7641, .0006),
                    "+100%": _t(.9068, .0025, .6211, .0031, .7372, .0014, .7685, .0007)},
    "Test3 (H&E)": {"+30%": _t(.7729, .0032, .4017, .0042, .5286, .0025, .4278, .0009),
                    "+60%": _t(.7761, .0029, .4165, .0037, .5421, .0022, .4871, .0009),
                    "+100%": _t(.7801, .0042, .4303, .0025, .5547, .0018, .4916, .0007)},
}
PAPER_TABLE5 = {  # mean of NG and SG, trained with +100 % synthetic data
    "Test1 (PAS)": {"unet": _t(.7223, .0012, .6630, .0010, .6914, .0006, .7690, .0003),
                    "unetpp": _t(.7816, .0014, .6719, .0011, .7226, .0006, .7828, .0003),
                    "swin": _t(.8545, .0010, .7730, .0014, .8117, .0005, .8025, .0003),
                    "effb3_unet": _t(.9002, .0012, .7918, .0009, .8425, .0004, .8325, .0002)},
    "Test2 (PAS)": {"unet": _t(.8628, .0027, .6423, .0012, .7364, .0009, .7310, .0004),
                    "unetpp": _t(.8901, .0022, .6310, .0027, .7385, .0012, .7524, .0006),
                    "swin": _t(.8804, .0008, .6621, .0015, .7556, .0006, .7730, .0003),
                    "effb3_unet": _t(.9137, .0020, .6713, .0024, .7740, .0010, .8045, .0005)},
    "Test3 (H&E)": {"unet": _t(.7909, .0011, .4871, .0020, .6029, .0010, .5521, .0004),
                    "unetpp": _t(.8054, .0020, .4993, .0017, .6164, .0010, .5564, .0004),
                    "swin": _t(.8621, .0029, .5335, .0009, .6591, .0009, .6102, .0004),
                    "effb3_unet": _t(.8790, .0018, .5626, .0012, .6861, .0007, .6882, .0003)},
}
PAPER_TEST = {"in-domain": "Test1 (PAS)", "stain-shifted": "Test3 (H&E)"}
PAPER_CONDITIONS = ("51 real WSIs/ROIs (25 PAS WSIs + 20 PAS ROIs to train; Test1: 6 PAS WSIs, Test2: 5 PAS ROIs, "
                    "Test3: 53 H&E ROIs), 1024-px patches of 2x-downsampled slides, 256-px sclerosed crops; inpainting "
                    "GAN 100 epochs batch 16; segmenters 200 epochs batch 8, ImageNet-pretrained encoders presumably; "
                    "mean ± SD over ten trainings with random 8:2 train/val splits, one generator, no interval. "
                    "Test2 (a second PAS centre) has no counterpart here.")
MODEL_NAMES = {"effb3_unet": "EfficientNetB3-Unet", "unet": "Unet", "unetpp": "Unet++", "swin": "Swin-Unet"}


def _paper_cell(v) -> str:
    return report.fmt_mean_std(*v, scale=1.0, digits=4) if v else ""


def _cell(rows, model, set_, test, key) -> str:
    s = _summary(rows, model, set_, test, key)
    return report.fmt_interval(s, scale=1.0, digits=4) if s else "not run"


def table3(rows: list[dict], roles: dict[str, str]) -> list[dict]:
    """Table 3: EfficientNet-B3 U-Net on real tiles without / with traditional augmentation, per test and class."""
    out = []
    for test, role in roles.items():
        paper = PAPER_TABLE3.get(PAPER_TEST[role], {})
        for aug, set_ in ((False, REAL_NOAUG), (True, REAL)):
            for cls in ("NG", "SG"):
                row = {"test": f"{test} ({role}; paper {PAPER_TEST[role]})", "trad. aug.": "✓" if aug else "-",
                       "class": cls}
                row.update({k: _cell(rows, "effb3_unet", set_, test, f"{cls}_{k}") for k in _M})
                row.update({f"paper {k}": _paper_cell(paper.get(aug, {}).get(cls, {}).get(k)) for k in _M})
                out.append(row)
    return out


def table4(rows: list[dict], roles: dict[str, str], fractions: list[str]) -> list[dict]:
    """Table 4: SG scores of the EfficientNet-B3 U-Net with real tiles (for reference) and each synthetic set."""
    out = []
    for test, role in roles.items():
        paper = PAPER_TABLE4.get(PAPER_TEST[role], {})
        for set_ in [REAL, *fractions]:
            g = groups(rows, "effb3_unet", set_, test, "SG_dice")
            row = {"test": f"{test} ({role})", "synthetic data": set_ if set_ != REAL else "none (Real)",
                   "G": len(g) if set_ != REAL and g else "—"}
            row.update({k: _cell(rows, "effb3_unet", set_, test, f"SG_{k}") for k in _M})
            row.update({f"paper {k}": _paper_cell(paper.get(set_, {}).get(k)) if set_ != REAL else
                        _paper_cell(PAPER_TABLE3.get(PAPER_TEST[role], {}).get(True, {}).get("SG", {}).get(k))
                        for k in _M})
            out.append(row)
    return out


def table5(rows: list[dict], roles: dict[str, str], models: list[str], set_: str) -> list[dict]:
    """Table 5: mean-over-classes scores of every model trained on ``set_`` (the +100 % sets)."""
    out = []
    for test, role in roles.items():
        paper = PAPER_TABLE5.get(PAPER_TEST[role], {})
        for m in ["unet", "unetpp", "swin", "effb3_unet"]:
            if m != "swin" and m not in models:
                continue
            row = {"test": f"{test} ({role})", "model": MODEL_NAMES[m]}
            row.update({k: (_cell(rows, m, set_, test, f"mean_{k}") if m != "swin" else
                            "not run (needs pretrained Swin weights; over the CPU budget)") for k in _M})
            row.update({f"paper {k}": _paper_cell(paper.get(m, {}).get(k)) for k in _M})
            out.append(row)
    return out


def table2(quality: list[dict]) -> list[dict]:
    """Table 2: region MAE / PSNR / SSIM per generator replicate, their mean, and the paper's."""
    rows = [{"generator": f"g{q['g']}", "crops": q["n"], "MAE": f"{q['mae']:.4f}", "MAE (AOT def.)":
             f"{q['mae_aot']:.4f}", "PSNR (dB)": f"{q['psnr']:.2f}", "SSIM": f"{q['ssim']:.4f}"} for q in quality]
    if quality:
        def mean(k):
            return float(np.mean([q[k] for q in quality]))

        rows.append({"generator": "mean", "crops": quality[0]["n"], "MAE": f"{mean('mae'):.4f}",
                     "MAE (AOT def.)": f"{mean('mae_aot'):.4f}", "PSNR (dB)": f"{mean('psnr'):.2f}",
                     "SSIM": f"{mean('ssim'):.4f}"})
    rows.append({"generator": "paper", "crops": "20% of their crops", "MAE": f"{PAPER_TABLE2['mae']:.4f}",
                 "MAE (AOT def.)": "(definition not given)", "PSNR (dB)": f"{PAPER_TABLE2['psnr']:.4f} (abstract: "
                 "22.8943)", "SSIM": f"{PAPER_TABLE2['ssim']:.4f}"})
    return rows


def inpainting_quality(replicates: list[Replicate], crops: CropSet, precision: str = "fp32") -> list[dict]:
    """Table 2 per replicate: each held-out real sclerosed crop inpainted with its own mask and compared with
    the original inside the mask (:func:`histolib.metrics.region.mean_region_scores`); ``outputs`` holds the
    composites."""
    from histolib.metrics.region import mean_region_scores
    from histolib.train.inpainting import inpaint

    out = []
    for rep in replicates:
        comp = inpaint(rep.G, crops.images, crops.masks, precision=precision)
        out.append({"g": rep.g, **mean_region_scores(crops.images, comp, crops.masks), "outputs": comp})
    return out


# --------------------------------------------------------------------------------------------------
# Faithfulness
# --------------------------------------------------------------------------------------------------

def faithfulness_inputs(P, ts: TileSet, bank: MaskBank, seed: int, n: int) -> tuple[list[Placement], np.ndarray]:
    """Where a replicate's faithfulness crops go in a test set: ``n`` placements (phantom: free tissue of the
    test tiles; real mode: ``[]``, the normal test crops are the hosts) and their masks."""
    if ts.kind == "crops":
        return [], bank.scaled[:n]
    from histolib.ops.crops import mask_circle

    masks = bank.scaled[:n]
    radii = np.array([mask_circle(m).radius + 0.5 if m.any() else 0.0 for m in masks])
    pl = plan_placements(ts, radii, P.data.crop_size, P.inpainting.margin, P.inpainting.max_per_tile,
                         np.random.default_rng(seed))
    return pl, masks


def generated_for_faithfulness(P, rep: Replicate, ts: TileSet, bank: MaskBank, seed: int, n: int):
    """Replicate ``rep``'s inpainted test crops and their generating label maps (2 inside the mask, the
    window's own labels elsewhere)."""
    size = P.data.crop_size
    if ts.kind == "crops":
        imgs, labs, _, _ = real_mode_synthesis(rep.G, ts, bank.scaled, n, size, np.random.default_rng(seed),
                                               P.inpainting.precision)
        return imgs, labs
    pl, masks = faithfulness_inputs(P, ts, bank, seed, n)
    inp = inpaint_placements(rep.G, ts, pl, masks, size, P.inpainting.precision)
    labs = []
    for p in pl:
        lab = window(ts.labels, p.item, p.origin, size, "constant")
        lab[masks[p.k] > 0] = 2
        labs.append(lab)
    return inp, (np.stack(labs) if labs else np.zeros((0, size, size), np.uint8))


def generator_faithfulness(P, segment, replicates: list[Replicate], banks: list[MaskBank], ts: TileSet,
                           seed: int) -> list[dict]:
    """Faithfulness of every replicate (:func:`histolib.metrics.faithfulness.faithfulness`): the real-trained
    segmenter's pooled SG Dice on the inpainted test crops against their generating masks, beside its SG Dice
    on the real sclerosed crops of the same test set (windows centred on them, scored on the whole window)."""
    from histolib.metrics.faithfulness import faithfulness, pooled_dice

    real = crops_of(ts, 2, P.data.crop_size)
    n = max(len(real), 8)
    out = []
    for rep, bank in zip(replicates, banks, strict=True):
        imgs, labs = generated_for_faithfulness(P, rep, ts, bank, seed + rep.g, n)
        if len(imgs) == 0 or len(real) == 0:
            out.append({"synthetic": math.nan, "real": math.nan, "ratio": math.nan, "n_generated": len(imgs),
                        "n_real": len(real), "g": rep.g, "images": imgs, "labels": labs})
            continue
        r = faithfulness(segment, imgs, labs, real.images, real.labels, score=lambda p, t: pooled_dice(p, t, cls=2))
        out.append({**r, "g": rep.g, "images": imgs, "labels": labs})
    return out


def faithfulness_gates(faith: list[dict] | None, gate: float) -> list[Precondition]:
    """One precondition per replicate: its faithfulness ratio is at least ``gate`` (all must pass)."""
    if not faith:
        return [Precondition("inpainting faithfulness measured", False, "no faithfulness result")]
    return [report.faithfulness_precondition(f, gate, name=f"inpainting generator g{f['g']}") for f in faith]


# --------------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------------

def _claim(key, section_, text, metric, comparison, numbers, direction=1, extension=False) -> Claim:
    return Claim(key=key, paper="003", section=section_, text=text, metric=metric, comparison=comparison,
                 direction=direction, paper_numbers=numbers, extension=extension)


def _one_sample(groups_, alpha):
    return report.two_level_contrast([groups_], [1.0], bounds=None, alpha=alpha) if groups_ else None


def _ev(test: dict | None, detail: str = "") -> report.Evidence | None:
    if test is None:
        return None
    return report.evidence_from_test(test, scale=100, unit="points", detail=detail)


def claims(rows: list[dict], roles: dict[str, str], fractions: list[str], models: list[str],
           faith: list[dict] | None, gate: float, alpha: float = 0.05) -> list[dict]:
    """The paper's claims assessed by :func:`histolib.report.assess` (one verdict rule).

    Mean Dice is over NG and SG. Comparisons on the same training data (augmentation, classes, test sets,
    models, fractions) are paired per (generator replicate, seed) and tested one-sample over the replicates
    (:func:`paired_groups`, :func:`histolib.report.two_level_contrast`); synthetic against real sets are
    unpaired (:func:`histolib.report.two_level_difference`). Claims resting on the synthetic glomeruli carry
    the faithfulness gate of every replicate. A claim whose runs are missing is left out.
    """
    by_role = {role: t for t, role in roles.items()}
    pas, he = by_role.get("in-domain"), by_role.get("stain-shifted")
    eff = "effb3_unet"
    gates = faithfulness_gates(faith, gate)
    out = []

    def add(claim, test, pre=(), detail=""):
        if test is None:
            return
        out.append(report.assess(claim, _ev(test, detail), list(pre), alpha))

    if pas:
        add(_claim("003-trad-aug", "Results, Table 3",
                   "Applying traditional data augmentation (random flips and rotations) to the training data improves "
                   "the overall glomerular segmentation (EfficientNetB3-Unet, mean Dice of normal and sclerosed "
                   "glomeruli).", "mean Dice (NG, SG), in-domain test", "with - without traditional augmentation",
                   "Test1: 0.7676 vs 0.7091 (+5.85 points)"),
            _one_sample(paired_groups(rows, [(eff, REAL, pas, "mean_dice", 1),
                                             (eff, REAL_NOAUG, pas, "mean_dice", -1)]), alpha))
        add(_claim("003-ng-above-sg", "Results, Table 3",
                   "The segmentation performance of normal glomeruli is much better than that of sclerosed glomeruli.",
                   "Dice, in-domain test, real tiles with augmentation", "NG Dice - SG Dice",
                   "Test1: 0.9134 vs 0.6218 (+29.2 points)"),
            _one_sample(paired_groups(rows, [(eff, REAL, pas, "NG_dice", 1), (eff, REAL, pas, "SG_dice", -1)]), alpha))
    if pas and he:
        add(_claim("003-he-below-pas", "Results, Table 3",
                   "Performance on the H&E-stained test set is lower than on the PAS test sets: the model trained on "
                   "PAS does not migrate well to another stain.", "mean Dice (NG, SG), real tiles with augmentation",
                   "stain-shifted test - in-domain test", "Test3 0.5746 vs Test1 0.7676 (-19.3 points)", direction=-1),
            _one_sample(paired_groups(rows, [(eff, REAL, he, "mean_dice", 1), (eff, REAL, pas, "mean_dice", -1)]),
                        alpha))
    for test, numbers in ((pas, "Test1: 0.7276 mean over +30/60/100 % vs 0.6218 (+10.6 points)"),
                          (he, "Test3: 0.4688 mean over +30/60/100 % vs 0.3439 (+12.5 points)")):
        if not test or not fractions:
            continue
        role = roles[test]
        syn = paired_groups(rows, [(eff, f, test, "SG_dice", 1 / len(fractions)) for f in fractions])
        real = groups(rows, eff, REAL, test, "SG_dice")
        if syn and real:
            d = report.two_level_difference(syn, real, alpha=alpha)
            add(_claim(f"003-synthetic-raises-sg-{'pas' if role == 'in-domain' else 'he'}", "Results, Table 4",
                       "Adding synthetic sclerosed glomeruli from the inpainting GAN to the training data greatly "
                       f"improves the segmentation of sclerosed glomeruli ({role} test set).",
                       f"SG Dice, {role} test", "mean over the synthetic sets - Real (with traditional augmentation)",
                       numbers), d, gates,
                f"synthetic {100 * d['a']['mean']:.2f} ({d['a']['n_generators']} generators) vs real "
                f"{100 * d['b']['mean']:.2f}")
    if pas and len(fractions) >= 3:
        f30, f60, f100 = fractions[0], fractions[len(fractions) // 2], fractions[-1]
        add(_claim("003-more-not-always-better", "Results, Table 4",
                   "The performance of adding more synthetic data is not always better than that of others: the gain "
                   "from more synthetic glomeruli diminishes.", "SG Dice, in-domain test",
                   f"({f100} - {f60}) - ({f60} - {f30})", "Test1: (0.7491 - 0.7328) - (0.7328 - 0.7010) = -1.55 "
                   "points; Test2 -2.84, Test3 -5.48", direction=-1),
            _one_sample(paired_groups(rows, [(eff, f100, pas, "SG_dice", 1), (eff, f60, pas, "SG_dice", -2),
                                             (eff, f30, pas, "SG_dice", 1)]), alpha), gates)
    top = fractions[-1] if fractions else None
    paper5 = {("unet", "in-domain"): "Test1: 0.8325 vs 0.7690 (+6.35 points)",
              ("unetpp", "in-domain"): "Test1: 0.8325 vs 0.7828 (+4.97 points)",
              ("unet", "stain-shifted"): "Test3: 0.6882 vs 0.5521 (+13.61 points)",
              ("unetpp", "stain-shifted"): "Test3: 0.6882 vs 0.5564 (+13.18 points)"}
    others = [m for m in ("unet", "unetpp") if m in models]
    for m in others:
        for test in (pas, he):
            if not test or not top:
                continue
            role = roles[test]
            add(_claim(f"003-effb3-beats-{m}-{'pas' if role == 'in-domain' else 'he'}", "Results, Table 5",
                       f"EfficientNetB3-Unet segments glomeruli better than {MODEL_NAMES[m]} ({role} test set; all "
                       "trained with +100 % synthetic data).", f"mean Dice (NG, SG), {role} test",
                       f"EfficientNetB3-Unet - {MODEL_NAMES[m]}", paper5[(m, role)]),
                _one_sample(paired_groups(rows, [(eff, top, test, "mean_dice", 1), (m, top, test, "mean_dice", -1)]),
                            alpha))
    if pas and he and others and top:
        w = 1 / len(others)
        terms = [(eff, top, he, "mean_dice", 1), (eff, top, pas, "mean_dice", -1)]
        terms += [(m, top, he, "mean_dice", -w) for m in others] + [(m, top, pas, "mean_dice", w) for m in others]
        add(_claim("003-effb3-advantage-larger-on-he", "Results, Table 5",
                   "On the H&E test set EfficientNetB3-Unet has a greater advantage over the other models than on "
                   "the PAS test sets (better generalisation and migration ability).", "mean Dice (NG, SG)",
                   "(EffB3 - mean of U-Net, U-Net++) on the stain-shifted test - the same on the in-domain test",
                   "Test3 +13.40 vs Test1 +5.66 points (+7.74)"),
            _one_sample(paired_groups(rows, terms), alpha))
    return out


def conditions(P, data: StudyData, n_crops: int, seeds: list[int]) -> report.Conditions:
    """What Tables 2-5 and the claims were measured under."""
    c = P.inpainting
    gan_steps_ = gan_steps(c.epochs, n_crops, c.batch_size)
    return report.Conditions(
        profile=P.profile, resolution=data.scale, data_source=data.source, seeds=seeds,
        generator_replicates=P.protocol.n_gan_seeds,
        extra={"training set": f"{len(data.train)} items, {data.train.count(1)} NG and {data.train.count(2)} SG",
               "test sets": ", ".join(f"{k} ({len(v)} items, {v.count(1)} NG, {v.count(2)} SG)"
                                      for k, v in data.tests.items()),
               "inpainting GAN": f"{P.data.crop_size}-px crops, ngf {c.ngf}, ndf {c.ndf}, {c.n_blocks} AOT blocks, "
                                 f"{gan_steps_} steps ({c.epochs:g} epochs of {n_crops} crops), batch {c.batch_size}, "
                                 f"{c.precision}",
               "segmenters": f"{c.seg_steps} steps x {c.seg_batch} windows of {c.seg_crop or 'whole'} px, decoder "
                             f"{list(c.decoder_channels)}, U-Net width {c.unet_width}, U-Net++ {c.unetpp_encoder}, "
                             f"encoder weights: {c.encoder_weights or 'none (random init)'}, {c.seg_precision}",
               "faithfulness gate": f"{P.protocol.faithfulness_gate:g} x the real segmenter's SG Dice, every replicate",
               "alpha": P.protocol.alpha})


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------

def _rgb_mask(m):
    return np.repeat((np.asarray(m) > 0)[..., None] * 255, 3, 2).astype(np.uint8)


def crops_figure(crops: CropSet, n: int):
    """Fig. 4 of the paper: sclerosed-centred crops (top) and the crops with their masks (bottom)."""
    from histolib import viz

    k = min(n, len(crops))
    return viz.image_grid([list(crops.images[:k]), [viz.overlay(i, m) for i, m in zip(crops.images[:k],
                                                                                      crops.masks[:k], strict=True)]],
                          row_labels=["crop", "with mask"], title="Fig. 4: sclerosed-centred crops and their masks")


def inpainting_grid(crops: CropSet, quality: list[dict], n: int):
    """Held-out sclerosed crops: original (context), mask, gap input, and each replicate's inpainting."""
    from histolib import viz

    k = min(n, len(crops))
    if k == 0:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no held-out sclerosed crop in the test tiles", ha="center", va="center")
        return fig
    gap = [np.where(m[..., None] > 0, 128, im).astype(np.uint8) for im, m in zip(crops.images[:k], crops.masks[:k],
                                                                                 strict=True)]
    rows = [list(crops.images[:k]), [_rgb_mask(m) for m in crops.masks[:k]], gap]
    names = ["original", "mask", "input (gap)"]
    for q in quality:
        rows.append(list(q["outputs"][:k]))
        names.append(f"inpainted g{q['g']}")
    return viz.image_grid(rows, row_labels=names, title="Inpainted sclerosed glomeruli on held-out crops")


def masks_figure(bank: MaskBank, n: int):
    """The mask pipeline: DCGAN output, cleaned, scaled; and the size histograms."""
    import matplotlib.pyplot as plt

    k = min(n, len(bank.scaled))
    fig, axes = plt.subplots(4, max(k, 2), figsize=(1.5 * max(k, 2), 6.4), squeeze=False)
    for r, (name, arr) in enumerate((("DCGAN", bank.raw), ("cleaned", bank.clean), ("scaled", bank.scaled))):
        for j in range(max(k, 2)):
            ax = axes[r][j]
            ax.axis("off")
            if j < k:
                ax.imshow(arr[j], cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_title(name, fontsize=8, loc="left")
    for ax in axes[3]:
        ax.remove()
    ax = fig.add_subplot(4, 1, 4)
    bins = np.linspace(min(bank.real_sizes.min(), bank.clean_sizes.min(initial=np.inf)),
                       max(bank.real_sizes.max(), bank.clean_sizes.max(initial=0)), 12)
    for name, v in (("real", bank.real_sizes), ("cleaned", bank.clean_sizes), ("scaled", bank.scaled_sizes)):
        ax.hist(v, bins=bins, histtype="step", density=True, label=name)
    ax.set_xlabel("equivalent diameter (px)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def synthesis_figure(syn: SyntheticSets, n: int):
    """Fig. 9 of the paper: (a) masks, (b) original windows, (c) synthetic windows."""
    from histolib import viz

    k = min(n, len(syn.inpainted))
    if syn.placements:
        masks = [syn.masks[p.k] for p in syn.placements[:k]]
    else:
        masks = list(syn.masks[:k])
    rows = [[_rgb_mask(m) for m in masks], list(syn.originals[:k]), list(syn.inpainted[:k])]
    return viz.image_grid(rows, row_labels=["(a) mask", "(b) original", "(c) synthetic"],
                          title="Fig. 9: synthetic sclerosed glomeruli")


def segmentation_figure(images: dict[str, np.ndarray], truth: dict[str, np.ndarray], preds: dict[str, np.ndarray]):
    """Fig. 10 of the paper: per test set, tiles, ground truth and prediction (blue NG, red SG)."""
    from histolib import viz

    colours = np.array([[255, 255, 255], [0, 90, 255], [230, 0, 0]], np.uint8)

    def paint(img, lab):
        out = img.astype(np.float32)
        for c in (1, 2):
            m = lab == c
            out[m] = 0.55 * out[m] + 0.45 * colours[c]
        return out.astype(np.uint8)

    rows, names = [], []
    for t in images:
        rows += [[paint(i, lab) for i, lab in zip(images[t], truth[t], strict=True)],
                 [paint(i, lab) for i, lab in zip(images[t], preds[t], strict=True)]]
        names += [f"{t}: truth", f"{t}: model"]
    return viz.image_grid(rows, row_labels=names, title="Fig. 10: segmentation (blue: normal, red: sclerosed)")


LOSS_KEYS = ("loss_D_global", "loss_D_local", "loss_G_adv_global", "loss_G_adv_local", "loss_G_l1_global",
             "loss_G_l1_local", "loss_G_perceptual", "loss_G_style")


def curves_rows(replicates: list[Replicate]) -> list[dict]:
    """Long-format GAN curves of every replicate (inpainting and mask DCGAN)."""
    out = []
    for rep in replicates:
        out += [{"model": "inpainting", "replicate": rep.g, "step": r["step"], **{k: r[k] for k in LOSS_KEYS if k in r}}
                for r in rep.inpainter.log]
        out += [{"model": "mask DCGAN", "replicate": rep.g, "step": r["step"], "loss_D": r.get("loss_D"),
                 "loss_G": r.get("loss_G")} for r in rep.mask_log]
    return out


def curves_figure(rows: list[dict]):
    """The loss curves of every replicate (smoothed)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(rows)
    keys = [k for k in (*LOSS_KEYS, "loss_D", "loss_G") if k in df]
    ncol = 4
    nrow = max(1, math.ceil(len(keys) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol, 2.4 * nrow), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for (model, rep), g in df.dropna(subset=[key]).groupby(["model", "replicate"]):
            y = g[key].rolling(max(1, len(g) // 30), min_periods=1).mean()
            ax.plot(g["step"], y, lw=1, label=f"{model} g{rep}")
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def save_png(image: np.ndarray, path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)
    return path


def metrics_summary(rows, quality, faith, claims_rows, replicates, cond, roles, fractions) -> dict:
    """What ``results/04/metrics.json`` holds."""
    def summ(model, set_, test, key):
        s = _summary(rows, model, set_, test, key)
        return None if s is None else {k: s[k] for k in ("mean", "ci_low", "ci_high", "n_generators", "n_seeds")}

    t3 = {t: {s: {f"{c}_{k}": summ("effb3_unet", s, t, f"{c}_{k}") for c in ("NG", "SG", "mean") for k in _M}
              for s in (REAL, REAL_NOAUG)} for t in roles}
    t4 = {t: {f: {f"SG_{k}": summ("effb3_unet", f, t, f"SG_{k}") for k in _M} for f in fractions} for t in roles}
    models = sorted({r["model"] for r in rows})
    t5 = {t: {m: {f"mean_{k}": summ(m, fractions[-1], t, f"mean_{k}") for k in _M} for m in models}
          for t in roles} if fractions else {}
    return {"table2": [{k: v for k, v in q.items() if k != "outputs"} for q in quality], "table3": t3, "table4": t4,
            "table5": t5, "faithfulness": [{k: v for k, v in f.items() if k not in ("images", "labels")}
                                           for f in (faith or [])],
            "generators": [{"g": r.g, "seed": r.seed, "inpainting_seconds": r.inpainter.seconds,
                            "mask_seconds": r.mask_seconds, "backbone": r.inpainter.backbone,
                            "steps": r.inpainter.log[-1]["step"] if r.inpainter.log else 0} for r in replicates],
            "claims": claims_rows, "table_conditions": cond.to_dict(), "decisions": list(DECISIONS),
            "packages": _versions(("segmentation-models-pytorch", "timm"))}


def _versions(names) -> dict:
    import importlib.metadata

    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = None
    return out


def save_curves(rows: list[dict], path) -> Path:
    """Replicate 0's inpainting-GAN losses per logged step as CSV (the DVC plot of stage ``nb04_inpainting``)."""
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r["model"] == "inpainting" and r["replicate"] == 0])
    df = df.drop(columns=[c for c in ("model", "replicate") if c in df])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def set_threads(P) -> int:
    """Apply ``inpainting.threads`` (0 keeps torch's choice); returns the thread count in use."""
    if P.inpainting.threads:
        torch.set_num_threads(P.inpainting.threads)
    return torch.get_num_threads()
