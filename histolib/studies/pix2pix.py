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
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from histolib.config import knob, section
from histolib.errors import ParamError
from histolib.metrics.image import diversity, kid, mean_pairwise_distance
from histolib.metrics.segmentation import paired_test, summarize
from histolib.train.checkpoint import Checkpointer
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
    lambda_l1: float = knob("weight of L_L1, Eq. 3 (paper: 10)", min=0.0)
    mu_ms: float = knob("weight of L_ms, Eq. 4 (paper: 10); variants without L_ms set it to 0", min=0.0)
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
        mu_ms=cfg.mu_ms if v.mode_seeking else 0.0, eval_every=cfg.eval_every, select_from=cfg.select_from)


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


def _digest(*arrays) -> str:
    import hashlib

    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def run_args(variant: str, opts: Pix2PixOptions, cfg: Pix2PixParams, train: ConditionSet, val: ConditionSet,
             seed: int) -> dict:
    """What defines a training run (stored in its checkpoints): a change retrains, nothing else does."""
    return {"variant": variant, "options": asdict(opts), "batch_size": cfg.batch_size,
            "kid_features": cfg.kid_features, "kid_encoder_steps": cfg.kid_encoder_steps,
            "train_digest": _digest(train.images, train.masks, train.structure),
            "val_digest": _digest(val.images, val.masks, val.structure), "steps": cfg.steps, "seed": int(seed)}


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
    from histolib.train.gan import load_task_state, train_gan

    out_dir = Path(out_dir)
    opts = options_for(variant, cfg, int(train.masks.shape[-1]))
    args = run_args(variant, opts, cfg, train, val, seed)
    trainer = Pix2PixTrainer(opts, seed=seed, evaluator=kid_evaluator(net, val, variant, seed), steps=cfg.steps)
    ckpt = Checkpointer(out_dir / "checkpoints", json.loads(json.dumps(args)))
    last = ckpt.load_last() if ckpt.is_complete() else None
    if last is not None and last.get("step") == cfg.steps:
        load_task_state(trainer, last)
        seconds = float(json.loads((ckpt.folder / "COMPLETE.json").read_text()).get("seconds", 0.0))
    else:
        cond, images = train.conditions(variant), train.image_tensor()
        partners = cfg.batch_size == 1 and opts.mu_ms > 0
        k = min(8, len(val))
        result = train_gan(trainer, PairBatches(cond, images, cfg.batch_size, partners), steps=cfg.steps,
                           out_dir=out_dir, seed=seed, args={k_: v for k_, v in args.items()
                                                             if k_ not in ("steps", "seed")},
                           fixed_batch=(val.conditions(variant)[:k], val.image_tensor()[:k]),
                           checkpoint_every=cfg.eval_every, sample_every=cfg.eval_every,
                           log_every=max(1, cfg.steps // 200), progress=progress, desc=f"Pix2Pix {variant}")
        seconds = result.seconds
    trainer.G.load_state_dict(trainer.best_generator_state())
    trainer.G.eval()
    return VariantRun(variant, opts, trainer.G, trainer.best_step, trainer.best_score, list(trainer.history),
                      _read_jsonl(out_dir / "log.jsonl"), seconds, out_dir)


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

    A run counts only if ``folder/Real/seed<k>/COMPLETE.json`` holds the options
    :func:`histolib.train.segmentation.train_unet` would use for ``real`` (same ``unet`` params, seed
    and a digest of the very training patches), i.e. it is the run this notebook would train.

    Returns:
        One row per seed (:func:`~histolib.train.segmentation.run_experiment`'s fields plus
        ``source``), or ``None`` when a seed is missing or differs (then the caller trains ``Real``).
    """
    import hashlib

    from histolib.models.unet import UNet
    from histolib.train.segmentation import _cfg_dict, evaluate

    digest = hashlib.sha1(np.ascontiguousarray(real.images).tobytes())
    digest.update(np.ascontiguousarray(real.masks).tobytes())
    rows = []
    for seed in seeds:
        args = {**_cfg_dict(cfg), "seed": int(seed), "n_classes": n_classes, "n_train": len(real),
                "train_digest": digest.hexdigest()[:16]}
        ckpt = Checkpointer(Path(folder) / "Real" / f"seed{seed}", args)
        best = ckpt.load_best() if ckpt.is_complete() else None
        if best is None:
            return None
        model = UNet(3, n_classes, args["width"], args["depth"]).to(memory_format=torch.channels_last)
        model.load_state_dict(best["model"])
        rows.append({"set": REAL, "seed": seed, **evaluate(model, test), "best_epoch": best["best_epoch"],
                     "val_dice": best["best_val_dice"], "n_train": len(real), "source": "notebook 01"})
    return rows


def dice_table(rows: list[dict], baseline: str = REAL) -> list[dict]:
    """One row per training set: Dice / precision / recall mean +- std over seeds, the 95% interval
    of the mean Dice, and a paired t-test against ``baseline`` (same seeds).

    Args:
        rows: :func:`histolib.train.segmentation.run_experiment` rows.
        baseline: the set every other is compared with (the ``Real`` row of notebook 01: same data,
            harness and seeds).
    """
    sets = list(dict.fromkeys(r["set"] for r in rows))
    by = {s: sorted((r for r in rows if r["set"] == s), key=lambda r: r["seed"]) for s in sets}
    out = []
    for s in sets:
        d = summarize([r["dice"] for r in by[s]])
        row = {"training set": s, "n_train": by[s][0]["n_train"], "seeds": len(by[s]),
               "Dice (%)": _pm(d["mean"], d["std"]),
               "95% CI": f"[{d['ci_low'] * 100:.2f}, {d['ci_high'] * 100:.2f}]" if d["n"] > 1 else "",
               "precision (%)": _pm(*_ms([r["precision"] for r in by[s]])),
               "recall (%)": _pm(*_ms([r["recall"] for r in by[s]]))}
        row[f"vs {baseline}"] = "baseline" if s == baseline else ""
        if s != baseline and baseline in by and [r["seed"] for r in by[s]] == [r["seed"] for r in by[baseline]]:
            t = paired_test([r["dice"] for r in by[s]], [r["dice"] for r in by[baseline]])
            row[f"vs {baseline}"] = f"{t['mean_diff'] * 100:+.2f} (p={t['p']:.3g})"
        out.append(row)
    return out


def _ms(v) -> tuple[float, float]:
    v = np.asarray(v, float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _pm(mean: float, std: float) -> str:
    return f"{mean * 100:.2f}" if std != std else f"{mean * 100:.2f} ± {std * 100:.2f}"


# --------------------------------------------------------------------------------------------------
# Tables, curves and claims
# --------------------------------------------------------------------------------------------------

def ablation_rows(runs: dict[str, VariantRun], scores: dict[str, dict]) -> list[dict]:
    """The ablation table: one row per variant with its collapse scores (numbers, not strings)."""
    rows = []
    for name, run in runs.items():
        s = scores[name]
        rows.append({"variant": name, "model": VARIANTS[name].label, "paper": VARIANTS[name].paper,
                     "best step": run.best_step,
                     "val KID x1e3": run.best_val_kid * 1e3, "test KID x1e3": s["kid"] * 1e3,
                     "KID std x1e3": s["kid_std"] * 1e3, "diversity / real": s["diversity_ratio"],
                     "diversity 95% CI": "[{:.2f}, {:.2f}]".format(*s["diversity_ratio_ci"]),
                     "dropout diversity / real": s["dropout_diversity"],
                     "sensitivity / real": s["sensitivity_ratio"], "train s": run.seconds})
    return rows


LOSS_KEYS = ("loss_d", "loss_g_gan", "loss_l1", "loss_ms", "d_real", "d_fake")


def loss_curves(runs: dict[str, VariantRun]) -> list[dict]:
    """Long-format rows ``{variant, step, <losses>}`` from every run's log (for CSV and DVC plots)."""
    out = []
    for name, run in runs.items():
        for row in run.log:
            out.append({"variant": name, "step": row["step"], **{k: row[k] for k in LOSS_KEYS if k in row}})
    return out


def val_kid_curves(runs: dict[str, VariantRun]) -> list[dict]:
    """Rows ``{variant, step, val_kid}``: the checkpoint-choice curve of every run."""
    return [{"variant": n, "step": h["step"], "val_kid": h["score"]} for n, r in runs.items() for h in r.val_history]


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


def verdict(low: float, high: float, direction: int = 1) -> str:
    """``reproduced`` when the interval of (effect x direction) lies above 0, ``not reproduced`` when
    below, ``inconclusive`` when it straddles 0 or is undefined."""
    if not (low == low and high == high):
        return "inconclusive"
    lo, hi = sorted((low * direction, high * direction))
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "not reproduced"
    return "inconclusive"


def paired_bootstrap_difference(gen_a, gen_b, test: ConditionSet, variant_a: str, variant_b: str, net: FeatureNet,
                                seed: int, n_boot: int) -> tuple[float, float, float]:
    """Difference of diversity ratios ``a - b`` on the same test conditions, with a paired bootstrap
    interval over test items (the same resample for both models)."""
    fa = extract_features(net, synthesize(gen_a, test.conditions(variant_a), seed=seed))
    fb = extract_features(net, synthesize(gen_b, test.conditions(variant_b), seed=seed))
    fr = extract_features(net, test.images)
    da, db, dr = _distance_matrix(fa), _distance_matrix(fb), _distance_matrix(fr)
    i, j = _pair_index(len(fr))
    point = (da[i, j].mean() - db[i, j].mean()) / dr[i, j].mean()
    if len(fr) < 3:
        return float(point), float("nan"), float("nan")
    diffs = [(da[a, b].mean() - db[a, b].mean()) / dr[a, b].mean()
             for a, b in _bootstrap_pairs(len(fr), n_boot, seed) if dr[a, b].mean() > 0]
    return (float(point), *_percentiles(diffs))


COLLAPSED_BELOW = 0.5  # diversity / real below this: outputs for different inputs are less than half as
# different as real patches are; the line we call "collapsed" in the claims (a convention, stated in the table)


def claims(scores: dict[str, dict], differences: dict[str, tuple[float, float, float]],
           downstream: list[dict] | None) -> list[dict]:
    """The paper's claims, the evidence measured here and a verdict for each.

    Args:
        scores: :func:`collapse_scores` per variant.
        differences: ``"full-<variant>"`` -> :func:`paired_bootstrap_difference` ``(point, low, high)``.
        downstream: :func:`histolib.train.segmentation.run_experiment` rows (sets ``Real``,
            ``Pix2Pix``, ``Real + Pix2Pix``), or ``None`` when not run.
    """
    out = []

    def absolute(name: str, claim: str, collapsed_expected: bool) -> None:
        if name not in scores:
            return
        lo, hi = scores[name]["diversity_ratio_ci"]
        # collapsed means the interval lies below the line; not collapsed, above it
        v = verdict(COLLAPSED_BELOW - hi, COLLAPSED_BELOW - lo, 1 if collapsed_expected else -1)
        out.append({"claim": claim, "evidence": f"{name}: diversity / real = {scores[name]['diversity_ratio']:.2f} "
                    f"[{lo:.2f}, {hi:.2f}] (collapse line {COLLAPSED_BELOW})", "verdict": v,
                    "test": "bootstrap over test conditions (95%)"})

    def relative(other: str, claim: str) -> None:
        key = f"full-{other}"
        if key not in differences:
            return
        point, lo, hi = differences[key]
        out.append({"claim": claim, "evidence": f"diversity / real, full - {other} = {point:+.2f} "
                    f"[{lo:+.2f}, {hi:+.2f}]; test KID x1e3 full {scores['full']['kid'] * 1e3:.2f} vs "
                    f"{other} {scores[other]['kid'] * 1e3:.2f}", "verdict": verdict(lo, hi, 1),
                    "test": "paired bootstrap over test conditions (95%)"})

    absolute("pix2pix", "Plain Pix2Pix from masks collapses: same texture whatever the input (Fig. 2)", True)
    absolute("full", "With structure maps and L_ms, mode collapse is non-existent (sec. 4.1, Fig. 5)", False)
    relative("pix2pix", "The full model is more diverse than plain Pix2Pix (sec. 2, 3.3)")
    relative("no_ms", "Without L_ms the model collapses more (sec. 4.2, Fig. 6 row 1)")
    relative("no_structure", "Without structure maps the model collapses more (sec. 4.2, Fig. 6 row 2)")
    relative("conditional_d", "Feeding the condition to D brings collapse back, less markedly (Fig. 7)")
    if downstream:
        by = {}
        for r in downstream:
            by.setdefault(r["set"], {})[r["seed"]] = r["dice"]
        for name, claim in ((SYNTHETIC, "U-Net trained on synthetic patches alone (announced, never reported)"),
                            (MIXED, "Synthetic patches added to real ones help the U-Net (announced)")):
            if name in by and REAL in by and set(by[name]) == set(by[REAL]):
                seeds = sorted(by[REAL])
                t = paired_test([by[name][s] for s in seeds], [by[REAL][s] for s in seeds])
                d = summarize([by[name][s] - by[REAL][s] for s in seeds])
                v = "inconclusive"
                if name == MIXED:
                    v = verdict(d["ci_low"], d["ci_high"], 1)
                else:  # alone: the paper implies synthetic data can replace real; as good as real?
                    v = ("reproduced" if d["ci_low"] == d["ci_low"] and d["ci_low"] > -0.02 else
                         "not reproduced" if d["ci_high"] == d["ci_high"] and d["ci_high"] < -0.02 else
                         "inconclusive")
                out.append({"claim": claim, "evidence": f"Dice {name} - Real = {d['mean'] * 100:+.2f} points "
                            f"[{d['ci_low'] * 100:+.2f}, {d['ci_high'] * 100:+.2f}], p = {t['p']:.3g}",
                            "verdict": v, "test": "paired t-test over seeds"
                            + ("; margin -2 Dice points" if name == SYNTHETIC else "")})
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


def metrics_summary(runs: dict[str, VariantRun], scores: dict[str, dict], differences: dict, rows: list[dict],
                    claims_rows: list[dict], backbone: str) -> dict:
    """What ``results/02/metrics.json`` holds (DVC metrics): per-variant collapse scores, the paired
    differences to the full model, downstream Dice per training set, the runs and the claims."""
    ablation = {}
    for name, run in runs.items():
        s = {k: v for k, v in scores[name].items() if k not in ("outputs", "backbone")}
        ablation[name] = {**s, "best_step": run.best_step, "val_kid": run.best_val_kid, "train_seconds": run.seconds}
    downstream = {}
    for name in dict.fromkeys(r["set"] for r in rows):
        mine = sorted((r for r in rows if r["set"] == name), key=lambda r: r["seed"])
        downstream[name] = {"dice": summarize([r["dice"] for r in mine]),
                            "precision": summarize([r["precision"] for r in mine]),
                            "recall": summarize([r["recall"] for r in mine])}
        real = sorted((r for r in rows if r["set"] == REAL), key=lambda r: r["seed"])
        if name != REAL and [r["seed"] for r in real] == [r["seed"] for r in mine]:
            downstream[name]["vs_real"] = paired_test([r["dice"] for r in mine], [r["dice"] for r in real])
    return {"ablation": ablation,
            "full_minus_variant_diversity": {k: dict(zip(("point", "low", "high"), v, strict=True))
                                             for k, v in differences.items()},
            "downstream": downstream, "runs": rows, "claims": claims_rows, "features": backbone}
