"""Notebook 06's benchmark: nested budgets, budget views of the training sets, mixtures, gains and costs."""

import math

import numpy as np
import pytest

from histolib.config import load_params
from histolib.errors import ParamError
from histolib.studies import benchmark as bm

BUDGETS = [0.1, 0.25, 0.5, 1.0]


@pytest.mark.parametrize("n", [1, 7, 40, 120])
def test_budget_subsets_are_nested_per_seed_and_deterministic(n):
    for seed in (0, 1, 2):
        sub = bm.budget_subsets(n, BUDGETS, seed)
        sizes = [len(sub[b]) for b in BUDGETS]
        assert sizes == [max(1, round(b * n)) for b in BUDGETS]
        for small, large in zip(BUDGETS, BUDGETS[1:], strict=False):
            assert set(sub[small]) <= set(sub[large])  # the 10 % set is inside the 25 % set, ...
        assert sub[1.0] == list(range(n))  # the full budget is the whole split, in its own order
        assert all(s == sorted(s) and len(set(s)) == len(s) for s in sub.values())
        assert bm.budget_subsets(n, BUDGETS, seed) == sub  # the same seed, the same sets
        assert bm.budget_subsets(n, [0.25], seed)[0.25] == sub[0.25]  # independent of the other budgets asked


def test_budget_subsets_differ_between_seeds():
    a, b = bm.budget_subsets(120, BUDGETS, 0), bm.budget_subsets(120, BUDGETS, 1)
    assert a[0.1] != b[0.1] and a[1.0] == b[1.0]


def test_budget_subsets_reject_bad_input():
    with pytest.raises(ParamError, match="budget"):
        bm.budget_subsets(10, [0.0], 0)
    with pytest.raises(ParamError, match="budget"):
        bm.budget_subsets(10, [1.5], 0)
    with pytest.raises(ParamError, match="no real training patches"):
        bm.budget_subsets(0, [0.5], 0)


def test_copies_index_takes_every_copy_of_the_chosen_patches():
    # flattened (K=2, N=5): copy-major positions
    assert bm.copies_index([1, 3], 5, 2) == [1, 3, 6, 8]
    assert bm.copies_index(range(5), 5, 2) == list(range(10))


def test_mixture_keeps_real_copies_first_and_synthetic_last():
    k, n = 3, 2
    real = np.zeros((k, n, 4, 4, 3), np.uint8)
    synth = np.full((k, n, 4, 4, 3), 200, np.uint8)
    masks = np.arange(k * n, dtype=np.uint8).reshape(k, n, 1, 1).repeat(4, 2).repeat(4, 3)
    p = bm.mixture(real, synth, masks, 1, "x")
    assert len(p) == k * n
    assert (p.images[: (k - 1) * n] == 0).all() and (p.images[(k - 1) * n:] == 200).all()
    assert np.array_equal(p.masks, masks.reshape(-1, 4, 4))  # every copy keeps its own deformed mask
    with pytest.raises(ParamError):
        bm.mixture(real, synth, masks, k, "x")


def test_budget_cfg_scales_epochs_only_with_equal_steps():
    P = load_params("smoke")
    assert bm.budget_cfg(P.unet, 0.25, False) is P.unet
    assert bm.budget_cfg(P.unet, 0.25, True).epochs == math.ceil(P.unet.epochs / 0.25)
    assert bm.budget_cfg(P.unet, 1.0, True).epochs == P.unet.epochs


def test_methods_are_checked_and_classical_is_required():
    assert [m.name for m in bm.check_methods(["classical", "spade_gtmask"])] == ["classical", "spade_gtmask"]
    with pytest.raises(ParamError, match="unknown method 'spade'"):
        bm.check_methods(["classical", "spade"])
    with pytest.raises(ParamError, match="must include 'classical'"):
        bm.check_methods(["spade_gtmask"])
    with pytest.raises(ParamError, match="synthetic_per_real"):
        bm.check(load_params("smoke", {"benchmark.synthetic_per_real": 2}))  # smoke n_deform = 2


def _rows():
    """classical 3 seeds; spade_gtmask 2 replicates x 3 seeds, 2 budgets; a clear gain at 10 %, none at 100 %."""
    rows = []
    for b, base in ((0.1, 0.70), (1.0, 0.90)):
        for s in range(3):
            rows.append({"method": "classical", "generator": None, "budget": b, "seed": s,
                         "dice": base + 0.001 * s, "source": "trained here"})
            for g in range(2):
                gain = 0.10 if b == 0.1 else 0.0
                rows.append({"method": "spade_gtmask", "generator": g, "budget": b, "seed": s,
                             "dice": base + gain + 0.002 * g + 0.001 * s, "source": "trained here"})
    return rows


def _faithful(ratio):
    reps = [{"synthetic": 0.9 * ratio, "real": 0.9, "ratio": ratio, "trivial": 0.4}] * 2
    return {"01": {"faithfulness": {"gtmask": {"replicates": reps}},
                   "spade": {"gtmask": [{"seconds": 60.0}, {"seconds": 120.0}]},
                   "image_quality": {"gtmask": [{"kid": 0.001}, {"kid": 0.003}]}}}


def test_groups_put_replicates_as_units_and_classical_as_single_level():
    rows = _rows()
    assert np.allclose(bm.groups(rows, "classical", 0.1), [[0.70], [0.701], [0.702]])
    assert np.allclose(bm.groups(rows, "spade_gtmask", 0.1), [[0.80, 0.801, 0.802], [0.802, 0.803, 0.804]])
    assert bm.groups(rows, "spade_gtmask", 0.5) == []


def test_gain_rows_verdicts_and_not_applicable_methods():
    methods = bm.check_methods(["classical", "spade_gtmask", "datasetgan"])
    table, assessed = bm.gain_rows(_rows(), _faithful(1.0), 0.8, 0.05, methods)
    by = {r["key"]: r for r in assessed}
    assert by["bench-spade_gtmask-10%"]["verdict"] == "reproduced"
    assert by["bench-spade_gtmask-10%"]["estimate"] == pytest.approx(10.1, abs=0.01)
    assert by["bench-spade_gtmask-100%"]["verdict"] in ("inconclusive", "reproduced")
    na = [r for r in table if r["verdict"] == "not applicable"]
    assert len(na) == 1 and "5-compartment" in na[0]["reason"]
    # an unfaithful generator makes the gain untestable, whatever the numbers
    _, unfaithful = bm.gain_rows(_rows(), _faithful(0.5), 0.8, 0.05, methods)
    assert {r["verdict"] for r in unfaithful} == {"untestable here"}


def test_curves_and_costs():
    rows = _rows()
    curves = bm.curve_rows(rows)
    assert {(c["method"], c["budget"]) for c in curves} == {(m, b) for m in ("classical", "spade_gtmask")
                                                            for b in (0.1, 1.0)}
    wide = bm.curves_wide(curves)
    assert [w["budget"] for w in wide] == [0.1, 1.0] and set(wide[0]) == {"budget", "classical", "spade_gtmask"}
    methods = bm.check_methods(["classical", "spade_gtmask", "inpainting_sclerosed"])
    _, gains = bm.gain_rows(rows, _faithful(1.0), 0.8, 0.05, methods)
    costs = bm.cost_rows(methods, {}, _faithful(1.0), gains)
    spade = next(c for c in costs if c["method"] == "SPADE-GTMask")
    assert spade["generator training (min)"] == "1.50" and spade["KID x1e3"] == "2.00"
    assert spade["faithfulness (x real)"] == "1.00" and spade["gain, smallest budget"].startswith("+10.10")
    assert next(c for c in costs if c["paper"] == "003")["gain, full budget"] == "not applicable"
    best = bm.best_per_budget(rows)
    assert [b["best method"] for b in best] == ["SPADE-GTMask", "SPADE-GTMask"]


def test_faithfulness_is_read_from_each_notebooks_metrics():
    nb02 = {"02": {"ablation": {"full": {"faithfulness": {"per_replicate": [0.9, 0.45], "real": 0.9}}}}}
    f = bm.faithfulness_of(bm.METHODS["pix2pix_ms"], nb02)
    assert [round(x["ratio"], 2) for x in f] == [1.0, 0.5]
    assert bm.faithfulness_of(bm.METHODS["spade_gtmask"], _faithful(0.7))[0]["ratio"] == 0.7
    assert bm.faithfulness_of(bm.METHODS["spade_gtmask"], {}) is None
