"""Notebook 03: Histopathology DatasetGAN (Rizvi et al., seed 002) on StyleGAN2-ADA, with memory-mapped features.

Everything notebook 03 does beyond a call and a plot lives here, with tests in ``tests/studies/test_datasetgan.py``.

Pipeline (paper section II):

1. **Unlabelled tiles** (:func:`gan_images`): phantom kidney tiles rendered directly at the GAN's resolution
   (``histolib.data.phantom.render_tile``: whitespace, tubulointerstitium, glomeruli, arterioles, arteries), one
   seed per item from this study's own stream (``SeedSequence([seed, 5, split, i])``, disjoint from the data
   builder's and notebook 04's), so no stage before this one changes; or, with ``datasetgan.source`` a folder,
   its ``images/`` (labels unused for the GAN).
2. **StyleGAN2-ADA replicates** (``histolib.train.stylegan2``; stage ``nb03_train``): ``protocol.n_gan_seeds``
   generators, seeds ``replicate_seeds(seed, n)``, folders ``models/<profile>/03/gan/g<k>``.
3. **Generation and selection**: each replicate generates ``n_generate`` images at truncation
   ``truncation_psi`` (paper: 500 at 0.7) and keeps their latents; ``n_annotated`` of them (paper: 36 chosen by
   a nephropathologist, split 16 / 4 / 16) are drawn at random here (:func:`select_annotated`).
4. **Annotation**: by the recorded *stand-in annotator* (a 5-class U-Net trained on labelled phantom tiles,
   ``histolib.train.segmentation``; its accuracy on held-out labelled tiles is reported), or by a person:
   :func:`export_for_annotation` writes the selected images as PNGs with their latents, and
   :func:`import_annotations` reads hand-drawn class-index masks back (``datasetgan.annotations``).
5. **Features** (``histolib.ops.pixel_features``): the last ``feature_blocks`` synthesis blocks' outputs,
   bilinearly upsampled to the image size and concatenated, written to an ``(N*H*W, d)`` float16 memory map.
6. **Pixel classifier** (``histolib.models.pixel_classifier``, ``histolib.train.pixel_classifier``): the paper's
   3-layer MLP, SGD at lr 1e-4, or the reference's Adam ensemble with JS-uncertainty filtering.
7. **Results**: Table 1 (per-class pixel accuracy and mean Dice on the test images), Fig. 2, the classifier's
   faithfulness to the annotator, claims; beyond the paper: a labelled generated set trains a U-Net, tested on
   labelled phantom tiles the GAN never saw, against the 16 annotated images alone and as many real tiles.

Decisions where the paper is silent are listed in :data:`DECISIONS`.
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
from histolib.repro import replicate_seeds
from histolib.train.stylegan2 import StyleGAN2Options

# the GAN's options are the ``stylegan2`` section (declared once, where the trainer lives); registering it here too
# keeps notebook 03's sections together (a repeated registration of the same class is a no-op)
section("stylegan2")(StyleGAN2Options)

PAPER = "002"
STREAM = 5  # this study's item-seed stream (builder datasets 1-3, notebook 04's extra tiles 4)
SPLITS = {"gan": 0, "train": 1, "val": 2, "test": 3}
CLASS_NAMES = ("Whitespace", "Cortical Tubulointerstitium", "Glomerulus", "Arteriole", "Artery")
N_CLASSES = len(CLASS_NAMES)
# Table 1 of the paper: class pixel-wise accuracy (%) on its 16 test images; mean Dice 0.92 (Sec. III)
PAPER_TABLE1 = dict(zip(CLASS_NAMES, (68.42, 66.57, 82.89, 52.09, 77.82), strict=True))
PAPER_MEAN_DICE = 0.92
PAPER_CONDITIONS = ("32,732 4096x4096-px tiles from 1,577 WSIs of 100 kidney biopsies (TMA and mimickers; HE, PAS, "
                    "Jones, trichrome) train one StyleGAN2-ADA; 500 images generated at truncation 0.7, 36 selected "
                    "and annotated by a nephropathologist (16 train / 4 validation / 16 test); features of the last "
                    "5 synthesis blocks; 3-layer MLP, SGD lr 1e-4; one generator, one classifier")

DECISIONS = (
    "The 36 annotated images are drawn at random from the generated pool (the paper's expert chose them).",
    "Annotations come from a stand-in annotator: a 5-class U-Net trained on labelled phantom tiles (every table "
    "says so); datasetgan.annotations points at hand-drawn masks instead.",
    "Dropout p = datasetgan.clf_dropout after each hidden block (the paper gives none); hidden widths 128, 32 and "
    "batch 64 from the DatasetGAN reference; early stopping on the 4 validation images' mean class accuracy.",
    "Optimiser at the cpu profile: the reference's Adam (lr 1e-3) instead of the paper's SGD at lr 1e-4, which "
    "needs many more epochs than the cpu budget allows (measured on 16 annotated 64-px images: validation mean "
    "class accuracy 0.24 -> 0.64 over 6 SGD epochs, 0.69 after one Adam epoch); the paper profile keeps SGD 1e-4.",
    "Per-class pixel accuracy = TP / (TP + FN) of each class, pooled over the 16 test images; mean Dice = the mean "
    "over classes present in the annotations or the prediction of the pooled per-class Dice.",
    "Beyond the paper: every training set is repeated to the same number of images per epoch, so the 16 annotated "
    "images get as many optimisation steps as the generated set; the U-Net's checkpoint is chosen on labelled "
    "phantom validation tiles by the study harness's rule (class-1 Dice, tubulointerstitium).",
)


@section("datasetgan")
class DatasetGANParams:
    """Notebook 03: Histopathology DatasetGAN (Rizvi et al.); the GAN's own options are the ``stylegan2`` section."""

    source: str = knob("phantom, or a folder with images/ (the GAN's tiles) and masks/ (5-class index masks: 0 "
                       "whitespace, 1 tubulointerstitium, 2 glomerulus, 3 arteriole, 4 artery) for the annotator")
    real_split: list[float] = knob("real folder: fractions of labelled images for the annotator's train / val / "
                                   "test (split by slide)", min=0.0, length=3)
    glomerulus_size: float = knob("phantom: mean glomerulus diameter as a fraction of the tile side (one glomerulus "
                                  "per tile at 0.5; arterioles are 0.18-0.32 and arteries 0.6-1.2 of it)",
                                  min=0.05, max=2.0)
    nucleus_size: float = knob("phantom: mean nucleus diameter as a fraction of the tile side", min=0.005, max=0.5)
    n_gan_tiles: int = knob("unlabelled phantom tiles the GAN trains on (paper: 32,732 real tiles)", min=1)
    n_labelled: list[int] = knob("labelled phantom tiles [train, val, test]: the annotator's data; test is also "
                                 "the held-out set of the beyond-the-paper segmentation", min=1, length=3)
    annot_width: int = knob("stand-in annotator U-Net width", min=1)
    annot_depth: int = knob("stand-in annotator U-Net levels", min=2, max=6)
    annot_epochs: int = knob("stand-in annotator U-Net epochs", min=1)
    annot_batch: int = knob("stand-in annotator U-Net batch size", min=1)
    annot_lr: float = knob("stand-in annotator Adam learning rate", min=0.0, max=1.0)
    n_generate: int = knob("images generated per replicate, latents saved (paper: 500)", min=1)
    truncation_psi: float = knob("truncation of the generated images (paper: 0.7)", min=0.0, max=1.0)
    n_annotated: list[int] = knob("annotated images [train, val, test] (paper: 16, 4, 16)", min=1, length=3)
    annotations: str = knob("'' = the stand-in annotator labels the selected images; else a folder with "
                            "g<k>/<name>.png hand-drawn class-index masks (names as exported)")
    feature_blocks: int = knob("last synthesis blocks whose outputs are the pixel features (paper: 5)", min=1)
    feature_chunk: int = knob("generated images per feature-extraction chunk (what is held in RAM)", min=1)
    clf_optimizer: str = knob("pixel classifier optimiser: sgd (paper) or adam (reference)", choices=("sgd", "adam"))
    clf_lr: float = knob("pixel classifier learning rate (paper: SGD 1e-4; reference: Adam 1e-3)", min=0.0, max=1.0)
    clf_momentum: float = knob("SGD momentum (paper: vanilla SGD, 0)", min=0.0, max=0.999)
    clf_epochs: int = knob("maximum epochs over the annotated pixels (reference: 100)", min=1)
    clf_batch: int = knob("pixels per classifier step (reference: 64)", min=2)
    clf_patience: int = knob("epochs without a better validation score before stopping (0: never)", min=0)
    clf_hidden: list[int] = knob("the MLP's two hidden widths (reference: 128, 32)", min=1, length=2)
    clf_dropout: float = knob("dropout after each hidden block (the paper gives none)", min=0.0, max=0.9)
    clf_ensemble: int = knob("classifiers per ensemble (paper: 1; reference: 10, with uncertainty filtering)", min=1)
    clf_seeds: int = knob("classifier (ensemble) seeds per generator replicate: the inner level of Table 1", min=1)
    uncertainty_drop: float = knob("share of generated images dropped as most uncertain (JS divergence, ensemble "
                                   "> 1 only; reference: 0.1)", min=0.0, max=0.9)
    n_synthetic: int = knob("generated images labelled by the classifier for the beyond-the-paper U-Net", min=1)
    seg_width: int = knob("beyond-the-paper U-Net width", min=1)
    seg_depth: int = knob("beyond-the-paper U-Net levels", min=2, max=6)
    seg_epochs: int = knob("beyond-the-paper U-Net epochs (each set repeated to n_synthetic images)", min=1)
    seg_batch: int = knob("beyond-the-paper U-Net batch size", min=1)
    seg_lr: float = knob("beyond-the-paper U-Net Adam learning rate", min=0.0, max=1.0)
    seg_seeds: int = knob("beyond-the-paper U-Net seeds per training set (crossed with the replicates)", min=1)
    threads: int = knob("torch threads (0: torch's choice)", min=0)
    n_grid: int = knob("images in the figures and sample grids", min=1, max=64)


def set_threads(P) -> int:
    """Apply ``datasetgan.threads`` (0 keeps torch's choice); returns the thread count in use."""
    if P.datasetgan.threads:
        torch.set_num_threads(P.datasetgan.threads)
    return torch.get_num_threads()


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------

@dataclass
class LabelledSet:
    """Tiles with 5-compartment class maps (``masks``: 0 whitespace .. 4 artery), the layout of the U-Net harness."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def take(self, idx) -> LabelledSet:
        idx = np.asarray(idx, dtype=np.int64)
        return LabelledSet(self.images[idx], self.masks[idx], [self.names[i] for i in idx])

    def repeated(self, n: int) -> LabelledSet:
        """The set cycled to ``n`` items (``n >= len``: every item at least once), for equal steps per epoch."""
        if len(self) == 0:
            raise DataError("cannot repeat an empty set")
        return self.take(np.arange(max(n, len(self))) % len(self))


def tile_seed(seed: int, split: str, index: int) -> int:
    """The 32-bit seed of phantom item ``index`` of ``split`` (``gan``, ``train``, ``val``, ``test``) of this study."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, STREAM, SPLITS[split], int(index)]).generate_state(1)[0])


def resolution(P) -> int:
    """The GAN's image side: ``stylegan2.resolution``."""
    return int(P.stylegan2.resolution)


def render_tiles(P, split: str, n: int, progress: bool = False) -> LabelledSet:
    """``n`` phantom tiles of ``split`` at the GAN's resolution, with their compartment maps.

    Rendered directly at the resolution ``R`` (``render_tile`` anti-aliases every edge analytically), with
    glomeruli of ``glomerulus_size * R`` px and nuclei of ``nucleus_size * R`` px, ``data.stain`` and
    ``data.sclerosed_fraction``; deterministic per item (:func:`tile_seed`).
    """
    from tqdm.auto import tqdm

    from histolib.data import phantom
    from histolib.data.builder import phantom_calibration_of

    c, size = P.datasetgan, resolution(P)
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    cal = phantom_calibration_of(P)  # data.calibration: None renders the default phantom
    for i in tqdm(range(n), desc=f"phantom tiles ({split})", disable=not progress, leave=False):
        t = phantom.render_tile(tile_seed(P.seed, split, i), size=(size, size), stain=P.data.stain,
                                glomerulus_diameter=c.glomerulus_size * size,
                                nucleus_diameter=max(1.0, c.nucleus_size * size),
                                sclerosed_fraction=P.data.sclerosed_fraction, calibration=cal)
        images[i], masks[i] = t.image, t.compartments
    return LabelledSet(images, masks, [f"{split}_{i:05d}" for i in range(n)])


def _fit(image: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    from PIL import Image

    from histolib.data.builder import centre_square

    image = centre_square(np.asarray(image))
    if image.shape[0] == size:
        return np.ascontiguousarray(image)
    resample = Image.NEAREST if nearest else Image.BOX if image.shape[0] > size else Image.BILINEAR
    return np.asarray(Image.fromarray(image).resize((size, size), resample))


def _source(P, root: Path | None) -> Path:
    from histolib.paths import project_root

    return (Path(root or project_root()) / P.datasetgan.source).resolve()


def gan_images(P, root: Path | None = None, progress: bool = False) -> np.ndarray:
    """The GAN's unlabelled training tiles, ``(N, R, R, 3)`` uint8 at ``R = stylegan2.resolution``.

    Phantom: :func:`render_tiles` of split ``gan`` (``n_gan_tiles``). Real folder: every readable image of
    ``<source>/images`` (centre-cropped to a square, resized to ``R``); unreadable files are skipped with a
    warning naming them.

    Raises:
        DataError: the folder has no ``images/`` or no readable image.
    """
    if P.datasetgan.source == "phantom":
        return render_tiles(P, "gan", P.datasetgan.n_gan_tiles, progress).images
    import warnings

    from histolib.data.folder import IMAGE_SUFFIXES, read_rgb

    folder = _source(P, root) / "images"
    if not folder.is_dir():
        raise DataError(f"{folder}: datasetgan.source needs an images/ folder")
    out, bad = [], []
    for p in sorted(q for q in folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES):
        try:
            out.append(_fit(read_rgb(p), resolution(P), nearest=False))
        except DataError as e:
            bad.append(f"{p.name} ({e})")
    if bad:
        warnings.warn(f"{folder}: {len(bad)} unreadable image(s) skipped: {'; '.join(bad[:5])}", stacklevel=2)
    if not out:
        raise DataError(f"{folder}: no readable image for the GAN")
    return np.stack(out)


def gan_image_count(P, root: Path | None = None) -> int:
    """How many tiles :func:`gan_images` returns (without rendering or reading them; real: image files listed)."""
    if P.datasetgan.source == "phantom":
        return int(P.datasetgan.n_gan_tiles)
    from histolib.data.folder import IMAGE_SUFFIXES

    folder = _source(P, root) / "images"
    return sum(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()) if folder.is_dir() else 0


def labelled_sets(P, root: Path | None = None, progress: bool = False) -> dict[str, LabelledSet]:
    """The labelled tiles ``{"train", "val", "test"}``: the annotator's data and the held-out test set.

    Phantom: :func:`render_tiles` of the three splits (``n_labelled``), never the GAN's split. Real folder: the
    pairs of ``images/`` + ``masks/`` (5-class masks, bad files skipped), split by slide with ``real_split``.

    Raises:
        DataError: no usable labelled pair, or a split left empty.
    """
    c = P.datasetgan
    if c.source == "phantom":
        return {s: render_tiles(P, s, n, progress) for s, n in zip(("train", "val", "test"), c.n_labelled,
                                                                      strict=True)}
    from histolib.data.builder import _slide_of, split_by_group
    from histolib.data.folder import load_pairs

    folder = _source(P, root)
    pairs = load_pairs(folder, "classes", n_classes=N_CLASSES, strict=False)
    size = resolution(P)
    images = np.stack([_fit(im, size, False) for im in pairs.images])
    masks = np.stack([_fit(m, size, True) for m in pairs.masks])
    parts = split_by_group([_slide_of(n, pairs) for n in pairs.names], list(c.real_split), P.seed)
    out = {}
    for split, idx in zip(("train", "val", "test"), parts, strict=True):
        if not idx:
            raise DataError(f"{folder}: datasetgan.real_split {c.real_split} leaves the {split!r} split empty")
        out[split] = LabelledSet(images[idx], masks[idx], [pairs.names[i] for i in idx])
    return out


def class_frequencies(masks) -> dict[str, float]:
    """Share of pixels of each compartment in ``(N, H, W)`` class maps."""
    counts = np.bincount(np.asarray(masks).ravel(), minlength=N_CLASSES)[:N_CLASSES].astype(float)
    return dict(zip(CLASS_NAMES, counts / max(counts.sum(), 1.0), strict=True))


def data_table(P, n_gan: int, sets: dict[str, LabelledSet]) -> list[dict]:
    """One row per data split: role, count, compartment shares."""
    rows = [{"split": "gan (unlabelled)", "tiles": n_gan, "role": "trains the StyleGAN2-ADA replicates"}]
    roles = {"train": "trains the stand-in annotator; first tiles: the real baseline of the extension",
             "val": "chooses the annotator's and the extension U-Nets' epoch",
             "test": "scores the annotator and the extension U-Nets (never seen by the GAN)"}
    for s, ls in sets.items():
        rows.append({"split": s, "tiles": len(ls), "role": roles[s],
                     **{k: round(v, 4) for k, v in class_frequencies(ls.masks).items()}})
    return rows


# --------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------

def compartment_scores(pred, target) -> dict:
    """Table 1's numbers for one prediction of a set of images.

    For each class ``c``, pooled over every pixel: ``accuracy_c = TP_c / (TP_c + FN_c)`` (NaN when the class is
    absent from ``target``), ``dice_c = 2 TP_c / (2 TP_c + FP_c + FN_c)`` (NaN when absent from both);
    ``mean_dice`` is the mean of the defined ``dice_c``, ``pixel_accuracy`` the share of correct pixels.

    Args:
        pred, target: ``(N, H, W)`` class maps (values in ``0..4``), same shape.

    Returns:
        ``{"accuracy": {class name: value}, "dice": {...}, "mean_dice", "mean_accuracy", "pixel_accuracy"}``.
    """
    from histolib.metrics.segmentation import confusion

    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ParamError(f"pred {pred.shape} and target {target.shape} differ")
    acc, dice = {}, {}
    for c, name in enumerate(CLASS_NAMES):
        tp, fp, fn = confusion(pred, target, c)
        acc[name] = tp / (tp + fn) if tp + fn else math.nan
        dice[name] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    d = [v for v in dice.values() if math.isfinite(v)]
    a = [v for v in acc.values() if math.isfinite(v)]
    return {"accuracy": acc, "dice": dice, "mean_dice": float(np.mean(d)) if d else math.nan,
            "mean_accuracy": float(np.mean(a)) if a else math.nan,
            "pixel_accuracy": float((pred == target).mean()) if pred.size else math.nan}


def mean_dice(pred, target) -> float:
    """:func:`compartment_scores`' ``mean_dice`` (the score of the faithfulness check)."""
    return compartment_scores(pred, target)["mean_dice"]


# --------------------------------------------------------------------------------------------------
# The stand-in annotator
# --------------------------------------------------------------------------------------------------

def annotator_cfg(P) -> dict:
    """The U-Net harness options of the stand-in annotator (``histolib.train.segmentation.TRAIN_KEYS``)."""
    c = P.datasetgan
    return {"width": c.annot_width, "depth": c.annot_depth, "epochs": c.annot_epochs, "batch_size": c.annot_batch,
            "lr": c.annot_lr, "augment_p": 0.5, "loss": "ce_dice"}


def train_annotator(P, sets: dict[str, LabelledSet], out_dir, progress: bool = False):
    """Train (or load) the stand-in annotator: a 5-class U-Net on the labelled ``train`` tiles.

    Returns:
        ``histolib.train.segmentation.TrainResult`` (``.model`` segments ``(N, H, W, 3)`` uint8 tiles).
    """
    from histolib.train.segmentation import train_unet

    return train_unet(sets["train"], sets["val"], annotator_cfg(P), P.seed, out_dir, n_classes=N_CLASSES,
                      progress=progress)


def segment(model, images) -> np.ndarray:
    """Class maps ``(N, H, W)`` uint8 of a U-Net for ``(N, H, W, 3)`` uint8 images."""
    from histolib.train.segmentation import predict

    images = np.asarray(images)
    if not len(images):
        return np.zeros(images.shape[:3], np.uint8)
    return np.asarray(predict(model, images))


def trivial_scores(target) -> dict:
    """Scores of predicting the majority class everywhere (the floor any segmenter must beat)."""
    target = np.asarray(target)
    major = int(np.bincount(target.ravel(), minlength=N_CLASSES).argmax())
    return compartment_scores(np.full_like(target, major), target)


# --------------------------------------------------------------------------------------------------
# Generator replicates
# --------------------------------------------------------------------------------------------------

def generator_seeds(P) -> list[int]:
    """Seeds of the ``protocol.n_gan_seeds`` StyleGAN2 replicates (replicate 0 = the study seed)."""
    return replicate_seeds(P.seed, P.protocol.n_gan_seeds)


def replicate_folder(folder, g: int) -> Path:
    return Path(folder) / f"g{int(g)}"


def stylegan2_options(P):
    """``P.stylegan2`` (the ``stylegan2`` params section is :class:`StyleGAN2Options` itself)."""
    return P.stylegan2


def network_table(P) -> list[dict]:
    """The generator at this profile: resolution, blocks (side: channels), parameters, and the features used."""
    from histolib.train.stylegan2 import build_generator

    G = build_generator(stylegan2_options(P))
    blocks = list(zip(G.block_resolutions, G.block_channels, strict=True))
    used = blocks[-P.datasetgan.feature_blocks:]
    return [{"network": "StyleGAN2 generator (G_ema)", "resolution": G.resolution, "z_dim": G.z_dim,
             "blocks (side: channels)": ", ".join(f"{r}: {c}" for r, c in blocks),
             "parameters": sum(p.numel() for p in G.parameters()),
             "feature blocks (side: channels)": ", ".join(f"{r}: {c}" for r, c in used),
             "feature dimension d": sum(c for _, c in used)}]


@dataclass
class Replicate:
    """One trained generator: replicate index, seed, folder, the EMA generator and its training summary."""

    g: int
    seed: int
    folder: Path
    G: torch.nn.Module
    summary: dict = field(default_factory=dict)


def train_replicates(P, images, folder, progress: bool = True) -> list[Replicate]:
    """Train (or resume, or load) every StyleGAN2-ADA replicate on ``images`` into ``folder/g<k>``.

    A finished run with the same options and data (``histolib.train.stylegan2.run_args``: the options and the
    fingerprint of ``images``) is loaded read-only, so notebook 03 calls this too: it gets stage ``nb03_train``'s
    generators, and never a generator trained with other settings.
    """
    from histolib.train.stylegan2 import train_stylegan2

    out = []
    for g, seed in enumerate(generator_seeds(P)):
        d = replicate_folder(folder, g)
        run = train_stylegan2(np.asarray(images), d, stylegan2_options(P), seed, progress=progress)
        out.append(Replicate(g, seed, d, run.G.eval(), {"seconds": run.seconds, "steps": len(run.log)}))
    return out


def generator_digest(G) -> str:
    """Fingerprint of a generator's weights and buffers (names the features computed from it)."""
    from histolib.train.checkpoint import fingerprint

    return fingerprint(*[v.detach().cpu().numpy() for _, v in sorted(G.state_dict().items())])


# --------------------------------------------------------------------------------------------------
# Generation, selection, annotation
# --------------------------------------------------------------------------------------------------

def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` in ``[-1, 1]`` -> ``(N, H, W, 3)`` uint8 (``round((x + 1) * 127.5)`` clipped)."""
    x = ((img.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def latents(G, n: int, seed: int) -> np.ndarray:
    """``(n, z_dim)`` float32 standard-normal latents for seed ``seed`` (the saved latent vectors)."""
    z_dim = int(G.z_dim)
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, z_dim, generator=g).numpy()


@torch.no_grad()
def synthesize(G, z: np.ndarray, psi: float, chunk: int = 16, features: int = 0):
    """Images (and optionally block features) for latents ``z`` at truncation ``psi``, ``noise_mode="const"``.

    Args:
        features: 0 -> returns ``(N, H, W, 3)`` uint8; k > 0 -> ``(images, feats)`` where ``feats`` is the list
            of the last ``k`` synthesis blocks' outputs (only for one chunk: keep ``len(z)`` small).
    """
    out, feats = [], None
    z = torch.as_tensor(np.asarray(z, np.float32))
    for i in range(0, len(z), chunk):
        ws = G.mapping(z[i:i + chunk], truncation_psi=psi)
        if features:
            img, f = G.synthesis(ws, noise_mode="const", return_features=True)
            feats = list(f)[-features:]
        else:
            img = G.synthesis(ws, noise_mode="const")
        out.append(to_uint8(img))
    images = np.concatenate(out) if out else np.zeros((0, 1, 1, 3), np.uint8)
    return (images, feats) if features else images


def feature_fn(G, z: np.ndarray, psi: float, blocks: int):
    """``fn(start, stop)`` -> the last ``blocks`` synthesis block outputs of latents ``z[start:stop]``."""
    n_blocks = None

    def fn(start: int, stop: int):
        nonlocal n_blocks
        zz = torch.as_tensor(np.asarray(z[start:stop], np.float32))
        ws = G.mapping(zz, truncation_psi=psi)
        _, f = G.synthesis(ws, noise_mode="const", return_features=True)
        f = list(f)
        if blocks > len(f):
            raise ParamError(f"datasetgan.feature_blocks = {blocks} but the generator has {len(f)} synthesis blocks")
        n_blocks = len(f)
        return f[-blocks:]

    return fn


def feature_channels(G, z_one: np.ndarray, psi: float, blocks: int) -> list[tuple[int, int]]:
    """``[(channels, side)]`` of the blocks used as features (one latent's forward pass)."""
    f = feature_fn(G, z_one[:1], psi, blocks)(0, 1)
    return [(int(t.shape[1]), int(t.shape[-1])) for t in f]


def select_annotated(n_generate: int, counts, seed: int) -> dict[str, np.ndarray]:
    """Draw the images to annotate: disjoint random indices into the generated pool, per split.

    Args:
        n_generate: pool size (paper: 500).
        counts: ``[train, val, test]`` (paper: 16, 4, 16).
        seed: the draw's seed.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}`` (each sorted).

    Raises:
        ParamError: more images asked for than generated.
    """
    counts = [int(c) for c in counts]
    if sum(counts) > n_generate:
        raise ParamError(f"datasetgan.n_annotated {counts} asks for {sum(counts)} images but only "
                         f"{n_generate} are generated (datasetgan.n_generate)")
    perm = np.random.default_rng([int(seed), STREAM, 7]).permutation(n_generate)
    out, at = {}, 0
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        out[split] = np.sort(perm[at:at + n])
        at += n
    return out


def annotation_names(selection: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """File stems of the selected images: ``<split>_<index in the generated pool, 4 digits>``."""
    return {s: [f"{s}_{int(i):04d}" for i in idx] for s, idx in selection.items()}


ANNOTATION_README = """Images to annotate (Histopathology DatasetGAN, notebook 03), replicate {g}.

images/<name>.png   the generated image ({size}x{size} px, truncation {psi})
latents.npy         (N, z_dim) float32 latent vector of each image, rows in the order of names.txt
names.txt           one name per line

Draw one mask per image: a single-channel PNG of the same size, named <name>.png, whose pixel values are
class indices: 0 whitespace, 1 cortical tubulointerstitium, 2 glomerulus, 3 arteriole, 4 artery.
Put the masks of this replicate in <folder>/g{g}/ and run notebook 03 with
  -S datasetgan.annotations=<folder>   (or papermill -y 'overrides: {{datasetgan.annotations: <folder>}}')
"""


def export_for_annotation(folder, images: np.ndarray, z: np.ndarray, names: list[str], g: int = 0,
                          psi: float = 0.7) -> Path:
    """Write the selected generated images for a person to annotate.

    Writes ``folder/images/<name>.png``, ``folder/latents.npy`` (rows in ``names`` order), ``folder/names.txt`` and
    ``folder/README.txt`` (the class indices to draw).

    Returns:
        ``folder``.
    """
    from PIL import Image

    from histolib.fileio import atomic_write_text

    folder = Path(folder)
    if len(images) != len(names) or len(z) != len(names):
        raise ParamError(f"{len(images)} images, {len(z)} latents and {len(names)} names differ")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for im, name in zip(images, names, strict=True):
        Image.fromarray(np.asarray(im, np.uint8)).save(folder / "images" / f"{name}.png")
    np.save(folder / "latents.npy", np.asarray(z, np.float32))
    atomic_write_text(folder / "names.txt", "".join(n + "\n" for n in names))
    atomic_write_text(folder / "README.txt", ANNOTATION_README.format(g=g, size=images.shape[1], psi=psi))
    return folder


def import_annotations(folder, names: list[str], size: int) -> np.ndarray:
    """Read hand-drawn class-index masks ``folder/<name>.png`` back, validated like any mask folder.

    Args:
        folder: the replicate's annotation folder (``<datasetgan.annotations>/g<k>``).
        names: the exported names, in order.
        size: the image side every mask must have.

    Returns:
        ``(N, size, size)`` uint8 class indices.

    Raises:
        DataError: naming the file: missing, unreadable, a colour mask, a value outside the five classes, or a
            size other than ``size`` x ``size``.
    """
    from histolib.data.folder import read_mask

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: annotation folder does not exist")
    out = np.zeros((len(names), size, size), np.uint8)
    for i, name in enumerate(names):
        path = folder / f"{name}.png"
        if not path.is_file():
            raise DataError(f"{path}: missing annotation for generated image {name!r}")
        m = read_mask(path, "classes", N_CLASSES)
        if m.shape != (size, size):
            raise DataError(f"{path}: annotation is {m.shape[1]}x{m.shape[0]} px, the image is {size}x{size} px")
        out[i] = m
    return out


@dataclass
class Annotated:
    """One replicate's generated pool and its annotated selection."""

    g: int
    z: np.ndarray                       # (n_generate, z_dim) latents of the pool
    images: np.ndarray                  # (n_generate, R, R, 3) the pool's images
    selection: dict[str, np.ndarray]    # split -> indices into the pool
    names: dict[str, list[str]]
    labels: dict[str, np.ndarray]       # split -> (n, R, R) annotations
    annotator: str                      # who labelled: "stand-in annotator (...)" or the folder

    def split(self, s: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(z, images, labels)`` of split ``s``."""
        idx = self.selection[s]
        return self.z[idx], self.images[idx], self.labels[s]


def annotate_replicate(P, rep: Replicate, annotator_model=None, export_dir=None, root: Path | None = None) -> Annotated:
    """Generate the pool, select the images to annotate, export them, and label them.

    Labels come from ``datasetgan.annotations`` (``<folder>/g<k>/<name>.png``) when set, else from
    ``annotator_model`` (the stand-in annotator).
    """
    c = P.datasetgan
    z = latents(rep.G, c.n_generate, rep.seed + 1)
    images = synthesize(rep.G, z, c.truncation_psi)
    selection = select_annotated(c.n_generate, c.n_annotated, rep.seed)
    names = annotation_names(selection)
    if export_dir is not None:
        sel = np.concatenate([selection[s] for s in ("train", "val", "test")])
        export_for_annotation(Path(export_dir), images[sel], z[sel],
                              [n for s in ("train", "val", "test") for n in names[s]], rep.g, c.truncation_psi)
    if c.annotations:
        from histolib.paths import project_root

        folder = (Path(root or project_root()) / c.annotations / f"g{rep.g}").resolve()
        labels = {s: import_annotations(folder, names[s], images.shape[1]) for s in selection}
        who = f"hand-drawn masks from {c.annotations}"
    else:
        if annotator_model is None:
            raise ParamError("no datasetgan.annotations folder and no stand-in annotator given")
        labels = {s: segment(annotator_model, images[idx]) for s, idx in selection.items()}
        who = "stand-in annotator (5-class U-Net trained on labelled phantom tiles)"
    return Annotated(rep.g, z, images, selection, names, labels, who)


# --------------------------------------------------------------------------------------------------
# Features and the pixel classifier
# --------------------------------------------------------------------------------------------------

def classifier_options(P):
    """:class:`histolib.train.pixel_classifier.PixelClassifierOptions` from ``P.datasetgan``."""
    from histolib.train.pixel_classifier import PixelClassifierOptions

    c = P.datasetgan
    return PixelClassifierOptions(optimizer=c.clf_optimizer, lr=c.clf_lr, momentum=c.clf_momentum,
                                  epochs=c.clf_epochs, batch_size=c.clf_batch, patience=c.clf_patience,
                                  hidden=tuple(c.clf_hidden), dropout=c.clf_dropout, n_classes=N_CLASSES)


def write_split_features(P, rep: Replicate, ann: Annotated, folder) -> dict[str, Path]:
    """The memory-mapped features of the annotated images of each split: ``folder/<split>.npy``."""
    from histolib.ops.pixel_features import write_pixel_features

    c = P.datasetgan
    out = {}
    for s in ("train", "val", "test"):
        z, images, _ = ann.split(s)
        out[s] = write_pixel_features(feature_fn(rep.G, z, c.truncation_psi, c.feature_blocks), len(z),
                                      images.shape[1], Path(folder) / f"{s}.npy", chunk=c.feature_chunk)
    return out


def classifier_seeds(P) -> list[int]:
    """Seeds of the classifiers (or ensembles) per replicate: ``seed + k`` (the study's inner-level seeds)."""
    return [P.seed + k for k in range(P.datasetgan.clf_seeds)]


@dataclass
class ClassifierRun:
    """One classifier (ensemble) of one replicate: its members and Table 1 on the test images."""

    g: int
    seed: int
    members: list
    scores: dict
    test_pred: np.ndarray
    test_js: np.ndarray
    history: list[dict]
    seconds: float


def train_classifiers(P, rep: Replicate, ann: Annotated, feats: dict[str, Path], folder,
                      progress: bool = False) -> list[ClassifierRun]:
    """Train ``clf_seeds`` classifiers (ensembles of ``clf_ensemble``) on the train features; score the test images.

    Member ``m`` of seed ``s`` is trained with seed ``1000 * s + m`` in ``folder/seed<s>/m<m>``; its run is
    identified by the generator's weights, the latents and the annotations, so changed inputs retrain.
    """
    from histolib.train.checkpoint import fingerprint
    from histolib.train.pixel_classifier import predict_file, train_pixel_classifier

    opts = classifier_options(P)
    data = f"{generator_digest(rep.G)}:{fingerprint(ann.z, *[ann.labels[s] for s in ('train', 'val', 'test')])}"
    size = ann.images.shape[1]
    out = []
    for s in classifier_seeds(P):
        members, history, seconds = [], [], 0.0
        for m in range(P.datasetgan.clf_ensemble):
            r = train_pixel_classifier(feats["train"], ann.labels["train"], feats["val"], ann.labels["val"], opts,
                                       1000 * s + m, Path(folder) / f"seed{s}" / f"m{m}", data, progress)
            members.append(r.model)
            history.append(r.history)
            seconds += r.seconds
        n_test = len(ann.labels["test"])
        pred, js = predict_file(members, feats["test"], n_test, size * size)
        pred = pred.reshape(n_test, size, size)
        out.append(ClassifierRun(rep.g, s, members, compartment_scores(pred, ann.labels["test"]), pred,
                                 js.reshape(n_test, size, size), history, seconds))
    return out


@torch.no_grad()
def label_generated(P, rep: Replicate, members, n: int, seed: int) -> dict:
    """Generate ``n`` new images and label them with a classifier ensemble (the labelled synthetic set).

    Features are computed chunk by chunk in memory (they are used once); each image gets the ensemble's
    majority vote and its uncertainty (mean of the top 10 % per-pixel JS divergences); with an ensemble, the
    ``uncertainty_drop`` share of the most uncertain images is dropped (the reference's filtering).

    Returns:
        ``{"images", "labels", "uncertainty", "kept" (indices into the n generated), "z"}``.
    """
    from histolib.models.pixel_classifier import image_uncertainty, keep_certain
    from histolib.ops.pixel_features import upsample_concat
    from histolib.train.pixel_classifier import ensemble_labels, predict_logits

    c = P.datasetgan
    z = latents(rep.G, n, seed)
    fn = feature_fn(rep.G, z, c.truncation_psi, c.feature_blocks)
    images = synthesize(rep.G, z, c.truncation_psi, chunk=c.feature_chunk)
    size = images.shape[1]
    labels = np.zeros((n, size, size), np.uint8)
    unc = np.zeros(n)
    for start in range(0, n, c.feature_chunk):
        stop = min(start + c.feature_chunk, n)
        x = upsample_concat(fn(start, stop), size)  # (b, d, S, S)
        rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).half().float()  # the classifier saw float16 features
        for i in range(stop - start):
            lab, js = ensemble_labels(predict_logits(members, rows[i * size * size:(i + 1) * size * size]))
            labels[start + i] = lab.reshape(size, size).numpy()
            unc[start + i] = image_uncertainty(js, 0.1)
    kept = keep_certain(unc, c.uncertainty_drop) if len(members) > 1 else np.arange(n)
    return {"images": images[kept], "labels": labels[kept], "uncertainty": unc, "kept": kept, "z": z[kept]}


# --------------------------------------------------------------------------------------------------
# Table 1, faithfulness, claims
# --------------------------------------------------------------------------------------------------

def _groups(runs: list[ClassifierRun], value) -> list[list[float]]:
    by_g: dict[int, list[float]] = {}
    for r in runs:
        v = value(r.scores)
        if v is not None and math.isfinite(v):
            by_g.setdefault(r.g, []).append(float(v))
    return [by_g[g] for g in sorted(by_g)]


def _summary(groups) -> dict | None:
    return report.two_level_summary(groups) if groups else None


def table1(runs: list[ClassifierRun], annotator: str) -> list[dict]:
    """Table 1 beside the paper's: per-class pixel accuracy and the mean Dice (two-level over replicates).

    Each cell is the mean over generator replicates of their classifier seeds' values, with the 95 % interval
    (generator means as units) when there are two replicates or more.
    """
    rows = []
    for name in CLASS_NAMES:
        s = _summary(_groups(runs, lambda sc, n=name: sc["accuracy"][n]))
        rows.append({"class": name, "accuracy (%) ours": report.fmt_interval(s) if s else "absent",
                     "accuracy (%) paper": f"{PAPER_TABLE1[name]:.2f}"})
    s = _summary(_groups(runs, lambda sc: sc["mean_dice"]))
    rows.append({"class": "mean Dice (x100)", "accuracy (%) ours": report.fmt_interval(s) if s else "n/a",
                 "accuracy (%) paper": f"{100 * PAPER_MEAN_DICE:.0f}"})
    rows.append({"class": "labels", "accuracy (%) ours": annotator, "accuracy (%) paper": "expert nephropathologist"})
    return rows


def classifier_faithfulness(annotator_model, labelled: dict, test: LabelledSet) -> dict:
    """The classifier's faithfulness to the annotator (issue "Evidence that holds").

    The stand-in annotator (trained on real-style labelled tiles only) segments the classifier-labelled generated
    images; its mean Dice against the classifier's maps, beside its mean Dice on the held-out labelled tiles,
    is :func:`histolib.metrics.faithfulness.faithfulness` with ``score = mean Dice``. The trivial score is that of
    predicting tubulointerstitium (class 1) everywhere.
    """
    from histolib.metrics.faithfulness import faithfulness

    return faithfulness(lambda x: segment(annotator_model, x), labelled["images"], labelled["labels"],
                        test.images, test.masks, score=mean_dice)


def annotator_precondition(annot_scores: dict, trivial: dict) -> report.Precondition:
    """The annotations mean something only if the annotator beats the majority-class prediction."""
    return report.Precondition(
        "the stand-in annotator beats predicting the majority class on held-out labelled tiles (mean Dice)",
        bool(annot_scores["mean_dice"] > trivial["mean_dice"]),
        f"{annot_scores['mean_dice']:.3f} vs {trivial['mean_dice']:.3f}")


def annotator_class_preconditions(annot_scores: dict | None, classes, min_accuracy: float = 0.5) -> list:
    """Per-class gates of the claims that compare classes: the stand-in annotator must find each class involved.

    A class the annotator misses on held-out labelled tiles (pixel accuracy below ``min_accuracy``) is missing or
    wrong in the annotations, so a per-class accuracy measured against them says nothing about it. ``None``
    (hand-drawn annotations): no gate.
    """
    if annot_scores is None:
        return []
    out = []
    for name in classes:
        v = annot_scores["accuracy"].get(name, math.nan)
        out.append(report.Precondition(
            f"the stand-in annotator finds {name} on held-out labelled tiles (pixel accuracy >= {min_accuracy:g})",
            bool(math.isfinite(v) and v >= min_accuracy), f"accuracy {v:.3f}"))
    return out


def _one_sample(groups, line: float, alpha: float, label: str) -> dict:
    shifted = [[v - line for v in g] for g in groups]
    return report.two_level_contrast([shifted], [1.0], bounds=None, alpha=alpha, label=label) if shifted else {}


def _claim(key, section_, text, metric, comparison, numbers, direction=1, extension=False) -> report.Claim:
    return report.Claim(key=key, paper=PAPER, section=section_, text=text, metric=metric, comparison=comparison,
                        direction=direction, paper_numbers=numbers, extension=extension)


def _ordering(sc: dict, high: tuple[str, ...], low: tuple[str, ...]) -> float | None:
    a = [sc["accuracy"][n] for n in high]
    b = [sc["accuracy"][n] for n in low]
    if not all(math.isfinite(v) for v in a + b):
        return None
    return min(a) - max(b)


def claims(runs: list[ClassifierRun], seg_rows: list[dict], faith: list[dict] | None, pre: list,
           gate: float = report.FAITHFULNESS_GATE, alpha: float = 0.05, annot_scores: dict | None = None) -> list[dict]:
    """The paper's claims and the study's beyond-the-paper questions, by the one verdict rule.

    Args:
        runs: every classifier run (replicates x seeds).
        seg_rows: rows of :func:`run_segmentation` (``set``, ``g``, ``seed``, ``mean_dice``).
        faith: :func:`classifier_faithfulness` of each replicate (gates the extension).
        pre: preconditions of every claim (e.g. :func:`annotator_precondition`).
        annot_scores: the stand-in annotator's :func:`compartment_scores` on held-out tiles: the claims comparing
            classes are gated by :func:`annotator_class_preconditions` (``None`` with hand-drawn annotations).
    """
    per_class = pre + annotator_class_preconditions(annot_scores, CLASS_NAMES)
    out = []
    g = _groups(runs, lambda sc: sc["mean_dice"])
    t = _one_sample(g, PAPER_MEAN_DICE, alpha, "replicates")
    out.append(report.assess(_claim(
        "002-mean-dice", "Sec. III",
        "The pixel-level classifiers achieve high classification accuracy on several morphological compartments, "
        "with an average dice coefficient of 0.92 on the test set images.",
        "mean Dice over the five classes, 16 test images", "mean Dice - 0.92 (at least the paper's value)",
        "0.92"), report.evidence_from_test(t, unit="Dice", detail=(
            f"mean Dice {PAPER_MEAN_DICE + t['estimate']:.3f} over {len(g)} replicate(s)" if t else "")) if t else None,
        pre, alpha))
    glom_artery = ("Glomerulus", "Artery")
    others = ("Whitespace", "Cortical Tubulointerstitium", "Arteriole")
    g = _groups(runs, lambda sc: _ordering(sc, glom_artery, others))
    t = _one_sample(g, 0.0, alpha, "replicates")
    out.append(report.assess(_claim(
        "002-glomerulus-artery-highest", "Conclusion; Table 1",
        "Glomeruli and arteries had the highest pixel-wise segmentation accuracy.",
        "per-class pixel accuracy", "min(glomerulus, artery) - max(whitespace, tubulointerstitium, arteriole)",
        "min(82.89, 77.82) - max(68.42, 66.57, 52.09) = +9.40 points"),
        report.evidence_from_test(t, scale=100, unit="points", detail=f"{sum(map(len, g))} runs with every class "
                                  "present") if t else None, per_class, alpha))
    g = _groups(runs, lambda sc: _ordering(sc, ("Whitespace", "Cortical Tubulointerstitium", "Glomerulus", "Artery"),
                                           ("Arteriole",)))
    t = _one_sample(g, 0.0, alpha, "replicates")
    out.append(report.assess(_claim(
        "002-arteriole-lowest", "Sec. III; Table 1",
        "The classifiers struggle when morphological structures in generated images resemble two different "
        "compartments, often misclassifying arteriole pixels as either glomeruli or artery.",
        "per-class pixel accuracy", "min(other four classes) - arteriole",
        "min(68.42, 66.57, 82.89, 77.82) - 52.09 = +14.48 points"),
        report.evidence_from_test(t, scale=100, unit="points", detail=f"{sum(map(len, g))} runs with every class "
                                  "present") if t else None, per_class, alpha))
    gates = report.faithfulness_gates(faith, gate, "classifier-labelled generated set") if faith is not None else []
    for key, other, text in (
            ("002-generated-vs-annotated", "Annotated",
             "Beyond the paper: does a U-Net trained on the classifier-labelled generated set segment held-out "
             "labelled tiles better than the same U-Net trained on the 16 annotated generated images alone?"),
            ("002-generated-vs-real", "Real",
             "Beyond the paper: how does a U-Net trained on the classifier-labelled generated set compare with the "
             "same U-Net trained on as many real labelled tiles?")):
        a, b = seg_groups(seg_rows, "Generated"), seg_groups(seg_rows, other)
        ev = None
        if a and b:
            d = report.two_level_difference(a, b, alpha=alpha)
            ev = report.evidence_from_test(d, scale=100, unit="points", detail=(
                f"Generated {100 * d['a']['mean']:.2f} vs {other} {100 * d['b']['mean']:.2f} (mean Dice x100)"))
        out.append(report.assess(_claim(key, "extension", text, "test mean Dice (x100), labelled phantom tiles",
                                        f"Generated - {other}", "", extension=True), ev, pre + gates, alpha))
    return out


# --------------------------------------------------------------------------------------------------
# Beyond the paper: the labelled generated set trains a U-Net
# --------------------------------------------------------------------------------------------------

def seg_cfg(P) -> dict:
    """U-Net harness options of the beyond-the-paper segmentation."""
    c = P.datasetgan
    return {"width": c.seg_width, "depth": c.seg_depth, "epochs": c.seg_epochs, "batch_size": c.seg_batch,
            "lr": c.seg_lr, "augment_p": 0.5, "loss": "ce_dice"}


def seg_seeds(P) -> list[int]:
    return [P.seed + k for k in range(P.datasetgan.seg_seeds)]


def training_sets(P, generated: list[dict], annotated: list[Annotated], real: LabelledSet) -> dict:
    """``{(set, g): LabelledSet}``: ``Generated`` and ``Annotated`` per replicate, ``Real`` once (g = None).

    Every set is cycled to ``n_synthetic`` images (equal steps per epoch); ``Real`` holds as many distinct real
    labelled tiles as the smallest generated set (after uncertainty filtering).
    """
    n = P.datasetgan.n_synthetic
    out = {}
    for gen, ann in zip(generated, annotated, strict=True):
        out[("Generated", ann.g)] = LabelledSet(gen["images"], gen["labels"],
                                                [f"gen_{i:05d}" for i in range(len(gen["images"]))]).repeated(n)
        _, images, labels = ann.split("train")
        out[("Annotated", ann.g)] = LabelledSet(images, labels, ann.names["train"]).repeated(n)
    n_real = min([len(gen["images"]) for gen in generated] + [len(real)])
    out[("Real", None)] = real.take(np.arange(n_real)).repeated(n)
    return out


def run_segmentation(P, sets: dict, val: LabelledSet, test: LabelledSet, folder, progress: bool = False) -> list[dict]:
    """Train one U-Net per (set, replicate, seed) with the study harness; score each on ``test``.

    Returns:
        Rows ``set``, ``g``, ``seed``, ``mean_dice``, per-class Dice, ``n_distinct``.
    """
    from histolib.train.segmentation import train_unet

    rows = []
    for (name, g), ls in sets.items():
        for seed in seg_seeds(P):
            sub = f"{name}" + (f"@g{g}" if g is not None else "")
            res = train_unet(ls, val, seg_cfg(P), seed, Path(folder) / sub / f"seed{seed}", N_CLASSES, progress)
            sc = compartment_scores(segment(res.model, test.images), test.masks)
            rows.append({"set": name, "g": g, "seed": seed, "mean_dice": sc["mean_dice"],
                         **{f"dice {k}": v for k, v in sc["dice"].items()},
                         "n_distinct": len(set(ls.names)), "best_epoch": res.best_epoch})
    return rows


def seg_groups(rows: list[dict], name: str) -> list[list[float]]:
    """Two-level groups of a set's test mean Dice: one group per replicate; ``Real`` one group per seed."""
    sel = [r for r in rows if r["set"] == name and math.isfinite(r["mean_dice"])]
    if not sel:
        return []
    if all(r["g"] is None for r in sel):
        return report.single_level([r["mean_dice"] for r in sel])
    by: dict = {}
    for r in sel:
        by.setdefault(r["g"], []).append(r["mean_dice"])
    return [by[k] for k in sorted(by)]


def segmentation_table(rows: list[dict]) -> list[dict]:
    """The beyond-the-paper table: mean Dice (two-level interval) and per-class Dice per training set."""
    out = []
    for name in ("Generated", "Annotated", "Real"):
        groups = seg_groups(rows, name)
        if not groups:
            continue
        sel = [r for r in rows if r["set"] == name]
        row = {"training set": name, "distinct images": sel[0]["n_distinct"],
               "mean Dice (x100)": report.fmt_interval(report.two_level_summary(groups))}
        for cname in CLASS_NAMES:
            v = [r[f"dice {cname}"] for r in sel if math.isfinite(r[f"dice {cname}"])]
            row[f"{cname} Dice"] = f"{100 * np.mean(v):.1f}" if v else "absent"
        out.append(row)
    return out


def conditions(P, n_gan: int, labelled: dict[str, LabelledSet], annotator: str, channels=None) -> report.Conditions:
    """What Table 1, the extension and the claims were measured under."""
    c, sg = P.datasetgan, P.stylegan2
    feat = (f"last {c.feature_blocks} synthesis blocks ({', '.join(f'{ch} ch @ {s} px' for ch, s in channels)}; "
            f"d = {sum(ch for ch, _ in channels)})") if channels else f"last {c.feature_blocks} synthesis blocks"
    return report.Conditions(
        profile=P.profile, resolution=resolution(P), data_source=c.source, seeds=classifier_seeds(P),
        generator_replicates=P.protocol.n_gan_seeds,
        extra={"GAN tiles": f"{n_gan} unlabelled tiles",
               "StyleGAN2-ADA": ", ".join(f"{k} {getattr(sg, k)}" for k in ("resolution", "steps", "batch_size")
                                          if hasattr(sg, k)),
               "generated": f"{c.n_generate} per replicate at truncation {c.truncation_psi:g}; annotated "
                            f"{'/'.join(map(str, c.n_annotated))} (train/val/test), drawn at random",
               "labels": annotator,
               "features": feat + ", bilinear, float16 memory map",
               "classifier": f"MLP {c.clf_hidden}, dropout {c.clf_dropout:g}, {c.clf_optimizer} lr {c.clf_lr:g}"
                             f"{f' momentum {c.clf_momentum:g}' if c.clf_optimizer == 'sgd' and c.clf_momentum else ''}"
                             f", batch {c.clf_batch}, <= {c.clf_epochs} epochs (patience {c.clf_patience}), ensemble "
                             f"{c.clf_ensemble}",
               "extension": f"U-Net width {c.seg_width}, depth {c.seg_depth}, {c.seg_epochs} epochs of "
                            f"{c.n_synthetic} images; {c.seg_seeds} seed(s); tested on {len(labelled['test'])} "
                            "held-out labelled tiles",
               "alpha": P.protocol.alpha})


# --------------------------------------------------------------------------------------------------
# Figures and outputs
# --------------------------------------------------------------------------------------------------

def _rgb(label) -> np.ndarray:
    from histolib.viz import label_map_to_rgb

    return label_map_to_rgb(np.asarray(label), N_CLASSES)


def legend_text() -> str:
    from histolib.viz import PALETTE

    return ", ".join(f"{i} {n} (rgb {tuple(int(v) for v in PALETTE[i])})" for i, n in enumerate(CLASS_NAMES))


def tiles_figure(real: np.ndarray, labels: np.ndarray, generated: list[np.ndarray], n: int):
    """Real (phantom) tiles with their compartment maps above each replicate's generated images."""
    from histolib.viz import image_grid

    k = min(n, len(real))
    rows = [list(real[:k]), [_rgb(m) for m in labels[:k]]]
    names = ["training tiles", "their compartments"]
    for g, imgs in enumerate(generated):
        rows.append(list(imgs[:k]))
        names.append(f"generated, replicate {g}")
    return image_grid(rows, names, title="StyleGAN2-ADA: training tiles and generated images")


def fig2(images: np.ndarray, pred: np.ndarray, truth: np.ndarray, n: int, annotator: str):
    """Fig. 2 of the paper: (a) generated tiles, (b) predicted segmentation maps, (c) annotations."""
    from histolib.viz import image_grid

    k = min(n, len(images))
    return image_grid([list(images[:k]), [_rgb(p) for p in pred[:k]], [_rgb(t) for t in truth[:k]]],
                      ["(a) generated", "(b) predicted", "(c) annotation"],
                      title=f"Fig. 2: test images of replicate 0; annotations: {annotator}")


def synthetic_figure(gen: dict, n: int):
    """Images of the labelled generated set with their classifier maps (most certain first)."""
    from histolib.viz import image_grid

    k = min(n, len(gen["images"]))
    order = np.argsort(gen["uncertainty"][gen["kept"]], kind="stable")[:k]
    return image_grid([list(gen["images"][order]), [_rgb(m) for m in gen["labels"][order]]],
                      ["generated", "classifier labels"], title="The labelled generated set (replicate 0)")


def classifier_curves(runs: list[ClassifierRun]) -> list[dict]:
    """Per-epoch classifier log of every run and member: ``g``, ``seed``, ``member``, ``epoch``, loss, val."""
    rows = []
    for r in runs:
        for m, hist in enumerate(r.history):
            for h in hist:
                rows.append({"g": r.g, "seed": r.seed, "member": m, "epoch": h["step"],
                             "train_loss": h["train_loss"], "val_class_accuracy": h["val_class_accuracy"]})
    return rows


def save_curves(rows: list[dict], path) -> Path:
    """Replicate 0, first seed, member 0 as CSV (the DVC plot of stage ``nb03_datasetgan``)."""
    import pandas as pd

    from histolib.fileio import atomic_write_text

    sel = [r for r in rows if r["g"] == 0 and r["member"] == 0]
    if sel:
        s0 = min(r["seed"] for r in sel)
        sel = [r for r in sel if r["seed"] == s0]
    df = pd.DataFrame(sel, columns=["epoch", "train_loss", "val_class_accuracy"])
    return atomic_write_text(Path(path), df[["epoch", "train_loss", "val_class_accuracy"]].to_csv(index=False))


def metrics_summary(runs, annot_scores, trivial, faith, seg_rows, claims_rows, cond, replicates, timings) -> dict:
    """What ``results/03/metrics.json`` holds."""
    def summ(groups):
        s = _summary(groups)
        return None if s is None else {k: s[k] for k in ("mean", "ci_low", "ci_high", "n_generators", "n_seeds")}

    t1 = {n: summ(_groups(runs, lambda sc, n=n: sc["accuracy"][n])) for n in CLASS_NAMES}
    return {
        "table1": {"accuracy": t1, "mean_dice": summ(_groups(runs, lambda sc: sc["mean_dice"])),
                   "runs": [{"g": r.g, "seed": r.seed, **r.scores, "seconds": r.seconds} for r in runs]},
        "paper_table1": PAPER_TABLE1, "paper_mean_dice": PAPER_MEAN_DICE,
        "annotator": {"held_out": annot_scores, "trivial": trivial},
        "faithfulness": [{k: v for k, v in f.items()} for f in (faith or [])],
        "extension": {"rows": seg_rows, **{n: summ(seg_groups(seg_rows, n)) for n in ("Generated", "Annotated",
                                                                                      "Real")}},
        "claims": claims_rows, "table_conditions": cond.to_dict(), "decisions": list(DECISIONS),
        "generators": [{"g": r.g, "seed": r.seed, "folder": str(r.folder)} for r in replicates],
        "timings_s": timings,
    }
