"""Per-class scores of a multi-class segmentation, as Table 1 of He et al. (seed 003).

For each class ``c`` (normal glomerulus NG = 1, sclerosed SG = 2), over a whole test set:

* ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``dice = 2 TP / (2 TP + FP + FN)`` from
  TP/FP/FN pooled over every pixel of every image ("micro", :func:`histolib.metrics.segmentation.confusion`);
* ``f1``: the paper's F1 differs from its Dice in every row of Tables 3-5, which pooled counts cannot give
  (pooled F1 = pooled Dice exactly). We report F1 "micro-imagewise": ``2 P R / (P + R)`` per image, averaged
  over the images where the class is present in the target or the prediction (smp's ``micro-imagewise``);
  the pooled Dice is the primary number.

The mean over classes ("Mean Dice" of Table 5) is the plain average of the per-class values.
"""

from __future__ import annotations

import math

import numpy as np

from histolib.metrics.segmentation import confusion, dice_precision_recall

__all__ = ["CLASS_NAMES", "per_class_scores", "imagewise_f1"]

CLASS_NAMES = {1: "NG", 2: "SG"}


def imagewise_f1(pred, target, cls: int) -> float:
    """Mean over images of the per-image F1 of class ``cls``, over images where it is present in the
    target or predicted; NaN when it is nowhere. ``pred``, ``target``: ``(N, H, W)`` or lists of maps."""
    values = []
    for p, t in zip(pred, target, strict=True):
        tp, fp, fn = confusion(np.asarray(p), np.asarray(t), cls)
        if tp + fp + fn == 0:
            continue
        values.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(values)) if values else math.nan


def per_class_scores(pred, target, classes: dict[int, str] | None = None) -> dict:
    """Table 1 of the paper for each class, and the mean over classes.

    Args:
        pred: ``(N, H, W)`` predicted class maps (or a list of ``(H, W)`` maps of varying size).
        target: the ground truth, same layout.
        classes: ``{index: name}`` (default :data:`CLASS_NAMES`).

    Returns:
        ``{"NG": {"precision", "recall", "f1", "dice", "tp", "fp", "fn"}, "SG": {...},
        "mean": {"precision", "recall", "f1", "dice"}}``.
    """
    classes = classes or CLASS_NAMES
    if isinstance(pred, list) or isinstance(target, list):
        flat_p = np.concatenate([np.asarray(p).ravel() for p in pred])
        flat_t = np.concatenate([np.asarray(t).ravel() for t in target])
    else:
        flat_p, flat_t = np.asarray(pred), np.asarray(target)
        if flat_p.shape != flat_t.shape:
            raise ValueError(f"pred {flat_p.shape} and target {flat_t.shape} differ")
    out = {}
    for c, name in classes.items():
        tp, fp, fn = confusion(flat_p, flat_t, c)
        s = dice_precision_recall(tp, fp, fn)
        out[name] = {"precision": s["precision"], "recall": s["recall"], "f1": imagewise_f1(pred, target, c),
                     "dice": s["dice"], "tp": tp, "fp": fp, "fn": fn}
    out["mean"] = {k: float(np.nanmean([out[n][k] for n in classes.values()]))
                   for k in ("precision", "recall", "f1", "dice")}
    return out
