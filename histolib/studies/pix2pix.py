"""Notebook 02: the mode-seeking Pix2Pix of Allender et al. (seed 001), its ablations and a downstream test.

Everything notebook 02 does beyond a call and a plot lives here, with tests in
``tests/studies/test_pix2pix.py``. The data are those of notebook 01: the glomerulus patches of the
``gan`` split train the GANs; structure maps threshold each patch (the paper's Fig. 3, "thresholding
the glomeruli images"; by default at its Otsu grey level, see :func:`structure_maps`); downstream
synthetic sets come from the real ``train`` masks and structure maps after one random grid
deformation each (3x3 control points, sigma 20 px at 256 px, scaled to the patch); the U-Nets are the
shared harness (``histolib.train.segmentation.run_experiment``) with the seeds of notebook 01.

Variants (``VARIANTS``): the paper's model (``full``), its two ablations of section 4.2 (Fig. 6), the
conditional discriminator (Fig. 7), and plain Pix2Pix from masks (Fig. 2) for the collapse it shows.

Decisions where the paper is silent or where we replace a manual step:

* Checkpoint choice: the paper "visually selected twelve epochs with appealing results". Here every
  ``eval_every`` steps the generator is scored by KID between its outputs for the *validation*
  conditions and the real validation patches (offline features, ``histolib.train.features``); the
  lowest-KID generator of the second half of training (``select_from``) is the one reported (never
  chosen on test data). The half-way rule: without ImageNet weights the KID features are weak
  (random-init or a small in-pipeline encoder) and rank the blurry generators of the first few
  hundred steps best (cpu profile, phantom: step 80 of 800 had validation KID 1.5e-3 against 18.8e-3
  at step 800, whose patches are far sharper), so early checkpoints are not eligible.
* Training length: not given in the paper; the ``paper`` profile runs Pix2Pix's 200 epochs of 660
  patches at batch 1 (132,000 steps).
* Batch of one with L_ms: Eq. (4) needs two conditions; at batch 1 each step also draws a partner
  condition (``histolib.train.pix2pix.PairBatches``).
* No data augmentation during GAN training (the paper describes none).
* Generator replicates (issue "Evidence that holds"): every variant is trained ``protocol.n_gan_seeds`` times
  (seeds ``histolib.repro.replicate_seeds``, folders ``<variant>/g<k>``); collapse scores are measured per
  replicate and variants are compared with the replicates as units (:func:`variant_difference`); the
  downstream U-Nets cross the full model's replicates with the U-Net seeds.
* Quality beside diversity: every "not collapsed" verdict needs the variant's KID within
  :data:`KID_FACTOR` of the best variant's (:func:`realism_precondition`); the paper's quality and
  downstream claims need the full model to be faithful to its masks (the ``Real`` U-Net's Dice on its
  outputs for the test masks, beside that U-Net's Dice on the real test patches).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from histolib import report
from histolib.config import knob, section
from histolib.errors import ParamError
from histolib.metrics.image import diversity, high_frequency_energy, kid, mean_pairwise_distance
from histolib.models.pix2pix import UPSAMPLES
from histolib.repro import replicate_seeds
from histolib.train.checkpoint import fingerprint, without_later_defaults
from histolib.train.features import FeatureNet, extract_features, images_to_tensor, load_feature_net
from histolib.train.monitor import TrainingLog
from histolib.train.pix2pix import (
    PairBatches,
    Pix2PixOptions,
    Pix2PixTrainer,
    condition_tensor,
    input_sensitivity,
    synthesize,
)

STRUCTURE_METHODS = ("otsu", "texture")


@section("pix2pix")
class Pix2PixParams:
    """Notebook 02: mode-seeking Pix2Pix (Allender et al.), its ablations and downstream U-Nets."""

    variants: list[str] = knob("models trained: full (paper), no_structure, no_ms (Fig. 6), conditional_d "
                               "(Fig. 7), pix2pix (plain Pix2Pix from masks, Fig. 2); one DVC matrix entry each")
    ngf: int = knob("generator base width (paper: 64)", min=1)
    ndf: int = knob("discriminator base width (paper: 64)", min=1)
    kernel_size: int = knob("convolution kernel: 4 (Isola et al.) or 5 (the paper's appendix tables)",
                            choices=(4, 5))
    norm: str = knob("normalisation; instance = the paper's batch norm at batch 1", choices=("instance", "batch"))
    d_head: str = knob("discriminator head: linear (Table 2) or patch (PatchGAN)", choices=("linear", "patch"))
    n_dropout: int = knob("innermost up-blocks with dropout (paper: 3)", min=0)
    dropout: float = knob("dropout probability, also at inference (paper/Pix2Pix: 0.5)", min=0.0, max=0.95)
    batch_size: int = knob("images per step (paper: 1; L_ms then uses a partner condition)", min=1)
    steps: int = knob("optimisation steps per model (paper profile: 200 epochs x 660 patches)", min=1)
    lr: float = knob("Adam learning rate (paper: 2e-4)", min=0.0, max=1.0)
    beta1: float = knob("Adam beta1 (paper: 0.5)", min=0.0, max=1.0)
    beta2: float = knob("Adam beta2 (paper: 0.999)", min=0.0, max=1.0)
    lambda_l1: float = knob("weight of L_L1, Eq. 3 (paper: 10). cpu: 100, the reference Pix2Pix value, a documented "
                            "substitute: at 800 steps lambda 10 leaves magenta/blue speckle (high-frequency energy "
                            "3.1x real) that 100 cuts to 1.3-1.8x, KID 9.9e-3 -> 1.9e-3 (one replicate per run: "
                            "benchmarks/results/pix2pix_speckle_levers.json, pix2pix_speckle_ema_off*.json)", min=0.0)
    mu_ms: float = knob("weight of L_ms, Eq. 4 (paper: 10); variants without L_ms set it to 0", min=0.0)
    ema_kimg: float = knob("half-life, in thousands of images, of a moving average of G's weights that is "
                           "validated, chosen and synthesises (StyleGAN2-ADA's G_ema, ramp-up 0.05); 0: the "
                           "trained G, as the paper. Measured at cpu (lambda_l1 100, 2 seeds, AVX2 CPU): 2.5 gives "
                           "HF energy 1.38 / 1.83 of real against 1.81 / 1.81 without, chroma HF and KID unchanged: "
                           "no reliable gain, so 0 (benchmarks/results/pix2pix_speckle_ema_*.json)", min=0.0)
    upsample: str = knob("generator up-sampling: transpose (the paper, Pix2Pix: stride-2 transposed convolutions), "
                         "resize (nearest-neighbour x2 then a 3x3 convolution) or bilinear (bilinear x2 then a 3x3 "
                         "convolution). Measured at cpu (lambda_l1 100, 800 steps, seeds 0 / 1, AVX2 CPU), HF energy "
                         "/ real: transpose 1.81 / 1.81, resize 1.27 / 1.01 (a faint 2-px block grid), bilinear 0.36 "
                         "(blurred); at lambda_l1 10 resize 1.69 / 1.44 against transpose 3.1 "
                         "(benchmarks/results/pix2pix_speckle_{resize,bilinear}*.json). cpu: resize, a documented "
                         "substitute (the paper's transpose at smoke and paper)", choices=UPSAMPLES)
    structure_map: str = knob("binary structure map: otsu (grey level below the patch's Otsu threshold) or "
                              "texture (paper 000's saturation mask, notebook 01)", choices=STRUCTURE_METHODS)
    structure_threshold: float = knob("saturation threshold of the texture structure map (paper 000: 0.1)",
                                      min=0.0, max=1.0)
    eval_every: int = knob("steps between validation-KID evaluations; the lowest-KID generator is kept", min=1)
    select_from: float = knob("fraction of training before which a checkpoint cannot be chosen (weak offline "
                              "features favour the blurry early generators)", min=0.0, max=1.0)
    kid_features: str = knob("feature network for KID/diversity (histolib.train.features; nothing downloads)",
                             choices=("auto", "vgg19", "inception", "encoder", "random"))
    kid_encoder_steps: int = knob("training steps of the in-pipeline encoder when it is the KID backbone", min=1)
    kid_subsets: int = knob("KID subsets (each of half the test set) for the reported mean +- std", min=1)
    n_bootstrap: int = knob("bootstrap resamples of the test conditions for the collapse-score intervals", min=10)
    n_grid: int = knob("samples per appendix-style batch grid (paper: 48)", min=1)


@dataclass(frozen=True)
class Variant:
    """One trained model of the study."""

    name: str
    structure: bool       # the generator sees the structure map (2 input channels) or the mask only
    mode_seeking: bool    # L_ms (Eq. 4) on, with mu_ms from the params
    conditional_d: bool   # D sees the condition concatenated to the image
    label: str
    paper: str            # what the paper reports for it (figures only: it gives no numbers)


VARIANTS = {v.name: v for v in (
    Variant("full", True, True, False, "mask + structure map, L_ms, D sees the image (the paper's model)",
            "no collapse, very high visual quality (Fig. 5, 8, 9)"),
    Variant("no_structure", False, True, False, "mask only, L_ms (Fig. 6, 2nd row)",
            "collapses, poor-looking results (Fig. 6)"),
    Variant("no_ms", True, False, False, "mask + structure map, no L_ms (Fig. 6, 1st row)",
            "collapses, poor-looking results (Fig. 6)"),
    Variant("conditional_d", True, True, True, "as full, D sees condition ++ image (Fig. 7)",
            "collapse less prominent but visible (Fig. 7)"),
    Variant("pix2pix", False, False, True, "plain Pix2Pix: mask only, no L_ms, conditional D (Fig. 2)",
            "same texture whatever the input (Fig. 2)"),
)}


def get_variant(name: str) -> Variant:
    """The :class:`Variant` called ``name``; :class:`ParamError` naming the known ones otherwise."""
    if name not in VARIANTS:
        raise ParamError(f"unknown Pix2Pix variant {name!r}; one of {list(VARIANTS)}")
    return VARIANTS[name]


def check_variants(names) -> list[str]:
    """Validate ``pix2pix.variants``: known names, no repeats, ``full`` present (it is the paper's model)."""
    names = list(names)
    for n in names:
        get_variant(n)
    if len(set(names)) != len(names):
        raise ParamError(f"pix2pix.variants has repeats: {names}")
    if "full" not in names:
        raise ParamError(f"pix2pix.variants must include 'full' (the paper's model), got {names}")
    return names


def options_for(variant: str | Variant, cfg: Pix2PixParams, patch_size: int) -> Pix2PixOptions:
    """The :class:`Pix2PixOptions` of one variant under the ``pix2pix`` params."""
    v = variant if isinstance(variant, Variant) else get_variant(variant)
    return Pix2PixOptions(
        in_channels=2 if v.structure else 1, image_size=patch_size, ngf=cfg.ngf, ndf=cfg.ndf,
        kernel_size=cfg.kernel_size, n_dropout=min(cfg.n_dropout, int(np.log2(patch_size)) - 1),
        dropout=cfg.dropout, norm=cfg.norm, conditional_d=v.conditional_d, d_head=cfg.d_head,
        lr=cfg.lr, beta1=cfg.beta1, beta2=cfg.beta2, lambda_l1=cfg.lambda_l1,
        mu_ms=cfg.mu_ms if v.mode_seeking else 0.0, eval_every=cfg.eval_every, select_from=cfg.select_from,
        ema_kimg=cfg.ema_kimg, upsample=cfg.upsample)


def network_table(variants, cfg: Pix2PixParams, patch_size: int) -> list[dict]:
    """Per variant: generator and discriminator inputs and sizes, and the loss weights of Eq. (5)."""
    from histolib.models.pix2pix import count_parameters

    rows = []
    for name in variants:
        o = options_for(name, cfg, patch_size)
        with torch.device("meta"):  # shapes only, no memory, no random draws
            t = Pix2PixTrainer(o)
        rows.append({"variant": name, "G input": "mask + structure map" if o.in_channels == 2 else "mask",
                     "G depth": t.G.depth, "G parameters": count_parameters(t.G),
                     "D input": "condition ++ image" if o.conditional_d else "image",
                     "D parameters": count_parameters(t.D), "lambda_l1": o.lambda_l1, "mu_ms": o.mu_ms})
    return rows


def pick(n: int, k: int, seed: int, start: int = 0) -> list[int]:
    """Items ``start .. start + k`` of a seeded permutation of ``range(n)`` (fewer when ``n`` is small)."""
    return [int(i) for i in np.random.default_rng(seed).permutation(n)[start:start + k]]


# --------------------------------------------------------------------------------------------------
# Conditions: masks and structure maps
# --------------------------------------------------------------------------------------------------

@dataclass
class ConditionSet:
    """Patches with their generator inputs.

    Attributes:
        images: ``(N, H, W, 3)`` uint8 real patches.
        masks: ``(N, H, W)`` uint8 in {0, 1}.
        structure: ``(N, H, W)`` uint8 in {0, 1}, the binary structure maps.
    """

    images: np.ndarray
    masks: np.ndarray
    structure: np.ndarray

    def __len__(self) -> int:
        return len(self.masks)

    def conditions(self, variant: str | Variant) -> torch.Tensor:
        """``(N, C, H, W)`` generator input of ``variant`` in [-1, 1] (C = 2 or 1)."""
        v = variant if isinstance(variant, Variant) else get_variant(variant)
        return condition_tensor(self.masks, self.structure if v.structure else None)

    def image_tensor(self) -> torch.Tensor:
        """``(N, 3, H, W)`` float in [-1, 1]."""
        return images_to_tensor(self.images)


def structure_maps(images, method: str = "otsu", threshold: float = 0.1) -> np.ndarray:
    """Binary structure maps (the paper's Fig. 3: "binary images obtained by thresholding the glomeruli
    images"; the threshold is not given).

    * ``"otsu"`` (default): 1 where the grey level (``skimage.color.rgb2gray``) is below the patch's own
      Otsu threshold: dark, stained structures (nuclei, PAS-positive membranes and tufts) against
      lumina, Bowman's space and background. Parameter-free and about balanced (63% of pixels on the
      phantom at 64 px, 56% on real PAS crops).
    * ``"texture"``: paper 000's texture mask (HSV saturation above ``threshold``), the map of notebook
      01. On the phantom it marks 96% of pixels at ``threshold = 0.1`` (81% on real crops): nearly
      constant, so it tells the generator little, which is why it is not the default here.

    Args:
        images: ``(N, H, W, 3)`` uint8.
        method: ``"otsu"`` or ``"texture"``.
        threshold: saturation threshold of ``"texture"``, in [0, 1].

    Returns:
        ``(N, H, W)`` uint8 in {0, 1}; an empty ``(0, H, W)`` array for no images. A uniform patch
        (no threshold to find) gives an all-zero map.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ParamError(f"images must be (N, H, W, 3) uint8, got {images.shape}")
    if method not in STRUCTURE_METHODS:
        raise ParamError(f"structure map method must be one of {STRUCTURE_METHODS}, got {method!r}")
    if not len(images):
        return np.zeros(images.shape[:3], np.uint8)
    if method == "texture":
        from histolib.ops.structure import texture_mask

        return np.asarray(texture_mask(images, threshold), bool).astype(np.uint8)
    from skimage.color import rgb2gray
    from skimage.filters import threshold_otsu

    out = np.zeros(images.shape[:3], np.uint8)
    for i, im in enumerate(images):
        grey = rgb2gray(im)
        if grey.max() > grey.min():
            out[i] = grey < threshold_otsu(grey)
    return out


def condition_set(pairs, method: str = "otsu", threshold: float = 0.1) -> ConditionSet:
    """A :class:`ConditionSet` from prepared pairs (``.images``, binary ``.masks``); structure maps by
    :func:`structure_maps` ``(method, threshold)``."""
    images = np.asarray(pairs.images)
    masks = (np.asarray(pairs.masks) > 0).astype(np.uint8)
    if images.ndim != 4 or masks.shape != images.shape[:3]:
        raise ParamError(f"pairs must hold (N, H, W, 3) images and (N, H, W) masks of one size, got "
                         f"{images.shape} and {masks.shape}")
    return ConditionSet(images, masks, structure_maps(images, method, threshold))


# --------------------------------------------------------------------------------------------------
# Features, KID and the collapse scores
# --------------------------------------------------------------------------------------------------

def feature_net(cfg: Pix2PixParams, gan_images, seed: int) -> FeatureNet:
    """The offline KID/diversity backbone (``cfg.kid_features``); its ``backbone`` says which it is."""
    return load_feature_net(cfg.kid_features, images=gan_images, seed=seed, steps=cfg.kid_encoder_steps)


def full_set_kid(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    """KID on the whole sets (one subset of ``min(N_real, N_fake)``): the low-variance score that
    chooses checkpoints."""
    return kid(real_feats, fake_feats, n_subsets=1, subset_size=min(len(real_feats), len(fake_feats)))["kid"]


def kid_evaluator(net: FeatureNet, val: ConditionSet, variant: str, seed: int):
    """``evaluator(G) -> KID`` between G's outputs for the validation conditions and the real
    validation patches (dropout seed fixed, so two calls on the same G agree)."""
    real = extract_features(net, val.images)
    cond = val.conditions(variant)

    def evaluate(generator) -> float:
        return full_set_kid(real, extract_features(net, synthesize(generator, cond, seed=seed)))

    return evaluate


def _pair_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def _distance_matrix(feats: np.ndarray) -> np.ndarray:
    sq = (feats * feats).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * feats @ feats.T, 0.0))


def _bootstrap_pairs(n: int, n_boot: int, seed: int):
    """``n_boot`` resamples of ``n`` items (with replacement): the index arrays ``(a, b)`` of every
    pair of resampled items, pairs of an item with a copy of itself left out."""
    rng = np.random.default_rng(seed)
    i, j = _pair_index(n)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        a, b = idx[i], idx[j]
        keep = a != b
        yield a[keep], b[keep]


def _percentiles(values: list[float], level: float = 0.95) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def bootstrap_ratio_interval(num: np.ndarray, den: np.ndarray, n_boot: int, seed: int,
                             level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(num[pairs]) / mean(den[pairs])`` over items.

    Args:
        num, den: ``(N, N)`` symmetric pairwise matrices over the same ``N`` items.
        n_boot: resamples of the items (with replacement; pairs of a repeated item with itself are
            dropped).
        seed: resampling seed.
        level: coverage of the interval.

    Returns:
        ``(low, high)``; NaNs when ``N < 3``.
    """
    if len(num) < 3:
        return float("nan"), float("nan")
    vals = [num[a, b].mean() / den[a, b].mean() for a, b in _bootstrap_pairs(len(num), n_boot, seed)
            if den[a, b].mean() > 0]
    return _percentiles(vals, level)


def collapse_scores(generator, test: ConditionSet, variant: str, net: FeatureNet, seed: int,
                    n_subsets: int = 50, n_boot: int = 200) -> dict:
    """Mode-collapse and quality scores of one generator on the test conditions.

    * ``kid`` (+ ``kid_std``): KID between outputs and real test patches, subsets of half the set.
    * ``diversity``: mean pairwise feature distance between outputs for *different* test conditions;
      ``diversity_real`` the same over the real test patches; ``diversity_ratio`` = their ratio, with a
      bootstrap interval over test items (1: as varied as real patches; 0: one image for every input,
      the paper's Fig. 2).
    * ``dropout_diversity``: mean feature distance between two dropout draws for the *same* condition,
      relative to ``diversity_real`` (the randomness the generator actually uses).
    * ``sensitivity``: mean over pairs of ``d(G(x_i), G(x_j)) / d(x_i, x_j)`` on pixels, with ``x`` the
      variant's own input (the reciprocal of the ratio in Eq. 4); ``sensitivity_ratio`` divides by the
      same quantity for the real patches of the same pairs, so variants with different inputs compare.
    * ``hf_energy_ratio``: the outputs' mean power above 0.25 cycles per pixel over the real test
      patches' (:func:`~histolib.metrics.image.high_frequency_energy`; speckle raises it, blur lowers it).

    Args:
        generator: a trained Pix2Pix generator.
        test: test patches and their conditions.
        variant: which input the generator takes.
        net: feature network.
        seed: dropout seed of the outputs (a second draw uses ``seed + 1``) and of the resampling.
        n_subsets: KID subsets.
        n_boot: bootstrap resamples.

    Returns:
        The scores above plus ``outputs`` (``(N, H, W, 3)`` uint8, first dropout draw) for figures.
    """
    cond = test.conditions(variant)
    fake = synthesize(generator, cond, seed=seed)
    fake2 = synthesize(generator, cond, seed=seed + 1)
    f_real, f_fake, f_fake2 = (extract_features(net, x) for x in (test.images, fake, fake2))
    n = len(test)
    k = kid(f_real, f_fake, n_subsets=n_subsets, subset_size=max(2, n // 2), rng=seed)
    div = diversity(np.stack([f_fake, f_fake2], axis=1))
    div_real = mean_pairwise_distance(f_real)
    within = float(np.linalg.norm(f_fake - f_fake2, axis=1).mean())
    sens_fake = input_sensitivity(cond, images_to_tensor(fake))
    sens_real = input_sensitivity(cond, images_to_tensor(test.images))
    div_lo, div_hi = bootstrap_ratio_interval(_distance_matrix(f_fake), _distance_matrix(f_real), n_boot, seed)
    return {
        "kid": k["kid"], "kid_std": k["kid_std"],
        "diversity": div["across_conditions"], "diversity_real": div_real,
        "diversity_ratio": div["across_conditions"] / div_real if div_real > 0 else float("nan"),
        "diversity_ratio_ci": [div_lo, div_hi],
        "dropout_diversity": within / div_real if div_real > 0 else float("nan"),
        "sensitivity": float(sens_fake.mean()) if sens_fake.numel() else float("nan"),
        "sensitivity_ratio": float(sens_fake.mean() / sens_real.mean()) if sens_real.numel() else float("nan"),
        "hf_energy_ratio": high_frequency_energy(fake) / max(high_frequency_energy(test.images), 1e-12),
        "backbone": net.backbone,
        "outputs": fake,
    }


# --------------------------------------------------------------------------------------------------
# Training one variant (resumable; read-only when complete)
# --------------------------------------------------------------------------------------------------

@dataclass
class VariantRun:
    """A trained variant: the validation-chosen generator and what its training wrote."""

    name: str
    options: Pix2PixOptions
    generator: torch.nn.Module
    best_step: int
    best_val_kid: float
    val_history: list[dict] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    folder: Path | None = None


def run_args(variant: str, opts: Pix2PixOptions, cfg: Pix2PixParams, train: ConditionSet, val: ConditionSet,
             seed: int) -> dict:
    """What defines a training run (stored in its checkpoints): a change retrains, nothing else does.

    Options added after runs were recorded (``ema_kimg``/``ema_rampup``, ``upsample``) enter only when
    they differ from their defaults, so runs that do not use them keep their identity and still load.
    """
    options = without_later_defaults(asdict(opts), {"upsample": "transpose", "ema_kimg": 0.0},
                                     {"ema_kimg": ("ema_rampup",)})
    return {"variant": variant, "options": options, "batch_size": cfg.batch_size,
            "kid_features": cfg.kid_features, "kid_encoder_steps": cfg.kid_encoder_steps,
            "data": fingerprint(train.images, train.masks, train.structure),
            "val_data": fingerprint(val.images, val.masks, val.structure), "steps": cfg.steps, "seed": int(seed)}


def _read_jsonl(path: Path) -> list[dict]:
    return TrainingLog.read_file(path)


def train_variant(variant: str, cfg: Pix2PixParams, train: ConditionSet, val: ConditionSet, net: FeatureNet,
                  out_dir: str | Path, seed: int, progress: bool = True) -> VariantRun:
    """Train one variant with the GAN driver, or load it when a complete run with the same options exists.

    A complete run is loaded without writing anything (under DVC its folder is another stage's
    output). Otherwise :func:`histolib.train.gan.train_gan` trains it, resuming an interrupted run;
    checkpoints, ``log.jsonl`` and sample grids of 8 fixed validation conditions go to ``out_dir``.

    Returns:
        :class:`VariantRun` whose ``generator`` holds the lowest-validation-KID weights.
    """
    from histolib.train.gan import complete_run, load_task_state, train_gan

    out_dir = Path(out_dir)
    opts = options_for(variant, cfg, int(train.masks.shape[-1]))
    args = run_args(variant, opts, cfg, train, val, seed)
    gan_args = {k_: v for k_, v in args.items() if k_ not in ("steps", "seed")}  # train_gan adds them back
    trainer = Pix2PixTrainer(opts, seed=seed, evaluator=kid_evaluator(net, val, variant, seed), steps=cfg.steps)
    done = complete_run(out_dir, gan_args, cfg.steps, seed)
    if done is not None:  # a finished run (another stage's output): load, write nothing
        load_task_state(trainer, done.checkpoint)
        seconds = float(done.summary.get("seconds", 0.0))
    else:
        cond, images = train.conditions(variant), train.image_tensor()
        partners = cfg.batch_size == 1 and opts.mu_ms > 0
        k = min(8, len(val))
        result = train_gan(trainer, PairBatches(cond, images, cfg.batch_size, partners), steps=cfg.steps,
                           out_dir=out_dir, seed=seed, args=gan_args,
                           fixed_batch=(val.conditions(variant)[:k], val.image_tensor()[:k]),
                           checkpoint_every=cfg.eval_every, sample_every=cfg.eval_every,
                           log_every=max(1, cfg.steps // 200), progress=progress, desc=f"Pix2Pix {variant}")
        seconds = result.seconds
    trainer.G.load_state_dict(trainer.best_generator_state())
    trainer.G.eval()
    return VariantRun(variant, opts, trainer.G, trainer.best_step, trainer.best_score, list(trainer.history),
                      _read_jsonl(out_dir / "log.jsonl"), seconds, out_dir)


def replicate_folder(folder: str | Path, k: int) -> Path:
    """Where generator replicate ``k`` of a variant lives: ``folder/g<k>`` (the DVC out stays ``folder``)."""
    return Path(folder) / f"g{int(k)}"


def train_replicates(variant: str, cfg: Pix2PixParams, train: ConditionSet, val: ConditionSet, net: FeatureNet,
                     folder: str | Path, seed: int, n: int, progress: bool = True) -> list[VariantRun]:
    """``n`` generator replicates of ``variant`` (:func:`train_variant` each), replicate ``k`` seeded
    ``replicate_seeds(seed, n)[k]`` (replicate 0 = the study seed) in :func:`replicate_folder` ``(folder, k)``.
    Complete replicates are loaded read-only; missing ones are trained. Every replicate shares the data,
    options and the KID feature network: only the seed (initialisation, batches, dropout) differs."""
    return [train_variant(variant, cfg, train, val, net, replicate_folder(folder, k), s, progress)
            for k, s in enumerate(replicate_seeds(seed, n))]


# --------------------------------------------------------------------------------------------------
# Downstream: synthetic training sets for the U-Net harness
# --------------------------------------------------------------------------------------------------

REAL, SYNTHETIC, MIXED = "Real", "Pix2Pix", "Real + Pix2Pix"


def _pairs(images: np.ndarray, masks: np.ndarray, prefix: str):
    from histolib.data.folder import Pairs

    return Pairs(np.ascontiguousarray(images), np.ascontiguousarray(masks),
                 [f"{prefix}_{i:06d}.png" for i in range(len(images))])


def downstream_sets(generator, train: ConditionSet, spade_cfg, seed: int, variant: str = "full"):
    """The U-Net training sets of notebook 01's protocol, with Pix2Pix as the synthesiser.

    Every real training patch gets ``spade_cfg.n_deform`` grid deformations by notebook 01's own
    :func:`histolib.studies.spade.deform_copies` (same seeds, sigma and control points, the structure
    map warped with the mask), so ``Real`` is bitwise notebook 01's ``Real`` set. ``Pix2Pix``: the
    generator's image for every deformed (mask, structure map), labelled with the deformed mask (copy
    ``k`` uses dropout seed ``seed + k``); ``Real + Pix2Pix``: real copies ``0 .. K//2 - 1`` and
    synthetic copies ``K//2 .. K - 1``, notebook 01's mixtures.

    Returns:
        ``(sets, deformed, synthetic)``: ``{name: Pairs}``, the deformed patches and conditions
        (``Deformed``, arrays ``(K, N, ...)``) and the synthetic images ``(K, N, H, W, 3)`` uint8.
    """
    from histolib.studies.spade import deform_copies

    v = get_variant(variant)
    deformed = deform_copies(train.images, train.masks, train.structure, spade_cfg.n_deform, seed,
                             spade_cfg.deform_sigma, spade_cfg.deform_points)
    k_copies = deformed.images.shape[0]
    if k_copies < 2:
        raise ParamError(f"spade.n_deform must be >= 2 for the mixtures, got {k_copies}")
    synth = np.stack([synthesize(generator, condition_tensor(deformed.masks[k],
                                                             deformed.structure[k] if v.structure else None),
                                 seed=seed + k) for k in range(k_copies)])
    flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731
    half = k_copies // 2
    sets = {REAL: _pairs(flat(deformed.images), flat(deformed.masks), "real"),
            SYNTHETIC: _pairs(flat(synth), flat(deformed.masks), "pix2pix"),
            MIXED: _pairs(np.concatenate([flat(deformed.images[:half]), flat(synth[half:])]),
                          flat(deformed.masks), "real_pix2pix")}
    return sets, deformed, synth


def notebook01_real_rows(folder: str | Path, real, test, cfg, seeds, n_classes: int = 2) -> list[dict] | None:
    """Notebook 01's ``Real`` rows, read (never written) from its U-Net runs, when they are exactly ours.

    A run counts only if ``folder/Real/seed<k>`` holds a finished run with the options
    :func:`histolib.train.segmentation.train_unet` would use for ``real`` (same ``unet`` params, seed
    and fingerprint of the very training patches, :func:`~histolib.train.segmentation.unet_run_args`)
    whose weights are still those it finished with, i.e. it is the run this notebook would train.

    Returns:
        One row per seed (:func:`~histolib.train.segmentation.run_experiment`'s fields plus
        ``source``), or ``None`` when a seed is missing or differs (then the caller trains ``Real``).
    """
    from histolib.train.segmentation import evaluate, load_finished_unet

    rows = []
    for seed in seeds:
        res = load_finished_unet(Path(folder) / "Real" / f"seed{seed}", real, cfg, seed, n_classes)
        if res is None:
            return None
        rows.append({"set": REAL, "seed": seed, **evaluate(res.model, test), "best_epoch": res.best_epoch,
                     "val_dice": res.best_val_dice, "n_train": len(real), "source": "notebook 01"})
    return rows


def downstream_runs(generators, train: ConditionSet, val, test, unet_cfg, spade_cfg, seeds, seed: int,
                    folder: str | Path, variant: str = "full", progress: bool = True) -> tuple[list[dict], dict]:
    """U-Nets on the synthetic sets of every generator replicate (replicates x U-Net seeds).

    Replicate ``g``'s sets come from :func:`downstream_sets` with the study ``seed`` (the deformations and
    dropout seeds, so ``Real`` is the same set for every replicate: only the generator differs); its
    ``Pix2Pix`` and ``Real + Pix2Pix`` U-Nets live in ``folder/g<g>/<set>/seed<k>``. ``Real`` is not
    trained here (see :func:`notebook01_real_rows`).

    Returns:
        Run rows with a ``generator`` field (the replicate index).
    """
    from histolib.train.segmentation import run_experiment

    rows = []
    for g, generator in enumerate(generators):
        sets = downstream_sets(generator, train, spade_cfg, seed, variant)[0]
        todo = {k: v for k, v in sets.items() if k != REAL}
        rows += [{**r, "generator": g} for r in run_experiment(todo, val, test, unet_cfg, seeds,
                                                               replicate_folder(folder, g), progress=progress)]
    return rows


def real_unet(nb01_folder: str | Path, folder: str | Path, real, val, test, cfg, seeds,
              progress: bool = True) -> tuple[list[dict], torch.nn.Module]:
    """The ``Real`` U-Nets (trained on real patches only) and the segmenter that scores faithfulness.

    Notebook 01's runs are read when they are exactly ours (:func:`notebook01_real_rows`, read-only);
    otherwise ``Real`` is trained (or loaded) in ``folder/Real/seed<k>``. The segmenter is the ``Real``
    U-Net of the first seed, from wherever the rows came.

    Returns:
        ``(rows, model)``: the ``Real`` run rows and the first seed's U-Net (eval mode).
    """
    from histolib.train.segmentation import run_experiment, train_unet

    rows = notebook01_real_rows(nb01_folder, real, test, cfg, seeds)
    home = Path(nb01_folder) if rows is not None else Path(folder)
    if rows is None:
        rows = run_experiment({REAL: real}, val, test, cfg, seeds, folder, progress=progress)
    model = train_unet(real, val, cfg, seeds[0], home / REAL / f"seed{seeds[0]}", progress=False).model
    return rows, model.eval()


def set_groups(rows: list[dict], name: str, key: str = "dice") -> list[list[float]]:
    """The two-level groups of one training set: one list of seed scores per generator replicate
    (``report.single_level`` for a set without a generator, i.e. rows without ``generator``)."""
    mine = [r for r in rows if r["set"] == name]
    if not any("generator" in r for r in mine):
        return report.single_level([r[key] for r in sorted(mine, key=lambda r: r["seed"])])
    gens = sorted({r["generator"] for r in mine})
    return [[r[key] for r in sorted(mine, key=lambda r: r["seed"]) if r["generator"] == g] for g in gens]


def dice_table(rows: list[dict], faith: dict | None = None, baseline: str = REAL, alpha: float = 0.05) -> list[dict]:
    """One row per training set: test Dice / precision / recall as two-level means with their
    ``1 - alpha`` intervals (``report.two_level_summary``: generator replicates, then U-Net seeds; ``Real``
    one level), the per-replicate Dice means, and the difference to ``baseline`` by
    ``report.two_level_difference`` (Welch t on generator-level means).

    Args:
        rows: :func:`histolib.train.segmentation.run_experiment` rows (``generator`` on synthetic ones).
        faith: :func:`pooled_faithfulness` of the generator behind the synthetic rows (its synthetic and
            real-image Dice are shown on those rows), or ``None``.
        baseline: the set every other is compared with.
    """
    out = []
    for s in dict.fromkeys(r["set"] for r in rows):
        groups = set_groups(rows, s)
        synthetic = any("generator" in r for r in rows if r["set"] == s)
        summ = report.two_level_summary(groups, confidence=1 - alpha)
        row = {"training set": s, "n_train": next(r["n_train"] for r in rows if r["set"] == s),
               "generators": summ["n_generators"] if synthetic else "", "seeds": len(groups[0]) if synthetic
               else len(groups), "Dice (%)": report.fmt_interval(summ),
               "per replicate (%)": ", ".join(f"{np.mean(g) * 100:.2f}" for g in groups) if synthetic else "",
               "precision (%)": report.fmt_interval(report.two_level_summary(set_groups(rows, s, "precision"))),
               "recall (%)": report.fmt_interval(report.two_level_summary(set_groups(rows, s, "recall")))}
        row["faithfulness (Dice %)"] = (f"{faith['synthetic'] * 100:.2f} vs real {faith['real'] * 100:.2f}"
                                        if synthetic and faith else "")
        row[f"vs {baseline}"] = "baseline" if s == baseline else ""
        if s != baseline and any(r["set"] == baseline for r in rows):
            t = report.two_level_difference(groups, set_groups(rows, baseline), alpha=alpha)
            row[f"vs {baseline}"] = f"{t['estimate'] * 100:+.2f} (p={t['p']:.2g})"
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------------
# Faithfulness, realism and replicate summaries
# --------------------------------------------------------------------------------------------------

KID_FACTOR = 2.0  # realism criterion: a variant's mean test KID within 2x the best variant's. KID's subset
# std is ~10-40% of its value here (ablation table), so a 2x gap is far outside the noise of the score: a
# variant beyond it makes visibly different images, and its "diversity" may be noise rather than modes.


def replicate_faithfulness(segment, outputs: list[np.ndarray], test: ConditionSet) -> list[dict]:
    """Faithfulness of every replicate (``histolib.metrics.faithfulness``): the real-trained ``segment``
    scores each replicate's images for the test conditions against the test masks they were generated
    from, beside its pooled Dice on the real test patches."""
    from histolib.metrics.faithfulness import faithfulness

    return [faithfulness(segment, fake, test.masks, test.images, test.masks) for fake in outputs]


def pooled_faithfulness(per_replicate: list[dict]) -> dict:
    """The gate's input over replicates: mean synthetic score, the (shared) real score, their ratio and
    the per-replicate synthetic scores."""
    syn = float(np.mean([f["synthetic"] for f in per_replicate]))
    real = float(np.mean([f["real"] for f in per_replicate]))
    return {"synthetic": syn, "real": real, "ratio": syn / real if real > 0 else float("nan"),
            "per_replicate": [f["synthetic"] for f in per_replicate]}


def replicate_values(scores: dict[str, list[dict]], variant: str, key: str) -> list[float]:
    """``scores[variant][g][key]`` for every replicate ``g``."""
    return [float(s[key]) for s in scores[variant]]


def replicate_summary(scores: dict[str, list[dict]], variant: str, key: str, alpha: float = 0.05) -> dict:
    """``report.two_level_summary`` of one score over a variant's replicates (the replicates are the units;
    each replicate's value already averages over the test conditions), unbounded."""
    return report.two_level_summary(report.single_level(replicate_values(scores, variant, key)), bounds=None,
                                    confidence=1 - alpha)


def variant_difference(scores: dict[str, list[dict]], a: str, b: str, key: str, alpha: float = 0.05) -> dict:
    """Difference of a collapse score between two variants, generator replicates as the units.

    With ``y_vg`` the score of replicate ``g`` of variant ``v`` on the (shared) test conditions,
    ``d = mean_g y_ag - mean_g y_bg``, ``SE = sqrt(s_a^2 / G_a + s_b^2 / G_b)`` with ``s_v^2`` the variance
    between variant ``v``'s replicates, Welch-Satterthwaite df (``report.two_level_difference`` with each
    replicate a group of one). The test-condition sampling is the inner level: it is inside each
    ``y_vg`` and hence inside ``s_v^2``, as the seeds are in the two-level model; no bootstrap is
    added on top. With one replicate per variant the test is undefined (NaN, ``inconclusive``).
    """
    return report.two_level_difference(report.single_level(replicate_values(scores, a, key)),
                                       report.single_level(replicate_values(scores, b, key)), bounds=None, alpha=alpha)


def realism_precondition(scores: dict[str, list[dict]], variant: str,
                         factor: float = KID_FACTOR) -> report.Precondition:
    """Quality beside diversity: ``variant``'s mean test KID is within ``factor`` x the best variant's mean
    KID (when the best is <= 0, i.e. indistinguishable from real, the variant must be <= 0 too). A diversity
    score of a variant failing it may be unrealistic noise rather than modes."""
    means = {v: float(np.mean(replicate_values(scores, v, "kid"))) for v in scores}
    best = min(means, key=means.get)
    line = factor * max(means[best], 0.0)
    return report.Precondition(
        name=f"{variant} realistic: test KID within {factor:g}x the best variant's (else its diversity may be "
             "inflated by unrealistic noise)",
        met=bool(means[variant] <= line),
        detail=f"KID x1e3 {variant} {means[variant] * 1e3:.3g} vs best ({best}) {means[best] * 1e3:.3g}, "
               f"line {line * 1e3:.3g}")


def ablation_rows(runs: dict[str, list[VariantRun]], scores: dict[str, list[dict]],
                  faith: dict[str, list[dict]] | None = None, alpha: float = 0.05) -> list[dict]:
    """The ablation table: one row per variant, each score as the mean over generator replicates with
    its ``1 - alpha`` interval (replicates as units) and the per-replicate values; the realism criterion
    and the faithfulness (Dice of the real-trained U-Net on the outputs vs on real test patches)."""
    rows = []
    f3 = lambda vals, k=1.0: ", ".join(f"{v * k:.3g}" for v in vals)  # noqa: E731
    for name, reps in runs.items():
        kid_s = replicate_summary(scores, name, "kid", alpha)
        div_s = replicate_summary(scores, name, "diversity_ratio", alpha)
        row = {"variant": name, "model": VARIANTS[name].label, "paper": VARIANTS[name].paper,
               "replicates": len(reps), "best steps": ", ".join(str(r.best_step) for r in reps),
               "test KID x1e3": report.fmt_interval(kid_s, 1e3, 3),
               "KID per replicate x1e3": f3(replicate_values(scores, name, "kid"), 1e3),
               "diversity / real": report.fmt_interval(div_s, 1.0, 3),
               "diversity per replicate": f3(replicate_values(scores, name, "diversity_ratio")),
               "dropout diversity / real": f3(replicate_values(scores, name, "dropout_diversity")),
               "sensitivity / real": f3(replicate_values(scores, name, "sensitivity_ratio")),
               "HF energy / real": f3(replicate_values(scores, name, "hf_energy_ratio")),
               "realistic (KID)": "yes" if realism_precondition(scores, name).met else "no"}
        if faith and name in faith:
            fp = pooled_faithfulness(faith[name])
            row["faithfulness Dice (%)"] = (f"{fp['synthetic'] * 100:.1f} ({f3(fp['per_replicate'], 100)}) "
                                            f"vs real {fp['real'] * 100:.1f}")
        row["train s"] = round(sum(r.seconds for r in reps), 1)
        rows.append(row)
    return rows


LOSS_KEYS = ("loss_d", "loss_g_gan", "loss_l1", "loss_ms", "d_real", "d_fake")


def _run_label(name: str, k: int) -> str:
    """``full`` for replicate 0 (the DVC plot's column), ``full_g1`` ... for the others."""
    return name if k == 0 else f"{name}_g{k}"


def _runs(runs) -> list[tuple[str, VariantRun]]:
    return [(_run_label(n, k), r) for n, reps in runs.items()
            for k, r in enumerate(reps if isinstance(reps, list) else [reps])]


def loss_curves(runs: dict[str, list[VariantRun]]) -> list[dict]:
    """Long-format rows ``{variant, step, <losses>}`` from every replicate's log (for CSV and DVC plots);
    replicate ``k > 0`` is labelled ``<variant>_g<k>``."""
    return [{"variant": label, "step": row["step"], **{k: row[k] for k in LOSS_KEYS if k in row}}
            for label, run in _runs(runs) for row in run.log]


def val_kid_curves(runs: dict[str, list[VariantRun]]) -> list[dict]:
    """Rows ``{variant, step, val_kid}``: the checkpoint-choice curve of every replicate."""
    return [{"variant": label, "step": h["step"], "val_kid": h["score"]} for label, r in _runs(runs)
            for h in r.val_history]


def wide_table(rows: list[dict], keys) -> list[dict]:
    """Long rows ``{variant, step, k...}`` -> one row per step with a column ``<variant>_<k>`` (or
    ``<variant>`` for a single key): the layout DVC plots read (``x: step``, ``y: [columns]``)."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    by_step: dict[int, dict] = {}
    for r in rows:
        row = by_step.setdefault(int(r["step"]), {"step": int(r["step"])})
        for k in keys:
            if k in r:
                row[r["variant"] if len(keys) == 1 else f"{r['variant']}_{k}"] = r[k]
    return [by_step[s] for s in sorted(by_step)]


def curves_figure(loss_rows: list[dict], kid_rows: list[dict]):
    """Loss curves (D loss, adversarial G loss, L1, L_ms) and validation KID per variant."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df, dk = pd.DataFrame(loss_rows), pd.DataFrame(kid_rows)
    panels = [("loss_d", "D loss (Eq. 2)"), ("loss_g_gan", "G adversarial loss"), ("loss_l1", "L1 (Eq. 3)"),
              ("loss_ms", "L_ms (Eq. 4)"), ("val_kid", "validation KID")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8))
    for ax, (key, title) in zip(axes, panels, strict=True):
        src = dk if key == "val_kid" else df
        if key in src:
            for name, g in src.groupby("variant", sort=False):
                y = g[key].rolling(5, min_periods=1).mean() if key != "val_kid" else g[key]
                ax.plot(g["step"], y, label=name, lw=1.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


COLLAPSED_BELOW = 0.5  # diversity / real below this: outputs for different inputs are less than half as
# different as real patches are; the line we call "collapsed" in the claims (a convention, stated in the table)

PAPER = "001"
PAPER_CONDITIONS = ("660 glomerulus-centred 256-px patches of one stain, batch 1, training length not given, twelve "
                    "checkpoints chosen by eye, one training per model; figures only, no numbers; the U-Net "
                    "trained on synthetic data is announced but never reported.")
FIGURES_ONLY = "figures only, no number"

# (key, section, text, other variant) of the claims "the full model is more diverse than <other>"
_MORE_DIVERSE = (
    ("001-full-vs-pix2pix-diversity", "Sec. 2-3.3, Figs. 2 and 5",
     "Adding structure maps and the mode-seeking loss to Pix2Pix avoids the collapse of plain Pix2Pix from "
     "masks: the full model's outputs vary with their input where Pix2Pix's do not", "pix2pix"),
    ("001-no-ms-collapses", "Sec. 4.2, Fig. 6 (1st row)",
     "Without the mode-seeking loss L_ms the model collapses: L_ms is mandatory", "no_ms"),
    ("001-no-structure-collapses", "Sec. 4.2, Fig. 6 (2nd row)",
     "Without structure maps the model collapses: the structure map is mandatory", "no_structure"),
    ("001-conditional-d-collapses", "Sec. 4.2, Fig. 7",
     "Feeding the condition to the discriminator brings mode collapse back, less prominently but visibly",
     "conditional_d"),
)

# (key, section, text, other variant) of the claims "the full model's images are more realistic than <other>'s"
_QUALITY = (
    ("001-full-quality-vs-pix2pix", "Sec. 4.1, Figs. 5, 8 and 9",
     "The full model generates images of very high visual quality (compared here with plain Pix2Pix's)",
     "pix2pix"),
    ("001-full-quality-vs-no-ms", "Sec. 4.2, Fig. 6",
     "Without L_ms the results look poor: the full model's images are more realistic", "no_ms"),
    ("001-full-quality-vs-no-structure", "Sec. 4.2, Fig. 6",
     "Without structure maps the results look poor: the full model's images are more realistic", "no_structure"),
)


def _line_evidence(values: list[float], sign: int, what: str, alpha: float) -> report.Evidence:
    """Evidence for "a score is above / below a line" over generator replicates: the effect
    ``sign * (mean - line)``, its t-interval with the replicates as units (``report.two_level_summary``);
    the interval decides (no p-value)."""
    s = report.two_level_summary(report.single_level(values), bounds=None, confidence=1 - alpha)
    lo, hi = sorted((sign * (s["ci_low"] - COLLAPSED_BELOW), sign * (s["ci_high"] - COLLAPSED_BELOW)))
    return report.Evidence(
        estimate=sign * (s["mean"] - COLLAPSED_BELOW), low=lo, high=hi,
        test=f"t-interval over {s['n_generators']} generator replicates (test conditions inside each)",
        mde=report.minimum_detectable_effect(s["se"], s["df"], alpha), unit="x real",
        detail=f"{what}: diversity / real {s['mean']:.3f} per replicate "
               f"[{', '.join(f'{v:.3f}' for v in values)}], collapse line {COLLAPSED_BELOW}")


def claims(scores: dict[str, list[dict]], faith: dict[str, list[dict]] | None, downstream: list[dict] | None,
           alpha: float = 0.05, gate: float = report.FAITHFULNESS_GATE) -> list[dict]:
    """The paper's claims (``report.Claim``), the evidence measured here and one verdict each (``report.assess``).

    * Collapse (diversity / real, generator replicates as units, :func:`variant_difference`): plain Pix2Pix
      collapses (below :data:`COLLAPSED_BELOW`), the full model does not (above it), and is more diverse
      than each ablation. Every claim that the full model is *not* collapsed carries the realism
      precondition (:func:`realism_precondition`): diversity bought with unrealistic images is untestable.
    * Quality: the full model's test KID is lower than plain Pix2Pix's and the ablations' (direction -1 on
      ``KID full - KID other``); gated by the full model's faithfulness.
    * Downstream (``extension``: announced, never reported): U-Nets on synthetic patches alone and added to
      real ones vs ``Real``, generator replicates x U-Net seeds (``report.two_level_difference``), gated by
      the full model's faithfulness.

    Args:
        scores: per variant, :func:`collapse_scores` of each replicate.
        faith: per variant, :func:`replicate_faithfulness` (``None``: no gate can be checked, none applied).
        downstream: run rows of ``Real`` (no ``generator``) and the synthetic sets (with ``generator``).
        alpha: significance level.
        gate: faithfulness gate (``protocol.faithfulness_gate``).
    """
    out = []
    real_gate = report.faithfulness_gates(faith["full"], gate, "full model") if faith and "full" in faith else []
    if "pix2pix" in scores:
        c = report.Claim("001-pix2pix-collapses", PAPER, "Sec. 2, Fig. 2",
                         "Pix2Pix translating a glomerulus mask into a patch collapses: it always outputs the same "
                         "image, even when fed with different inputs", "diversity / real (test conditions)",
                         f"{COLLAPSED_BELOW} - diversity ratio (pix2pix)", 1, FIGURES_ONLY)
        out.append(report.assess(c, _line_evidence(replicate_values(scores, "pix2pix", "diversity_ratio"), -1,
                                                   "pix2pix", alpha), (), alpha))
    if "full" in scores:
        c = report.Claim("001-full-not-collapsed", PAPER, "Sec. 4.1, Fig. 5",
                         "With structure maps, the mode-seeking loss and an unconditional discriminator, mode "
                         "collapse is completely avoided", "diversity / real (test conditions)",
                         f"diversity ratio (full) - {COLLAPSED_BELOW}", 1, FIGURES_ONLY)
        out.append(report.assess(c, _line_evidence(replicate_values(scores, "full", "diversity_ratio"), 1, "full",
                                                   alpha), [realism_precondition(scores, "full")], alpha))
    for key, sec, text, other in _MORE_DIVERSE:
        if "full" in scores and other in scores:
            c = report.Claim(key, PAPER, sec, text, "diversity / real (test conditions)",
                             f"diversity ratio full - {other}", 1, FIGURES_ONLY)
            ev = report.evidence_from_test(variant_difference(scores, "full", other, "diversity_ratio", alpha),
                                           unit="x real")
            out.append(report.assess(c, ev, [realism_precondition(scores, "full")], alpha))
    for key, sec, text, other in _QUALITY:
        if "full" in scores and other in scores:
            c = report.Claim(key, PAPER, sec, text, "test KID x1e3 (offline features)", f"KID full - KID {other}",
                             -1, FIGURES_ONLY)
            ev = report.evidence_from_test(variant_difference(scores, "full", other, "kid", alpha), scale=1e3,
                                           unit="x1e-3 KID")
            out.append(report.assess(c, ev, real_gate, alpha))
    if downstream and any(r["set"] == REAL for r in downstream):
        for key, name, text in (
                ("001-synthetic-alone", SYNTHETIC, "A U-Net trained on the full model's synthetic patches alone "
                 "segments the glomeruli as well as one trained on real patches (announced, never reported)"),
                ("001-synthetic-added", MIXED, "Adding the full model's synthetic patches to real ones improves "
                 "the U-Net (announced, never reported)")):
            if any(r["set"] == name for r in downstream):
                c = report.Claim(key, PAPER, "Sec. 1 and 5 (announced)", text, "test Dice (%)", f"{name} - {REAL}",
                                 1, "none reported", extension=True)
                t = report.two_level_difference(set_groups(downstream, name), set_groups(downstream, REAL),
                                                alpha=alpha)
                out.append(report.assess(c, report.evidence_from_test(t, 100, "points"), real_gate, alpha))
    return out

# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------

def _binary_rgb(maps: np.ndarray) -> list[np.ndarray]:
    return [np.repeat((m > 0).astype(np.uint8)[..., None] * 255, 3, axis=2) for m in maps]


def outputs_figure(test: ConditionSet, outputs: dict[str, np.ndarray], index, title: str,
                   inputs: tuple[str, ...] = ("structure", "mask"), real: bool = False):
    """Rows of images for the test items ``index``: the inputs (structure maps, masks), optionally the
    real patches, then each model's outputs (``outputs[name]``: ``(N, H, W, 3)`` uint8), as in the
    paper's Figs. 2, 5, 6 and 7."""
    from histolib import viz

    index = list(index)
    rows, labels = [], []
    for kind in inputs:
        rows.append(_binary_rgb((test.structure if kind == "structure" else test.masks)[index]))
        labels.append("structure map" if kind == "structure" else "mask")
    if real:
        rows.append([test.images[i] for i in index])
        labels.append("real")
    for name, images in outputs.items():
        rows.append([images[i] for i in index])
        labels.append(name)
    return viz.image_grid(rows, row_labels=labels, title=title)


def batch_grid(images: np.ndarray, index, ncol: int = 8) -> np.ndarray:
    """The appendix's "batch of 48 randomly selected results": a mosaic of ``images[index]``."""
    from histolib import viz

    return viz.tile_images([images[i] for i in index], ncol=ncol)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an ``(H, W, 3)`` uint8 array as PNG (folder created)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)
    return path


def metrics_summary(runs: dict[str, list[VariantRun]], scores: dict[str, list[dict]], faith: dict[str, list[dict]],
                    rows: list[dict], claims_rows: list[dict], backbone: str, conditions: report.Conditions,
                    alpha: float = 0.05) -> dict:
    """What ``results/02/metrics.json`` holds (DVC metrics): per variant the replicate summaries (mean,
    interval) and per-replicate collapse scores and faithfulness, the full model minus each variant
    (replicates as units), downstream Dice per training set (two-level), the runs, the claims and the
    conditions."""
    keys = ("kid", "kid_std", "diversity_ratio", "dropout_diversity", "sensitivity_ratio")
    ablation = {}
    for name, reps in runs.items():
        ablation[name] = {
            **{k: replicate_summary(scores, name, k, alpha) for k in ("kid", "diversity_ratio")},
            "replicates": [{**{k: s[k] for k in (*keys, "diversity_ratio_ci")}, "best_step": r.best_step,
                            "val_kid": r.best_val_kid, "train_seconds": r.seconds}
                           for r, s in zip(reps, scores[name], strict=True)]}
        if faith and name in faith:
            ablation[name]["faithfulness"] = pooled_faithfulness(faith[name])
        if name != "full" and "full" in scores:
            ablation[name]["full_minus"] = {k: {kk: v for kk, v in variant_difference(scores, "full", name, k, alpha)
                                                .items() if kk not in ("a", "b")} for k in ("kid", "diversity_ratio")}
    downstream = {}
    for name in dict.fromkeys(r["set"] for r in rows):
        downstream[name] = {k: report.two_level_summary(set_groups(rows, name, k), confidence=1 - alpha)
                            for k in ("dice", "precision", "recall")}
        if name != REAL and any(r["set"] == REAL for r in rows):
            t = report.two_level_difference(set_groups(rows, name), set_groups(rows, REAL), alpha=alpha)
            downstream[name]["vs_real"] = {k: v for k, v in t.items() if k not in ("a", "b")}
    return {"ablation": ablation, "downstream": downstream, "runs": rows, "claims": claims_rows,
            "features": backbone, "conditions": conditions.to_dict()}
