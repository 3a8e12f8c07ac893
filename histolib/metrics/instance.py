"""Instance segmentation metrics of HoVer-Net's evaluation: DICE, DICE2, AJI, AJI+ and PQ.

Ported from the formulas of HoVer-Net's ``stats_utils.py`` (Graham et al. 2019), computed here
from one contingency table of the two label maps instead of per-instance mask loops. Notation
for one image: ground-truth instances ``G_i``, predicted ``P_j``, ``IoU_ij = |G_i & P_j| /
(|G_i | P_j| + 1e-6)`` (HoVer-Net's epsilon kept).

* ``DICE``  = ``2 |G & P| / (|G| + |P|)`` on the binary foregrounds.
* ``DICE2`` = ``2 sum_{(i,j): |G_i & P_j| > 0} |G_i & P_j| / sum_{same pairs} (|G_i| + |P_j|)``.
* ``AJI``   = ``sum_i |G_i & P_j*(i)| / (sum_i |G_i | P_j*(i)| + sum_{unmatched j} |P_j|)`` with
  ``j*(i) = argmax_j IoU_ij`` for every ``G_i`` overlapping some prediction (a prediction may
  serve several ``G_i``: its area then enters several unions, as in HoVer-Net); ground truths
  overlapping nothing add their area to the denominator, predictions never chosen add theirs.
* ``AJI+``  = the same with a one-to-one matching: the assignment maximising total IoU
  (Hungarian), keeping pairs with ``IoU > 0``.
* ``PQ``    = ``DQ * SQ`` with unique matches ``IoU > 0.5``: ``DQ = TP / (TP + FP/2 + FN/2)``,
  ``SQ = sum_matched IoU / (TP + 1e-6)``.

Scores are computed per image and then averaged over images (HoVer-Net's protocol). Empty maps
(where HoVer-Net divides 0 by 0): both maps empty scores 1 on every metric (nothing to find,
nothing found); one map empty scores 0; non-empty maps without any overlap score 0 on DICE2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from histolib.ops.instance import relabel_sequential

METRICS = ("dice", "dice2", "aji", "aji_plus", "dq", "sq", "pq")
_EPS = 1.0e-6


@dataclass(frozen=True)
class _Pairs:
    inter: np.ndarray  # (nt, np) pixel counts |G_i & P_j|
    true_area: np.ndarray  # (nt,)
    pred_area: np.ndarray  # (np,)

    @property
    def union(self) -> np.ndarray:
        return self.true_area[:, None] + self.pred_area[None, :] - self.inter

    @property
    def iou(self) -> np.ndarray:
        return self.inter / (self.union + _EPS)


def _pairs(true: np.ndarray, pred: np.ndarray) -> _Pairs:
    t, p = np.asarray(true), np.asarray(pred)
    for name, a in (("true", t), ("pred", p)):
        if a.ndim != 2 or not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(f"{name} must be a 2-D integer instance map, got {a.dtype} {a.shape}")
    if t.shape != p.shape:
        raise ValueError(f"true {t.shape} and pred {p.shape} must have the same shape")
    t, p = relabel_sequential(t).astype(np.int64), relabel_sequential(p).astype(np.int64)
    nt, n_p = int(t.max()), int(p.max())
    table = np.bincount((t * (n_p + 1) + p).ravel(), minlength=(nt + 1) * (n_p + 1))
    table = table.reshape(nt + 1, n_p + 1).astype(np.float64)
    return _Pairs(inter=table[1:, 1:], true_area=table[1:].sum(axis=1), pred_area=table[:, 1:].sum(axis=0))


def _empty_case(pairs: _Pairs) -> float | None:
    nt, n_p = len(pairs.true_area), len(pairs.pred_area)
    if nt == 0 and n_p == 0:
        return 1.0
    if nt == 0 or n_p == 0:
        return 0.0
    return None


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Binary ``DICE = 2 |G & P| / (|G| + |P|)`` of the foregrounds (ids > 0)."""
    t, p = np.asarray(true) > 0, np.asarray(pred) > 0
    if t.shape != p.shape:
        raise ValueError(f"true {t.shape} and pred {p.shape} must have the same shape")
    denom = t.sum() + p.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(t, p).sum() / denom)


def _dice2(pairs: _Pairs) -> float:
    empty = _empty_case(pairs)
    if empty is not None:
        return empty
    ti, pj = np.nonzero(pairs.inter)
    if ti.size == 0:
        return 0.0
    total = (pairs.true_area[ti] + pairs.pred_area[pj]).sum()
    return float(2.0 * pairs.inter[ti, pj].sum() / total)


def _aji(pairs: _Pairs) -> float:
    empty = _empty_case(pairs)
    if empty is not None:
        return empty
    iou = pairs.iou
    best = np.argmax(iou, axis=1)
    matched_true = np.flatnonzero(iou[np.arange(len(best)), best] > 0)
    matched_pred = best[matched_true]
    inter = pairs.inter[matched_true, matched_pred].sum()
    union = pairs.union[matched_true, matched_pred].sum()
    unpaired_true = np.setdiff1d(np.arange(len(pairs.true_area)), matched_true)
    unpaired_pred = np.setdiff1d(np.arange(len(pairs.pred_area)), matched_pred)
    union += pairs.true_area[unpaired_true].sum() + pairs.pred_area[unpaired_pred].sum()
    return float(inter / union)


def _aji_plus(pairs: _Pairs) -> float:
    empty = _empty_case(pairs)
    if empty is not None:
        return empty
    iou = pairs.iou
    ti, pj = linear_sum_assignment(-iou)
    keep = iou[ti, pj] > 0
    ti, pj = ti[keep], pj[keep]
    inter = pairs.inter[ti, pj].sum()
    union = pairs.union[ti, pj].sum()
    unpaired_true = np.setdiff1d(np.arange(len(pairs.true_area)), ti)
    unpaired_pred = np.setdiff1d(np.arange(len(pairs.pred_area)), pj)
    union += pairs.true_area[unpaired_true].sum() + pairs.pred_area[unpaired_pred].sum()
    return float(inter / union)


def _pq(pairs: _Pairs, match_iou: float = 0.5) -> dict[str, float]:
    if match_iou < 0.5:
        raise ValueError(f"match_iou must be >= 0.5 (unique matching), got {match_iou}")
    empty = _empty_case(pairs)
    if empty is not None:
        return {"dq": empty, "sq": empty, "pq": empty}
    iou = pairs.iou
    ti, pj = np.nonzero(iou > match_iou)  # unique because IoU > 0.5 pairs cannot share a member
    tp = ti.size
    fn = len(pairs.true_area) - tp
    fp = len(pairs.pred_area) - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(iou[ti, pj].sum() / (tp + _EPS))
    return {"dq": float(dq), "sq": sq, "pq": float(dq * sq)}


def dice2(true: np.ndarray, pred: np.ndarray) -> float:
    """HoVer-Net's ``DICE2`` (module docstring) of two instance maps ``(H, W)``."""
    return _dice2(_pairs(true, pred))


def aggregated_jaccard(true: np.ndarray, pred: np.ndarray) -> float:
    """HoVer-Net's ``AJI`` (argmax matching, module docstring) of two instance maps ``(H, W)``."""
    return _aji(_pairs(true, pred))


def aggregated_jaccard_plus(true: np.ndarray, pred: np.ndarray) -> float:
    """HoVer-Net's ``AJI+`` (one-to-one Hungarian matching) of two instance maps ``(H, W)``."""
    return _aji_plus(_pairs(true, pred))


def panoptic_quality(true: np.ndarray, pred: np.ndarray, match_iou: float = 0.5) -> dict[str, float]:
    """``{"dq", "sq", "pq"}`` with matches at ``IoU > match_iou`` (>= 0.5)."""
    return _pq(_pairs(true, pred), match_iou)


def instance_metrics(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one image (one contingency table for all of them).

    Args:
        true, pred: ``(H, W)`` integer instance maps, 0 = background; ids need not be contiguous.

    Returns:
        ``{"dice", "dice2", "aji", "aji_plus", "dq", "sq", "pq"}`` as floats in ``[0, 1]``.
    """
    pairs = _pairs(true, pred)
    return {"dice": dice(true, pred), "dice2": _dice2(pairs), "aji": _aji(pairs),
            "aji_plus": _aji_plus(pairs), **_pq(pairs)}


def mean_instance_metrics(trues, preds) -> dict[str, float | list[float]]:
    """Per-image :func:`instance_metrics`, then the mean over images (HoVer-Net's protocol).

    Args:
        trues, preds: sequences of ``(H, W)`` instance maps, paired in order.

    Returns:
        ``{metric: mean}`` plus ``"per_image": {metric: [score per image]}`` and ``"n_images"``.

    Raises:
        ValueError: the sequences are empty or of different lengths.
    """
    trues, preds = list(trues), list(preds)
    if len(trues) != len(preds) or not trues:
        raise ValueError(f"need equally many true and pred maps (>0), got {len(trues)} and {len(preds)}")
    rows = [instance_metrics(t, p) for t, p in zip(trues, preds, strict=True)]
    per_image = {m: [r[m] for r in rows] for m in METRICS}
    out: dict = {m: float(np.mean(per_image[m])) for m in METRICS}
    out["per_image"] = per_image
    out["n_images"] = len(rows)
    return out
