"""AdaIN style transfer (Huang & Belongie 2017) as used by Basla et al. (Sec. 3.3).

``content`` = the flattened generated mask (``M~ > 0`` as a 3-channel 0/1 image), ``style`` = a
real image; ``output = g(AdaIN(f(content), f(style)))`` with ``f`` a frozen encoder (VGG19 up to
``relu4_1``) and ``g`` a trained decoder mirroring it. The generated instance mask is the ground
truth of the output image as it is: the output has exactly the mask's height and width (inputs
are reflect-padded to a multiple of the encoder's stride and the output cropped back), so the pair stays aligned
pixel for pixel.

Encoder weights (offline first, DESIGN.md section 7): :func:`vgg19_relu4_1` loads torchvision's
VGG19 ``features`` from a local state-dict file when one is given and exists; otherwise it builds
the same architecture with random weights (optionally narrower, ``width < 1``, for the CPU
profile). Random convolutional features still carry usable texture statistics for mean/std and
Gram style losses (Ustyuzhaninov et al. 2016, "Texture synthesis using shallow convolutional
networks with random filters"). Which one was used is returned and must be recorded.

Decoder and losses follow the authors' reference (the public AdaIN PyTorch port): nearest x2
upsampling, reflection padding, ``eps = 1e-5`` in the std, ``L = L_c + lambda_s L_s`` with
``lambda_s = 10``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# VGG19 "features" up to relu4_1: (out_channels or "M" for max-pool); relu after every conv.
_VGG19_TO_RELU4_1 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512)
# Indices (in the conv/relu/pool sequence) that end relu1_1, relu2_1, relu3_1, relu4_1.
_STYLE_TAPS = (2, 7, 12, 21)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderInfo:
    """What :func:`vgg19_relu4_1` built: ``kind`` is ``"vgg19-imagenet-local"``,
    ``"vgg19-random-init"`` or ``"vgg19-trained-in-pipeline"`` (the random-init encoder then trained
    as an autoencoder on the data at hand, ``trained_steps`` iterations; DESIGN.md section 7);
    ``weights_path`` the file loaded (or None); ``width`` the channel multiplier; ``depth`` the
    deepest tap (4 = relu4_1); ``channels`` its channel count."""

    kind: str
    weights_path: str | None
    width: float
    channels: int
    depth: int = 4
    trained_steps: int = 0

    @property
    def layer(self) -> str:
        return f"relu{self.depth}_1"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "weights_path": self.weights_path, "width": self.width,
                "channels": self.channels, "depth": self.depth, "layer": self.layer,
                "trained_steps": self.trained_steps}


class VGGEncoder(nn.Module):
    """VGG19 ``features`` from conv1_1 to ``relu{depth}_1``, returning the style taps.

    Input ``(B, 3, H, W)`` in ``[0, 1]``; ImageNet normalisation is applied inside. Output: list
    of relu1_1 ``(B, c, H, W)``, relu2_1 ``(B, 2c, H/2, W/2)``, relu3_1 ``(B, 4c, H/4, W/4)``,
    relu4_1 ``(B, 8c, H/8, W/8)`` (the first ``depth`` of them) with ``c = round(64 * width)``.
    ``depth = 4`` is the paper's encoder (``features[:21]``).
    """

    def __init__(self, width: float = 1.0, depth: int = 4):
        super().__init__()
        if depth not in (2, 3, 4):
            raise ValueError(f"depth must be 2, 3 or 4 (relu2_1 .. relu4_1), got {depth}")
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_TO_RELU4_1:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = max(4, round(v * width))
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=False)]
                cin = cout
            if len(layers) >= _STYLE_TAPS[depth - 1]:
                break
        self.features = nn.Sequential(*layers)
        self.depth = depth
        self.out_channels = cin
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        taps, start = [], 0
        for stop in _STYLE_TAPS[:self.depth]:
            x = self.features[start:stop](x)
            taps.append(x)
            start = stop
        return taps


def vgg19_relu4_1(weights_path: str | os.PathLike | None = None, width: float = 1.0,
                  generator: torch.Generator | None = None, depth: int = 4,
                  ) -> tuple[VGGEncoder, EncoderInfo]:
    """The frozen AdaIN encoder, never downloading anything.

    Args:
        weights_path: a local ``state_dict`` of torchvision's ``vgg19`` (whole model or its
            ``features``); used when given and the file exists (``width`` must then be 1).
        width: channel multiplier of the random-init substitute (1 = VGG19's own widths).
        generator: seeds the random-init substitute (deterministic encoder for a seed).
        depth: deepest tap, 4 = relu4_1 (the paper). The CPU profile's substitute stops at
            relu3_1 (``depth=3``): a decoder learns to invert random relu3_1 features about three
            times faster than relu4_1 ones (measured: pixel MSE 0.023 vs 0.062 after 300 steps),
            which decides whether AdaIN learns anything within a CPU budget.

    Returns:
        ``(encoder, info)``; the encoder is in eval mode with ``requires_grad = False``.
    """
    if weights_path and os.path.isfile(weights_path):
        if width != 1.0:
            raise ValueError(f"width must be 1 with pretrained VGG19 weights, got {width}")
        enc = VGGEncoder(1.0, depth)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("features."): v for k, v in state.items()}
        wanted = enc.features.state_dict().keys()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise ValueError(f"{weights_path}: not a VGG19 state dict (missing {missing[:3]})")
        enc.features.load_state_dict({k: state[k] for k in wanted})
        info = EncoderInfo("vgg19-imagenet-local", str(weights_path), 1.0, enc.out_channels, depth)
    else:
        enc = VGGEncoder(width, depth)
        _init_random(enc, generator)
        info = EncoderInfo("vgg19-random-init", None, float(width), enc.out_channels, depth)
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc, info


def _init_random(module: nn.Module, generator: torch.Generator | None) -> None:
    # He-normal (fan-in) keeps activation scale roughly constant through the ReLU stack.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()


def mean_std(feat: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and ``sqrt(var + eps)`` (unbiased var) of ``(B, C, H, W)``,
    each ``(B, C, 1, 1)``."""
    b, c = feat.shape[:2]
    flat = feat.reshape(b, c, -1)
    return flat.mean(-1).view(b, c, 1, 1), (flat.var(-1) + eps).sqrt().view(b, c, 1, 1)


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``AdaIN(x, y) = sigma(y) (x - mu(x)) / sigma(x) + mu(y)`` per sample and channel (Eq. 8 of
    Huang & Belongie). Shapes ``(B, C, H, W)``; ``style`` may have another ``H, W``."""
    mu_c, sd_c = mean_std(content, eps)
    mu_s, sd_s = mean_std(style, eps)
    return (content - mu_c) / sd_c * sd_s + mu_s


class _ReflectConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, relu: bool = True):
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
        if relu:
            layers.append(nn.ReLU(inplace=False))
        super().__init__(*layers)


class AdaINDecoder(nn.Module):
    """Mirror of the encoder: ``relu{depth}_1`` features -> image ``(B, 3, H, W)``.

    For ``depth = 4`` (the AdaIN reference): ``conv 8c->4c``, up x2, ``3 x conv 4c->4c``,
    ``conv 4c->2c``, up x2, ``conv 2c->2c``, ``conv 2c->c``, up x2, ``conv c->c``, ``conv c->3``
    (3x3, reflection padding, ReLU except at the end, nearest upsampling); a smaller ``depth``
    drops the deepest levels of the same pattern.
    """

    def __init__(self, width: float = 1.0, depth: int = 4):
        super().__init__()
        if depth not in (2, 3, 4):
            raise ValueError(f"depth must be 2, 3 or 4, got {depth}")
        ch = {lvl: max(4, round(v * width)) for lvl, v in zip((1, 2, 3, 4), (64, 128, 256, 512),
                                                               strict=True)}
        convs_per_level = {1: 2, 2: 2, 3: 4}  # VGG19 convs per block, mirrored
        layers: list[nn.Module] = [_ReflectConv(ch[depth], ch[depth - 1])]
        for lvl in range(depth - 1, 0, -1):
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers += [_ReflectConv(ch[lvl], ch[lvl]) for _ in range(convs_per_level[lvl] - 1)]
            layers.append(_ReflectConv(ch[lvl], ch[lvl - 1]) if lvl > 1 else _ReflectConv(ch[1], 3, relu=False))
        self.net = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(feat)


class AdaINStyleTransfer(nn.Module):
    """Frozen encoder + trainable decoder.

    Args:
        encoder: from :func:`vgg19_relu4_1` (its ``width`` fixes the decoder's).
        width: decoder channel multiplier; must match the encoder's channel count.
        style_weight: ``lambda_s`` of the loss (10).
    """

    def __init__(self, encoder: VGGEncoder, width: float = 1.0, style_weight: float = 10.0):
        super().__init__()
        self.encoder = encoder
        self.decoder = AdaINDecoder(width, encoder.depth)
        self.style_weight = style_weight
        dec_in = self.decoder.net[0][1].in_channels
        if dec_in != encoder.out_channels:
            raise ValueError(f"decoder width gives {dec_in} input channels but the encoder has "
                             f"{encoder.out_channels}: use the same width for both")

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen, whatever the mode
        return self

    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Stylised image ``(B, 3, H, W)`` in ``[0, 1]`` (clamped) for content ``(B, 3, H, W)``
        and style ``(B, 3, H', W')`` in ``[0, 1]``; ``alpha`` blends the AdaIN target with the
        content features (1 = full style, the paper's setting). Any ``H, W``: padded to a
        multiple of the encoder's stride internally and cropped back."""
        h, w = content.shape[-2:]
        m = 2 ** (self.encoder.depth - 1)
        # Zero padding inside the encoder marks the image border in the features (a band along
        # the edges of a uniform content); a reflected margin moves it outside the crop.
        margin = min(4 * m, h - 1, w - 1)
        if margin > 0:
            content = F.pad(content, (margin, margin, margin, margin), mode="reflect")
        content = _pad_to(content, m)
        style = _pad_to(style, m)
        fc = self.encoder(content)[-1]
        t = adain(fc, self.encoder(style)[-1])
        t = alpha * t + (1 - alpha) * fc
        return self.decoder(t)[..., margin:margin + h, margin:margin + w].clamp(0, 1)

    def losses(self, content: torch.Tensor, style: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses for a batch (sizes multiples of 8).

        ``L_c = MSE(f(g(t)), t)`` with ``t = AdaIN(f(c), f(s))`` (at the deepest tap, relu4_1 in
        the paper), and ``L_s = sum_{i in relu1_1..deepest} MSE(mu(phi_i(g(t))), mu(phi_i(s)))
        + MSE(sigma(phi_i(g(t))), sigma(phi_i(s)))``; ``total = L_c + lambda_s L_s``.

        Returns:
            ``{"content", "style", "total"}`` scalar tensors.
        """
        m = 2 ** (self.encoder.depth - 1)
        if content.shape[-1] % m or content.shape[-2] % m:
            raise ValueError(f"content size must be a multiple of {m}, got {tuple(content.shape[-2:])}")
        style_feats = self.encoder(style)
        t = adain(self.encoder(content)[-1], style_feats[-1])
        out_feats = self.encoder(self.decoder(t))
        loss_c = F.mse_loss(out_feats[-1], t)
        loss_s = content.new_zeros(())
        for fo, fs in zip(out_feats, style_feats, strict=True):
            mo, so = mean_std(fo)
            ms, ss = mean_std(fs)
            loss_s = loss_s + F.mse_loss(mo, ms) + F.mse_loss(so, ss)
        return {"content": loss_c, "style": loss_s, "total": loss_c + self.style_weight * loss_s}


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def flatten_mask(instances: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """``FLATTEN`` of Algorithm 1: instance maps ``(B, H, W)`` (or ``(H, W)``) -> 0/1 float
    content images ``(B, 3, H, W)``: nucleus = 1, background = 0 on all channels, or the other
    way round with ``invert`` (see :func:`nuclei_are_dark`)."""
    if instances.ndim == 2:
        instances = instances[None]
    if instances.ndim != 3:
        raise ValueError(f"instances must be (B, H, W) or (H, W), got {tuple(instances.shape)}")
    fg = instances > 0
    if invert:
        fg = ~fg
    return fg.float()[:, None].expand(-1, 3, -1, -1).contiguous()


def nuclei_are_dark(images, instances) -> bool:
    """Whether nuclei are darker than the background in real ``(N, H, W, 3)`` images with their
    ``(N, H, W)`` instance maps (mean grey level inside vs outside nuclei).

    AdaIN keeps the polarity of its content: a white-on-black mask stylised with an H&E tile
    gives nuclei *brighter* than the stroma (measured here), because the features that fire on
    the bright mask blobs are rescaled to the style's statistics of the same features, which
    fire on the bright background of H&E. The paper's fluorescence images have bright nuclei,
    so its plain mask matches; for dark nuclei the content is inverted (``flatten_mask(...,
    invert=True)``). Returns False when either region is empty.
    """
    grey = np.asarray(images, dtype=np.float64).mean(axis=-1)
    fg = np.asarray(instances) > 0
    if not fg.any() or fg.all():
        return False
    return bool(grey[fg].mean() < grey[~fg].mean())


def select_style_by_count(n_blobs: int, style_counts, generator: torch.Generator | None = None) -> int:
    """Index of the style image whose nucleus count is closest to ``n_blobs`` (Sec. 4: "the tile
    having the closest number of blobs"); ties broken uniformly at random with ``generator``."""
    counts = torch.as_tensor(list(style_counts), dtype=torch.float64)
    if counts.numel() == 0:
        raise ValueError("style_counts is empty")
    gap = (counts - n_blobs).abs()
    best = torch.nonzero(gap == gap.min()).flatten()
    if best.numel() == 1:
        return int(best[0])
    return int(best[torch.randint(best.numel(), (1,), generator=generator)])
