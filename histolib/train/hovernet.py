"""Training, inference and evaluation of the HoVer-Net-style instance segmenter.

``train_hovernet`` samples random crops with standard augmentation (flips, 90-degree rotations,
brightness/contrast/per-channel gain jitter), builds the ``NP``/``HV`` targets from the augmented
instance crop (so the HV signs always match the geometry), and optimises
:func:`histolib.models.hovernet.hovernet_loss` with Adam. It resumes from ``<out>/last.pt``
when that checkpoint was made with the same options (its step count aside) and training data,
logs JSON lines to ``<out>/log.jsonl``, stops with :class:`~histolib.errors.TrainingDiverged`
on a NaN/inf loss (keeping the last good checkpoint), and skips training when ``<out>`` holds a
finished run with the same options and training data
(:func:`~histolib.train.checkpoint.fingerprint`; the rule is
:meth:`~histolib.train.checkpoint.Checkpointer.run`). The numpy generator's state is a dict of
python ints, so the checkpoint loads with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import update_bn
from tqdm.auto import tqdm

from histolib.errors import DataError, ParamError
from histolib.metrics.instance import mean_instance_metrics
from histolib.models.hovernet import HoVerNet, hovernet_loss
from histolib.ops.instance import hovernet_postprocess, hv_maps
from histolib.train.checkpoint import COMPLETE, RESUME, STEP_KEYS, Checkpointer, fingerprint
from histolib.train.monitor import TrainingLog, check_finite


@dataclass(frozen=True)
class HoVerNetTrainConfig:
    """Options of one HoVer-Net training run (stored in every checkpoint).

    Attributes:
        width, blocks, block: network size and residual unit (:class:`~histolib.models.hovernet.HoVerNet`).
        crop: square training crop side, pixels (<= image side).
        batch_size, steps, lr: Adam minibatch, iterations, learning rate.
        augment: flips, rot90 and photometric jitter.
        loss_weights: ``{"ce", "dice", "mse", "msge"}`` (default all 1).
        ckpt_every, log_every: iterations between checkpoints / log lines.
        seed: initialisation and sampling seed.
        bn_batches: after the last step, BatchNorm's running statistics are replaced by their average over
            this many training batches (precise BN: :func:`torch.optim.swa_utils.update_bn`); 0 keeps the
            momentum averages. Why: with momentum 0.1 the averages are those of the last ~10 batches, and on
            fields from faint to saturated those can be unlike the data; measured on notebook 05's phantom
            (2026-12-08), one of three full-dataset HoVer-Nets gave background a foreground probability of
            0.3-0.7 in eval mode (test AJI 0.18) while the same weights with batch statistics gave 0.02.
    """

    width: int = 16
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    block: str = "basic"
    crop: int = 64
    batch_size: int = 8
    steps: int = 500
    lr: float = 1e-3
    augment: bool = True
    loss_weights: dict = field(default_factory=dict)
    ckpt_every: int = 100
    log_every: int = 10
    seed: int = 0
    bn_batches: int = 32

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["blocks"] = list(self.blocks)
        return d


def _check_data(images: np.ndarray, instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images, instances = np.asarray(images), np.asarray(instances)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"images must be (N, H, W, 3) uint8, got {images.dtype} {images.shape}")
    if instances.shape != images.shape[:3] or not np.issubdtype(instances.dtype, np.integer):
        raise DataError(f"instances must be integer (N, H, W) matching images {images.shape[:3]}, "
                        f"got {instances.dtype} {instances.shape}")
    if len(images) == 0:
        raise DataError("no training images")
    return images, instances


def to_input(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 in ``[-1, 1]`` (the network's input), contiguous.

    (A channels-last-strided input, what ``permute`` alone gives, crashes torch 2.14.1's CPU convolution
    backward with a segmentation fault: measured on HoVer-Net width 4, blocks (1, 1), 32-px crops.)
    """
    return (torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0).contiguous()


def sample_batch(images: np.ndarray, instances: np.ndarray, batch_size: int, crop: int,
                 rng: np.random.Generator, augment: bool = True,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random augmented crops and their targets.

    Returns:
        ``x (B, 3, crop, crop)`` in ``[-1, 1]``, ``np_target (B, crop, crop)`` int64 0/1,
        ``hv_target (B, 2, crop, crop)`` float32.
    """
    n, h, w = instances.shape
    if crop > h or crop > w:
        raise ParamError(f"crop {crop} is larger than the images ({h} x {w})")
    xs, nps, hvs = [], [], []
    for _ in range(batch_size):
        i = int(rng.integers(n))
        y0, x0 = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        img = images[i, y0:y0 + crop, x0:x0 + crop]
        inst = instances[i, y0:y0 + crop, x0:x0 + crop]
        if augment:
            k = int(rng.integers(4))
            img, inst = np.rot90(img, k), np.rot90(inst, k)
            if rng.random() < 0.5:
                img, inst = img[:, ::-1], inst[:, ::-1]
            f = img.astype(np.float32)
            gain = rng.uniform(0.9, 1.1, size=3) * rng.uniform(0.8, 1.2)  # contrast + colour
            mean = f.mean()
            f = (f - mean) * gain + mean + rng.uniform(-20, 20)  # brightness
            img = np.clip(f, 0, 255).astype(np.uint8)
        inst = np.ascontiguousarray(inst)
        xs.append(np.ascontiguousarray(img))
        nps.append(inst > 0)
        hvs.append(hv_maps(inst))
    return (to_input(np.stack(xs)), torch.from_numpy(np.stack(nps)).long(),
            torch.from_numpy(np.stack(hvs)))


def build_model(config: HoVerNetTrainConfig) -> HoVerNet:
    """The network a config describes, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    return HoVerNet(width=config.width, blocks=tuple(config.blocks), block=config.block)


def train_hovernet(images: np.ndarray, instances: np.ndarray, config: HoVerNetTrainConfig,
                   out_dir: str | os.PathLike, *, progress: bool = True) -> HoVerNet:
    """Train (or resume, or reload a finished) HoVer-Net on image/instance pairs.

    Args:
        images: ``(N, H, W, 3)`` uint8.
        instances: ``(N, H, W)`` integer instance maps, 0 = background.
        config: the run's options.
        out_dir: checkpoints (``last.pt``), ``log.jsonl`` and ``COMPLETE.json``.
        progress: show a tqdm bar.

    Returns:
        The trained model in eval mode.

    Raises:
        DataError: malformed inputs. TrainingDiverged: a NaN/inf loss.
        CheckpointError: an unreadable ``last.pt`` (named).
    """
    images, instances = _check_data(images, instances)
    out = Path(out_dir)
    ckpt = Checkpointer(out, {**config.to_dict(), "data": fingerprint(images, instances)},
                        resume_ignores=STEP_KEYS)
    run = ckpt.run()
    model = build_model(config)
    if run.status == COMPLETE:
        model.load_state_dict(run.checkpoint["model"])
        return model.eval()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng([config.seed, 1])
    start = 0
    if run.status == RESUME:
        state = run.checkpoint
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        start = state["step"]
    log = TrainingLog(out / "log.jsonl", resume_step=start)
    model.train()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress,
               desc=f"hovernet {out.name}")
    for step in bar:
        x, np_t, hv_t = sample_batch(images, instances, config.batch_size, config.crop, rng,
                                     config.augment)
        losses = hovernet_loss(model(x), np_t, hv_t, config.loss_weights or None)
        check_finite(losses, step + 1, where=ckpt.last_good)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            log.log(done, **{k: float(v.detach()) for k, v in losses.items()})
            bar.set_postfix(loss=f"{float(losses['total'].detach()):.3f}")
        if done % config.ckpt_every == 0 or done == config.steps:
            ckpt.save(done, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                             "rng": rng.bit_generator.state})
    if config.bn_batches > 0:  # from scratch on every (re)run: the result depends on the weights and seed only
        recalibrate_batchnorm(model, images, instances, config)
        ckpt.save(config.steps, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                 "rng": rng.bit_generator.state})
    ckpt.mark_complete({"steps": config.steps})
    return model.eval()


@torch.no_grad()
def recalibrate_batchnorm(model: HoVerNet, images: np.ndarray, instances: np.ndarray,
                          config: HoVerNetTrainConfig) -> None:
    """Replace every BatchNorm's running mean and variance by their average over ``config.bn_batches``
    training batches (drawn as in training, from their own stream ``[seed, 2]``); weights are unchanged.
    Leaves the model in train mode."""
    rng = np.random.default_rng([config.seed, 2])
    batches = [sample_batch(images, instances, config.batch_size, config.crop, rng, config.augment)[0]
               for _ in range(config.bn_batches)]
    update_bn(batches, model)


@torch.no_grad()
def predict_maps(model: HoVerNet, images: np.ndarray, batch_size: int = 8,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Network outputs: ``np_prob (N, H, W)`` (softmax foreground) and ``hv (N, 2, H, W)``."""
    model.eval()
    probs, hvs = [], []
    for i in range(0, len(images), batch_size):
        out = model(to_input(images[i:i + batch_size]))
        probs.append(out["np"].softmax(dim=1)[:, 1].numpy())
        hvs.append(out["hv"].numpy())
    return np.concatenate(probs), np.concatenate(hvs)


def predict_instances(model: HoVerNet, images: np.ndarray, batch_size: int = 8,
                      postprocess: dict | None = None) -> list[np.ndarray]:
    """Instance maps ``(H, W)`` int32 for ``(N, H, W, 3)`` uint8 images (HoVer-Net post-processing;
    ``postprocess``: keyword arguments of :func:`~histolib.ops.instance.hovernet_postprocess`, e.g.
    from :func:`~histolib.ops.instance.postprocess_sizes`)."""
    probs, hvs = predict_maps(model, images, batch_size)
    return [hovernet_postprocess(p, hv, **(postprocess or {})) for p, hv in zip(probs, hvs, strict=True)]


def evaluate_hovernet(model: HoVerNet, images: np.ndarray, instances: np.ndarray,
                      batch_size: int = 8, postprocess: dict | None = None) -> dict:
    """HoVer-Net's metrics (DICE, DICE2, AJI, AJI+, PQ), per image then averaged."""
    images, instances = _check_data(images, instances)
    return mean_instance_metrics(list(instances), predict_instances(model, images, batch_size, postprocess))
