"""Hand-worked cases for HoVer-Net's instance metrics (values derived in the comments)."""

import numpy as np
import pytest

from histolib.metrics import instance as M


def _approx(x):
    return pytest.approx(x, rel=1e-5, abs=1e-6)


def test_split_nucleus():
    # GT: one 2x4 nucleus (8 px). Pred: its two 2x2 halves (ids 1, 2).
    true = np.zeros((4, 6), np.int32)
    true[1:3, 1:5] = 3
    pred = np.zeros_like(true)
    pred[1:3, 1:3] = 1
    pred[1:3, 3:5] = 2
    m = M.instance_metrics(true, pred)
    assert m["dice"] == _approx(1.0)
    # DICE2: pairs (G,P1), (G,P2): 2 * (4 + 4) / ((8 + 4) + (8 + 4)) = 2/3
    assert m["dice2"] == _approx(2 / 3)
    # AJI: IoU 0.5 both, argmax -> P1: inter 4 / (union 8 + unmatched P2 4) = 1/3
    assert m["aji"] == _approx(1 / 3)
    assert m["aji_plus"] == _approx(1 / 3)
    # PQ: IoU 0.5 is not > 0.5: TP 0, FN 1, FP 2
    assert m["dq"] == 0 and m["pq"] == 0


def test_merged_nuclei():
    # GT: two adjacent 2x2 nuclei. Pred: one 2x4 nucleus covering both.
    true = np.zeros((4, 6), np.int32)
    true[1:3, 1:3] = 1
    true[1:3, 3:5] = 2
    pred = (true > 0).astype(np.int32) * 7
    m = M.instance_metrics(true, pred)
    assert m["dice"] == _approx(1.0)
    assert m["dice2"] == _approx(2 * 8 / 24)
    # AJI: both GT pick the merged pred: (4 + 4) / (8 + 8) = 0.5 (its area counted twice)
    assert m["aji"] == _approx(0.5)
    # AJI+: one-to-one: G1-P (4 / 8), G2 unmatched adds 4: 4 / 12
    assert m["aji_plus"] == _approx(1 / 3)
    assert m["pq"] == 0


def test_missed_nucleus():
    # GT: A (2x2) and B (2x2); pred finds A exactly and misses B.
    true = np.zeros((5, 8), np.int32)
    true[0:2, 0:2] = 1
    true[3:5, 5:7] = 2
    pred = np.where(true == 1, 1, 0).astype(np.int32)
    m = M.instance_metrics(true, pred)
    assert m["dice"] == _approx(2 * 4 / (8 + 4))
    assert m["dice2"] == _approx(1.0)
    assert m["aji"] == _approx(4 / 8)
    assert m["aji_plus"] == _approx(4 / 8)
    # PQ: TP 1, FN 1 -> DQ = 1 / 1.5, SQ = 1
    assert m["dq"] == _approx(2 / 3)
    assert m["sq"] == _approx(1.0)
    assert m["pq"] == _approx(2 / 3)


def test_partial_overlap_and_false_positive():
    # GT: 3x3 (9 px). Pred: 2x3 inside it (6 px, IoU 2/3) and a 2 px false positive.
    true = np.zeros((6, 6), np.int32)
    true[0:3, 0:3] = 1
    pred = np.zeros_like(true)
    pred[0:2, 0:3] = 5
    pred[5, 4:6] = 9
    m = M.instance_metrics(true, pred)
    assert m["dice"] == _approx(2 * 6 / (9 + 8))
    assert m["dice2"] == _approx(2 * 6 / (9 + 6))
    assert m["aji"] == _approx(6 / (9 + 2))
    assert m["aji_plus"] == _approx(6 / (9 + 2))
    assert m["dq"] == _approx(1 / 1.5)
    assert m["sq"] == _approx(6 / 9)
    assert m["pq"] == _approx(4 / 9)


def test_aji_argmax_and_hungarian_differ_when_a_prediction_serves_two_nuclei():
    # G1 (4 px) and G2 (2 px) both best match P1 (covers G1 and half of G2); P2 covers the rest of G2.
    true = np.zeros((3, 6), np.int32)
    true[0:2, 0:2] = 1
    true[0, 2:4] = 2
    pred = np.zeros_like(true)
    pred[0:2, 0:2] = 1
    pred[0, 2] = 1  # P1 = 5 px: IoU(G1) = 4/5, IoU(G2) = 1/6
    pred[0, 3] = 2  # P2 = 1 px: IoU(G2) = 1/2
    m = M.instance_metrics(true, pred)
    # AJI: G1->P1 (4/5), G2->P2 (argmax 1/2 > 1/6): (4 + 1) / (5 + 2) = 5/7
    assert m["aji"] == _approx(5 / 7)
    assert m["aji_plus"] == _approx(5 / 7)
    # Now make P1 also G2's best match: P1 covers both G2 pixels except none for P2.
    pred2 = np.zeros_like(true)
    pred2[0:2, 0:2] = 1
    pred2[0, 2:4] = 1  # P1 = 6 px: IoU(G1) = 4/6, IoU(G2) = 2/6
    pred2[2, 5] = 3  # a 1 px false positive
    m2 = M.instance_metrics(true, pred2)
    # AJI: both -> P1: (4 + 2) / (6 + 6 + 1 unmatched FP) = 6/13
    assert m2["aji"] == _approx(6 / 13)
    # AJI+: G1-P1 (4 / 6), G2 unmatched (2), FP (1): 4 / 9
    assert m2["aji_plus"] == _approx(4 / 9)


def test_empty_maps_are_safe():
    z = np.zeros((4, 4), np.int32)
    one = z.copy()
    one[1:3, 1:3] = 1
    assert all(v == 1.0 for v in M.instance_metrics(z, z).values())
    assert all(v == 0.0 for v in M.instance_metrics(one, z).values())
    assert all(v == 0.0 for v in M.instance_metrics(z, one).values())
    apart = np.zeros((4, 4), np.int32)
    apart[0, 0] = 1
    other = np.zeros((4, 4), np.int32)
    other[3, 3] = 2
    m = M.instance_metrics(apart, other)
    assert m["dice"] == 0 and m["dice2"] == 0 and m["aji"] == 0 and m["pq"] == 0


def test_ids_need_not_be_contiguous_and_functions_agree():
    true = np.zeros((5, 5), np.int64)
    true[0:2, 0:2] = 40
    true[3:5, 3:5] = 7
    pred = np.where(true == 40, 1000, 0)
    pred[3:5, 3] = 3
    m = M.instance_metrics(true, pred)
    assert M.dice(true, pred) == m["dice"]
    assert M.dice2(true, pred) == m["dice2"]
    assert M.aggregated_jaccard(true, pred) == m["aji"]
    assert M.aggregated_jaccard_plus(true, pred) == m["aji_plus"]
    assert M.panoptic_quality(true, pred)["pq"] == m["pq"]
    assert m["aji"] == _approx((4 + 2) / (4 + 4))
    with pytest.raises(ValueError, match="same shape"):
        M.instance_metrics(true, pred[:4])
    with pytest.raises(ValueError, match="integer"):
        M.instance_metrics(true.astype(float), pred)


def test_mean_over_images_is_per_image_then_averaged():
    split_t = np.zeros((4, 6), np.int32)
    split_t[1:3, 1:5] = 1
    split_p = np.zeros_like(split_t)
    split_p[1:3, 1:3] = 1
    split_p[1:3, 3:5] = 2
    z = np.zeros((4, 6), np.int32)
    out = M.mean_instance_metrics([split_t, z], [split_p, z])
    assert out["n_images"] == 2
    assert out["aji"] == _approx((1 / 3 + 1.0) / 2)
    assert out["per_image"]["dice2"] == [_approx(2 / 3), 1.0]
    with pytest.raises(ValueError, match="equally many"):
        M.mean_instance_metrics([z], [])


def _loop_reference(true, pred):
    """HoVer-Net's formulas written the slow way, one mask pair at a time."""
    t_ids = [i for i in np.unique(true) if i]
    p_ids = [j for j in np.unique(pred) if j]
    tm = {i: true == i for i in t_ids}
    pm = {j: pred == j for j in p_ids}
    inter = np.array([[np.logical_and(tm[i], pm[j]).sum() for j in p_ids] for i in t_ids], float)
    union = np.array([[np.logical_or(tm[i], pm[j]).sum() for j in p_ids] for i in t_ids], float)
    iou = inter / (union + 1e-6)
    d2_num = d2_den = 0.0
    for a, i in enumerate(t_ids):
        for b, j in enumerate(p_ids):
            if inter[a, b] > 0:
                d2_num += inter[a, b]
                d2_den += tm[i].sum() + pm[j].sum()
    aji_i = aji_u = 0.0
    used = set()
    for a, i in enumerate(t_ids):
        b = int(np.argmax(iou[a]))
        if iou[a, b] > 0:
            aji_i += inter[a, b]
            aji_u += union[a, b]
            used.add(b)
        else:
            aji_u += tm[i].sum()
    aji_u += sum(pm[j].sum() for b, j in enumerate(p_ids) if b not in used)
    tp = [(a, b) for a in range(len(t_ids)) for b in range(len(p_ids)) if iou[a, b] > 0.5]
    dq = len(tp) / (len(tp) + 0.5 * (len(p_ids) - len(tp)) + 0.5 * (len(t_ids) - len(tp)))
    sq = sum(iou[a, b] for a, b in tp) / (len(tp) + 1e-6)
    return {"dice2": 2 * d2_num / d2_den, "aji": aji_i / aji_u, "dq": dq, "sq": sq}


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_per_instance_loop_on_random_maps(seed):
    rng = np.random.default_rng(seed)

    def random_map():
        m = np.zeros((24, 24), np.int32)
        for k in range(1, 9):
            y, x = rng.integers(0, 20, 2)
            h, w = rng.integers(2, 6, 2)
            m[y:y + h, x:x + w] = k
        return m

    true, pred = random_map(), random_map()
    ours = M.instance_metrics(true, pred)
    ref = _loop_reference(true, pred)
    for key, value in ref.items():
        assert ours[key] == _approx(value), key
