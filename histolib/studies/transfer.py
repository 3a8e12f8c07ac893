"""How far the phantom carries a segmenter to real tissue: issue 15's transfer checks, run by notebook 00.

**Nuclei, sim-to-real.** Issue 15's nuclei targets ask how far the phantom alone carries a nucleus
segmenter on real images (MoNuSeg H&E: AJI >= 0.45; ``fluo_dsb`` fluorescence: AJI >= 0.60). For every
real nucleus set (``histolib run-real 00``), with notebook 05's HoVer-Net (the ``nuclei`` section's
``hv_*`` options) so the numbers read beside that notebook's:

* each real set is split once, seeded (:func:`split_real_set`): a **reference** half, whose masks give
  the set's scale (median nucleus diameter -> ``data.nucleus_diameter``, as a user would annotate a few
  images of a new microscope) and which trains the real-trained comparison model; and a **test** half,
  rescaled by the same factor, on which both models are scored. No scale or threshold is read from the
  test masks.
* the **phantom-only** model trains on ``sim2real.n_phantom_nuclei`` phantom fields of the set's modality
  (fluorescence for grey images, H&E otherwise) at the profile's nucleus size;
* the **real-trained** model trains on the reference tiles with the same options and steps.

Both use HoVer-Net's post-processing sizes scaled to the median nucleus diameter of their own training
masks, and are scored per test tile (AJI, DICE, PQ), one model per seed, exactly as notebook 05 trains and
scores its models (:func:`histolib.studies.nuclei.train_and_test`).

**Glomerulus crops: does phantom data help real data?** (:func:`phantom_and_real`). The real crops are
split by slide exactly as notebook 01's real run splits them (``data.real_split``, the study seed) and
resized to the patch size, so a crop's glomerulus spans nearly the whole patch. Phantom patches are cut
as tight (``sim2real.mix_fill``, the data stage's own item seeds), because the framing, not the stain, was
the largest sim-to-real lever measured (issue 15's notes). The shared U-Net harness trains per seed on
the real training crops, on the same crops plus the phantom patches, and on the phantom patches alone
(selected on phantom validation patches: no real label), and each is scored on the real test crops
beside the all-glomerulus baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histolib import report, viz
from histolib.data.folder import Pairs
from histolib.errors import DataError, ParamError
from histolib.repro import numpy_rng

# Issue 15's targets for segmenters trained on the phantom only: AJI on the real nucleus sets (a HoVer-Net),
# Dice with precision and recall on the glomerulus crops (a U-Net).
AJI_TARGETS = {"monuseg": 0.45, "fluo_dsb": 0.60}
CROPS_TARGET = {"dice": 0.90, "precision": 0.85, "recall": 0.85}
STREAM = 80  # numpy_rng stream of the reference/test split (histolib.repro: one stream per use)


@dataclass
class RealNucleiSplit:
    """One real nucleus set at the profile's scale, split into reference and test tiles.

    Attributes:
        reference, test: ``(images (T, S, S, 3) uint8, instance maps (T, S, S) int32)`` tiles.
        scale: :class:`~histolib.data.nuclei_scale.NucleusScale` measured on the reference masks.
        reference_names, test_names: the source images of each half.
    """

    reference: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    scale: object
    reference_names: list[str]
    test_names: list[str]


def split_real_set(pairs, reference_fraction: float, target_diameter: float, size: int,
                   seed: int) -> RealNucleiSplit:
    """Split real nucleus images (seeded) into a reference and a test half, both at the reference's scale.

    Args:
        pairs: :class:`~histolib.data.folder.Pairs` with instance masks (images of any size).
        reference_fraction: share of the images in the reference half (at least one image each side).
        target_diameter: the profile's ``data.nucleus_diameter``, px.
        size: tile side, px (``data.nuclei_size``).
        seed: the study seed (stream :data:`STREAM`).

    Raises:
        DataError: fewer than two images, or a reference half without a nucleus.
    """
    from histolib.data.nuclei_scale import nucleus_scale, scaled_tiles

    n = len(pairs)
    if n < 2:
        raise DataError(f"nuclei sim-to-real needs at least 2 annotated images (one to scale and train on, one "
                        f"to test on); the set has {n}")
    k = min(n - 1, max(1, int(round(reference_fraction * n))))
    order = numpy_rng(seed, STREAM).permutation(n)
    halves = {"reference": sorted(order[:k].tolist()), "test": sorted(order[k:].tolist())}
    scale = nucleus_scale([pairs.masks[i] for i in halves["reference"]], target_diameter,
                          measured_on="reference")
    out = {}
    for half, idx in halves.items():
        t = scaled_tiles([pairs.images[i] for i in idx], [pairs.masks[i] for i in idx],
                         [pairs.names[i] for i in idx], scale.factor, size)
        out[half] = (np.stack(t["images"]).astype(np.uint8), np.stack(t["masks"]).astype(np.int32))
    return RealNucleiSplit(out["reference"], out["test"], scale,
                           [pairs.names[i] for i in halves["reference"]], [pairs.names[i] for i in halves["test"]])


def nuclei_sim_to_real(real_sets: dict, P, seeds, models: Path, progress: bool = False) -> tuple[list[dict], dict]:
    """Phantom-only against real-trained HoVer-Nets on every nucleus set of ``real_sets``.

    Args:
        real_sets: :func:`histolib.studies.data_overview.find_real_sets`'s result (glomerulus sets are
            skipped).
        P: the study params (``data``, ``sim2real``, ``nuclei`` sections).
        seeds: one model of each kind per seed.
        models: folder of the trained HoVer-Nets (reloaded when their options and data are unchanged).

    Returns:
        ``(rows, splits)``: one row per set, training source and seed (``set``, ``modality``, ``trained on``,
        ``seed`` and notebook 05's scores: :func:`histolib.studies.nuclei.train_and_test`); ``splits[name]``:
        the split's record (image names of each half, the scale, tile counts). Empty without a nucleus set.
    """
    from histolib.studies.data_overview import load_real_nuclei, phantom_nuclei_fields
    from histolib.studies.nuclei import train_and_test

    d, s = P.data, P.sim2real
    rows, splits = [], {}
    for name, info in real_sets.items():
        if info["kind"] != "nuclei":
            continue
        style = "fluorescence" if info["modality"] == "fluorescence" else "he"
        split = split_real_set(load_real_nuclei(info["folder"], s.n_real), s.nuclei_reference_fraction,
                               d.nucleus_diameter, d.nuclei_size, P.seed)
        splits[name] = {"reference_images": split.reference_names, "test_images": split.test_names,
                        "scale": split.scale.to_dict(), "reference_tiles": int(len(split.reference[0])),
                        "test_tiles": int(len(split.test[0])), "phantom_style": style}
        ph = phantom_nuclei_fields(style, s.n_phantom_nuclei, d.nuclei_size, d.nucleus_diameter, P.seed)
        sources = {f"phantom ({style}, {len(ph)} fields)": (ph.images, ph.masks),
                   f"real ({len(split.reference_names)} reference images)": split.reference}
        for (label, train), key in zip(sources.items(), ("phantom", "real"), strict=True):
            for seed in seeds:
                scores = train_and_test(*train, *split.test, P.nuclei, seed, Path(models) / f"{name}_{key}_s{seed}",
                                        progress=progress)
                rows.append({"set": name, "modality": info["modality"], "trained on": label, "source": key,
                             "seed": int(seed), **scores})
    return rows, splits


def nuclei_conditions(P, splits: dict, seeds) -> str:
    """The conditions line of :func:`summary_table`: profile, HoVer-Net, scale, split and phantom counts."""
    C = P.nuclei
    scales = ", ".join(f"`{k}` x{v['scale']['factor']:.3f} (reference median {v['scale']['median_diameter']:.1f} px)"
                       for k, v in splits.items())
    return (f"profile `{P.profile}`; notebook 05's HoVer-Net (width {C.hv_width}, blocks {C.hv_blocks}, {C.hv_block}, "
            f"{C.hv_steps} steps of batch {C.hv_batch}, {C.hv_crop}-px crops), seeds {list(seeds)}; "
            f"{P.data.nuclei_size}-px tiles at a median nucleus diameter of {P.data.nucleus_diameter:g} px; phantom: "
            f"{P.sim2real.n_phantom_nuclei} fields per modality; each real set split once (seed {P.seed}), "
            f"{P.sim2real.nuclei_reference_fraction:.0%} of its images as the reference; scales: {scales}.")


def summary_table(rows: list[dict], splits: dict) -> list[dict]:
    """Per set and training source: mean +- std over seeds of AJI, DICE and PQ, the phantom-only model's AJI
    as a fraction of the real-trained model's, and issue 15's AJI target where it names the set."""
    from histolib.metrics.segmentation import summarize

    out = []
    for name, sp in splits.items():
        per = {src: [r for r in rows if r["set"] == name and r["source"] == src] for src in ("phantom", "real")}
        real_aji = summarize([r["aji"] for r in per["real"]])["mean"] if per["real"] else float("nan")
        for src, rs in per.items():
            if not rs:
                continue
            m = {k: summarize([r[k] for r in rs]) for k in ("aji", "dice", "pq")}
            target = AJI_TARGETS.get(name) if src == "phantom" else None
            out.append({"real set": name, "trained on": rs[0]["trained on"],
                        "test": f"{len(sp['test_images'])} images ({sp['test_tiles']} tiles)",
                        **{k.upper(): viz.fmt_mean_std(v["mean"], v["std"], scale=1.0, digits=3)
                           for k, v in m.items()},
                        "AJI / real-trained": f"{m['aji']['mean'] / real_aji:.2f}" if real_aji > 0 else "",
                        "target AJI (issue 15)": "" if target is None else f">= {target:.2f}",
                        "met": "" if target is None else ("yes" if m["aji"]["mean"] >= target else "no")})
    return out


# --------------------------------------------------------------------------------------------
# Glomerulus crops: real alone, real + phantom, phantom alone
# --------------------------------------------------------------------------------------------

def with_data(P, **changes):
    """``P`` with some ``data`` options replaced, every other section untouched."""
    import dataclasses

    return dataclasses.replace(P, sections={**P.sections, "data": dataclasses.replace(P.data, **changes)})


def _pairs(split: dict) -> Pairs:
    """A builder split (lists of equal-size arrays) as :class:`Pairs`: stacked arrays, labels keyed by file name."""
    return Pairs(np.stack(split["images"]), np.stack(split["masks"]), list(split["names"]),
                 dict(zip(split["names"], split["labels"], strict=True)))


def crop_splits(P, root: Path, crops_source: str) -> dict[str, Pairs]:
    """The real crops of ``crops_source`` cut as the data stage cuts a real glomerulus folder (notebook 01's
    real run): split by slide with ``data.real_split`` (gan, train, val, test) and the study seed, each crop
    resized to ``data.patch_size``.

    Raises:
        DataError: an unreadable folder, or a split left without a slide.
    """
    from histolib.data.builder import _real_glomeruli  # the data stage's own cutting, in memory

    glom, _, _ = _real_glomeruli(with_data(P, source=crops_source), P.seed, Path(root))
    return {split: _pairs(v) for split, v in glom.items()}


def tight_phantom(P, fill) -> dict[str, Pairs]:
    """Phantom glomerulus ``train`` and ``val`` patches as the data stage draws them (same item seeds,
    stain, calibration and counts) but framed with ``fill`` (glomerulus diameter / patch side)."""
    from histolib.data.builder import _phantom_glomeruli  # the data stage's own drawing, in memory

    glom = _phantom_glomeruli(with_data(P, fill=[float(f) for f in fill], n_gan=1, n_test=1), P.seed)
    return {split: _pairs(glom[split]) for split in ("train", "val")}


def concat_pairs(a: Pairs, b: Pairs) -> Pairs:
    """``a`` then ``b`` (equal image sizes), labels merged."""
    return Pairs(np.concatenate([np.asarray(a.images), np.asarray(b.images)]),
                 np.concatenate([np.asarray(a.masks), np.asarray(b.masks)]), [*a.names, *b.names],
                 {**a.labels, **b.labels})


MIX_SETTINGS = ("real", "real + phantom", "phantom only")


def phantom_and_real(real: dict[str, Pairs], phantom: dict[str, Pairs], cfg, seeds, models: Path,
                     progress: bool = False, settings=MIX_SETTINGS) -> list[dict]:
    """U-Nets (the shared harness, options ``cfg``) per seed on the real crops, the real crops plus phantom
    patches, and the phantom patches alone, each scored on the real test crops.

    Args:
        real: :func:`crop_splits`'s result (``train``, ``val``, ``test``).
        phantom: :func:`tight_phantom`'s result (``train``, ``val``).
        models: one folder per setting and seed (finished runs are reloaded when unchanged).
        settings: which of :data:`MIX_SETTINGS` to train.

    Returns:
        One row per setting and seed: ``setting``, ``seed``, ``n_train``, ``best_epoch`` and the pooled
        ``dice``, ``precision``, ``recall`` on ``real["test"]``; the phantom-only models, which saw no real
        crop, are also scored on every crop of ``real`` (all four splits): ``all_dice``, ``all_precision``,
        ``all_recall``.
    """
    from histolib.train.segmentation import evaluate, train_unet

    data = {"real": (real["train"], real["val"]),
            "real + phantom": (concat_pairs(real["train"], phantom["train"]), real["val"]),
            "phantom only": (phantom["train"], phantom["val"])}
    every_crop = None
    rows = []
    for setting in settings:
        if setting not in data:
            raise ParamError(f"phantom_and_real: unknown setting {setting!r}; one of {MIX_SETTINGS}")
        train, val = data[setting]
        for seed in seeds:
            res = train_unet(train, val, cfg, seed, Path(models) / f"{setting.replace(' + ', '_').replace(' ', '_')}"
                             f"_s{seed}", progress=progress)
            scores = evaluate(res.model, real["test"])
            row = {"setting": setting, "seed": int(seed), "n_train": len(train), "best_epoch": res.best_epoch,
                   **{k: float(scores[k]) for k in ("dice", "precision", "recall")}}
            if setting == "phantom only":
                if every_crop is None:
                    every_crop = concat_splits(real)
                scores = evaluate(res.model, every_crop)
                row.update({f"all_{k}": float(scores[k]) for k in ("dice", "precision", "recall")},
                           n_all=len(every_crop))
            rows.append(row)
    return rows


def concat_splits(splits: dict[str, Pairs]) -> Pairs:
    """Every split of ``splits`` in one :class:`Pairs` (e.g. all the real crops)."""
    out = None
    for p in splits.values():
        out = p if out is None else concat_pairs(out, p)
    return out


def fixed_mask(masks, threshold: float = 0.5) -> np.ndarray:
    """The image-independent segmenter of a training set: pixels where at least ``threshold`` of its masks are
    glomerulus. On tight crops it is a centred disc; a segmenter must beat it to show it reads the image.

    Args:
        masks: ``(N, H, W)`` binary masks (e.g. the phantom training patches: no real label is used).

    Returns:
        ``(H, W)`` uint8 mask.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3 or not len(masks):
        raise DataError(f"fixed_mask needs (N, H, W) masks with N >= 1, got shape {masks.shape}")
    return (masks.astype(np.float64).mean(0) >= threshold).astype(np.uint8)


def fixed_mask_scores(mask: np.ndarray, pairs: Pairs) -> dict[str, float]:
    """Pooled Dice, precision and recall of ``mask`` predicted for every image of ``pairs``."""
    from histolib.metrics.segmentation import segmentation_scores

    target = np.asarray(pairs.masks)
    if target.shape[1:] != mask.shape:
        raise DataError(f"fixed mask {mask.shape} does not match the masks {target.shape[1:]}")
    return segmentation_scores(np.broadcast_to(mask, target.shape).copy(), target)


def fixed_baselines(phantom_masks, crops: dict[str, Pairs], threshold: float = 0.5) -> dict[str, dict]:
    """The fixed centred mask of the phantom training masks (:func:`fixed_mask`: no real label is used), scored
    on the real test crops and on every crop: ``{row label: fixed_mask_scores}`` for :func:`mix_table`."""
    disc = fixed_mask(phantom_masks, threshold)
    every = concat_splits(crops)
    return {f"fixed centred mask (phantom masks, >= {threshold:g})": fixed_mask_scores(disc, crops["test"]),
            f"fixed centred mask, scored on all {len(every)} crops": fixed_mask_scores(disc, every)}


def crops_conditions(P, crops: dict[str, Pairs], phantom: dict[str, Pairs], seeds) -> str:
    """The conditions line of :func:`mix_table`: the slide split, sizes, phantom framing, U-Net and seeds."""
    def slides(p: Pairs) -> int:
        return len({p.labels[n]["slide"] for n in p.names})

    split = ", ".join(f"{k} {len(crops[k])} crops / {slides(crops[k])} slides" for k in ("train", "val", "test"))
    return (f"profile `{P.profile}`; `{P.sim2real.crops_source}` split by slide (`data.real_split` "
            f"{P.data.real_split}, seed {P.seed}): {split} (the gan split's {len(crops['gan'])} crops unused); crops "
            f"resized to {P.data.patch_size} px; phantom {len(phantom['train'])} train / {len(phantom['val'])} val "
            f"patches, fill {P.sim2real.mix_fill}; U-Net width {P.unet.width} depth {P.unet.depth}, {P.unet.epochs} "
            f"epochs; seeds {list(seeds)}.")


def mix_table(rows: list[dict], baseline: dict, fixed: dict[str, dict] | None = None) -> list[dict]:
    """Per setting: Dice, precision and recall on the real test crops (mean +- std over seeds, %), beside
    the all-glomerulus baseline and, given ``fixed`` (``{label: fixed_mask_scores}``), the fixed-mask
    baselines; issue 15's target stated on the phantom-only rows."""
    from histolib.metrics.segmentation import summarize

    out = []
    for setting in MIX_SETTINGS:
        rs = [r for r in rows if r["setting"] == setting]
        if not rs:
            continue
        m = {k: summarize([r[k] for r in rs]) for k in ("dice", "precision", "recall")}
        row = {"trained on": setting, "training patches": rs[0]["n_train"],
               **{k.capitalize(): viz.fmt_mean_std(v["mean"], v["std"]) for k, v in m.items()}, "target": "", "met": ""}
        if setting == "phantom only":
            row["target"] = ", ".join(f"{k} >= {100 * v:.0f}" for k, v in CROPS_TARGET.items())
            row["met"] = "yes" if all(m[k]["mean"] >= v for k, v in CROPS_TARGET.items()) else "no"
        out.append(row)
        if setting == "phantom only" and "all_dice" in rs[0]:
            a = {k: summarize([r[f"all_{k}"] for r in rs]) for k in ("dice", "precision", "recall")}
            out.append({**row, "trained on": f"phantom only, scored on all {rs[0]['n_all']} crops",
                        **{k.capitalize(): viz.fmt_mean_std(v["mean"], v["std"]) for k, v in a.items()},
                        "met": "yes" if all(a[k]["mean"] >= v for k, v in CROPS_TARGET.items()) else "no"})
    for label, scores in {"all-glomerulus baseline (every pixel glomerulus)": baseline, **(fixed or {})}.items():
        out.append({"trained on": label, "training patches": 0,
                    **{k.capitalize(): f"{100 * scores[k]:.2f}" for k in ("dice", "precision", "recall")},
                    "target": "", "met": ""})
    return out


MIX_CLAIM = report.Claim(
    key="00-phantom-adds-to-real", paper="00", section="issue 15",
    text="Adding phantom glomerulus patches, framed as tight as the real crops, to the real training crops raises "
         "the U-Net's Dice on real test crops (split by slide).",
    metric="real test Dice (points)", comparison="Real + phantom - Real", extension=True)


def mix_claim(rows: list[dict], alpha: float = 0.05) -> dict:
    """:data:`MIX_CLAIM` assessed by the shared rule (``histolib.report``): Welch's difference of the
    per-seed real test Dice, real + phantom minus real (an extension: the evidence is the finding)."""
    dice = {s: [r["dice"] for r in rows if r["setting"] == s] for s in ("real + phantom", "real")}
    if not all(dice.values()):
        return report.assess(MIX_CLAIM, None, alpha=alpha)
    diff = report.two_level_difference(report.single_level(dice["real + phantom"]), report.single_level(dice["real"]),
                                       alpha=alpha)
    return report.assess(MIX_CLAIM, report.evidence_from_test(diff, 100.0, "points"), alpha=alpha)
