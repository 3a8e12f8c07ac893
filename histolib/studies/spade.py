"""Notebook 01: SPADE + ADA synthesis and the five U-Net training sets of Allender et al. (seed 000).

Everything notebook 01 does beyond a call and a plot lives here, with tests in
``tests/studies/test_spade.py``.

Pipeline (paper section II):

1. Two SPADE models (``histolib.train.spade``) with adaptive discriminator augmentation are trained
   on the ``gan`` split of the glomerulus patches (disjoint from the U-Net sets; the paper: 660
   other patches): one on the ground-truth binary masks (2 classes), one on 4-class *structure
   label maps* (mask x texture mask, the texture mask being HSV saturation above
   ``structure_threshold``; section II-B, Fig. 4).
2. Every real U-Net training patch gets ``n_deform`` random grid deformations (3x3 control points,
   sigma 20 px at 256 px, scaled to the patch; section II-A), the same draw for its image, mask and
   structure map. The five training sets of section II-C are built offline from them: ``Real``
   (the deformed real patches), ``SPADE-GTMask`` / ``SPADE-Structure`` (the generators' images for
   the deformed masks / structure maps, labelled with the deformed masks) and the two mixtures
   (``n_deform // 2`` real + the rest synthetic, the paper's 5 + 5).
3. The shared U-Net harness (``histolib.train.segmentation.run_experiment``) trains each set with
   ``unet.n_seeds`` seeds (live flips and rotations with p = 0.5) and scores the fixed test split.

Decisions where the paper is silent:

* Deformation draws are shared across sets (common random numbers): deformation ``k`` of patch
  ``i`` is the same in every set, and the mixtures take the real patches of draws
  ``0 .. n_deform // 2 - 1`` and the synthetic ones of the remaining draws. Sets then differ only
  in where the texture comes from, which makes the paired comparisons sharper.
* SPADE training length: not given; the ``paper`` profile runs 200 epochs of the 660 patches (the
  SPADE paper's schedule for its datasets), batch 16.
* The perceptual (VGG) term of the SPADE reference is used only with local VGG19 weights;
  otherwise the recorded substitute (``histolib.train.features``): an encoder trained here on the
  ``gan`` patches (``perceptual: auto``). KID and diversity use a separately seeded encoder.
* Noise: each synthetic patch gets its own noise vector (the generator's multi-modal input).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from histolib.config import knob, section
from histolib.errors import ParamError
from histolib.metrics.image import diversity, kid, mean_pairwise_distance
from histolib.metrics.segmentation import paired_test, summarize
from histolib.train.features import FeatureNet, extract_features, load_feature_net
from histolib.train.spade import PRECISIONS, PerceptualLoss, SpadeOptions, SpadeTrainer, synthesize, training_tensors


@section("spade")
class SpadeParams:
    """Notebook 01: SPADE + adaptive discriminator augmentation (Allender et al., BHI 2022)."""

    ngf: int = knob("generator base width; blocks have 16, 8, 4, 2, 1 x ngf channels (reference: 64)", min=1)
    ndf: int = knob("discriminator base width (reference: 64)", min=1)
    z_dim: int = knob("noise channels of the generator's multi-modal input (0: deterministic)", min=0)
    spade_hidden: int = knob("SPADE hidden width of the label embedding (reference: 128)", min=1)
    norm_G: str = knob("parameter-free norm inside SPADE (reference: batch)", choices=("batch", "instance"))
    precision: str = knob("fp32; bf16: CPU bfloat16 autocast of the G and D forward passes (about 1.4-2x "
                          "faster on CPUs with AVX512-BF16/AMX; weights, losses and optimiser stay fp32); "
                          "auto: bf16 where the CPU has native bf16, else fp32", choices=PRECISIONS)
    num_D: int = knob("discriminator scales (reference: 2)", min=1, max=4)
    n_layers_D: int = knob("conv layers per PatchGAN scale (reference: 4)", min=2, max=6)
    batch_size: int = knob("images per SPADE step", min=1)
    steps: int = knob("SPADE optimisation steps per model (paper profile: 200 epochs of 660 patches)", min=1)
    lr_G: float = knob("generator Adam learning rate (TTUR, reference: 1e-4)", min=0.0)
    lr_D: float = knob("discriminator Adam learning rate (TTUR, reference: 4e-4)", min=0.0)
    beta1: float = knob("Adam beta1 (reference: 0)", min=0.0, max=1.0)
    beta2: float = knob("Adam beta2 (reference: 0.9)", min=0.0, max=1.0)
    lambda_fm: float = knob("discriminator feature-matching weight (reference: 10)", min=0.0)
    perceptual: str = knob("perceptual term: auto (VGG19 with local weights, else the in-pipeline encoder), "
                           "vgg19, encoder, random or none", choices=("auto", "vgg19", "encoder", "random", "none"))
    perceptual_weights: str = knob("local VGG19 weights file ('' = torch hub cache); never downloaded")
    lambda_perceptual: float = knob("perceptual-loss weight (reference VGG loss: 10)", min=0.0)
    ada_ops: list[str] = knob("ADA augmentations (histolib.ops.ada.OPS). The seed's own set (default): [xflip, "
                              "rotate90, rotate, elastic]; StyleGAN2-ADA 'bgc' adds xint, scale, aniso, xfrac "
                              "and the colour ops brightness, contrast, lumaflip, hue, saturation (image only); "
                              "[] disables ADA")
    ada_target: float = knob("ADA target r_t (StyleGAN2-ADA: 0.6)", min=0.0, max=1.0)
    ada_interval: int = knob("minibatches between p adjustments (StyleGAN2-ADA: 4)", min=1)
    ada_kimg: float = knob("thousands of images for p to sweep 0 -> 1 (StyleGAN2-ADA: 500; short runs need "
                           "less)", min=0.001)
    ema_kimg: float = knob("half-life, in thousands of images, of the moving average of G's weights that "
                           "synthesises (StyleGAN2-ADA G_ema: batch * 10 / 32); 0: sample the trained G", min=0.0)
    ema_rampup: float = knob("EMA half-life at most this x the images seen so far (StyleGAN2-ADA: 0.05; 0: off)",
                             min=0.0)
    structure_threshold: float = knob("texture mask: HSV saturation above this (paper: 0.1)", min=0.0, max=1.0)
    deform_sigma: float = knob("grid-deformation sigma in px of a 256-px patch (paper: 20), scaled", min=0.0)
    deform_points: int = knob("grid-deformation control points per axis (paper: 3)", min=2)
    n_deform: int = knob("deformations per real training patch (paper: 10; mixtures use half real, half "
                         "synthetic)", min=2)
    checkpoint_every: int = knob("SPADE steps between checkpoints (and sample grids)", min=1)
    kid_features: str = knob("feature network for KID/diversity (histolib.train.features; nothing downloads)",
                             choices=("auto", "vgg19", "inception", "encoder", "random"))
    kid_encoder_steps: int = knob("training steps of the in-pipeline encoder (KID and perceptual substitute)",
                                  min=1)
    kid_subsets: int = knob("KID subsets for the reported mean +- std", min=1)
    n_grid: int = knob("label maps shown in the figures and sample grids", min=1, max=64)


@dataclass(frozen=True)
class LabelMapKind:
    """One of the two SPADE models of the paper."""

    name: str
    set_name: str
    n_classes: int
    label: str
    figure: str


LABEL_MAPS = {k.name: k for k in (
    LabelMapKind("gtmask", "SPADE-GTMask", 2, "ground-truth binary mask", "Fig. 3"),
    LabelMapKind("structure", "SPADE-Structure", 4, "4-class structure label map (mask x texture mask)",
                 "Fig. 5"),
)}

SETS = ("Real", "SPADE-GTMask", "SPADE-Structure", "Real + SPADE-GTMask", "Real + SPADE-Structure")

# Table I of the paper: mean +- std over 5 U-Net trainings, percent.
PAPER_TABLE = {
    "Real": {"dice": (93.31, 0.46), "precision": (95.64, 0.42), "recall": (91.10, 0.95)},
    "SPADE-GTMask": {"dice": (85.86, 1.67), "precision": (96.77, 0.39), "recall": (77.20, 2.84)},
    "SPADE-Structure": {"dice": (88.33, 1.46), "precision": (93.70, 2.16), "recall": (82.41, 5.40)},
    "Real + SPADE-GTMask": {"dice": (94.07, 0.17), "precision": (94.85, 0.85), "recall": (93.30, 0.79)},
    "Real + SPADE-Structure": {"dice": (93.22, 0.14), "precision": (94.86, 0.44), "recall": (91.64, 0.45)},
}


def get_kind(name: str) -> LabelMapKind:
    """The :class:`LabelMapKind` called ``name``; :class:`ParamError` naming the known ones otherwise."""
    if name not in LABEL_MAPS:
        raise ParamError(f"unknown label map {name!r}; one of {list(LABEL_MAPS)}")
    return LABEL_MAPS[name]


def item_seed(seed: int, stream: int, *index: int) -> int:
    """An independent 31-bit seed for an item of a random stream (order-free)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream, *index]).generate_state(1)[0] >> 1)


def _digest(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Label maps
# --------------------------------------------------------------------------------------------------

def texture_masks(images, threshold: float) -> np.ndarray:
    """Fig. 4: binary texture masks, HSV saturation above ``threshold`` (``(N, H, W)`` uint8 in {0, 1})."""
    from histolib.ops.structure import texture_mask

    images = _check_images(images)
    if not len(images):
        return np.zeros(images.shape[:3], np.uint8)
    return np.stack([np.asarray(texture_mask(im, threshold), bool) for im in images]).astype(np.uint8)


def label_maps(images, masks, kind: str, threshold: float) -> np.ndarray:
    """The SPADE input of ``kind`` for each patch.

    Args:
        images: ``(N, H, W, 3)`` uint8 patches.
        masks: ``(N, H, W)`` binary ground-truth masks (any non-zero value is glomerulus).
        kind: ``"gtmask"`` (the mask itself, 2 classes) or ``"structure"`` (the 4-class structure
            label map of ``histolib.ops.structure``).
        threshold: the texture-mask saturation threshold.

    Returns:
        ``(N, H, W)`` uint8 class indices in ``[0, n_classes)``.
    """
    k = get_kind(kind)
    images = _check_images(images)
    masks = (np.asarray(masks) > 0).astype(np.uint8)
    if masks.shape != images.shape[:3]:
        raise ParamError(f"masks {masks.shape} do not match images {images.shape}")
    if k.name == "gtmask" or not len(images):
        return masks
    from histolib.ops.structure import structure_label_map

    out = np.stack([np.asarray(structure_label_map(im, m, threshold)) for im, m in zip(images, masks, strict=True)])
    if out.min() < 0 or out.max() >= k.n_classes:
        raise ParamError(f"structure_label_map returned classes {np.unique(out).tolist()} outside 0..3")
    return out.astype(np.uint8)


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ParamError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    return images


# --------------------------------------------------------------------------------------------------
# SPADE models
# --------------------------------------------------------------------------------------------------

def spade_options(P, n_classes: int) -> SpadeOptions:
    """The :class:`SpadeOptions` of a model under the ``spade`` params (``P`` = loaded params)."""
    c = P.spade
    return SpadeOptions(n_classes=n_classes, image_size=P.data.patch_size, ngf=c.ngf, ndf=c.ndf, z_dim=c.z_dim,
                        norm_G=c.norm_G, spade_hidden=c.spade_hidden, num_D=c.num_D, n_layers_D=c.n_layers_D,
                        lr_G=c.lr_G, lr_D=c.lr_D, beta1=c.beta1, beta2=c.beta2, lambda_fm=c.lambda_fm,
                        lambda_perceptual=c.lambda_perceptual, ada_target=c.ada_target,
                        ada_interval=c.ada_interval, ada_kimg=c.ada_kimg, ada_ops=tuple(c.ada_ops),
                        ema_kimg=c.ema_kimg, ema_rampup=c.ema_rampup, precision=c.precision)


def perceptual_kind(cfg: SpadeParams) -> str:
    """The feature network :func:`perceptual_loss` will use, known without building it:
    ``none``, ``vgg19`` (local weights present), ``encoder`` or ``random``."""
    from histolib.train.features import VGG19_FILE, _hub_file

    if cfg.perceptual == "none" or cfg.lambda_perceptual == 0:
        return "none"
    if cfg.perceptual == "auto":
        return "vgg19" if (cfg.perceptual_weights or _hub_file(VGG19_FILE)) else "encoder"
    return cfg.perceptual


def perceptual_loss(cfg: SpadeParams, images, seed: int) -> PerceptualLoss | None:
    """The perceptual term (``cfg.perceptual``): VGG19 from local weights, or the recorded substitute.

    ``auto`` uses VGG19 when local weights exist (``perceptual_weights`` or the torch hub cache),
    else an encoder trained on ``images`` (the ``gan`` patches) with seed ``seed + 1``; ``none`` and
    a zero weight give no term. ``.backbone`` of the returned loss says which network it is.
    """
    if cfg.perceptual == "none" or cfg.lambda_perceptual == 0:
        return None
    weights = cfg.perceptual_weights or None
    net = load_feature_net(cfg.perceptual, weights=weights, images=images, seed=seed + 1,
                           steps=cfg.kid_encoder_steps, purpose="perceptual")
    return PerceptualLoss(net)


@dataclass
class SpadeRun:
    """A trained SPADE model and what its training wrote."""

    kind: str
    trainer: SpadeTrainer
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    folder: Path | None = None
    perceptual: str = "none"

    @property
    def generator(self):
        """The generator that synthesises: the weight average when ``ema_kimg > 0``."""
        return self.trainer.sampling_G


def run_args(kind: str, opts: SpadeOptions, cfg: SpadeParams, images, labels, perceptual: str) -> dict:
    """What defines a SPADE run (stored in its checkpoints): a change retrains, nothing else does.

    ``perceptual`` is the resolved feature-network kind (``vgg19``, ``encoder``, ``random`` or
    ``none``); with the encoder, its training steps count too."""
    o = asdict(opts)
    o["ada_ops"] = list(o["ada_ops"])
    return {"kind": kind, "options": o, "batch_size": cfg.batch_size,
            "perceptual": {"net": perceptual, "weights": cfg.perceptual_weights,
                           "encoder_steps": cfg.kid_encoder_steps if perceptual == "encoder" else 0},
            "train_digest": _digest(images, labels)}


def train_spade(kind: str, P, images, masks, out_dir: str | Path, perceptual: PerceptualLoss | None | str = "auto",
                progress: bool = True) -> SpadeRun:
    """Train (or resume, or load) the SPADE model of ``kind`` on the ``gan`` patches.

    Args:
        kind: ``"gtmask"`` or ``"structure"``.
        P: loaded params (sections ``spade`` and ``data``; ``P.seed`` seeds weights and steps).
        images: ``(N, H, W, 3)`` uint8 ``gan`` patches.
        masks: ``(N, H, W)`` binary masks of those patches.
        out_dir: checkpoints, ``log.jsonl`` and ``samples/`` (fixed label maps: rows = label map,
            real patch, two noise draws).
        perceptual: a prebuilt :class:`PerceptualLoss` (to share one between models), ``None``, or
            ``"auto"``: :func:`perceptual_loss` from the params.
        progress: show a progress bar.

    Returns:
        :class:`SpadeRun`; a complete run with the same options is loaded without training.
    """
    from histolib.train.gan import TensorBatches, load_complete, load_task_state, read_log, train_gan

    k, cfg = get_kind(kind), P.spade
    images = _check_images(images)
    labels = label_maps(images, masks, kind, cfg.structure_threshold)
    opts = spade_options(P, k.n_classes)
    trainer = SpadeTrainer(opts, seed=P.seed)
    net_kind = perceptual_kind(cfg) if perceptual == "auto" else perceptual.net.kind if perceptual else "none"
    args = run_args(kind, opts, cfg, images, labels, net_kind)
    done = load_complete(out_dir, args, cfg.steps, P.seed)
    if done is not None:  # a finished run (e.g. the nb01_train stage's output): load, write nothing
        load_task_state(trainer, done)
        summary = json.loads((Path(out_dir) / "checkpoints" / "COMPLETE.json").read_text())
        trainer.G.eval()
        return SpadeRun(kind, trainer, read_log(out_dir), float(summary.get("seconds", 0.0)), Path(out_dir),
                        summary.get("perceptual", net_kind))
    loss = perceptual_loss(cfg, images, P.seed) if perceptual == "auto" else perceptual
    trainer.perceptual = loss
    lab_t, img_t = training_tensors(images, labels, k.n_classes)
    n = min(cfg.n_grid, len(images))
    z = torch.randn(2, n, opts.z_dim, generator=torch.Generator().manual_seed(P.seed)) if opts.z_dim else None
    fixed = (lab_t[:n], img_t[:n], z) if z is not None else (lab_t[:n], img_t[:n])
    result = train_gan(trainer, TensorBatches(lab_t, img_t, batch_size=cfg.batch_size), steps=cfg.steps,
                       out_dir=out_dir, seed=P.seed, args=args, fixed_batch=fixed,
                       checkpoint_every=cfg.checkpoint_every, sample_every=cfg.checkpoint_every,
                       log_every=max(1, cfg.steps // 500), progress=progress, desc=f"SPADE {k.set_name}")
    backbone = loss.backbone if loss is not None else "none"
    done_file = Path(out_dir) / "checkpoints" / "COMPLETE.json"
    if done_file.is_file():  # record the backbone beside the run (read back when the run is loaded)
        from histolib.fileio import write_json

        write_json(done_file, {**json.loads(done_file.read_text()), "perceptual": backbone})
    trainer.G.eval()
    return SpadeRun(kind, trainer, result.log, result.seconds, Path(out_dir), backbone)


def network_table(P) -> list[dict]:
    """Per model: label map, generator / discriminator sizes and the losses in use."""
    from histolib.models.spade import count_parameters

    rows = []
    for k in LABEL_MAPS.values():
        o = spade_options(P, k.n_classes)
        with torch.device("meta"):
            t = SpadeTrainer(o)
        rows.append({"model": k.set_name, "label map": f"{k.label} ({k.n_classes} classes)",
                     "G parameters": count_parameters(t.G), "G first block": f"{o.image_size // 32} px",
                     "D": f"{o.num_D} scales x {o.n_layers_D} layers", "D parameters": count_parameters(t.D),
                     "z_dim": o.z_dim, "ADA": ", ".join(o.ada_ops) or "off"})
    return rows


# --------------------------------------------------------------------------------------------------
# Deformations and the five training sets (section II-C)
# --------------------------------------------------------------------------------------------------

@dataclass
class Deformed:
    """``n_copies`` deformations of each patch; arrays are ``(n_copies, N, ...)``.

    Attributes:
        images: ``(K, N, H, W, 3)`` uint8.
        masks: ``(K, N, H, W)`` uint8 in {0, 1}.
        structure: ``(K, N, H, W)`` uint8 in 0..3, the structure label maps warped with the masks.
    """

    images: np.ndarray
    masks: np.ndarray
    structure: np.ndarray

    def labels(self, kind: str) -> np.ndarray:
        return self.masks if get_kind(kind).name == "gtmask" else self.structure


def deform_copies(images, masks, structure, n_copies: int, seed: int, sigma: float, points: int = 3,
                  chunk: int = 64) -> Deformed:
    """Section II-A: ``n_copies`` random grid deformations of every patch.

    Copy ``k`` of patch ``i`` uses the displacement drawn from :func:`item_seed` ``(seed, 1, k, i)``
    (so the draw does not depend on batching), the same for the image (cubic), the mask and the
    structure map (nearest, warped together so they stay aligned); ``sigma`` is in px of a 256-px
    patch and is scaled to the patch size; padding is symmetric.
    """
    from histolib.ops.deform import elastic_deform, random_displacement

    images = _check_images(images)
    masks, structure = np.asarray(masks).astype(np.int64), np.asarray(structure).astype(np.int64)
    n, h, w = images.shape[:3]
    if masks.shape != (n, h, w) or structure.shape != (n, h, w):
        raise ParamError(f"masks {masks.shape} and structure {structure.shape} must be {(n, h, w)}")
    scaled = sigma * w / 256
    out_img = np.empty((n_copies, n, h, w, 3), np.uint8)
    out_lab = np.empty((n_copies, n, h, w), np.int64)
    combined = torch.from_numpy(masks * 8 + structure)  # one label map keeps mask and structure aligned
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    for k in range(n_copies):
        for s in range(0, n, chunk):
            idx = range(s, min(s + chunk, n))
            disp = torch.cat([random_displacement(1, (h, w), scaled, points,
                                                  torch.Generator().manual_seed(item_seed(seed, 1, k, i)))
                              for i in idx])
            x, lab = elastic_deform(x_all[s:s + len(idx)].float(), combined[s:s + len(idx)], displacement=disp)
            out_img[k, s:s + len(idx)] = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            out_lab[k, s:s + len(idx)] = lab.numpy()
    return Deformed(out_img, (out_lab // 8).astype(np.uint8), (out_lab % 8).astype(np.uint8))


def _pairs(images: np.ndarray, masks: np.ndarray, prefix: str):
    from histolib.data.folder import Pairs

    return Pairs(np.ascontiguousarray(images), np.ascontiguousarray(masks),
                 [f"{prefix}_{i:06d}.png" for i in range(len(images))])


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, *a.shape[2:])


def build_training_sets(deformed: Deformed, generators: dict, seed: int, batch_size: int = 32) -> dict:
    """The five training sets of section II-C, built offline.

    Args:
        deformed: :func:`deform_copies` of the real U-Net training patches (``K`` copies).
        generators: ``{"gtmask": G, "structure": G}``: trained SPADE generators.
        seed: noise seed of the synthesis (copy ``k`` uses ``seed + k``).
        batch_size: synthesis batch.

    Returns:
        ``{set name: Pairs}`` in :data:`SETS` order; every set has ``K x N`` patches:
        ``Real`` = all deformed real copies; ``SPADE-<kind>`` = the generator's image for every deformed
        label map, labelled with the deformed mask; ``Real + SPADE-<kind>`` = real copies
        ``0 .. K//2 - 1`` + synthetic copies ``K//2 .. K - 1``.
    """
    k_copies = deformed.images.shape[0]
    if k_copies < 2:
        raise ParamError(f"need at least 2 deformations per patch for the mixtures, got {k_copies}")
    half = k_copies // 2
    sets = {"Real": _pairs(_flat(deformed.images), _flat(deformed.masks), "real")}
    synthetic = {}
    for kind, G in generators.items():
        k = get_kind(kind)
        labels = deformed.labels(kind)
        synthetic[kind] = np.stack([synthesize(G, labels[c], seed=seed + c, batch_size=batch_size)
                                    for c in range(k_copies)])
        sets[k.set_name] = _pairs(_flat(synthetic[kind]), _flat(deformed.masks), kind)
    for kind in generators:
        k = get_kind(kind)
        images = np.concatenate([_flat(deformed.images[:half]), _flat(synthetic[kind][half:])])
        masks = np.concatenate([_flat(deformed.masks[:half]), _flat(deformed.masks[half:])])
        sets[f"Real + {k.set_name}"] = _pairs(images, masks, f"real_{kind}")
    return {name: sets[name] for name in SETS if name in sets}


# --------------------------------------------------------------------------------------------------
# Image quality: KID and diversity
# --------------------------------------------------------------------------------------------------

def feature_net(cfg: SpadeParams, gan_images, seed: int) -> FeatureNet:
    """The offline KID/diversity backbone (``cfg.kid_features``); its ``backbone`` says which it is."""
    return load_feature_net(cfg.kid_features, images=gan_images, seed=seed, steps=cfg.kid_encoder_steps)


def image_quality(G, labels, real_images, net: FeatureNet, seed: int, n_subsets: int = 50) -> dict:
    """KID and diversity of one generator on a set of label maps, against real patches.

    Args:
        G: a trained SPADE generator.
        labels: ``(N, H, W)`` label maps (e.g. of the test patches) in its classes.
        real_images: ``(M, H, W, 3)`` uint8 real patches to compare with.
        net: feature network.
        seed: noise seed (a second draw for the same label maps uses ``seed + 1``) and subset seed.
        n_subsets: KID subsets of half the smaller set.

    Returns:
        ``kid``, ``kid_std``; ``diversity`` (mean pairwise feature distance between outputs for
        different label maps), ``diversity_real`` (the same over the real patches) and their
        ``diversity_ratio``; ``noise_diversity`` (mean distance between the two noise draws of one
        label map) and ``noise_ratio`` = ``noise_diversity / diversity_real`` (0: the noise is
        ignored); ``outputs``: the first draw, ``(N, H, W, 3)`` uint8.
    """
    fake = synthesize(G, labels, seed=seed)
    fake2 = synthesize(G, labels, seed=seed + 1)
    f_real, f1, f2 = (extract_features(net, x) for x in (real_images, fake, fake2))
    k = kid(f_real, f1, n_subsets=n_subsets, subset_size=max(2, min(len(f_real), len(f1)) // 2), rng=seed)
    div = diversity(np.stack([f1, f2], axis=1))
    real_div = mean_pairwise_distance(f_real)
    noise = float(np.linalg.norm(f1 - f2, axis=1).mean())
    return {"kid": k["kid"], "kid_std": k["kid_std"], "diversity": div["across_conditions"],
            "diversity_real": real_div,
            "diversity_ratio": div["across_conditions"] / real_div if real_div > 0 else math.nan,
            "noise_diversity": noise, "noise_ratio": noise / real_div if real_div > 0 else math.nan,
            "backbone": net.backbone, "outputs": fake}


# --------------------------------------------------------------------------------------------------
# Table I, paired tests and claims
# --------------------------------------------------------------------------------------------------

def _by_set(rows: list[dict]) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(r["set"], {})[int(r["seed"])] = r
    return out


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.2f}" if std != std else f"{mean:.2f} ± {std:.2f}"


def results_table(rows: list[dict]) -> list[dict]:
    """Table I: per training set, Dice / precision / recall (percent) mean +- std over seeds with the
    95% t-interval of the mean, and the paper's numbers beside.

    Args:
        rows: :func:`histolib.train.segmentation.run_experiment` rows.
    """
    by = _by_set(rows)
    out = []
    for name in [s for s in SETS if s in by] + [s for s in by if s not in SETS]:
        runs = [by[name][s] for s in sorted(by[name])]
        row = {"training set": name, "n_train": runs[0].get("n_train", ""), "seeds": len(runs)}
        for metric in ("dice", "precision", "recall"):
            s = summarize([100 * r[metric] for r in runs])
            row[metric] = _fmt(s["mean"], s["std"])
            row[f"{metric} 95% CI"] = f"[{s['ci_low']:.2f}, {s['ci_high']:.2f}]" if s["n"] > 1 else ""
        paper = PAPER_TABLE.get(name)
        for metric in ("dice", "precision", "recall"):
            row[f"paper {metric}"] = _fmt(*paper[metric]) if paper else ""
        out.append(row)
    return out


def summary_numbers(rows: list[dict]) -> dict:
    """``{set: {metric: summarize(...)}}`` in [0, 1] units, for ``metrics.json``."""
    by = _by_set(rows)
    return {name: {m: summarize([by[name][s][m] for s in sorted(by[name])]) for m in ("dice", "precision", "recall")}
            for name in by}


def paired_tests(rows: list[dict], baseline: str = "Real", metric: str = "dice") -> list[dict]:
    """Each set against ``baseline`` over the same seeds: mean difference (points), its 95% interval
    and a paired two-sided t-test; with the paper's difference beside."""
    by = _by_set(rows)
    out = []
    if baseline not in by:
        return out
    for name in by:
        if name == baseline:
            continue
        seeds = sorted(set(by[name]) & set(by[baseline]))
        a = [by[name][s][metric] for s in seeds]
        b = [by[baseline][s][metric] for s in seeds]
        t = paired_test(a, b)
        d = summarize([100 * (x - y) for x, y in zip(a, b, strict=True)]) if seeds else None
        paper = (PAPER_TABLE[name][metric][0] - PAPER_TABLE[baseline][metric][0]
                 if name in PAPER_TABLE and baseline in PAPER_TABLE else math.nan)
        out.append({"set": name, "vs": baseline, "seeds": len(seeds),
                    "difference (points)": d["mean"] if d else math.nan,
                    "95% CI": f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]" if d and d["n"] > 1 else "",
                    "t": t["t"], "p": t["p"], "paper difference": paper})
    return out


def variance_ratio_test(a, b) -> dict:
    """One-sided F-test of ``var(a) < var(b)`` (independent normal samples).

    ``F = s_a^2 / s_b^2``, ``p = P(F_{n_a-1, n_b-1} <= F)``. With the few seeds of a CPU run the test
    has little power; read it with the two standard deviations.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or b.size < 2:
        return {"F": math.nan, "p": math.nan, "std_a": math.nan, "std_b": math.nan}
    va, vb = a.var(ddof=1), b.var(ddof=1)
    if va == 0 or vb == 0:  # identical runs (e.g. a degenerate model): no test
        return {"F": math.nan, "p": math.nan, "std_a": float(np.sqrt(va)), "std_b": float(np.sqrt(vb))}
    f = va / vb
    return {"F": float(f), "p": float(stats.f.cdf(f, a.size - 1, b.size - 1)), "std_a": float(np.sqrt(va)),
            "std_b": float(np.sqrt(vb))}


def _paired(by, a: str, b: str) -> tuple[dict, dict]:
    seeds = sorted(set(by[a]) & set(by[b]))
    x = [by[a][s]["dice"] for s in seeds]
    y = [by[b][s]["dice"] for s in seeds]
    return paired_test(x, y), summarize([100 * (u - v) for u, v in zip(x, y, strict=True)])


def _direction_verdict(test: dict, alpha: float = 0.05) -> str:
    p, diff = test["p"], test["mean_diff"]
    if p != p:
        return "inconclusive"
    if p < alpha:
        return "reproduced" if diff > 0 else "not reproduced"
    return "inconclusive"


def claims(rows: list[dict], alpha: float = 0.05) -> list[dict]:
    """The paper's claims (section III), the evidence measured here and a verdict for each.

    Verdicts: ``reproduced`` when the paired test (over the same seeds) finds the paper's direction
    at level ``alpha``; ``not reproduced`` when it finds the opposite direction; ``inconclusive``
    otherwise. For the standard-deviation claim: a one-sided F-test per mixture.
    """
    by = _by_set(rows)
    out = []
    need = set(SETS)
    if not need <= set(by):
        return out
    means = {s: float(np.mean([r["dice"] for r in by[s].values()])) for s in SETS}
    best = max(means, key=means.get)
    mix = "Real + SPADE-GTMask"
    t_real, d_real = _paired(by, mix, "Real")
    others = [s for s in SETS if s != mix]
    beaten_by = [s for s in others if _paired(by, s, mix)[0]["p"] < alpha and _paired(by, s, mix)[0]["mean_diff"] > 0]
    if beaten_by or (t_real["p"] == t_real["p"] and t_real["p"] < alpha and t_real["mean_diff"] < 0):
        v1 = "not reproduced"
    elif best == mix and t_real["p"] == t_real["p"] and t_real["p"] < alpha:
        v1 = "reproduced"
    else:
        v1 = "inconclusive"
    out.append({
        "claim": "Mixing real and GT-mask synthesis gives the best Dice (Table I: 94.07, +0.76 over Real)",
        "evidence": f"best mean Dice: {best} ({100 * means[best]:.2f}); {mix} - Real = {d_real['mean']:+.2f} "
                    f"points [{d_real['ci_low']:+.2f}, {d_real['ci_high']:+.2f}], p = {t_real['p']:.3g}"
                    + (f"; significantly better: {', '.join(beaten_by)}" if beaten_by else ""),
        "test": f"paired t-test over seeds (alpha {alpha}) against Real and every other set",
        "verdict": v1})
    t, d = _paired(by, mix, "Real + SPADE-Structure")
    out.append({
        "claim": "Noisy GT-mask patches help more than structure patches when mixed with real ones "
                 "(94.07 vs 93.22)",
        "evidence": f"{mix} - Real + SPADE-Structure = {d['mean']:+.2f} points [{d['ci_low']:+.2f}, "
                    f"{d['ci_high']:+.2f}], p = {t['p']:.3g}",
        "test": f"paired t-test over seeds (alpha {alpha})", "verdict": _direction_verdict(t, alpha)})
    t, d = _paired(by, "SPADE-Structure", "SPADE-GTMask")
    out.append({
        "claim": "Structure beats GT-mask when training on synthetic data alone (88.33 vs 85.86, +2.47)",
        "evidence": f"SPADE-Structure - SPADE-GTMask = {d['mean']:+.2f} points [{d['ci_low']:+.2f}, "
                    f"{d['ci_high']:+.2f}], p = {t['p']:.3g}",
        "test": f"paired t-test over seeds (alpha {alpha})", "verdict": _direction_verdict(t, alpha)})
    real = [r["dice"] for r in by["Real"].values()]
    tests = {m: variance_ratio_test([r["dice"] for r in by[m].values()], real)
             for m in ("Real + SPADE-GTMask", "Real + SPADE-Structure")}
    lower = all(t["std_a"] < t["std_b"] for t in tests.values())  # NaN p (zero variance) stays inconclusive
    significant = all(t["p"] == t["p"] and t["p"] < alpha for t in tests.values())
    higher_sig = any(t["p"] == t["p"] and (1 - t["p"]) < alpha for t in tests.values())
    v3 = "reproduced" if lower and significant else "not reproduced" if higher_sig else "inconclusive"
    out.append({
        "claim": "Mixing real and synthetic patches lowers the std of Dice (0.17 and 0.14 vs 0.46 for Real)",
        "evidence": "; ".join(f"{m}: std {100 * t['std_a']:.2f} vs Real {100 * t['std_b']:.2f} (F-test p = "
                              f"{t['p']:.3g})" for m, t in tests.items()),
        "test": f"one-sided F-test of variances per mixture (alpha {alpha}); {len(real)} seeds", "verdict": v3})
    return out


# --------------------------------------------------------------------------------------------------
# Curves and figures
# --------------------------------------------------------------------------------------------------

LOSS_KEYS = ("loss_D_real", "loss_D_fake", "loss_G_adv", "loss_G_fm", "loss_G_perceptual", "D_real", "D_fake",
             "p", "r_t")


def loss_curves(runs: dict[str, SpadeRun]) -> list[dict]:
    """Long-format rows ``{model, step, <losses>, p, r_t}`` from every run's log (CSV, DVC plots)."""
    out = []
    for kind, run in runs.items():
        for row in run.log:
            out.append({"model": get_kind(kind).set_name, "step": row["step"],
                        **{k: row[k] for k in LOSS_KEYS if k in row}})
    return out


def save_curves(rows: list[dict], out: str | Path) -> list[Path]:
    """One CSV per model, ``out/gan_curves_<kind>.csv`` (step, losses, p, r_t): DVC plots."""
    import pandas as pd

    df, paths = pd.DataFrame(rows), []
    for k in LABEL_MAPS.values():
        if len(df) and (df["model"] == k.set_name).any():
            path = Path(out) / f"gan_curves_{k.name}.csv"
            df[df["model"] == k.set_name].drop(columns="model").to_csv(path, index=False)
            paths.append(path)
    return paths


def curves_figure(rows: list[dict]):
    """GAN loss curves (D hinge real/fake, G adversarial, feature matching, perceptual) and the ADA
    probability ``p`` with ``r_t``, per model."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(rows)
    panels = [("loss_D_real", "D hinge, real"), ("loss_D_fake", "D hinge, fake"), ("loss_G_adv", "G adversarial"),
              ("loss_G_fm", "feature matching"), ("loss_G_perceptual", "perceptual"), ("p", "ADA p"),
              ("r_t", "ADA r_t (target 0.6)")]
    panels = [p for p in panels if p[0] in df]
    ncol = min(4, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.5 * nrow), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        for name, g in df.groupby("model", sort=False):
            y = g[key]
            if key not in ("p",):
                y = y.rolling(max(1, len(y) // 50), min_periods=1).mean()
            ax.plot(g["step"], y, label=name, lw=1.1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def inputs_above_outputs(labels: np.ndarray, n_classes: int, outputs: dict[str, np.ndarray], title: str,
                         real: np.ndarray | None = None):
    """Figs. 3 and 5 of the paper: label maps (top row) above the synthesis results (rows below)."""
    from histolib import viz

    rows = [[viz.label_map_to_rgb(m, n_classes) for m in labels]]
    names = ["label map"]
    if real is not None:
        rows.append(list(real))
        names.append("real")
    for name, imgs in outputs.items():
        rows.append(list(imgs))
        names.append(name)
    return viz.image_grid(rows, row_labels=names, title=title)


def patches_figure(images: np.ndarray, masks: np.ndarray):
    """Fig. 1 of the paper: patches (top) and their ground-truth masks as outlines (bottom)."""
    from histolib import viz

    rows = [list(images), [viz.overlay(i, m) for i, m in zip(images, masks, strict=True)]]
    return viz.image_grid(rows, row_labels=["patch", "GT mask"], title="Fig. 1: glomerulus patches and their masks")


def synthesis_figure(deformed: Deformed, sets: dict, kind: str, n: int):
    """Fig. 3 (``gtmask``) or Fig. 5 (``structure``): the first ``n`` deformed label maps of the first
    deformation, the deformed real patches, and the model's synthesis for them."""
    k = get_kind(kind)
    labels = deformed.labels(kind)[0][:n]
    return inputs_above_outputs(labels, k.n_classes, {k.set_name: np.asarray(sets[k.set_name].images)[:n]},
                                f"{k.figure}: {k.label}s (top) and SPADE synthesis (bottom)",
                                real=deformed.images[0][:n])


def save_training_samples(runs: dict[str, SpadeRun], out: str | Path) -> dict[str, Path]:
    """Copy each run's last fixed-label-map sample grid to ``out/training_samples_<kind>.png``."""
    import shutil

    saved = {}
    for kind, run in runs.items():
        grids = sorted((Path(run.folder) / "samples").glob("step_*.png"))
        if grids:
            saved[kind] = Path(shutil.copyfile(grids[-1], Path(out) / f"training_samples_{kind}.png"))
    return saved


def texture_figure(images: np.ndarray, masks: np.ndarray, structure: np.ndarray, threshold: float):
    """Fig. 4 of the paper: real patches, their binary texture masks and the 4-class structure maps."""
    from histolib import viz

    tex = texture_masks(images, threshold)
    rows = [list(images), [np.repeat(t[..., None] * 255, 3, 2).astype(np.uint8) for t in tex],
            [np.repeat(m[..., None] * 255, 3, 2).astype(np.uint8) for m in masks],
            [viz.label_map_to_rgb(s, 4) for s in structure]]
    return viz.image_grid(rows, row_labels=["patch", f"texture (S > {threshold})", "GT mask", "structure map"],
                          title="Fig. 4: texture masks and structure label maps of real patches")


def sets_figure(sets: dict, n: int, seed: int):
    """One row of example patches per training set (the same items in every row)."""
    from histolib import viz

    rows, names = [], []
    first = next(iter(sets.values()))
    index = np.random.default_rng(seed).permutation(len(first))[:n]
    for name, pairs in sets.items():
        imgs = np.asarray(pairs.images)
        idx = index[index < len(imgs)]
        rows.append([viz.overlay(imgs[i], np.asarray(pairs.masks)[i], alpha=0.0) for i in idx])
        names.append(name)
    return viz.image_grid(rows, row_labels=names, title="Training sets of section II-C (mask outline in green)")


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an ``(H, W, 3)`` uint8 image as PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)
    return path


def metrics_summary(rows: list[dict], quality: dict[str, dict], claims_rows: list[dict],
                    runs: dict[str, SpadeRun]) -> dict:
    """What ``results/01/metrics.json`` holds (numbers only, DVC-metrics friendly)."""
    q = {kind: {k: v for k, v in s.items() if k != "outputs"} for kind, s in quality.items()}
    final = {}
    for kind, run in runs.items():
        last = run.log[-1] if run.log else {}
        final[kind] = {"steps": last.get("step", 0), "ada_p": last.get("p", 0.0), "seconds": run.seconds,
                       "perceptual": run.perceptual}
    return {"table1": summary_numbers(rows), "paired_vs_real": paired_tests(rows), "image_quality": q,
            "spade": final, "claims": [{"claim": c["claim"], "verdict": c["verdict"]} for c in claims_rows]}
