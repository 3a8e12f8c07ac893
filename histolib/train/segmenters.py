"""Training the three-class glomerulus segmenters of He et al. (seed 003, "Glomerular segmentation network").

One run trains one network of :mod:`histolib.models.segmenters` on tiles with class maps (0 other,
1 normal glomerulus, 2 sclerosed glomerulus):

* loss Eq. 14, ``L_seg = lambda L_BCE + L_Dice`` with ``lambda = 0.5``: per-class sigmoid BCE against the
  one-hot target, plus the soft Dice loss ``1 - (2 sum p y + 1) / (sum p + sum y + 1)`` averaged over the
  classes, ``p = sigmoid(logits)`` (smp's multilabel Dice/BCE); the prediction is the arg-max of the logits;
* Adam, learning rate annealed by ``CosineAnnealingLR`` to ``eta_min`` (paper: 1e-5) over the run;
* "traditional augmentation" (Table 3): random flips and 90-degree rotations with probability
  ``augment_p`` (0: none);
* a fixed number of optimisation steps (not epochs), so that training sets of different sizes get the same
  compute; each step draws ``batch_size`` random ``crop``-px windows of random training tiles (``crop = 0``:
  whole tiles), a share ``fg_fraction`` of them centred near a glomerulus pixel (foreground-biased patch
  sampling: glomeruli cover a tenth of a tile, and short CPU runs see too few of them otherwise); the
  randomness of step ``t`` comes from :func:`histolib.train.gan.step_generator`, so an interrupted run
  resumes exactly;
* every ``eval_every`` steps the mean over NG and SG of the pooled validation Dice decides whether
  ``best.pt`` is replaced (the paper keeps "the model with the lowest Dice coefficient of the validation
  sets", which we read as a slip for the highest); the best model is returned.

Checkpoints go through :class:`histolib.train.checkpoint.Checkpointer`: ``last.pt`` at every validation
(weights, optimiser, schedule, the best weights so far: an interrupted run resumes exactly); when the run
finishes, only ``best.pt`` (the chosen weights) and ``COMPLETE.json`` stay (an EfficientNet-B3 U-Net's Adam
state is twice its 13 M weights); a finished run with the same arguments and data is loaded, not retrained.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from histolib.errors import ParamError
from histolib.metrics.multiclass import per_class_scores
from histolib.models.segmenters import Segmenter, build_segmenter
from histolib.ops.augment import random_flip_rot90
from histolib.train.checkpoint import Checkpointer, fingerprint
from histolib.train.gan import step_generator
from histolib.train.monitor import TrainingLog, check_finite

__all__ = ["SegOptions", "SegResult", "seg_loss", "train_segmenter", "predict_classes", "evaluate_classes"]

CL = torch.channels_last


@dataclass
class SegOptions:
    """Options of one segmentation training (see the module docstring).

    Attributes:
        model: ``effb3_unet``, ``unet`` or ``unetpp``.
        steps, batch_size, crop: optimisation steps, windows per step, window side (0: whole tiles).
        fg_fraction: share of the windows centred (jittered by up to a quarter window) on a random glomerulus
            pixel (label > 0) instead of placed uniformly; 0: uniform windows.
        lr, eta_min: Adam learning rate and the cosine schedule's floor (paper: 1e-5).
        bce_weight: ``lambda`` of Eq. 14 (0.5).
        augment_p: flip / rotation probability (0: no traditional augmentation).
        eval_every: steps between validations.
        decoder_channels, unet_width, unetpp_encoder, encoder_weights, bn_momentum: network (``build_segmenter``).
        precision: ``fp32`` or ``bf16`` autocast of forward passes.
        n_classes: 3.
    """

    model: str = "effb3_unet"
    steps: int = 1000
    batch_size: int = 8
    crop: int = 0
    fg_fraction: float = 0.0
    lr: float = 1e-3
    eta_min: float = 1e-5
    bce_weight: float = 0.5
    augment_p: float = 0.5
    eval_every: int = 100
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    unet_width: int = 64
    unetpp_encoder: str = "resnet34"
    encoder_weights: str = ""
    bn_momentum: float = 0.0
    precision: str = "fp32"
    n_classes: int = 3

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decoder_channels"] = list(d["decoder_channels"])
        return d


@dataclass
class SegResult:
    """A trained segmenter: the best model, its step and validation score, the log."""

    segmenter: Segmenter
    best_step: int
    best_val: float
    history: list[dict] = field(default_factory=list)
    folder: Path | None = None
    seconds: float = 0.0

    @property
    def net(self):
        return self.segmenter.net


def seg_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 0.5, eps: float = 1.0) -> torch.Tensor:
    """Eq. 14: ``bce_weight * BCE(sigmoid(logits), onehot) + mean_c (1 - (2 sum p y + eps) / (sum p + sum y + eps))``.

    Args:
        logits: ``(B, K, H, W)``; target: ``(B, H, W)`` int64 in ``[0, K)``.
    """
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, onehot)
    p = torch.sigmoid(logits)
    inter = (p * onehot).sum((0, 2, 3))
    dice = 1 - (2 * inter + eps) / (p.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + eps)
    return bce_weight * bce + dice.mean()


def _images_tensor(images) -> torch.Tensor:
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ParamError(f"tiles must be (N, H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)


@torch.no_grad()
def predict_classes(seg: Segmenter, images, batch_size: int = 16, precision: str = "fp32") -> np.ndarray:
    """Arg-max class maps ``(N, H, W)`` uint8 of ``(N, H, W, 3)`` uint8 tiles; sides that are not
    multiples of ``seg.multiple`` are reflect-padded, then cropped back."""
    x_all = _images_tensor(images)
    net = seg.net
    was = net.training
    net.eval()
    h, w = x_all.shape[-2:]
    m = seg.multiple
    ph, pw = (-h) % m, (-w) % m
    out = []
    try:
        for i in range(0, len(x_all), batch_size):
            x = x_all[i:i + batch_size].float().div_(255.0)
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = net(x.contiguous(memory_format=CL))
            out.append(logits.float()[..., :h, :w].argmax(1).to(torch.uint8))
    finally:
        net.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, h, w), np.uint8)


def evaluate_classes(seg: Segmenter, images, labels, precision: str = "fp32") -> dict:
    """:func:`histolib.metrics.multiclass.per_class_scores` of the segmenter on a labelled set."""
    return per_class_scores(predict_classes(seg, images, precision=precision), np.asarray(labels))


def _batch(x_all: torch.Tensor, y_all: torch.Tensor, opts: SegOptions, gen: torch.Generator,
           fg: torch.Tensor | None = None):
    """One training batch: ``batch_size`` windows (random tiles, uniform positions, or with probability
    ``fg_fraction`` centred near a foreground pixel of ``fg`` = ``(K, 3)`` (tile, row, column) coordinates),
    flipped / rotated with ``augment_p``. The generator is advanced by the same draws whatever the options."""
    n, _, h, w = x_all.shape
    b = opts.batch_size
    idx = torch.randint(n, (b,), generator=gen)
    if opts.crop and opts.crop < min(h, w):
        c = opts.crop
        ys = torch.randint(h - c + 1, (b,), generator=gen)
        xs = torch.randint(w - c + 1, (b,), generator=gen)
        use_fg = torch.rand(b, generator=gen) < opts.fg_fraction
        pick = torch.randint(max(len(fg), 1) if fg is not None else 1, (b,), generator=gen)
        jitter = torch.randint(-(c // 4), c // 4 + 1, (2, b), generator=gen)
        if fg is not None and len(fg) and use_fg.any():
            p = fg[pick]
            fy = (p[:, 1] - c // 2 + jitter[0]).clamp(0, h - c)
            fx = (p[:, 2] - c // 2 + jitter[1]).clamp(0, w - c)
            idx, ys, xs = torch.where(use_fg, p[:, 0], idx), torch.where(use_fg, fy, ys), torch.where(use_fg, fx, xs)
        x = torch.stack([x_all[i, :, y:y + c, x0:x0 + c] for i, y, x0 in zip(idx, ys, xs, strict=True)])
        y = torch.stack([y_all[i, y:y + c, x0:x0 + c] for i, y, x0 in zip(idx, ys, xs, strict=True)])
    else:
        x, y = x_all[idx], y_all[idx]
    x = x.float().div_(255.0)
    x, y = random_flip_rot90(x, y, p=opts.augment_p, generator=gen)
    return x.contiguous(memory_format=CL), y


def train_segmenter(train_images, train_labels, val_images, val_labels, opts: SegOptions, seed: int, out_dir,
                    progress: bool = False) -> SegResult:
    """Train (or resume, or load) one segmenter; returns the validation-chosen model.

    Args:
        train_images, train_labels: ``(N, H, W, 3)`` uint8 tiles and ``(N, H, W)`` class maps.
        val_images, val_labels: the validation tiles (whole tiles are scored).
        opts: :class:`SegOptions`.
        seed: weights, batches and augmentation.
        out_dir: ``last.pt``, ``best.pt``, ``log.jsonl``, ``COMPLETE.json``.
        progress: print a line per validation.

    Raises:
        TrainingDiverged: a NaN/inf loss (``last.pt`` keeps the last good validation step).
    """
    if opts.steps < 1 or opts.eval_every < 1:
        raise ParamError(f"steps and eval_every must be >= 1, got {opts.steps}, {opts.eval_every}")
    x_all = _images_tensor(train_images)
    y_all = torch.from_numpy(np.asarray(train_labels).astype(np.int64))
    if y_all.shape != (x_all.shape[0], *x_all.shape[2:]):
        raise ParamError(f"train_labels {tuple(y_all.shape)} do not match tiles {tuple(x_all.shape)}")
    if int(y_all.max()) >= opts.n_classes or int(y_all.min()) < 0:
        raise ParamError(f"train_labels hold values outside [0, {opts.n_classes})")
    fg = torch.nonzero(y_all > 0) if opts.fg_fraction > 0 else None
    args = {**opts.to_dict(), "seed": int(seed), "n_train": len(x_all),
            "data": fingerprint(train_images, train_labels)}
    out_dir = Path(out_dir)
    ckpt = Checkpointer(out_dir, args)
    seg = build_segmenter(opts.model, opts.n_classes, opts.decoder_channels, opts.unet_width, opts.unetpp_encoder,
                          opts.encoder_weights, seed, opts.bn_momentum)
    net = seg.net.to(memory_format=CL)
    run = ckpt.run()  # the study's one rule: new / resume / complete (read-only)
    if run.status == "complete":  # a finished run may be another stage's output: load, write nothing
        best = ckpt.load_best()
        net.load_state_dict(best["model"])
        rows = TrainingLog.read_file(out_dir / "log.jsonl", up_to_step=best["steps_done"])
        return SegResult(seg, best["best_step"], best["best_val"], rows, out_dir,
                         float(best.get("seconds", 0.0)))
    opt = torch.optim.Adam(net.parameters(), lr=opts.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=opts.steps, eta_min=opts.eta_min)
    start, best_step, best_val, seconds, best_state = 0, 0, -math.inf, 0.0, None
    state = run.checkpoint if run.status == "resume" else None
    if state is not None and "optimizer" in state:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best_step, best_val = state["steps_done"], state["best_step"], state["best_val"]
        seconds, best_state = state.get("seconds", 0.0), state.get("best_model")
    log = TrainingLog(out_dir / "log.jsonl", resume_step=start)
    total, seen, t0 = 0.0, 0, time.perf_counter()
    counters = {"steps_done": start, "best_step": best_step, "best_val": best_val, "seconds": seconds}
    net.train()
    for step in range(start, opts.steps):
        x, y = _batch(x_all, y_all, opts, step_generator(seed, step), fg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts.precision == "bf16"):
            logits = net(x)
        loss = seg_loss(logits.float(), y, opts.bce_weight)
        check_finite({"segmentation": loss}, step + 1, where=str(ckpt.last_path))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach())
        seen += 1
        done = step + 1
        if done % opts.eval_every == 0 or done == opts.steps:
            train_seconds = time.perf_counter() - t0
            seconds += train_seconds
            scores = evaluate_classes(seg, val_images, val_labels, opts.precision)
            val = scores["mean"]["dice"]
            if val > best_val:
                best_step, best_val = done, val
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            log.log(done, train_loss=total / max(seen, 1), val_dice=val, val_dice_NG=scores["NG"]["dice"],
                    val_dice_SG=scores["SG"]["dice"], lr=sched.get_last_lr()[0],
                    img_per_sec=seen * opts.batch_size / max(train_seconds, 1e-9))
            if progress:
                print(f"{opts.model} seed {seed} step {done}/{opts.steps}: loss {total / max(seen, 1):.3f}, "
                      f"val Dice {val:.3f} (NG {scores['NG']['dice']:.3f}, SG {scores['SG']['dice']:.3f})")
            counters = {"steps_done": done, "best_step": best_step, "best_val": best_val, "seconds": seconds}
            if done < opts.steps:  # resumable state: weights, optimiser, schedule and the best weights so far
                ckpt.save(done, {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                 "scheduler": sched.state_dict(), "best_model": best_state, **counters})
            net.train()
            total, seen, t0 = 0.0, 0, time.perf_counter()
    # the finished run keeps only the chosen weights (best.pt, and last.pt without the optimiser state,
    # which is 2x the weights): COMPLETE.json vouches for both by their sha256
    if best_state is None:  # no finite validation score at all: keep the last weights
        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    ckpt.save(opts.steps, {"model": best_state, **counters}, best=True)
    net.load_state_dict(best_state)
    ckpt.mark_complete({"best_step": best_step, "best_val": best_val, "seconds": seconds})
    net.eval()
    return SegResult(seg, best_step, best_val, log.read(), out_dir, seconds)
