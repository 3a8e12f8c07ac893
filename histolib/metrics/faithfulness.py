"""Faithfulness: how well generated images match the labels they were generated from.

A segmentation model trained only on real training data (never on synthetic data) segments each
generated image; its score against the label the image was generated from is the generator's
faithfulness. The same model's score on real test images is the yardstick: a generator that renders
its label maps as clearly as real tissue shows its structures scores about the real score; one that
ignores its labels scores what a constant image gets. This is how SPADE's own paper scores label
adherence (a segmenter's accuracy on synthesized images)::

    faithfulness = score(segment(G(l_i)), l_i)        over generated images i
    real         = score(segment(x_j), y_j)           over real test images j
    ratio        = faithfulness / real

The score is any ``score(pred, target) -> float``: pooled Dice of the glomerulus class for binary
masks (:func:`pooled_dice`), per-image mean AJI for nuclei instance maps.

The trivial score ``score(1, y_j)`` (everything foreground, one object) on the real test labels is
reported beside: a segmenter that does not beat it measures nothing, and neither does its
faithfulness (``histolib.report.faithfulness_gates`` turns that into a precondition).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from histolib.errors import ParamError
from histolib.metrics.segmentation import confusion, dice_precision_recall

__all__ = ["faithfulness", "pooled_dice", "per_image_mean"]


def pooled_dice(pred, target, cls: int = 1) -> float:
    """Dice of class ``cls`` with TP/FP/FN pooled over every image (the study's segmentation score).
    ``pred`` and ``target`` are ``(N, H, W)`` label maps; 1.0 when both are empty."""
    tp, fp, fn = confusion(np.asarray(pred), np.asarray(target), cls)
    return dice_precision_recall(tp, fp, fn)["dice"]


def per_image_mean(metric: Callable[[np.ndarray, np.ndarray], float]) -> Callable:
    """``score(preds, targets) = mean_i metric(targets[i], preds[i])``: for instance metrics (AJI,
    hover_net's argument order ``(true, pred)``) computed per image then averaged."""

    def score(preds, targets) -> float:
        values = [float(metric(np.asarray(t), np.asarray(p))) for p, t in zip(preds, targets, strict=True)]
        return float(np.mean(values)) if values else math.nan

    return score


def faithfulness(segment: Callable, generated_images, generating_labels, real_images, real_labels,
                 score: Callable = pooled_dice) -> dict:
    """Score a generator's images against their generating labels, beside the real-image score.

    Args:
        segment: the real-trained segmenter, ``segment(images) -> label maps``; images
            ``(N, H, W, 3) uint8``, label maps ``(N, H, W)``.
        generated_images: ``(N, H, W, 3) uint8``, image ``i`` generated from ``generating_labels[i]``.
        generating_labels: ``(N, H, W)`` (class indices, or instance ids for nuclei).
        real_images, real_labels: the real test split (never the segmenter's training data).
        score: ``score(pred, target) -> float``, higher is better.

    Returns:
        ``synthetic`` (score on generated images), ``real`` (on real test images), ``ratio``
        (``synthetic / real``; NaN when the real score is 0), ``trivial`` (the score of predicting
        everything foreground on the real test labels), ``n_generated``, ``n_real``.

    Raises:
        ParamError: an empty set, or images and labels of different counts.
    """
    for name, x, y in (("generated", generated_images, generating_labels), ("real", real_images, real_labels)):
        if len(x) == 0:
            raise ParamError(f"faithfulness: no {name} images")
        if len(x) != len(y):
            raise ParamError(f"faithfulness: {len(x)} {name} images but {len(y)} labels")
    synthetic = float(score(segment(generated_images), generating_labels))
    real = float(score(segment(real_images), real_labels))
    trivial = float(score(np.stack([np.ones_like(np.asarray(y)) for y in real_labels]), real_labels))
    return {"synthetic": synthetic, "real": real, "ratio": synthetic / real if real > 0 else math.nan,
            "trivial": trivial, "n_generated": len(generated_images), "n_real": len(real_images)}
