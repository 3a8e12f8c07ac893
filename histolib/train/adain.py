"""Training of the AdaIN decoder and generation of images from generated masks (Sec. 3.3).

Content images are flattened generated instance masks, style images real tiles. Augmentation
follows the paper: flips and affine transformations (rotation, scale, translation) for both
content and style, photometric jitter (brightness, contrast, saturation, hue-like channel mixing)
for the style only. Adam with the reference's inverse-time decay ``lr_t = lr / (1 + decay t)``.
Resume, JSON-lines log, divergence guard and skip-when-complete as in
:mod:`histolib.train.hovernet`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from histolib.errors import DataError, ParamError
from histolib.models.adain import (
    AdaINStyleTransfer,
    EncoderInfo,
    flatten_mask,
    select_style_by_count,
    vgg19_relu4_1,
)
from histolib.train.checkpoint import COMPLETE, RESUME, STEP_KEYS, Checkpointer, fingerprint, without_later_defaults
from histolib.train.monitor import TrainingLog, check_finite


@dataclass(frozen=True)
class AdaINTrainConfig:
    """Options of one AdaIN decoder training run (stored in every checkpoint).

    Attributes:
        width: channel multiplier of encoder and decoder (1 = VGG19; must be 1 with weights).
        depth: deepest encoder tap, 4 = relu4_1 (the paper), 3 = relu3_1 (CPU substitute).
        weights_path: local VGG19 state dict, or None for the random-init substitute.
        size: square training crop side (a multiple of ``2^(depth - 1)``).
        batch_size, steps, lr, lr_decay: Adam minibatch, iterations, ``lr / (1 + lr_decay t)``.
        style_weight: ``lambda_s`` (10).
        invert_content: nuclei 0 and background 1 in the content image, for styles whose nuclei
            are darker than the background (H&E; see
            :func:`~histolib.models.adain.nuclei_are_dark`).
        warmup_steps: first iterations that train the decoder to invert the encoder
            (``MSE(g(f(x)[relu4_1]), x)`` on the content and style crops) before the AdaIN
            losses; 0 = the paper (see :func:`train_adain`).
        encoder_steps: without VGG19 weights only: the first iterations also train the encoder
            (encoder and decoder as an autoencoder, the same reconstruction loss), which is then
            frozen: a feature network trained in the pipeline on the data at hand (DESIGN.md
            section 7) instead of random weights. Counted inside ``warmup_steps`` (at most it);
            0 = the random-init encoder stays as initialised.
        ckpt_every, log_every: iterations between checkpoints / log lines.
        seed: encoder initialisation (random-init case) and sampling seed.
    """

    width: float = 0.25
    depth: int = 4
    weights_path: str | None = None
    size: int = 64
    batch_size: int = 8
    steps: int = 500
    lr: float = 1e-4
    lr_decay: float = 5e-5
    style_weight: float = 10.0
    invert_content: bool = False
    warmup_steps: int = 0
    encoder_steps: int = 0
    ckpt_every: int = 100
    log_every: int = 10
    seed: int = 0

    def to_dict(self) -> dict:
        return without_later_defaults(dataclasses.asdict(self), {"encoder_steps": 0})


def _random_affine(x: torch.Tensor, gen: torch.Generator, mode: str) -> torch.Tensor:
    """Rotate by U(0, 360) deg, scale by U(0.8, 1.25), translate by up to 10 %, reflect borders."""
    b = x.shape[0]
    theta = torch.rand(b, generator=gen) * 2 * math.pi
    scale = torch.exp(torch.empty(b).uniform_(math.log(0.8), math.log(1.25), generator=gen))
    shift = (torch.rand(b, 2, generator=gen) - 0.5) * 0.2
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    mat = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=False)


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip_h = torch.rand(x.shape[0], generator=gen) < 0.5
    flip_v = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    return torch.where(flip_v[:, None, None, None], x.flip(-2), x)


def _photometric(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness +-0.1, contrast x[0.8, 1.2], saturation x[0.8, 1.2], small channel mixing."""
    b = x.shape[0]
    grey = x.mean(dim=1, keepdim=True)
    sat = torch.empty(b, 1, 1, 1).uniform_(0.8, 1.2, generator=gen)
    x = grey + (x - grey) * sat
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    con = torch.empty(b, 1, 1, 1).uniform_(0.8, 1.2, generator=gen)
    x = (x - mean) * con + mean + torch.empty(b, 1, 1, 1).uniform_(-0.1, 0.1, generator=gen)
    mix = torch.eye(3) + (torch.rand(b, 3, 3, generator=gen) - 0.5) * 0.1
    x = torch.einsum("bij,bjhw->bihw", mix, x)
    return x.clamp(0, 1)


def _crops(stack: torch.Tensor, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random ``size`` crops from a ``(N, C, H, W)`` stack."""
    _, _, h, w = stack.shape
    idx = torch.randint(len(stack), (n,), generator=gen)
    ys = torch.randint(h - size + 1, (n,), generator=gen)
    xs = torch.randint(w - size + 1, (n,), generator=gen)
    return torch.stack([stack[i, :, y:y + size, x:x + size] for i, y, x in zip(idx, ys, xs, strict=True)])


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def build_model(config: AdaINTrainConfig) -> tuple[AdaINStyleTransfer, EncoderInfo]:
    """Encoder (local VGG19 weights or the seeded random-init substitute) and a fresh decoder.
    With ``encoder_steps`` and no weights, the info says the encoder is trained in the pipeline."""
    gen = torch.Generator().manual_seed(config.seed)
    encoder, info = vgg19_relu4_1(config.weights_path, width=config.width, generator=gen,
                                  depth=config.depth)
    if info.kind == "vgg19-random-init" and encoder_steps(config):
        info = dataclasses.replace(info, kind="vgg19-trained-in-pipeline", trained_steps=encoder_steps(config))
    torch.manual_seed(config.seed)
    return AdaINStyleTransfer(encoder, width=info.width, style_weight=config.style_weight), info


def encoder_steps(config: AdaINTrainConfig) -> int:
    """Iterations that train the encoder: ``min(encoder_steps, warmup_steps, steps)``, and none when VGG19
    weights are loaded (a pretrained encoder stays frozen, as the paper's)."""
    if config.weights_path and os.path.isfile(config.weights_path):
        return 0
    return max(0, min(config.encoder_steps, config.warmup_steps, config.steps))


def train_adain(contents: np.ndarray, styles: np.ndarray, config: AdaINTrainConfig,
                out_dir: str | os.PathLike, *, progress: bool = True,
                ) -> tuple[AdaINStyleTransfer, EncoderInfo]:
    """Train (or resume, or reload a finished) AdaIN decoder.

    Args:
        contents: ``(N, H, W)`` integer instance maps (generated masks); flattened to 0/1.
        styles: ``(M, H', W', 3)`` uint8 real tiles.
        config: the run's options (``size`` <= every image side).
        out_dir: checkpoints, ``log.jsonl``, ``COMPLETE.json``.

    Returns:
        ``(model in eval mode, encoder info)``; record ``info.to_dict()`` with the results.

    The paper trains the decoder for 160k iterations from scratch. At CPU budgets (hundreds of
    iterations) a decoder trained from scratch ignores the content (its output hardly changes
    between masks), so ``warmup_steps`` first fits it as an inverse of the frozen encoder by
    pixel reconstruction, which is what the AdaIN content loss asks of it in the end.
    """
    contents, styles = np.asarray(contents), np.asarray(styles)
    if contents.ndim != 3 or not np.issubdtype(contents.dtype, np.integer) or len(contents) == 0:
        raise DataError(f"contents must be a non-empty integer (N, H, W) stack, got "
                        f"{contents.dtype} {contents.shape}")
    if styles.ndim != 4 or styles.shape[-1] != 3 or styles.dtype != np.uint8 or len(styles) == 0:
        raise DataError(f"styles must be a non-empty (M, H, W, 3) uint8 stack, got "
                        f"{styles.dtype} {styles.shape}")
    stride = 2 ** (config.depth - 1)
    if config.size % stride or config.size > min(contents.shape[1:3]) or config.size > min(styles.shape[1:3]):
        raise ParamError(f"size {config.size} must be a multiple of {stride} and fit in every image")
    out = Path(out_dir)
    ckpt = Checkpointer(out, {**config.to_dict(), "data": fingerprint(contents, styles)},
                        resume_ignores=STEP_KEYS)
    run = ckpt.run()
    model, info = build_model(config)
    if run.status == COMPLETE:
        model.load_state_dict(run.checkpoint["model"])
        return model.eval(), info
    n_enc = encoder_steps(config)
    opt = torch.optim.Adam(list(model.decoder.parameters()) + (list(model.encoder.parameters()) if n_enc else []),
                           lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed + 1)
    start = 0
    if run.status == RESUME:
        state = run.checkpoint
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start = state["step"]
    content_t = flatten_mask(torch.from_numpy(contents.astype(np.int64)), config.invert_content)
    style_t = images_to_tensor(styles)
    log = TrainingLog(out / "log.jsonl", resume_step=start)
    model.train()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress,
               desc=f"adain {out.name}")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = config.lr / (1.0 + config.lr_decay * step)
        c = _crops(content_t, config.batch_size, config.size, gen)
        c = (_random_affine(_flip(c, gen), gen, "nearest") > 0.5).float()
        s = _crops(style_t, config.batch_size, config.size, gen)
        s = _photometric(_random_affine(_flip(s, gen), gen, "bilinear"), gen)
        train_encoder = step < n_enc
        for p in model.encoder.parameters():
            p.requires_grad_(train_encoder)
        if step < config.warmup_steps:
            x = torch.cat([c, s])
            recon = F.mse_loss(model.decoder(model.encoder(x)[-1]), x)
            losses = {"recon": recon, "total": recon}
        else:
            losses = model.losses(c, s)
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
                             "generator": gen.get_state(), "encoder": info.to_dict()})
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    ckpt.mark_complete({"steps": config.steps, "encoder": info.to_dict()})
    return model.eval(), info


@torch.no_grad()
def generate_images(model: AdaINStyleTransfer, masks: np.ndarray, styles: np.ndarray,
                    style_counts, generator: torch.Generator | None = None, batch_size: int = 8,
                    invert_content: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``ADAIN(FLATTEN(M~), R)`` for every generated mask (Algorithm 1, line 9).

    The style ``R`` of each mask is the real tile with the closest nucleus count
    (:func:`~histolib.models.adain.select_style_by_count`). The masks themselves are untouched:
    they are the ground truth of the returned images, pixel for pixel.

    Args:
        masks: ``(N, H, W)`` generated instance maps.
        styles: ``(M, H', W', 3)`` uint8 real tiles; ``style_counts`` their nucleus counts.
        invert_content: as the model was trained (``AdaINTrainConfig.invert_content``).

    Returns:
        ``images (N, H, W, 3)`` uint8 and ``style_index (N,)``.
    """
    masks = np.asarray(masks)
    counts = [int(np.unique(m[m > 0]).size) for m in masks]
    chosen = np.array([select_style_by_count(c, style_counts, generator) for c in counts], int)
    model.eval()
    style_t = images_to_tensor(styles)
    out = []
    for i in range(0, len(masks), batch_size):
        content = flatten_mask(torch.from_numpy(masks[i:i + batch_size].astype(np.int64)), invert_content)
        out.append(model(content, style_t[chosen[i:i + batch_size]]))
    imgs = torch.cat(out).permute(0, 2, 3, 1).numpy()
    return np.round(imgs * 255).astype(np.uint8), chosen
