"""DatasetGAN's pixel classifier and its ensemble uncertainty (Histopathology DatasetGAN, Rizvi et al., seed 002).

The classifier labels one pixel from its generator feature vector (``histolib.ops.pixel_features``):

* the paper: "a 3-layer Multilayer Perceptron with ReLU activations, Batch Normalization and Dropout";
  layer widths from the DatasetGAN reference (``Linear(d, 128) - ReLU - BN - Linear(128, 32) - ReLU - BN -
  Linear(32, C)``), with the paper's Dropout after each hidden block::

      h1 = Dropout(BN(ReLU(W1 x + b1)))      (d -> 128)
      h2 = Dropout(BN(ReLU(W2 h1 + b2)))     (128 -> 32)
      logits = W3 h2 + b3                     (32 -> C)

* the reference's ensemble (10 classifiers) labels a generated image by the per-pixel majority vote of its
  members, and scores the image's uncertainty by the Jensen-Shannon divergence of the members' softmax
  outputs at each pixel::

      JS(x) = H(mean_k p_k(x)) - mean_k H(p_k(x)),   H(p) = -sum_c p_c log p_c

  (:func:`js_divergence`), summarised per image as the mean of its top 10 % pixel values
  (:func:`image_uncertainty`); the most uncertain share of the generated images is dropped
  (:func:`keep_certain`; the reference drops 10 %).

Shapes: features ``(B, d)`` -> logits ``(B, C)``; ensemble logits ``(K, P, C)`` (K members, P pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from histolib.errors import ParamError

__all__ = ["PixelClassifier", "js_divergence", "image_uncertainty", "keep_certain", "majority_vote"]


class PixelClassifier(nn.Module):
    """The 3-layer MLP of the paper (module docstring).

    Args:
        in_dim: feature dimension ``d`` (sum of the channels of the extracted synthesis blocks).
        n_classes: ``C`` (5 compartments).
        hidden: the two hidden widths (reference: ``(128, 32)``; ``(256, 128)`` for 32+ classes).
        dropout: dropout probability after each hidden block (the paper does not give it).
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: Sequence[int] = (128, 32), dropout: float = 0.1):
        super().__init__()
        if in_dim < 1 or n_classes < 2:
            raise ParamError(f"PixelClassifier needs in_dim >= 1 and n_classes >= 2, got {in_dim}, {n_classes}")
        if len(hidden) != 2 or min(hidden) < 1:
            raise ParamError(f"PixelClassifier takes two hidden widths >= 1, got {list(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ParamError(f"dropout must be in [0, 1), got {dropout}")
        h1, h2 = (int(h) for h in hidden)
        self.in_dim, self.n_classes = int(in_dim), int(n_classes)
        self.layers = nn.Sequential(
            nn.Linear(in_dim, h1), nn.ReLU(), nn.BatchNorm1d(h1), nn.Dropout(dropout),
            nn.Linear(h1, h2), nn.ReLU(), nn.BatchNorm1d(h2), nn.Dropout(dropout),
            nn.Linear(h2, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` float -> ``(B, C)`` logits."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ParamError(f"PixelClassifier expects (B, {self.in_dim}) features, got {tuple(x.shape)}")
        return self.layers(x)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def js_divergence(logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of an ensemble at each pixel: ``H(mean_k p_k) - mean_k H(p_k)``.

    Args:
        logits: ``(K, P, C)``: K members' logits for P pixels.

    Returns:
        ``(P,)`` in ``[0, log K]``; 0 where every member gives the same distribution.
    """
    if logits.ndim != 3:
        raise ParamError(f"js_divergence expects (K, P, C) logits, got {tuple(logits.shape)}")
    p = logits.float().softmax(-1)
    return (_entropy(p.mean(0)) - _entropy(p).mean(0)).clamp_min(0.0)


def image_uncertainty(js: torch.Tensor | np.ndarray, top: float = 0.1) -> float:
    """An image's uncertainty: the mean of its ``top`` share of largest per-pixel JS values (reference: 10 %).

    Args:
        js: ``(P,)`` (or any shape) per-pixel divergences of one image.
        top: share of pixels averaged, in ``(0, 1]``; at least one pixel.
    """
    if not 0.0 < top <= 1.0:
        raise ParamError(f"top must be in (0, 1], got {top}")
    v = torch.as_tensor(np.asarray(js, dtype=np.float32) if not torch.is_tensor(js) else js).reshape(-1).float()
    if v.numel() == 0:
        return math.nan
    k = max(1, int(v.numel() * top))
    return float(v.topk(k).values.mean())


def keep_certain(scores: Sequence[float], drop: float) -> np.ndarray:
    """Indices of the images kept after dropping the ``drop`` share with the highest uncertainty.

    ``floor(drop * N)`` images go (ties broken by index: the later one goes first); the kept indices are
    returned in ascending order. ``drop = 0`` keeps everything.
    """
    s = np.asarray(scores, dtype=float)
    if not 0.0 <= drop < 1.0:
        raise ParamError(f"drop must be in [0, 1), got {drop}")
    n_drop = int(math.floor(drop * len(s)))
    if n_drop == 0:
        return np.arange(len(s))
    order = np.lexsort((-np.arange(len(s)), -s))  # most uncertain first; among equals the later index first
    return np.sort(order[n_drop:])


def majority_vote(logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel majority vote of the members' arg-max classes (the reference's mode over the ensemble).

    Args:
        logits: ``(K, P, C)``.

    Returns:
        ``(P,)`` int64; ties go to the class with the highest mean probability among the tied ones.
    """
    if logits.ndim != 3:
        raise ParamError(f"majority_vote expects (K, P, C) logits, got {tuple(logits.shape)}")
    k, _, c = logits.shape
    votes = torch.nn.functional.one_hot(logits.argmax(-1), c).sum(0).float()  # (P, C)
    mean_p = logits.float().softmax(-1).mean(0)
    # votes are integers, mean probabilities in [0, 1): the vote decides, probability breaks ties
    return (votes + mean_p * (1.0 - 1e-6)).argmax(-1)
