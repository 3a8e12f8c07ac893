"""Notebook 06: every augmentation method on one glomerulus segmentation task, one protocol, four real budgets.

Everything notebook 06 does beyond a call and a plot lives here, with tests in
``tests/studies/test_benchmark.py``; the claim-by-claim scorecard of the five papers is
:mod:`histolib.studies.scorecard`.

The task is notebook 01's: binary glomerulus segmentation of glomerulus-centred patches (the phantom by
default, the real glomerulus crops with ``data.source``), the same ``val`` and ``test`` splits, the same U-Net
(the ``unet`` section) and the same U-Net seeds for every method. Per method, budget and U-Net seed:

1. **Budget** (:func:`budget_subsets`): the real training patches of U-Net seed ``s`` at budget ``b`` are the
   first ``max(1, round(b N))`` items of one permutation drawn from ``numpy_rng(s, STREAM)``, sorted; smaller
   budgets are prefixes of larger ones, so the 10 % set is inside the 25 % set (nested, per seed), and 100 %
   is the whole split in its own order (notebook 01's set, bitwise).
2. **Classical augmentation** (``classical``): ``spade.n_deform`` grid deformations of every real patch
   (notebook 01's :func:`~histolib.studies.spade.deform_copies`, drawn once for the whole split, so a patch
   has the same deformations at every budget), live flips and 90-degree rotations in the U-Net harness
   (``unet.augment_p``). This is notebook 01's ``Real`` set.
3. **Synthetic methods**: the same set with the last ``synthetic_per_real`` deformation copies of every real
   patch replaced by the generator's image for that copy's deformed label map (notebook 01's mixtures with
   the paper's 5 + 5 when ``synthetic_per_real = n_deform // 2``), once per generator replicate (``@g<k>``),
   so every set has the same size at a budget and only the source of the texture differs. The generators are
   the earlier notebooks' (loaded from ``models/<profile>/<nn>/`` through each study's own loader; a missing
   one is trained by that loader, exactly as its notebook would). Synthesis runs once on the whole split and
   is subset with the real patches (common random numbers).
4. **Not applicable here** (:data:`METHODS` ``applies``): GAN inpainting of sclerosed glomeruli (He et al.)
   writes sclerosed glomeruli into tiles with a three-class mask (other / normal / sclerosed), and DatasetGAN
   labels 5-compartment tiles; neither produces glomerulus-centred patches with a binary mask. The table says
   so (and the cost table still reports what their notebooks measured) instead of inventing a mapping.

Gains: each synthetic method minus ``classical`` at each budget by :func:`histolib.report.two_level_difference`
(generator replicates as units, ``classical`` over seeds), judged by the one verdict rule with the generator's
faithfulness gate (from its notebook's ``metrics.json``) as the precondition.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histolib import report
from histolib.config import knob, section
from histolib.errors import ParamError
from histolib.fileio import write_json
from histolib.repro import numpy_rng

STREAM = 6  # this study's numpy_rng stream (nuclei subsets use 5)


@dataclass(frozen=True)
class Method:
    """One augmentation method of the benchmark.

    Attributes:
        name: the params name (``benchmark.methods``).
        label: the name in tables and figures.
        paper: the seed id of the paper (``""`` for classical augmentation).
        notebook: the notebook that trains its generator (``""``: none).
        applies: whether it can produce glomerulus-centred patches with a binary mask (this task).
        why_not: the reason when it does not apply.
    """

    name: str
    label: str
    paper: str
    notebook: str
    applies: bool = True
    why_not: str = ""


METHODS = {m.name: m for m in (
    Method("classical", "Classical (flips, rot90, grid deformation)", "", ""),
    Method("spade_gtmask", "SPADE-GTMask", "000", "01"),
    Method("spade_structure", "SPADE-Structure", "000", "01"),
    Method("pix2pix_ms", "Mode-seeking Pix2Pix", "001", "02"),
    Method("datasetgan", "DatasetGAN (StyleGAN2-ADA)", "002", "03", applies=False,
           why_not="labels 5-compartment tiles, not glomerulus-centred patches; its glomerulus class would need a "
                   "cropping and re-centring rule the paper does not have"),
    Method("inpainting_sclerosed", "Inpainted sclerosed glomeruli", "003", "04", applies=False,
           why_not="inpaints sclerosed glomeruli into tiles with a 3-class mask (other / normal / sclerosed); this "
                   "task has one glomerulus class and centred patches, so its sclerosed class has no counterpart"),
)}
CLASSICAL = "classical"
SPADE_KINDS = {"spade_gtmask": "gtmask", "spade_structure": "structure"}


@section("benchmark")
class BenchmarkParams:
    """Notebook 06: all methods on one glomerulus segmentation task (issue 16)."""

    methods: list[str] = knob("methods compared (histolib.studies.benchmark.METHODS): classical, spade_gtmask, "
                              "spade_structure, pix2pix_ms, datasetgan, inpainting_sclerosed; the last two do "
                              "not apply to glomerulus-centred patches and are listed as such")
    budgets: list[float] = knob("fractions of the real training patches (nested per seed; issue 16: 0.1, 0.25, "
                                "0.5, 1.0)", min=0.001, max=1.0)
    n_seeds: int = knob("U-Net seeds per (method, budget, generator replicate), the first of unet's seeds "
                        "seed + k (paper-faithful: unet.n_seeds; cpu: 3, which fits the 15-minute stage)", min=1)
    synthetic_per_real: int = knob("deformation copies of every real patch replaced by synthesis (at most "
                                   "spade.n_deform - 1; spade.n_deform // 2 is notebook 01's mixture, the "
                                   "paper's 5 + 5)", min=1)
    equal_steps: bool = knob("true: every budget trains as many optimisation steps as the full set (epochs = "
                             "unet.epochs / budget, the usual data-efficiency protocol, paper-faithful); false: "
                             "unet.epochs at every budget (small budgets see fewer steps; what fits cpu)")
    n_speed: int = knob("synthesised images timed per generator for the images/s of the cost table", min=1)


def check_methods(names) -> list[Method]:
    """The :class:`Method` of every name, in order; :class:`ParamError` naming an unknown one."""
    out = []
    for n in names:
        if n not in METHODS:
            raise ParamError(f"parameter 'benchmark.methods' has unknown method {n!r}; known: {list(METHODS)}")
        out.append(METHODS[n])
    if CLASSICAL not in [m.name for m in out]:
        raise ParamError("parameter 'benchmark.methods' must include 'classical' (the baseline of every gain)")
    return out


def check(P) -> None:
    """Cross-section checks: ``synthetic_per_real < spade.n_deform``, budgets distinct and increasing."""
    B = P.benchmark
    check_methods(B.methods)
    if B.synthetic_per_real >= P.spade.n_deform:
        raise ParamError(f"parameter 'benchmark.synthetic_per_real' = {B.synthetic_per_real} must be below "
                         f"spade.n_deform = {P.spade.n_deform} (at least one real copy per patch)")
    if list(B.budgets) != sorted(set(B.budgets)):
        raise ParamError(f"parameter 'benchmark.budgets' = {B.budgets} must be increasing, without repeats")


# --------------------------------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------------------------------

def budget_size(n: int, budget: float) -> int:
    """Real patches at ``budget`` of ``n``: ``max(1, round(budget n))``."""
    if not 0 < budget <= 1:
        raise ParamError(f"a budget is a fraction in (0, 1], got {budget}")
    return max(1, min(n, int(round(budget * n))))


def budget_subsets(n: int, budgets, seed: int) -> dict[float, list[int]]:
    """The real training patches of each budget for one U-Net seed.

    One permutation of ``range(n)`` from :func:`histolib.repro.numpy_rng` ``(seed, STREAM)``; budget ``b``
    takes its first :func:`budget_size` items, sorted. Smaller budgets are inside larger ones (prefixes of
    one permutation), the same ``seed`` always gives the same sets, and ``1.0`` gives ``0 .. n - 1``.

    Raises:
        ParamError: ``n < 1`` or a budget outside (0, 1].
    """
    if n < 1:
        raise ParamError(f"no real training patches to subsample (n = {n})")
    perm = numpy_rng(int(seed), STREAM).permutation(n)
    return {float(b): sorted(int(i) for i in perm[:budget_size(n, b)]) for b in budgets}


def budget_table(n: int, budgets, seeds) -> list[dict]:
    """Per U-Net seed: the real patches at each budget and whether the sets are nested (each inside the next)."""
    out = []
    for s in seeds:
        sub = budget_subsets(n, budgets, s)
        sets = [set(v) for v in sub.values()]
        out.append({"seed": s, **{budget_name(b): len(v) for b, v in sub.items()},
                    "nested": all(a <= b for a, b in zip(sets, sets[1:], strict=False))})
    return out


def copies_index(index, n: int, copies: int) -> list[int]:
    """Positions in a flattened ``(copies, n, ...)`` array of the items ``index`` in every copy (copy-major,
    the order of :func:`histolib.studies.spade.build_training_sets`' sets)."""
    return [c * n + int(i) for c in range(copies) for i in index]


def budget_name(budget: float) -> str:
    """``0.1`` -> ``"10%"``."""
    return f"{100 * budget:g}%"


# --------------------------------------------------------------------------------------------------
# Training sets of every method (whole split; budgets are views)
# --------------------------------------------------------------------------------------------------

@dataclass
class MethodSets:
    """The full-split training set(s) of one method: one per generator replicate (``[pairs]`` for classical).

    Attributes:
        method: the :class:`Method`.
        sets: one :class:`~histolib.data.folder.Pairs` per replicate, ``K x N`` items, copy-major.
        train_seconds: generator training seconds per replicate (as recorded by its run).
        images_per_second: measured synthesis speed per replicate (NaN for classical).
        reuse: per replicate, the folder holding the earlier notebook's U-Net runs on exactly this set (full
            budget), ``<folder>/seed<k>``; ``None`` when there is none.
    """

    method: Method
    sets: list
    train_seconds: list[float]
    images_per_second: list[float]
    reuse: list[Path | None]


def _pairs(images: np.ndarray, masks: np.ndarray, prefix: str):
    from histolib.data.folder import Pairs

    return Pairs(np.ascontiguousarray(images), np.ascontiguousarray(masks),
                 [f"{prefix}_{i:06d}.png" for i in range(len(images))])


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, *a.shape[2:])


def mixture(real: np.ndarray, synthetic: np.ndarray, masks: np.ndarray, n_synthetic: int, prefix: str):
    """Real copies ``0 .. K - s - 1`` and synthetic copies ``K - s .. K - 1`` of every patch (``s =
    n_synthetic``), labelled with the deformed masks: notebook 01's mixture when ``s = K - K // 2``.

    Args:
        real, synthetic: ``(K, N, H, W, 3)`` uint8 (only the last ``s`` copies of ``synthetic`` are read).
        masks: ``(K, N, H, W)``.
    """
    k = real.shape[0]
    if not 1 <= n_synthetic < k:
        raise ParamError(f"synthetic copies per patch must be in 1..{k - 1}, got {n_synthetic}")
    images = np.concatenate([_flat(real[:k - n_synthetic]), _flat(synthetic[k - n_synthetic:])])
    return _pairs(images, _flat(masks), prefix)


def timed_rate(fn, n: int) -> float:
    """Images per second of ``fn()``, which synthesises ``n`` images (NaN for ``n = 0``)."""
    if n <= 0:
        return math.nan
    t0 = time.perf_counter()
    fn()
    return n / max(time.perf_counter() - t0, 1e-9)


def spade_sets(P, kind: str, deformed, img_gan, mask_gan, nb01: Path, progress: bool = False):
    """The ``spade_<kind>`` method: notebook 01's generator replicates (loaded, or trained by notebook 01's
    loader when missing) render the last ``synthetic_per_real`` deformed label maps of every patch.

    Args:
        deformed: :func:`~histolib.studies.spade.deform_copies` of the whole training split.
        img_gan, mask_gan: the ``gan`` split (the generators' training data: their run identity).
        nb01: notebook 01's models folder (``models/<profile>/01``).
    """
    from histolib.studies import spade as sp
    from histolib.train.spade import synthesize

    B = P.benchmark
    runs = sp.train_replicates(kind, P, img_gan, mask_gan, Path(nb01) / "spade" / kind, progress=progress)
    labels = deformed.labels(kind)
    k, s = labels.shape[0], B.synthetic_per_real
    sets, rates, reuse = [], [], []
    name = f"Real + {sp.get_kind(kind).set_name}"
    for g, (run, seed) in enumerate(zip(runs, sp.generator_seeds(P), strict=True)):
        synth = np.zeros_like(deformed.images)
        for c in range(k - s, k):  # copy c's noise seed is notebook 01's (seed + c)
            synth[c] = synthesize(run.generator, labels[c], seed=seed + c)
        sets.append(mixture(deformed.images, synth, deformed.masks, s, kind))
        m = min(B.n_speed, labels.shape[1])
        rates.append(timed_rate(lambda G=run.generator, lab=labels[0][:m]: synthesize(G, lab, seed=0), m))
        reuse.append(Path(nb01) / "unet" / _slug(sp.replicate_set(name, g)) if s == k - k // 2 else None)
    return MethodSets(METHODS[f"spade_{kind}"], sets, [r.seconds for r in runs], rates, reuse)


def pix2pix_sets(P, train_pairs, gan_pairs, val_pairs, nb02: Path, progress: bool = False):
    """The ``pix2pix_ms`` method: notebook 02's ``full`` variant (mask + structure map, mode seeking), each
    replicate rendering every deformed (mask, structure map) exactly as notebook 02's downstream sets
    (:func:`~histolib.studies.pix2pix.downstream_sets`), mixed like the other methods."""
    from histolib.studies import pix2pix as p2p
    from histolib.train.pix2pix import condition_tensor, synthesize

    B, C = P.benchmark, P.pix2pix
    cs = {s: p2p.condition_set(p, C.structure_map, C.structure_threshold)
          for s, p in (("train", train_pairs), ("gan", gan_pairs), ("val", val_pairs))}
    net = p2p.feature_net(C, cs["gan"].images, P.seed)
    runs = p2p.train_replicates("full", C, cs["gan"], cs["val"], net, Path(nb02) / "gan" / "full", P.seed,
                                P.protocol.n_gan_seeds, progress=progress)
    sets, rates, reuse = [], [], []
    for g, run in enumerate(runs):
        _, deformed, synth = p2p.downstream_sets(run.generator, cs["train"], P.spade, P.seed, "full")
        k, s = synth.shape[0], B.synthetic_per_real
        sets.append(mixture(deformed.images, synth, deformed.masks, s, "pix2pix"))
        m = min(B.n_speed, len(cs["train"]))
        cond = condition_tensor(deformed.masks[0][:m], deformed.structure[0][:m])
        rates.append(timed_rate(lambda G=run.generator, x=cond: synthesize(G, x, seed=0), m))
        reuse.append(p2p.replicate_folder(Path(nb02) / "unet", g) / _slug(p2p.MIXED) if s == k - k // 2 else None)
    return MethodSets(METHODS["pix2pix_ms"], sets, [r.seconds for r in runs], rates, reuse)


def classical_set(deformed, nb01: Path) -> MethodSets:
    """The ``classical`` method: every deformed real copy (notebook 01's ``Real``; flips and rotations live)."""
    return MethodSets(METHODS[CLASSICAL], [_pairs(_flat(deformed.images), _flat(deformed.masks), "real")],
                      [0.0], [math.nan], [Path(nb01) / "unet" / "Real"])


def deform_training(P, train_pairs):
    """Notebook 01's deformations of the whole training split (:func:`~histolib.studies.spade.deform_copies`,
    study seed, ``spade.n_deform`` copies; masks binarised, structure maps warped with them)."""
    from histolib.studies import spade as sp

    images = np.asarray(train_pairs.images)
    masks = (np.asarray(train_pairs.masks) > 0).astype(np.uint8)
    C = P.spade
    structure = sp.label_maps(images, masks, "structure", C.structure_threshold)
    return sp.deform_copies(images, masks, structure, C.n_deform, P.seed, C.deform_sigma, C.deform_points)


def load_methods(P, methods: list[Method], pairs: dict, deformed, models: Path, progress: bool = False
                 ) -> dict[str, MethodSets]:
    """:class:`MethodSets` of every applicable method, generators from the earlier notebooks' model folders.

    Args:
        methods: :func:`check_methods`' result; methods that do not apply are skipped (they have no set).
        pairs: the glomerulus splits ``{"gan", "train", "val", "test"}`` (prepared pairs).
        deformed: :func:`~histolib.studies.spade.deform_copies` of the training split (study seed).
        models: the models folder of the profile and data (``models/<profile>``, or its ``real/<tag>`` form):
            notebook ``nn``'s generators are under ``models/<nn>``.
    """
    img_gan = np.asarray(pairs["gan"].images)
    mask_gan = (np.asarray(pairs["gan"].masks) > 0).astype(np.uint8)
    out = {}
    for m in methods:
        if not m.applies:
            continue
        if m.name == CLASSICAL:
            out[m.name] = classical_set(deformed, Path(models) / "01")
        elif m.name in SPADE_KINDS:
            out[m.name] = spade_sets(P, SPADE_KINDS[m.name], deformed, img_gan, mask_gan, Path(models) / "01",
                                     progress)
        elif m.name == "pix2pix_ms":
            out[m.name] = pix2pix_sets(P, pairs["train"], pairs["gan"], pairs["val"], Path(models) / "02", progress)
    return out


def _slug(name: str) -> str:
    from histolib.train.segmentation import _slug as slug

    return slug(name)


# --------------------------------------------------------------------------------------------------
# U-Nets
# --------------------------------------------------------------------------------------------------

def budget_cfg(cfg, budget: float, equal_steps: bool):
    """The ``unet`` options at ``budget``: unchanged, or with ``epochs = ceil(epochs / budget)`` when
    ``equal_steps`` (about the optimisation steps of the full set)."""
    if not equal_steps or budget >= 1:
        return cfg
    return dataclasses.replace(cfg, epochs=int(math.ceil(cfg.epochs / budget)))


def run_benchmark(P, methods: list[MethodSets], n_real: int, val, test, out_dir: str | Path,
                  progress: bool = False) -> list[dict]:
    """One U-Net per (method, generator replicate, budget, U-Net seed), scored on ``test``.

    A run lives in ``out_dir/<method>/g<k>/b<budget>/seed<s>`` (resumable, cached by
    :func:`histolib.train.segmentation.train_unet`'s run identity). At the full budget, a finished run of
    the earlier notebook on exactly the same set, options and seed (``MethodSets.reuse``) is loaded read-only
    instead (:func:`~histolib.train.segmentation.load_finished_unet` checks the identity).

    Returns:
        Rows ``method``, ``generator`` (``None`` for classical), ``budget``, ``seed``, ``n_real``, ``n_train``,
        test ``dice``/``precision``/``recall``, ``best_epoch``, ``source`` (``trained here`` or the folder read).
        Also written to ``out_dir/runs.json`` as they finish.
    """
    from histolib.train.segmentation import evaluate, load_finished_unet, train_unet

    B = P.benchmark
    seeds = [P.seed + k for k in range(B.n_seeds)]
    k_copies = P.spade.n_deform
    out_dir = Path(out_dir)
    rows = []
    for seed in seeds:
        subsets = budget_subsets(n_real, B.budgets, seed)
        for ms in methods:
            for g, full in enumerate(ms.sets):
                for budget, idx in subsets.items():
                    pairs = full.subset(copies_index(idx, n_real, k_copies))
                    cfg = budget_cfg(P.unet, budget, B.equal_steps)
                    res, source = None, "trained here"
                    if budget >= 1 and ms.reuse[g] is not None:
                        res = load_finished_unet(ms.reuse[g] / f"seed{seed}", pairs, cfg, seed)
                        source = str(ms.reuse[g]) if res is not None else source
                    if res is None:
                        folder = out_dir / ms.method.name / f"g{g}" / f"b{budget_name(budget)[:-1]}" / f"seed{seed}"
                        res = train_unet(pairs, val, cfg, seed, folder, progress=progress)
                    rows.append({"method": ms.method.name, "generator": None if ms.method.name == CLASSICAL else g,
                                 "budget": budget, "seed": seed, "n_real": len(idx), "n_train": len(pairs),
                                 **evaluate(res.model, test), "best_epoch": res.best_epoch,
                                 "epochs": cfg.epochs, "source": source})
                    write_json(out_dir / "runs.json", rows)
    return rows


# --------------------------------------------------------------------------------------------------
# Curves, gains and costs
# --------------------------------------------------------------------------------------------------

def groups(rows: list[dict], method: str, budget: float, metric: str = "dice") -> list[list[float]]:
    """Two-level groups of one method at one budget: seed scores per generator replicate; classical as
    :func:`histolib.report.single_level`. ``[]`` when absent."""
    mine = [r for r in rows if r["method"] == method and math.isclose(r["budget"], budget)]
    if not mine:
        return []
    if method == CLASSICAL or all(r.get("generator") is None for r in mine):
        return report.single_level([r[metric] for r in sorted(mine, key=lambda r: r["seed"])])
    by: dict[int, dict[int, float]] = {}
    for r in mine:
        by.setdefault(int(r["generator"]), {})[int(r["seed"])] = float(r[metric])
    return [[by[g][s] for s in sorted(by[g])] for g in sorted(by)]


def _methods_in(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows))


def _budgets_in(rows: list[dict]) -> list[float]:
    return sorted({float(r["budget"]) for r in rows})


def curve_rows(rows: list[dict]) -> list[dict]:
    """Data-efficiency curves: per method and budget, the two-level mean Dice and its 95 % interval
    (generator replicates as units; classical over seeds), in [0, 1]."""
    out = []
    for m in _methods_in(rows):
        for b in _budgets_in(rows):
            gr = groups(rows, m, b)
            if gr:
                s = report.two_level_summary(gr)
                out.append({"method": m, "budget": b, "dice": s["mean"], "ci_low": s["ci_low"],
                            "ci_high": s["ci_high"], "G": s["n_generators"] if m != CLASSICAL else 0,
                            "seeds": len({r["seed"] for r in rows if r["method"] == m})})
    return out


def curves_wide(curves: list[dict]) -> list[dict]:
    """``budget`` and one Dice column per method (DVC plot data)."""
    by: dict[float, dict] = {}
    for c in curves:
        by.setdefault(c["budget"], {"budget": c["budget"]})[c["method"]] = c["dice"]
    return [by[b] for b in sorted(by)]


def gain_claim(method: Method, budget: float) -> report.Claim:
    """The benchmark's question for one method and budget, as a :class:`histolib.report.Claim`: adding the
    method's synthesis to classically augmented real patches raises test Dice (direction +1)."""
    return report.Claim(
        key=f"bench-{method.name}-{budget_name(budget)}", paper=method.paper, section="issue 16 (benchmark)",
        text=f"At {budget_name(budget)} of the real training patches, replacing {{s}} of every patch's deformation "
             f"copies with {method.label} synthesis raises test Dice over classical augmentation alone.",
        metric="test Dice (%)", comparison=f"{method.label} - classical", paper_numbers="")


def faithfulness_of(method: Method, results: dict[str, dict]) -> list[dict] | None:
    """The faithfulness results (one per replicate) of a method's generator, read from its notebook's
    ``metrics.json`` (``results``: notebook -> metrics dict); ``None`` when not recorded."""
    m = results.get(method.notebook) or {}
    if method.name == "pix2pix_ms":  # notebook 02 pools it per variant under "ablation"
        full = (m.get("ablation") or {}).get("full", {}).get("faithfulness") or {}
        real = full.get("real")
        return [{"synthetic": v, "real": real, "ratio": v / real if real else math.nan}
                for v in full.get("per_replicate", [])] or None
    f = m.get("faithfulness")
    if not f:
        return None
    if method.name in SPADE_KINDS:
        return (f.get(SPADE_KINDS[method.name]) or {}).get("replicates")
    return f if isinstance(f, list) else None


def gain_rows(rows: list[dict], notebook_metrics: dict[str, dict], gate: float, alpha: float,
              methods: list[Method], synthetic_per_real: int = 1) -> tuple[list[dict], list[dict]]:
    """The gain over classical augmentation of every method at every budget, with its verdict.

    Returns:
        ``(table, assessed)``: table rows (method, budget, Dice of the method and of classical with intervals,
        gain in points with its interval, p, MDE, verdict, reason; a method that does not apply gets one row
        saying why) and the :func:`histolib.report.assess` rows behind the verdicts.
    """
    budgets = _budgets_in(rows)
    table, assessed = [], []
    for method in methods:
        if method.name == CLASSICAL:
            continue
        if not method.applies:
            table.append({"method": method.label, "budget": "all", "Dice": "—", "classical Dice": "—",
                          "gain (points)": "—", "95% CI": "—", "p": "—", "MDE (points)": "—",
                          "verdict": "not applicable", "reason": method.why_not})
            continue
        faith = faithfulness_of(method, notebook_metrics)
        pre = report.faithfulness_gates(faith, gate, name=method.label)
        for b in budgets:
            a, c = groups(rows, method.name, b), groups(rows, CLASSICAL, b)
            if not a or not c:
                continue
            d = report.two_level_difference(a, c, alpha=alpha)
            claim = gain_claim(method, b)
            claim = dataclasses.replace(claim, text=claim.text.replace("{s}", str(synthetic_per_real)))
            ev = report.evidence_from_test(d, scale=100, unit="points", detail=(
                f"{method.label} {100 * d['a']['mean']:.2f} ({d['a']['n_generators']} generators) vs classical "
                f"{100 * d['b']['mean']:.2f} ({d['b']['n_generators']} seeds)"))
            row = report.assess(claim, ev, pre, alpha)
            assessed.append(row)
            table.append({"method": method.label, "budget": budget_name(b),
                          "Dice": report.fmt_interval(report.two_level_summary(a)),
                          "classical Dice": report.fmt_interval(report.two_level_summary(c)),
                          "gain (points)": f"{100 * d['estimate']:+.2f}",
                          "95% CI": _ci(d), "p": _num(d["p"], "{:.2g}"), "MDE (points)": _num(100 * d["mde"]),
                          "verdict": row["verdict"], "reason": row["reason"]})
    return table, assessed


def _ci(d: dict) -> str:
    lo, hi = d.get("ci_low", math.nan), d.get("ci_high", math.nan)
    return f"[{100 * lo:+.2f}, {100 * hi:+.2f}]" if math.isfinite(lo) and math.isfinite(hi) else "—"


def _num(v, fmt: str = "{:.2f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v) else "—"


def recorded_cost(method: Method, metrics: dict) -> dict:
    """Generator training seconds (per replicate), faithfulness ratio and KID as recorded in the method's
    notebook ``metrics.json`` (``metrics``: that notebook's dict; empty: nothing recorded)."""
    out = {"train_seconds": [], "faithfulness": [], "kid": []}
    if not metrics:
        return out
    if method.name in SPADE_KINDS:
        kind = SPADE_KINDS[method.name]
        out["train_seconds"] = [r.get("seconds", math.nan) for r in metrics.get("spade", {}).get(kind, [])]
        out["kid"] = [q.get("kid", math.nan) for q in metrics.get("image_quality", {}).get(kind, [])]
    elif method.name == "pix2pix_ms":
        full = metrics.get("ablation", {}).get("full", {})
        out["kid"] = [full["kid"]["mean"]] if "kid" in full else []
    elif method.name == "inpainting_sclerosed":
        out["train_seconds"] = [g.get("inpainting_seconds", 0.0) + g.get("mask_seconds", 0.0)
                                for g in metrics.get("generators", [])]
    faith = faithfulness_of(method, {method.notebook: metrics})
    out["faithfulness"] = [f["ratio"] for f in faith or []]
    return out


def _mean(values) -> float:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else math.nan


def cost_rows(methods: list[Method], loaded: dict[str, MethodSets], notebook_metrics: dict[str, dict],
              gains: list[dict]) -> list[dict]:
    """Cost per method: generator training minutes (mean over replicates: the loaded runs' record, else the
    notebook's ``metrics.json``), synthesis images/s (measured here for the methods run), faithfulness ratio
    and KID (the notebook's ``metrics.json``), and the gain over classical at the smallest and largest budget
    (from ``gains``, :func:`gain_rows`' assessed rows)."""
    out = []
    for m in methods:
        rec = recorded_cost(m, notebook_metrics.get(m.notebook, {})) if m.notebook else {}
        ms = loaded.get(m.name)
        seconds = ms.train_seconds if ms is not None and m.notebook else rec.get("train_seconds", [])
        mine = sorted((g for g in gains if g["key"].startswith(f"bench-{m.name}-")),
                      key=lambda g: float(g["key"].rsplit("-", 1)[1][:-1]))
        row = {"method": m.label, "paper": m.paper or "—", "notebook": m.notebook or "—",
               "generator training (min)": _num(_mean(seconds) / 60) if m.notebook else "0 (none)",
               "synthesis (images/s)": (_num(_mean(ms.images_per_second), "{:.0f}") if ms is not None and m.notebook
                                        else "—" if not m.notebook else "not run on this task"),
               "faithfulness (x real)": _num(_mean(rec.get("faithfulness", []))) if m.notebook else "—",
               "KID x1e3": _num(1e3 * _mean(rec.get("kid", []))) if m.notebook else "—"}
        if mine:
            row["gain, smallest budget"] = f"{mine[0]['estimate']:+.2f} ({mine[0]['verdict']})"
            row["gain, full budget"] = f"{mine[-1]['estimate']:+.2f} ({mine[-1]['verdict']})"
        else:
            row["gain, smallest budget"] = row["gain, full budget"] = "—" if m.name == CLASSICAL else \
                "not applicable"
        out.append(row)
    return out


def best_per_budget(rows: list[dict]) -> list[dict]:
    """The method with the highest mean Dice at each budget, with its interval and classical's beside."""
    out = []
    for b in _budgets_in(rows):
        means = {m: report.two_level_summary(g) for m in _methods_in(rows) if (g := groups(rows, m, b))}
        best = max(means, key=lambda m: means[m]["mean"])
        out.append({"budget": budget_name(b), "best method": METHODS[best].label,
                    "Dice": report.fmt_interval(means[best]),
                    "classical Dice": report.fmt_interval(means[CLASSICAL]) if CLASSICAL in means else "—"})
    return out


def conditions(P, n_real: int, n_val: int, n_test: int, tag: str = "") -> report.Conditions:
    """What the benchmark's tables were measured under."""
    B, u = P.benchmark, P.unet
    return report.Conditions(
        profile=P.profile, resolution=P.data.patch_size, data_source=tag or str(P.data.source),
        seeds=[P.seed + k for k in range(B.n_seeds)], generator_replicates=P.protocol.n_gan_seeds,
        extra={"budgets": ", ".join(f"{budget_name(b)} ({budget_size(n_real, b)} patches)" for b in B.budgets),
               "training set": f"{P.spade.n_deform} deformations per real patch, {B.synthetic_per_real} of them "
                               "synthetic for a generator method",
               "U-Net": f"width {u.width}, depth {u.depth}, {u.epochs} epochs"
                        + (" x 1/budget (equal steps)" if B.equal_steps else " at every budget")
                        + f", flips/rot90 p = {u.augment_p}",
               "val / test patches": f"{n_val} / {n_test}",
               "faithfulness gate": f"{P.protocol.faithfulness_gate:g} x real, every replicate (from notebooks "
                                    "01 and 02)",
               "alpha": P.protocol.alpha})


PAPER_CONDITIONS = ("no paper compares these methods under one protocol (issue 16); each paper's own setting is in "
                    "its notebook's tables")


def read_metrics(results: Path, notebooks) -> dict[str, dict]:
    """``{notebook: metrics dict}`` from ``results/<nn>/metrics.json`` where present (``{}`` otherwise)."""
    import json

    out = {}
    for nn in notebooks:
        path = Path(results) / nn / "metrics.json"
        out[nn] = json.loads(path.read_text()) if path.is_file() else {}
    return out


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------

def curves_figure(curves: list[dict]):
    """Dice against real budget, one line per method with its 95 % interval as a band (log-spaced x)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for m in dict.fromkeys(c["method"] for c in curves):
        cs = [c for c in curves if c["method"] == m]
        x = [100 * c["budget"] for c in cs]
        y = [100 * c["dice"] for c in cs]
        line, = ax.plot(x, y, marker="o", lw=1.5, label=METHODS[m].label)
        lo = [100 * c["ci_low"] for c in cs]
        hi = [100 * c["ci_high"] for c in cs]
        if all(math.isfinite(v) for v in lo + hi):
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    xs = sorted({100 * c["budget"] for c in curves})
    ax.set_xticks(xs, [f"{v:g}%" for v in xs])
    ax.set_xlabel("real training patches (budget)")
    ax.set_ylabel("test Dice (%)")
    ax.set_title("Data efficiency: Dice by real budget (95% two-level intervals)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gain_cost_figure(costs: list[dict], gains: list[dict]):
    """Gain over classical at the smallest budget (with its interval) against generator training minutes."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    labels = {METHODS[k].label: k for k in METHODS}
    for c in costs:
        name = labels.get(c["method"])
        mine = sorted((g for g in gains if g["key"].startswith(f"bench-{name}-")),
                      key=lambda g: float(g["key"].rsplit("-", 1)[1][:-1]))
        try:
            x = float(c["generator training (min)"])
        except ValueError:
            continue
        if not mine:
            continue
        g = mine[0]
        lo, hi = g["ci"]
        yerr = [[g["estimate"] - lo], [hi - g["estimate"]]] if math.isfinite(lo) and math.isfinite(hi) else None
        ax.errorbar([x], [g["estimate"]], yerr=yerr, fmt="o", capsize=3, label=c["method"])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("generator training (minutes, mean over replicates)")
    ax.set_ylabel("gain over classical (Dice points)")
    ax.set_title("Gain at the smallest budget against cost", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metrics_summary(rows: list[dict], curves: list[dict], gains: list[dict], costs: list[dict],
                    best: list[dict], cond: report.Conditions, methods: list[Method]) -> dict:
    """What ``results/06/metrics.json`` holds. The gains sit under ``gains`` (not ``claims``: they are the
    study's own questions, and the scorecard collects the papers' claims only)."""
    return {"curves": curves, "gains": gains, "costs": costs, "best_per_budget": best,
            "not_applicable": {m.name: m.why_not for m in methods if not m.applies},
            "n_runs": len(rows), "n_trained": sum(r["source"] == "trained here" for r in rows),
            "table_conditions": cond.to_dict()}
