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

Evidence (issue "Evidence that holds", ``histolib.report``): each SPADE model is trained
``protocol.n_gan_seeds`` times (replicate ``g`` in ``<model folder>/g<g>``, seed
``replicate_seeds(seed, n)[g]``); every synthetic set is built once per replicate (the deformations
are shared: they are the real data's) and named ``<set>@g<g>``, and crossed with the U-Net seeds;
``Real`` is trained once per seed, exactly as before (notebook 02 reuses those runs). Table I and the
tests use the two-level model (generator means as units). Each replicate renders the test label maps;
the ``Real`` U-Net of the first seed segments them, and its Dice against the test masks beside its
Dice on the real test images is the generator's faithfulness; a claim resting on a label map whose
replicates are not all above ``protocol.faithfulness_gate`` x real is untestable here.

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

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from histolib import report
from histolib.config import knob, section
from histolib.errors import ParamError
from histolib.metrics.image import diversity, kid, mean_pairwise_distance
from histolib.report import Claim, Precondition, single_level
from histolib.repro import replicate_seeds
from histolib.train.checkpoint import fingerprint
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
    lr_G: float = knob("generator Adam learning rate (TTUR, reference: 1e-4)", min=0.0, max=1.0)
    lr_D: float = knob("discriminator Adam learning rate (TTUR, reference: 4e-4)", min=0.0, max=1.0)
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
            "data": fingerprint(images, labels)}


def train_spade(kind: str, P, images, masks, out_dir: str | Path, perceptual: PerceptualLoss | None | str = "auto",
                progress: bool = True, seed: int | None = None) -> SpadeRun:
    """Train (or resume, or load) the SPADE model of ``kind`` on the ``gan`` patches.

    Args:
        kind: ``"gtmask"`` or ``"structure"``.
        P: loaded params (sections ``spade`` and ``data``).
        images: ``(N, H, W, 3)`` uint8 ``gan`` patches.
        masks: ``(N, H, W)`` binary masks of those patches.
        out_dir: checkpoints, ``log.jsonl`` and ``samples/`` (fixed label maps: rows = label map,
            real patch, two noise draws).
        perceptual: a prebuilt :class:`PerceptualLoss` (to share one between models), ``None``, or
            ``"auto"``: :func:`perceptual_loss` from the params.
        progress: show a progress bar.
        seed: seeds weights, steps, the fixed noise and the perceptual encoder (``None``: ``P.seed``;
            generator replicate ``g`` passes :func:`histolib.repro.replicate_seeds`' ``g``-th seed).

    Returns:
        :class:`SpadeRun`; a complete run with the same options is loaded without training.
    """
    from histolib.train.gan import TensorBatches, complete_run, load_task_state, read_log, train_gan

    k, cfg = get_kind(kind), P.spade
    seed = P.seed if seed is None else int(seed)
    images = _check_images(images)
    labels = label_maps(images, masks, kind, cfg.structure_threshold)
    opts = spade_options(P, k.n_classes)
    trainer = SpadeTrainer(opts, seed=seed)
    net_kind = perceptual_kind(cfg) if perceptual == "auto" else perceptual.net.kind if perceptual else "none"
    args = run_args(kind, opts, cfg, images, labels, net_kind)
    done = complete_run(out_dir, args, cfg.steps, seed)
    if done is not None:  # a finished run (e.g. the nb01_train stage's output): load, write nothing
        load_task_state(trainer, done.checkpoint)
        trainer.G.eval()
        return SpadeRun(kind, trainer, read_log(out_dir), float(done.summary.get("seconds", 0.0)), Path(out_dir),
                        done.summary.get("perceptual", net_kind))
    loss = perceptual_loss(cfg, images, seed) if perceptual == "auto" else perceptual
    trainer.perceptual = loss
    lab_t, img_t = training_tensors(images, labels, k.n_classes)
    n = min(cfg.n_grid, len(images))
    z = torch.randn(2, n, opts.z_dim, generator=torch.Generator().manual_seed(seed)) if opts.z_dim else None
    fixed = (lab_t[:n], img_t[:n], z) if z is not None else (lab_t[:n], img_t[:n])
    backbone = loss.backbone if loss is not None else "none"
    result = train_gan(trainer, TensorBatches(lab_t, img_t, batch_size=cfg.batch_size), steps=cfg.steps,
                       out_dir=out_dir, seed=seed, args=args, fixed_batch=fixed,
                       checkpoint_every=cfg.checkpoint_every, sample_every=cfg.checkpoint_every,
                       log_every=max(1, cfg.steps // 500), progress=progress, desc=f"SPADE {k.set_name}",
                       summary={"perceptual": backbone})  # the backbone, read back when the run is loaded
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
# Generator replicates (issue "Evidence that holds")
# --------------------------------------------------------------------------------------------------

def replicate_folder(folder: str | Path, g: int) -> Path:
    """Where replicate ``g`` of a label map's SPADE model lives: ``folder/g<g>``."""
    return Path(folder) / f"g{int(g)}"


def generator_seeds(P) -> list[int]:
    """The seeds of the ``protocol.n_gan_seeds`` generator replicates (replicate 0 = ``P.seed``)."""
    return replicate_seeds(P.seed, P.protocol.n_gan_seeds)


def train_replicates(kind: str, P, images, masks, folder: str | Path, progress: bool = True) -> list[SpadeRun]:
    """:func:`train_spade` once per generator replicate: replicate ``g`` with seed
    :func:`generator_seeds` ``[g]`` into :func:`replicate_folder` ``(folder, g)`` (a complete one is loaded)."""
    return [train_spade(kind, P, images, masks, replicate_folder(folder, g), progress=progress, seed=s)
            for g, s in enumerate(generator_seeds(P))]


def replicate_set(name: str, g: int | None) -> str:
    """The run name of training set ``name`` built with generator replicate ``g``: ``"SPADE-GTMask@g1"``
    (``Real`` and ``g=None``: the name itself)."""
    return name if g is None or name == "Real" else f"{name}@g{int(g)}"


def split_set(run_name: str) -> tuple[str, int | None]:
    """``"SPADE-GTMask@g1"`` -> ``("SPADE-GTMask", 1)``; ``"Real"`` -> ``("Real", None)``."""
    base, sep, g = run_name.rpartition("@g")
    return (base, int(g)) if sep and g.isdigit() else (run_name, None)


def set_kind(name: str) -> str | None:
    """The label map a training set's synthesis comes from (``None`` for ``Real``)."""
    base = split_set(name)[0]
    return next((k.name for k in LABEL_MAPS.values() if base.endswith(k.set_name)), None)


def replicate_training_sets(deformed: Deformed, generators: dict[str, list], seeds: list[int],
                            batch_size: int = 32) -> dict:
    """The training sets of every generator replicate: ``Real`` once, then for replicate ``g`` the four
    synthetic sets of :func:`build_training_sets` named :func:`replicate_set` ``(name, g)``.

    Args:
        deformed: the deformations of the real training patches (shared by every replicate: they are
            the real data's, drawn with the study seed).
        generators: ``{kind: [G_0, G_1, ...]}``, one generator per replicate.
        seeds: the replicates' seeds (:func:`generator_seeds`); replicate ``g``'s synthesis noise.
    """
    n = {len(v) for v in generators.values()}
    if len(n) > 1 or (n and n.pop() != len(seeds)):
        raise ParamError(f"need one generator per replicate seed {seeds}, got "
                         f"{ {k: len(v) for k, v in generators.items()} }")
    out = {}
    for g, seed in enumerate(seeds):
        sets = build_training_sets(deformed, {k: gens[g] for k, gens in generators.items()}, seed, batch_size)
        out.setdefault("Real", sets["Real"])
        out.update({replicate_set(name, g): p for name, p in sets.items() if name != "Real"})
    return out


def replicate_view(sets: dict, g: int = 0) -> dict:
    """``Real`` and replicate ``g``'s sets under their plain names (for the figures)."""
    return {split_set(name)[0]: p for name, p in sets.items() if split_set(name)[1] in (None, g)}


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
# Faithfulness, Table I and the claims of section III
# --------------------------------------------------------------------------------------------------

PAPER_CONDITIONS = ("256-px patches of real PAS-stained kidney slides; one SPADE model per label map trained on 660 "
                    "other patches; 660 training patches x 10 deformations, 400 validation and 431 test patches; "
                    "mean ± std over 5 U-Net trainings, no interval, one generator per label map.")
MIX_GT, MIX_ST = "Real + SPADE-GTMask", "Real + SPADE-Structure"
METRICS = ("dice", "precision", "recall")


def generator_faithfulness(segment, renders: dict[str, list[np.ndarray]], test_images, test_masks) -> dict:
    """Faithfulness of every generator replicate (:func:`histolib.metrics.faithfulness.faithfulness`).

    Args:
        segment: the real-trained segmenter (the ``Real`` U-Net of the first seed), images -> masks.
        renders: ``{kind: [images of replicate 0, ...]}``: each generator's rendering of the *test*
            label maps (GT masks or structure maps of the test split), ``(N, H, W, 3)`` uint8.
        test_images, test_masks: the real test split; the masks are what every rendering is scored
            against (a structure map's glomerulus is its mask).

    Returns:
        ``{kind: [result per replicate]}`` (``synthetic``, ``real``, ``ratio``, ...).
    """
    from histolib.metrics.faithfulness import faithfulness

    return {kind: [faithfulness(segment, out, test_masks, test_images, test_masks) for out in outs]
            for kind, outs in renders.items()}


def faithfulness_gates(faith: dict | None, kinds, gate: float) -> list[Precondition]:
    """:func:`histolib.report.faithfulness_gates` for each label map in ``kinds`` (every replicate must
    pass; the segmenter must beat the all-foreground prediction)."""
    return [p for kind in kinds
            for p in report.faithfulness_gates((faith or {}).get(kind), gate, name=get_kind(kind).set_name)]


def set_groups(rows: list[dict], base: str, metric: str = "dice") -> list[list[float]]:
    """Scores of training set ``base`` as groups for :func:`histolib.report.two_level_summary`: one list of
    seed scores per generator replicate (replicates and seeds sorted); ``Real`` (no generator) as
    :func:`histolib.report.single_level`. ``[]`` when ``rows`` has no run of it."""
    by: dict = {}
    for r in rows:
        b, g = split_set(r["set"])
        if b == base:
            by.setdefault(g, {})[int(r["seed"])] = float(r[metric])
    if not by:
        return []
    if None in by:
        return single_level([by[None][s] for s in sorted(by[None])])
    return [[by[g][s] for s in sorted(by[g])] for g in sorted(by)]


def _bases(rows: list[dict]) -> list[str]:
    present = list(dict.fromkeys(split_set(r["set"])[0] for r in rows))
    return [s for s in SETS if s in present] + [s for s in present if s not in SETS]


def seed_spread(groups: list[list[float]]) -> tuple[float, int]:
    """The standard deviation over U-Net seeds at a fixed generator (pooled within replicates) and its
    degrees of freedom; for :func:`single_level` groups (``Real``) the plain SD over seeds."""
    if all(len(g) == 1 for g in groups):
        groups = [[v[0] for v in groups]]
    ss = sum(float(((np.asarray(g) - np.mean(g)) ** 2).sum()) for g in groups)
    df = sum(len(g) - 1 for g in groups)
    return (math.sqrt(ss / df) if df else math.nan), df


def spread_test(a: list[list[float]], b: list[list[float]], alpha: float = 0.05) -> dict:
    """Is the seed-to-seed spread of ``a`` different from that of ``b``? Two-sided F-test of variances.

    Units: the U-Net runs at a fixed generator (the paper's "std over runs" is over 5 U-Net trainings
    with one generator), so ``a``'s variance is pooled within its replicates (``G (S - 1)`` df) and
    ``b``'s (``Real``) is over its seeds (``S - 1`` df). ``F = s_a^2 / s_b^2``,
    ``p = 2 min(P(F_{df_a, df_b} <= F), P(F_{df_a, df_b} >= F))``; the effect is ``s_a / s_b - 1``
    (negative: ``a`` spreads less) with the interval ``sqrt(F / F_{1 - alpha/2}) - 1 ..
    sqrt(F / F_{alpha/2}) - 1``. NaN when a variance is 0 or a side has no df.
    """
    sa, dfa = seed_spread(a)
    sb, dfb = seed_spread(b)
    out = {"sd_a": sa, "sd_b": sb, "df_a": dfa, "df_b": dfb, "estimate": math.nan, "ci_low": math.nan,
           "ci_high": math.nan, "p": math.nan, "mde": math.nan,
           "test": f"two-sided F-test of variances over U-Net seeds at a fixed generator ({dfa} vs {dfb} df)"}
    if not (dfa and dfb and sa > 0 and sb > 0):
        return out
    f = sa ** 2 / sb ** 2
    p = 2 * min(stats.f.cdf(f, dfa, dfb), stats.f.sf(f, dfa, dfb))
    lo, hi = f / stats.f.ppf(1 - alpha / 2, dfa, dfb), f / stats.f.ppf(alpha / 2, dfa, dfb)
    return {**out, "estimate": math.sqrt(f) - 1, "ci_low": math.sqrt(lo) - 1, "ci_high": math.sqrt(hi) - 1,
            "p": float(min(1.0, p))}


def _faith_cells(faith: dict | None, kind: str | None) -> dict:
    results = (faith or {}).get(kind) or [] if kind else []
    if not results:
        return {"faithfulness": "—" if kind is None else "not measured", "real score": "—"}
    ratios = ", ".join(f"{r['synthetic']:.3f}" for r in results)
    return {"faithfulness": f"{np.mean([r['synthetic'] for r in results]):.3f} ({ratios})",
            "real score": f"{np.mean([r['real'] for r in results]):.3f}"}


def results_table(rows: list[dict], faith: dict | None = None) -> list[dict]:
    """Table I: per training set, Dice / precision / recall (percent) as the two-level mean with its 95%
    interval (generator replicates, then seeds; ``Real`` over seeds), the number of generators ``G`` and
    seeds, the SD of Dice over seeds, the faithfulness of the set's generators (mean, then per
    replicate) beside the same segmenter's real-image score, and the paper's numbers.

    Args:
        rows: :func:`histolib.train.segmentation.run_experiment` rows (set names from :func:`replicate_set`).
        faith: :func:`generator_faithfulness` (``None``: not measured).
    """
    out = []
    for base in _bases(rows):
        runs = [r for r in rows if split_set(r["set"])[0] == base]
        dice = set_groups(rows, base)
        kind = set_kind(base)
        row = {"training set": base, "n_train": runs[0].get("n_train", ""),
               "G": len(dice) if kind else "—", "seeds": len({r["seed"] for r in runs})}
        for metric in METRICS:
            row[metric] = report.fmt_interval(report.two_level_summary(set_groups(rows, base, metric)))
        row["Dice SD over seeds"] = f"{100 * seed_spread(dice)[0]:.2f}"
        row.update(_faith_cells(faith, kind))
        paper = PAPER_TABLE.get(base)
        for metric in METRICS:
            row[f"paper {metric}"] = report.fmt_mean_std(*paper[metric], scale=1.0) if paper else ""
        out.append(row)
    return out


def summary_numbers(rows: list[dict]) -> dict:
    """``{set: {metric: two_level_summary}}`` in [0, 1] units, for ``metrics.json``."""
    return {b: {m: report.two_level_summary(set_groups(rows, b, m)) for m in METRICS} for b in _bases(rows)}


def differences_vs_real(rows: list[dict], alpha: float = 0.05, metric: str = "dice") -> list[dict]:
    """Each set minus ``Real`` (points): the two-level difference, its interval, Welch's p and the
    minimum detectable effect, with the paper's difference beside."""
    real = set_groups(rows, "Real", metric)
    if not real:
        return []
    out = []
    for base in _bases(rows):
        if base == "Real":
            continue
        d = report.two_level_difference(set_groups(rows, base, metric), real, alpha=alpha)
        paper = PAPER_TABLE.get(base, {}).get(metric, (math.nan,))[0] - PAPER_TABLE["Real"][metric][0]
        out.append({"set": base, "vs": "Real", "difference (points)": 100 * d["estimate"],
                    "95% CI": f"[{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]", "p": d["p"],
                    "MDE (points)": 100 * d["mde"], "paper difference": paper})
    return out


def _claim(key, section, text, comparison, numbers, direction=1, extension=False) -> Claim:
    return Claim(key=key, paper="000", section=section, text=text, metric="test Dice (%)", comparison=comparison,
                 direction=direction, paper_numbers=numbers, extension=extension)


# (claim, test: "mean" | "spread", set a, set b, label maps whose generators the claim rests on)
CLAIMS = (
    (_claim("000-mix-gtmask-best", "Sec. III, Table I",
            "Mixing real patches with patches synthesized from ground-truth masks gives the best segmentation: "
            "the U-Net trained on Real + SPADE-GTMask has the highest Dice of all five training sets (94.07), "
            "0.76 points above the U-Net trained on deformed real patches alone.",
            f"{MIX_GT} - Real", "94.07 vs 93.31 (+0.76); best of the five sets"),
     "mean", MIX_GT, "Real", ("gtmask",)),
    (_claim("000-mix-gtmask-vs-structure", "Sec. III, Table I",
            "Mixed with real patches, the noisy patches synthesized from ground-truth masks help more than the "
            "more realistic patches synthesized from structure label maps (Dice 94.07 vs 93.22).",
            f"{MIX_GT} - {MIX_ST}", "94.07 vs 93.22 (+0.85)"),
     "mean", MIX_GT, MIX_ST, ("gtmask", "structure")),
    (_claim("000-synthetic-structure-vs-gtmask", "Sec. III, Table I",
            "Trained on synthetic patches alone, the U-Net does better with patches synthesized from structure "
            "label maps than with patches synthesized from ground-truth masks (Dice 88.33 vs 85.86).",
            "SPADE-Structure - SPADE-GTMask", "88.33 vs 85.86 (+2.47)"),
     "mean", "SPADE-Structure", "SPADE-GTMask", ("gtmask", "structure")),
    (_claim("000-mix-gtmask-lower-std", "Sec. III, Table I",
            "Mixing real and synthetic patches lowers the standard deviation of Dice over U-Net trainings: "
            "0.17 for Real + SPADE-GTMask against 0.46 for Real.",
            f"SD over seeds of {MIX_GT} / SD of Real - 1", "std 0.17 vs 0.46", direction=-1),
     "spread", MIX_GT, "Real", ("gtmask",)),
    (_claim("000-mix-structure-lower-std", "Sec. III, Table I",
            "Mixing real and synthetic patches lowers the standard deviation of Dice over U-Net trainings: "
            "0.14 for Real + SPADE-Structure against 0.46 for Real.",
            f"SD over seeds of {MIX_ST} / SD of Real - 1", "std 0.14 vs 0.46", direction=-1),
     "spread", MIX_ST, "Real", ("structure",)),
    (_claim("000-mix-structure-vs-real", "Sec. III, Table I (the study's question)",
            "Does mixing real patches with structure-map synthesis change Dice against real patches alone? "
            "The paper reports 93.22 vs 93.31 and claims nothing about it.",
            f"{MIX_ST} - Real", "93.22 vs 93.31 (-0.09)", extension=True),
     "mean", MIX_ST, "Real", ("structure",)),
)


def _best_of_all(rows: list[dict], alpha: float) -> str:
    means = {b: report.two_level_summary(g)["mean"] for b in SETS if (g := set_groups(rows, b))}
    best = max(means, key=means.get)
    runner = max((b for b in means if b != MIX_GT), key=means.get)
    d = report.two_level_difference(set_groups(rows, MIX_GT), set_groups(rows, runner), alpha=alpha)
    return (f"best of all by mean Dice: {best} ({100 * means[best]:.2f}); {MIX_GT} - the best other set "
            f"({runner}) = {100 * d['estimate']:+.2f} points, p = {d['p']:.2g}")


def claims(rows: list[dict], faith: dict | None = None, gate: float = report.FAITHFULNESS_GATE,
           alpha: float = 0.05) -> list[dict]:
    """The claims of section III, assessed by the one verdict rule (:func:`histolib.report.assess`).

    Means are compared by :func:`histolib.report.two_level_difference` (generator replicates as the
    units, ``Real`` over seeds), spreads by :func:`spread_test`. Every claim resting on SPADE output
    carries :func:`faithfulness_gates` of the generators involved (every replicate must pass ``gate``).
    A claim whose sets are missing from ``rows`` is left out.

    Returns:
        :func:`histolib.report.assess` rows in :data:`CLAIMS` order.
    """
    present = set(_bases(rows))
    out = []
    for claim, test, a, b, kinds in CLAIMS:
        if not {a, b} <= present:
            continue
        ga, gb = set_groups(rows, a), set_groups(rows, b)
        if test == "mean":
            d = report.two_level_difference(ga, gb, alpha=alpha)
            detail = (f"{a} {100 * d['a']['mean']:.2f} ({d['a']['n_generators']} units) vs {b} "
                      f"{100 * d['b']['mean']:.2f} ({d['b']['n_generators']} units)")
            if claim.key == "000-mix-gtmask-best" and set(SETS) <= present:
                detail += "; " + _best_of_all(rows, alpha)
            ev = report.evidence_from_test(d, scale=100, unit="points", detail=detail)
        else:
            t = spread_test(ga, gb, alpha)
            ev = report.evidence_from_test(t, unit="(SD ratio - 1)", detail=(
                f"SD of Dice over seeds {100 * t['sd_a']:.2f} ({a}, pooled within {len(ga)} generator(s)) vs "
                f"{100 * t['sd_b']:.2f} (Real) points"))
        out.append(report.assess(claim, ev, faithfulness_gates(faith, kinds, gate), alpha))
    return out


def conditions(P, n_gan: int, n_train: int, seeds: list[int]) -> report.Conditions:
    """What Table I and the claims were measured under (:class:`histolib.report.Conditions`)."""
    c, u = P.spade, P.unet
    return report.Conditions(
        profile=P.profile, resolution=P.data.patch_size, data_source=str(P.data.source), seeds=seeds,
        generator_replicates=P.protocol.n_gan_seeds,
        extra={"SPADE": f"ngf {c.ngf}, {c.steps} steps on {n_gan} `gan` patches",
               "U-Net training": f"{n_train} patches x {c.n_deform} deformations, width {u.width}, depth {u.depth}, "
                                 f"{u.epochs} epochs",
               "faithfulness gate": f"{P.protocol.faithfulness_gate:g} x the Real U-Net's test Dice, every replicate",
               "alpha": P.protocol.alpha})


# --------------------------------------------------------------------------------------------------
# Curves and figures
# --------------------------------------------------------------------------------------------------

LOSS_KEYS = ("loss_D_real", "loss_D_fake", "loss_G_adv", "loss_G_fm", "loss_G_perceptual", "D_real", "D_fake",
             "p", "r_t")


def loss_curves(runs: dict[str, list[SpadeRun]]) -> list[dict]:
    """Long-format rows ``{model, replicate, step, <losses>, p, r_t}`` from every replicate's log."""
    out = []
    for kind, reps in runs.items():
        for g, run in enumerate([reps] if isinstance(reps, SpadeRun) else reps):
            out += [{"model": get_kind(kind).set_name, "replicate": g, "step": row["step"],
                     **{k: row[k] for k in LOSS_KEYS if k in row}} for row in run.log]
    return out


def save_curves(rows: list[dict], out: str | Path) -> list[Path]:
    """One CSV per model, ``out/gan_curves_<kind>.csv`` (step, losses, p, r_t of replicate 0): DVC plots."""
    import pandas as pd

    df, paths = pd.DataFrame(rows), []
    for k in LABEL_MAPS.values():
        if len(df) and (df["model"] == k.set_name).any():
            path = Path(out) / f"gan_curves_{k.name}.csv"
            sel = (df["model"] == k.set_name) & (df.get("replicate", 0) == 0)
            df[sel].drop(columns=[c for c in ("model", "replicate") if c in df]).to_csv(path, index=False)
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
        for (name, rep), g in df.groupby(["model", "replicate"], sort=False):
            y = g[key]
            name = f"{name} g{rep}"
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


def save_training_samples(runs: dict[str, list[SpadeRun]], out: str | Path) -> dict[str, Path]:
    """Copy replicate 0's last fixed-label-map sample grid to ``out/training_samples_<kind>.png``."""
    import shutil

    saved = {}
    for kind, reps in runs.items():
        run = reps if isinstance(reps, SpadeRun) else reps[0]
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


def metrics_summary(rows: list[dict], quality: dict[str, list[dict]], faith: dict, claims_rows: list[dict],
                    runs: dict[str, list[SpadeRun]], cond: report.Conditions) -> dict:
    """What ``results/01/metrics.json`` holds (numbers, the claims rows with full texts and verdicts, the
    conditions); ``quality``, ``faith`` and ``runs`` hold one entry per generator replicate."""
    q = {kind: [{k: v for k, v in s.items() if k != "outputs"} for s in reps] for kind, reps in quality.items()}
    final = {kind: [{"steps": r.log[-1].get("step", 0) if r.log else 0, "ada_p": r.log[-1].get("p", 0.0) if r.log
                     else 0.0, "seconds": r.seconds, "perceptual": r.perceptual} for r in reps]
             for kind, reps in runs.items()}
    f = {kind: {"mean": float(np.mean([r["synthetic"] for r in reps])),
                "real": float(np.mean([r["real"] for r in reps])), "replicates": reps} for kind, reps in faith.items()}
    return {"table1": summary_numbers(rows), "vs_real": differences_vs_real(rows, cond.extra.get("alpha", 0.05)),
            "image_quality": q, "faithfulness": f, "spade": final, "claims": claims_rows,
            "table_conditions": cond.to_dict()}
