"""Training DatasetGAN's pixel classifier on memory-mapped generator features (Rizvi et al., seed 002).

One run trains one :class:`histolib.models.pixel_classifier.PixelClassifier` on the per-pixel features of the
annotated generated images (``histolib.ops.pixel_features``: an ``(N*H*W, d)`` float16 ``.npy`` file read in
random pixel batches, never loaded whole):

* cross-entropy on every annotated pixel, minibatches of ``batch_size`` random pixels (reference: 64);
* optimiser: the paper's "vanilla stochastic gradient descent with a learning rate of 0.0001"
  (``optimizer="sgd"``, ``momentum=0``), or the DatasetGAN reference's Adam (lr 1e-3);
* at most ``epochs`` passes over the pixels (reference: 100); after each, the mean per-class pixel accuracy
  on the validation images (the paper's 4) decides whether the weights are the best so far; training stops
  after ``patience`` epochs without improvement (0: never; the reference stops on its training accuracy);
* the best weights are returned.

Checkpoints go through :class:`histolib.train.checkpoint.Checkpointer` (``last.pt`` every epoch with the
optimiser and the best weights so far; ``best.pt`` and ``COMPLETE.json`` when finished). The run's identity is
its options, seed and ``data`` (the caller's fingerprint of the features' source and the labels), so a
finished run is loaded, an interrupted one resumed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from histolib.errors import ParamError
from histolib.models.pixel_classifier import PixelClassifier, js_divergence, majority_vote
from histolib.ops.pixel_features import PixelBatches, open_pixel_features
from histolib.train.checkpoint import Checkpointer
from histolib.train.monitor import TrainingLog, check_finite

__all__ = ["PixelClassifierOptions", "ClassifierResult", "train_pixel_classifier", "predict_logits",
           "predict_file", "ensemble_labels", "class_accuracy"]

OPTIMIZERS = ("sgd", "adam")


@dataclass
class PixelClassifierOptions:
    """Options of one classifier training (module docstring).

    Attributes:
        optimizer: ``sgd`` (paper) or ``adam`` (reference).
        lr: learning rate (paper: 1e-4 SGD; reference: 1e-3 Adam).
        momentum: SGD momentum (paper: vanilla SGD, 0).
        epochs: maximum passes over the annotated pixels (reference: 100).
        batch_size: pixels per step (reference: 64).
        patience: epochs without a better validation score before stopping (0: run every epoch).
        hidden: the two hidden widths (reference: 128, 32).
        dropout: dropout after each hidden block.
        n_classes: 5 compartments.
        remap_every: batches between reopenings of the memory map (bounds resident memory).
    """

    optimizer: str = "sgd"
    lr: float = 1e-4
    momentum: float = 0.0
    epochs: int = 100
    batch_size: int = 64
    patience: int = 10
    hidden: tuple[int, int] = (128, 32)
    dropout: float = 0.1
    n_classes: int = 5
    remap_every: int = 4

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(d["hidden"])
        return d


@dataclass
class ClassifierResult:
    """A trained classifier: the validation-chosen weights, their epoch and score, the log."""

    model: PixelClassifier
    best_epoch: int
    best_val: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    folder: Path | None = None


def class_accuracy(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class pixel accuracy ``TP_c / (TP_c + FN_c)`` (NaN for a class absent from ``target``).

    Args:
        pred, target: integer class maps of the same shape (any).

    Returns:
        ``(n_classes,)`` float.
    """
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ParamError(f"pred {pred.shape} and target {target.shape} differ")
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        sel = target == c
        if sel.any():
            out[c] = float((pred[sel] == c).mean())
    return out


@torch.no_grad()
def predict_logits(models, x: torch.Tensor, batch: int = 65536) -> torch.Tensor:
    """``(K, P, C)`` logits of every model (eval mode) for ``(P, d)`` features, ``batch`` rows at a time."""
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    outs = []
    for m in models:
        was = m.training
        m.eval()
        outs.append(torch.cat([m(x[i:i + batch].float()) for i in range(0, len(x), batch)]) if len(x)
                    else torch.zeros(0, m.n_classes))
        m.train(was)
    return torch.stack(outs)


def ensemble_labels(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and per-pixel JS divergence of ``(K, P, C)`` logits (one model: arg-max and zeros)."""
    if logits.shape[0] == 1:
        return logits[0].argmax(-1), torch.zeros(logits.shape[1])
    return majority_vote(logits), js_divergence(logits)


def predict_file(models, path, n_items: int, pixels_per_item: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and JS maps of every item of a feature file, one item's rows in memory at a time.

    Returns:
        ``(labels (N, P) uint8, js (N, P) float32)``; ``P = pixels_per_item``.
    """
    arr = open_pixel_features(path)
    if arr.shape[0] != n_items * pixels_per_item:
        raise ParamError(f"{path}: {arr.shape[0]} rows, expected {n_items} x {pixels_per_item}")
    labels = np.zeros((n_items, pixels_per_item), np.uint8)
    js = np.zeros((n_items, pixels_per_item), np.float32)
    for i in range(n_items):
        x = torch.from_numpy(np.asarray(arr[i * pixels_per_item:(i + 1) * pixels_per_item], np.float32))
        lab, j = ensemble_labels(predict_logits(models, x))
        labels[i], js[i] = lab.numpy().astype(np.uint8), j.numpy()
    del arr
    return labels, js


def _val_score(model, val_path, val_labels, n_classes: int) -> float:
    n = len(val_labels)
    pred, _ = predict_file([model], val_path, n, int(np.asarray(val_labels[0]).size))
    return float(np.nanmean(class_accuracy(pred, np.asarray(val_labels).reshape(n, -1), n_classes)))


def train_pixel_classifier(train_path, train_labels, val_path, val_labels, opts: PixelClassifierOptions, seed: int,
                           out_dir, data: str, progress: bool = False) -> ClassifierResult:
    """Train (or resume, or load) one pixel classifier.

    Args:
        train_path: feature file of the training images (``(N*H*W, d)``, :func:`write_pixel_features`).
        train_labels: ``(N, H, W)`` class maps of those images (annotations).
        val_path, val_labels: the same for the validation images.
        opts: :class:`PixelClassifierOptions`.
        seed: weights, dropout and pixel order.
        out_dir: ``last.pt``, ``best.pt``, ``log.jsonl``, ``COMPLETE.json``.
        data: identity of the features and labels (e.g. a fingerprint of the generator's weights, the
            latents and the annotations): part of the run's args.
        progress: a tqdm bar over epochs.

    Raises:
        ParamError: unknown optimiser or labels outside ``[0, n_classes)``.
        TrainingDiverged: a NaN/inf loss.
    """
    if opts.optimizer not in OPTIMIZERS:
        raise ParamError(f"unknown optimizer {opts.optimizer!r}; one of {list(OPTIMIZERS)}")
    train_labels = np.asarray(train_labels)
    if train_labels.size and (train_labels.min() < 0 or train_labels.max() >= opts.n_classes):
        raise ParamError(f"train_labels hold values outside [0, {opts.n_classes})")
    batches = PixelBatches(train_path, train_labels, opts.batch_size, seed, opts.remap_every)
    out_dir = Path(out_dir)
    ckpt = Checkpointer(out_dir, {**opts.to_dict(), "seed": int(seed), "data": str(data), "dim": batches.dim})
    torch.manual_seed(seed)
    model = PixelClassifier(batches.dim, opts.n_classes, opts.hidden, opts.dropout)
    run = ckpt.run()
    if run.status == "complete":
        best = ckpt.load_best()
        model.load_state_dict(best["model"])
        model.eval()
        return ClassifierResult(model, int(best["best_epoch"]), float(best["best_val"]),
                                TrainingLog.read_file(out_dir / "log.jsonl"), float(best.get("seconds", 0.0)), out_dir)
    if opts.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=opts.lr, momentum=opts.momentum)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=opts.lr)
    start, best_epoch, best_val, since, seconds, best_state = 0, 0, -math.inf, 0, 0.0, None
    if run.status == "resume":
        st = run.checkpoint
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start, best_epoch, best_val = int(st["epochs_done"]), int(st["best_epoch"]), float(st["best_val"])
        since, seconds, best_state = int(st["since"]), float(st["seconds"]), st["best_model"]
    log = TrainingLog(out_dir / "log.jsonl", resume_step=start)
    bar = tqdm(range(start, opts.epochs), desc=f"pixel classifier seed {seed}", disable=not progress, leave=False)
    for epoch in bar:
        if opts.patience and since >= opts.patience:
            break
        torch.manual_seed(seed * 1000 + epoch)  # dropout masks: resumable per epoch
        model.train()
        t0, total, seen = time.perf_counter(), 0.0, 0
        for x, y in batches.epoch(epoch):
            if len(y) < 2:  # BatchNorm needs two rows; a last batch of one pixel is skipped
                continue
            loss = F.cross_entropy(model(x), y)
            check_finite({"pixel_ce": loss}, epoch + 1, where=ckpt.last_good)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            seen += len(y)
        seconds += time.perf_counter() - t0
        val = _val_score(model, val_path, val_labels, opts.n_classes)
        improved = val > best_val
        if improved:
            best_epoch, best_val, since = epoch + 1, val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
        log.log(epoch + 1, train_loss=total / max(seen, 1), val_class_accuracy=val, seconds=seconds)
        bar.set_postfix(loss=f"{total / max(seen, 1):.3f}", val=f"{val:.3f}")
        ckpt.save(epoch + 1, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epochs_done": epoch + 1,
                              "best_epoch": best_epoch, "best_val": best_val, "since": since, "seconds": seconds,
                              "best_model": best_state})
    if best_state is None:
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    done = int(log.read()[-1]["step"]) if log.read() else start
    ckpt.save(done, {"model": best_state, "epochs_done": done, "best_epoch": best_epoch, "best_val": best_val,
                     "since": since, "seconds": seconds}, best=True)
    model.load_state_dict(best_state)
    model.eval()
    ckpt.mark_complete({"best_epoch": best_epoch, "best_val": best_val, "seconds": seconds, "epochs_done": done})
    return ClassifierResult(model, best_epoch, best_val, log.read(), seconds, out_dir)
