"""The segmentation harness every notebook reuses: train a U-Net, choose it on validation, test it.

Training keeps the whole training set in memory as ``uint8`` and feeds ``channels_last`` float
batches straight from it (no DataLoader workers: on 2 cores they cost more than they give). After
every epoch the pooled validation Dice decides whether ``best.pt`` is replaced; ``last.pt``
carries model, optimiser and random-generator states, so an interrupted training resumes exactly
where it stopped. A finished run leaves ``COMPLETE.json`` (vouching for its weights by sha256) and is
not trained again; :mod:`histolib.train.checkpoint` holds the rule.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from histolib.errors import CheckpointError
from histolib.fileio import write_json
from histolib.metrics.segmentation import segmentation_scores
from histolib.models.unet import UNet
from histolib.ops.augment import random_flip_rot90
from histolib.train.checkpoint import COMPLETE, RESUME, Checkpointer, fingerprint
from histolib.train.monitor import TrainingLog, check_finite

# the options of the ``unet`` params section that a training run depends on
TRAIN_KEYS = ("width", "depth", "epochs", "batch_size", "lr", "augment_p", "loss")


@dataclass
class TrainResult:
    """What :func:`train_unet` returns: the validation-chosen model and its history."""

    model: UNet
    best_epoch: int
    best_val_dice: float
    history: list[dict] = field(default_factory=list)
    folder: Path | None = None


def _as_tensor_images(images) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` -> ``(N, 3, H, W) uint8`` tensor (kept uint8 to save memory)."""
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


def _to_float(batch_u8: torch.Tensor) -> torch.Tensor:
    return batch_u8.float().div_(255.0).contiguous(memory_format=torch.channels_last)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Mean over classes of ``1 - (2 sum(p*y) + eps) / (sum(p) + sum(y) + eps)`` on softmax probabilities.

    Args:
        logits: ``(B, K, H, W)``; target: ``(B, H, W)`` int64 class indices.
    """
    prob = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return (1 - (2 * inter + eps) / (denom + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "ce_dice") -> torch.Tensor:
    """Cross-entropy, plus soft Dice when ``kind == "ce_dice"``."""
    loss = F.cross_entropy(logits, target)
    return loss + soft_dice_loss(logits, target) if kind == "ce_dice" else loss


@torch.no_grad()
def predict(model: UNet, images, batch_size: int = 32) -> np.ndarray:
    """Class predictions ``(N, H, W) uint8`` for ``(N, H, W, 3) uint8`` images (or a list of them).

    Sizes that are not multiples of the U-Net's ``2**(depth-1)`` are reflect-padded, then cropped back.
    """
    model.eval()
    if isinstance(images, list) and images and any(im.shape != images[0].shape for im in images):
        return [predict(model, im[None], batch_size)[0] for im in images]
    x_all = _as_tensor_images(images)
    m = model.multiple
    h, w = x_all.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    out = []
    for i in range(0, len(x_all), batch_size):
        x = _to_float(x_all[i:i + batch_size])
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        out.append(model(x)[..., :h, :w].argmax(1).to(torch.uint8))
    return torch.cat(out).numpy() if out else np.zeros((0, h, w), np.uint8)


def evaluate(model: UNet, pairs, cls: int = 1, batch_size: int = 32) -> dict[str, float]:
    """Pooled Dice / precision / recall (and counts) of ``model`` on ``pairs`` for class ``cls``."""
    pred = predict(model, pairs.images, batch_size)
    if isinstance(pred, list):
        pred = np.concatenate([p.ravel() for p in pred])
        target = np.concatenate([np.asarray(m).ravel() for m in pairs.masks])
        return segmentation_scores(pred, target, cls)
    return segmentation_scores(pred, np.asarray(pairs.masks), cls)


def _cfg_dict(cfg) -> dict:
    d = asdict(cfg) if is_dataclass(cfg) else dict(cfg) if isinstance(cfg, dict) else vars(cfg)
    return {k: d[k] for k in TRAIN_KEYS}


def unet_run_args(train, cfg, seed: int, n_classes: int = 2) -> dict:
    """The identity of a :func:`train_unet` run: the :data:`TRAIN_KEYS` options, seed, classes and
    the :func:`~histolib.train.checkpoint.fingerprint` of the training images and masks (new data
    never reuses old weights). Stored in the run's checkpoints and completion record.
    """
    return {**_cfg_dict(cfg), "seed": int(seed), "n_classes": int(n_classes), "n_train": len(train),
            "data": fingerprint(train.images, train.masks)}


def load_finished_unet(out_dir: str | os.PathLike, train, cfg, seed: int, n_classes: int = 2,
                       ) -> TrainResult | None:
    """The finished :func:`train_unet` run in ``out_dir`` that these arguments would train, loaded
    read-only, or ``None`` (missing, other options or data, weights changed since it finished).
    """
    ckpt = Checkpointer(out_dir, unet_run_args(train, cfg, seed, n_classes))
    summary = ckpt.completion()
    return _finished(ckpt, summary, reseed=False) if summary is not None else None


def _finished(ckpt: Checkpointer, summary: dict, reseed: bool = True) -> TrainResult:
    args = ckpt.args
    if reseed:  # train_unet seeds the global generator whether it trains or loads: same state after
        torch.manual_seed(args["seed"])
    model = UNet(3, args["n_classes"], args["width"], args["depth"]).to(memory_format=torch.channels_last)
    best = ckpt.load_best()  # the very best.pt the completion record vouches for
    if best is None:
        raise CheckpointError(f"{ckpt.best_path} is missing although {ckpt.complete_path} lists it; "
                              "delete the folder to retrain")
    model.load_state_dict(best["model"])
    # read-only (a finished run may be another pipeline stage's output); the whole run's history
    rows = TrainingLog.read_file(ckpt.folder / "log.jsonl", up_to_step=int(summary["epochs_done"]))
    return TrainResult(model, int(summary["best_epoch"]), float(summary["best_val_dice"]), rows, ckpt.folder)


def train_unet(train, val, cfg, seed: int, out_dir: str | os.PathLike, n_classes: int = 2,
               progress: bool = True) -> TrainResult:
    """Train a U-Net on ``train``, keep the epoch with the best pooled validation Dice.

    Args:
        train: pairs with ``images (N, H, W, 3) uint8`` and ``masks (N, H, W)`` class indices.
        val: the same for validation (Dice of class 1 chooses the checkpoint).
        cfg: the ``unet`` params section (or a dict with :data:`TRAIN_KEYS`).
        seed: initialisation, shuffling and augmentation seed.
        out_dir: checkpoints (``best.pt``, ``last.pt``), ``log.jsonl`` and ``COMPLETE.json``.
        n_classes: output classes.
        progress: show a tqdm bar per epoch.

    Returns:
        :class:`TrainResult` with the best model loaded. A run already complete in ``out_dir``
        with the same options and data (:func:`unet_run_args`) and unchanged weights is loaded, not
        retrained; an interrupted one resumes (:meth:`~histolib.train.checkpoint.Checkpointer.run`).

    Raises:
        TrainingDiverged: a NaN/inf loss; ``last.pt`` keeps the last good epoch.
        CheckpointError: an unreadable ``last.pt`` / ``best.pt`` (named).
    """
    ckpt = Checkpointer(out_dir, unet_run_args(train, cfg, seed, n_classes))
    args = ckpt.args
    run = ckpt.run()
    if run.status == COMPLETE:
        return _finished(ckpt, run.summary)
    torch.manual_seed(seed)
    model = UNet(3, n_classes, args["width"], args["depth"])
    model = model.to(memory_format=torch.channels_last)

    opt = torch.optim.Adam(model.parameters(), lr=args["lr"])
    g_shuffle = torch.Generator().manual_seed(seed + 1)
    g_aug = torch.Generator().manual_seed(seed + 2)
    start, best_epoch, best_dice = 0, -1, -math.inf
    if run.status == RESUME:
        state = run.checkpoint
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        g_shuffle.set_state(state["g_shuffle"])
        g_aug.set_state(state["g_aug"])
        start, best_epoch, best_dice = state["epochs_done"], state["best_epoch"], state["best_val_dice"]
    log = TrainingLog(Path(out_dir) / "log.jsonl", resume_step=start)

    x_all = _as_tensor_images(train.images)
    y_all = torch.from_numpy(np.asarray(train.masks).astype(np.int64))
    n, bs = len(x_all), args["batch_size"]
    for epoch in range(start, args["epochs"]):
        model.train()
        order = torch.randperm(n, generator=g_shuffle)
        total, seen = 0.0, 0
        epoch_start = time.perf_counter()
        bar = tqdm(range(0, n, bs), desc=f"U-Net seed {seed} epoch {epoch + 1}/{args['epochs']}",
                   disable=not progress, leave=False)
        for i in bar:
            idx = order[i:i + bs]
            x, y = random_flip_rot90(_to_float(x_all[idx]), y_all[idx], p=args["augment_p"], generator=g_aug)
            x = x.contiguous(memory_format=torch.channels_last)
            loss = segmentation_loss(model(x), y, args["loss"])
            check_finite({"segmentation": loss}, epoch + 1, where=ckpt.last_good)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        train_seconds = time.perf_counter() - epoch_start  # training steps only: no validation, no saving
        scores = evaluate(model, val)
        improved = scores["dice"] > best_dice
        if improved:
            best_epoch, best_dice = epoch + 1, scores["dice"]
        log.log(epoch + 1, train_loss=total / max(seen, 1), val_dice=scores["dice"],
                val_precision=scores["precision"], val_recall=scores["recall"], train_seconds=train_seconds)
        ckpt.save(epoch + 1, {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "g_shuffle": g_shuffle.get_state(),
            "g_aug": g_aug.get_state(), "epochs_done": epoch + 1, "best_epoch": best_epoch,
            "best_val_dice": best_dice}, best=improved)
    best = ckpt.load_best()  # the best.pt this run wrote or resumed (checked by digest)
    if best is None or best["epochs_done"] != best_epoch:
        raise CheckpointError(f"{ckpt.best_path} does not hold epoch {best_epoch}, the best of this run "
                              "(no validation Dice improved?); delete the folder to retrain")
    model.load_state_dict(best["model"])
    ckpt.mark_complete({"best_epoch": best_epoch, "best_val_dice": best_dice, "epochs_done": args["epochs"]})
    return TrainResult(model, best_epoch, best_dice, log.read(), Path(out_dir))


def run_experiment(train_sets: dict, val, test, cfg, seeds: list[int], out_dir: str | os.PathLike,
                   n_classes: int = 2, progress: bool = True) -> list[dict]:
    """Train one U-Net per (training set, seed) and score each on ``test``.

    Runs are resumable and cached: each lives in ``out_dir/<set>/seed<k>/``; a complete one is
    loaded, not retrained. Rows are written to ``out_dir/runs.json`` as they finish.

    Args:
        train_sets: name -> pairs (e.g. ``{"Real": ..., "SPADE-GTMask": ...}``).
        val, test: the fixed validation and test pairs shared by every set.
        cfg: the ``unet`` params section.
        seeds: one training per seed and set; the same seeds for every set, so sets can be paired.

    Returns:
        One row per run: ``set``, ``seed``, test ``dice``/``precision``/``recall``/counts,
        ``best_epoch``, ``val_dice``, ``n_train``.
    """
    out_dir = Path(out_dir)
    rows = []
    for name, pairs in train_sets.items():
        for seed in seeds:
            res = train_unet(pairs, val, cfg, seed, out_dir / _slug(name) / f"seed{seed}", n_classes, progress)
            scores = evaluate(res.model, test)
            rows.append({"set": name, "seed": seed, **scores, "best_epoch": res.best_epoch,
                         "val_dice": res.best_val_dice, "n_train": len(pairs)})
            write_json(out_dir / "runs.json", rows)
    return rows


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
