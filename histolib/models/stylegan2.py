"""StyleGAN2 networks (Karras et al., CVPR 2020; as trained with ADA, NeurIPS 2020) for seed 002 (HDGAN).

Seed 002 (Rizvi et al.) uses StyleGAN2-ADA as the generative backbone of DatasetGAN and reads the
feature maps of the last 5 synthesis blocks; this module holds the networks, ``histolib.train.stylegan2``
trains them. Notation of the StyleGAN2 paper: ``z`` latent, ``w`` intermediate latent, ``s`` style.

* :class:`MappingNetwork`: ``z`` (normalised to unit second moment) -> ``w`` through ``num_layers``
  fully connected layers (leaky ReLU, learning-rate multiplier 0.01); tracks the average ``w_avg``
  during training; truncation ``w' = w_avg + psi (w - w_avg)``; ``w`` broadcast to ``num_ws`` copies.
* :func:`modulated_conv2d`: modulation and demodulation (StyleGAN2 Eqs. 1-3), grouped-convolution form
  (one group per sample) and the equivalent scale-convolve-scale form used in training.
* :class:`SynthesisNetwork`: a learned ``4x4`` constant, then one :class:`SynthesisBlock` per
  resolution ``4, 8, ..., R``; each block has two modulated 3x3 convolutions (one at 4x4), per-pixel
  noise with a learned per-layer strength, and a ``toRGB`` (1x1 modulated, not demodulated) whose
  image is added to the upsampled image of the previous blocks ("skip" generator).
* :class:`Discriminator`: ``fromRGB`` at ``R``, residual blocks down to ``4x4`` (two 3x3 convolutions,
  the second downsampling, plus a 1x1 downsampling skip, summed and scaled by ``1/sqrt(2)``), then the
  minibatch standard deviation layer, a 3x3 convolution, a fully connected layer and the logit.

Channels per resolution ``r``: ``min(channel_base // r, channel_max)`` (StyleGAN2-ADA's rule).

Equalised learning rate everywhere: weights are stored as ``N(0, 1) / lr_multiplier`` and multiplied
at run time by ``lr_multiplier / sqrt(fan_in)``; leaky ReLU (slope 0.2) is followed by the gain
``sqrt(2)``.

Decisions and differences from the reference code (``NVlabs/stylegan2-ada-pytorch``):

* Resampling. The reference up- and downsamples with the FIR filter ``[1, 3, 3, 1]`` (``upfirdn2d``);
  here upsampling (of features before the first convolution of a block and of the skip image) is
  bilinear with ``align_corners=False``, which *is* that filter in the interior (weights 3/4 and 1/4)
  and replicates the edge instead of zero-padding it; the first convolution then runs at the new
  resolution (the reference uses a transposed convolution of stride 2, same function up to the filter
  placement). Downsampling in the discriminator blurs with the same ``[1, 3, 3, 1]`` filter
  (depthwise convolution, zero padding) before a stride-2 convolution, as the reference does.
* No fp16 layers or ``conv_clamp`` (the CPU runs fp32 or bf16 autocast; bf16 has fp32's range).
* Features for DatasetGAN: ``synthesis(..., return_features=True)`` returns each block's output
  feature map ``x`` (what the reference's forward hooks on the synthesis blocks see); with
  ``return_features="layers"`` every convolution layer's output instead (seed 002's poster: "feature
  maps after each convolutional layer in the last 5 synthesis blocks").
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NOISE_MODES = ("random", "const", "none")
LRELU_GAIN = math.sqrt(2.0)

__all__ = ["NOISE_MODES", "Discriminator", "EqualConv2d", "EqualLinear", "Generator", "MappingNetwork",
           "SynthesisBlock", "SynthesisLayer", "SynthesisNetwork", "ToRGB", "blur", "channels_for", "minibatch_stddev",
           "modulated_conv2d", "normalize_2nd_moment", "num_parameters"]


def channels_for(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """``{r: min(channel_base // r, channel_max)}`` for ``r = 4, 8, ..., resolution`` (at least 1)."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of 2 >= 4, got {resolution}")
    return {2 ** i: max(1, min(channel_base // 2 ** i, channel_max))
            for i in range(2, int(math.log2(resolution)) + 1)}


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """``x / sqrt(mean(x^2, dim) + eps)``: unit second moment along ``dim`` (StyleGAN's pixel norm of ``z``)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _act(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "lrelu":
        return F.leaky_relu(x, 0.2) * LRELU_GAIN
    if activation == "linear":
        return x
    raise ValueError(f"activation must be 'lrelu' or 'linear', got {activation!r}")


# --------------------------------------------------------------------------------------------------
# Equalised-learning-rate layers
# --------------------------------------------------------------------------------------------------

class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate.

    ``y = act(x @ (W * lr_multiplier / sqrt(in_features))^T + b * lr_multiplier)`` with ``W`` stored as
    ``N(0, 1) / lr_multiplier`` and ``b`` as ``bias_init / lr_multiplier``.

    Shapes: ``(N, in_features) -> (N, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_multiplier: float = 1.0, activation: str = "linear"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation
        _act(torch.zeros(()), activation)  # validate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.bias_gain if self.bias is not None else None
        return _act(F.linear(x, self.weight * self.weight_gain, b), self.activation)


_BLUR_1D = torch.tensor([1.0, 3.0, 3.0, 1.0])


def _blur_kernel(channels: int) -> torch.Tensor:
    k = torch.outer(_BLUR_1D, _BLUR_1D)
    return (k / k.sum()).expand(channels, 1, 4, 4).contiguous()


def blur(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Blur with the ``[1, 3, 3, 1]`` FIR filter (outer product, unit sum), depthwise, zero padding ``pad``:
    ``(N, C, H, W) -> (N, C, H + 2 pad - 3, W + 2 pad - 3)``."""
    c = x.shape[1]
    return F.conv2d(x, _blur_kernel(c).to(x), padding=pad, groups=c)


class EqualConv2d(nn.Module):
    """2-D convolution with equalised learning rate (weight ``N(0, 1)`` times ``1/sqrt(in k k)`` at run time).

    With ``down=2`` the input is blurred with the ``[1, 3, 3, 1]`` filter and convolved with stride 2
    (a 3x3 kernel over a blur padded by 2, a 1x1 kernel over a blur padded by 1), as StyleGAN2's
    downsampling layers: ``(N, C, H, W) -> (N, out, H/2, W/2)``.

    Args:
        in_channels, out_channels, kernel_size: as ``nn.Conv2d`` (odd kernel, "same" padding).
        bias: learn a bias.
        activation: ``"lrelu"`` (slope 0.2, gain sqrt 2) or ``"linear"``.
        down: 1 or 2.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1):
        super().__init__()
        if down not in (1, 2):
            raise ValueError(f"down must be 1 or 2, got {down}")
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activation, self.down, self.kernel_size = activation, down, kernel_size
        _act(torch.zeros(()), activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        if self.down == 2:
            k = self.kernel_size
            # blur padded so that the composite (blur then k x k, stride 2) is centred on each 2x2 cell
            x = blur(x, pad=(k - 1) // 2 + 1)
            x = F.conv2d(x, w, self.bias, stride=2)
        else:
            x = F.conv2d(x, w, self.bias, padding=self.kernel_size // 2)
        return _act(x, self.activation)


# --------------------------------------------------------------------------------------------------
# Modulated convolution
# --------------------------------------------------------------------------------------------------

def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     padding: int | None = None, fused: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Modulated (and demodulated) convolution, StyleGAN2 Eqs. 1-3.

    For sample ``n`` with style ``s_n`` (one scale per input channel ``i``)::

        w'_{n,o,i,k} = s_{n,i} * w_{o,i,k}                                   (modulation, Eq. 1)
        w''_{n,o,i,k} = w'_{n,o,i,k} / sqrt( sum_{i,k} (w'_{n,o,i,k})^2 + eps )  (demodulation, Eq. 3)
        y_{n,o} = sum_{i,k} w''_{n,o,i,k} x_{n,i}(. + k)

    so for inputs of unit variance, independent across channels and pixels, every output channel has
    unit variance (Eq. 2) away from the zero-padded border.

    Args:
        x: ``(N, I, H, W)``.
        weight: ``(O, I, k, k)``, used as given (an equalised-learning-rate gain cancels under
            demodulation; without it, fold the gain into ``styles``).
        styles: ``(N, I)``.
        demodulate: apply Eq. 3 (``toRGB`` layers do not).
        padding: default ``k // 2`` ("same").
        fused: ``True``: one grouped convolution with a per-sample kernel (``groups = N``; the
            reference's ``fused_modconv``); ``False``: ``x * s``, one convolution with the shared
            kernel, then ``* d`` per output channel: the same function, cheaper to train on CPU.
        eps: the demodulation epsilon (1e-8).

    Returns:
        ``(N, O, H', W')``.
    """
    if x.dim() != 4 or weight.dim() != 4 or styles.dim() != 2:
        raise ValueError(f"need x (N, I, H, W), weight (O, I, k, k), styles (N, I); got {tuple(x.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(styles.shape)}")
    n, i = x.shape[:2]
    o, wi, kh, kw = weight.shape
    if wi != i or styles.shape != (n, i):
        raise ValueError(f"channel mismatch: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"styles {tuple(styles.shape)}")
    pad = kh // 2 if padding is None else padding
    dcoefs = None
    if demodulate:
        # sum_{i,k} (s_i w_{o,i,k})^2 = sum_i s_i^2 sum_k w_{o,i,k}^2  -> (N, O)
        dcoefs = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + eps).rsqrt()
    if not fused:
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = F.conv2d(x, weight.to(x.dtype), padding=pad)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        return x
    w = weight[None] * styles[:, None, :, None, None]  # (N, O, I, k, k)
    if dcoefs is not None:
        w = w * dcoefs[:, :, None, None, None]
    h, wd = x.shape[2:]
    y = F.conv2d(x.reshape(1, n * i, h, wd), w.reshape(n * o, i, kh, kw).to(x.dtype), padding=pad, groups=n)
    return y.reshape(n, o, *y.shape[2:])


# --------------------------------------------------------------------------------------------------
# Mapping network
# --------------------------------------------------------------------------------------------------

class MappingNetwork(nn.Module):
    """``z -> w``: normalise ``z``, ``num_layers`` equalised fully connected layers (leaky ReLU), broadcast.

    Args:
        z_dim, w_dim: latent sizes (StyleGAN2: 512, 512).
        num_ws: copies of ``w`` returned (one per style input of the synthesis network).
        num_layers: fully connected layers (StyleGAN2: 8; StyleGAN2-ADA's ``auto`` config: 2).
        lr_multiplier: learning-rate multiplier of the layers (0.01).
        w_avg_beta: decay of the tracked average ``w_avg`` (0.995 per training forward).
    """

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, activation="lrelu", lr_multiplier=lr_multiplier)
                                    for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        """``(N, z_dim) -> (N, num_ws, w_dim)``.

        Args:
            z: latents (any scale: normalised here).
            truncation_psi: ``w <- w_avg + psi (w - w_avg)`` (1: none; 0: every sample is ``w_avg``).
            update_w_avg: move ``w_avg`` towards the batch mean: ``w_avg <- w_avg + (1 - beta)(mean w - w_avg)``
                (the trainer sets it for the training forward of ``G``).
        """
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be (N, {self.z_dim}), got {tuple(z.shape)}")
        x = normalize_2nd_moment(z.float())
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.lerp_(x.detach().float().mean(dim=0), 1.0 - self.w_avg_beta)
        if truncation_psi != 1.0:
            x = self.w_avg.lerp(x, truncation_psi)
        return x[:, None].expand(-1, self.num_ws, -1)


# --------------------------------------------------------------------------------------------------
# Synthesis network
# --------------------------------------------------------------------------------------------------

def _noise_generator_check(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally after a 2x bilinear upsampling), noise, bias, leaky ReLU.

    ``y = lrelu(modconv(up(x), W, A(w)) + strength * noise + b) * sqrt(2)``, ``A`` an equalised affine
    layer with bias 1 (styles start at 1). Noise is ``(N, 1, H, W)``: fresh ``N(0, 1)`` (``random``), a
    fixed buffer drawn at construction (``const``), or off (``none``).

    Shapes: ``x (N, in, H, W)``, ``w (N, w_dim)`` -> ``(N, out, H * up, W * up)``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1):
        super().__init__()
        if up not in (1, 2):
            raise ValueError(f"up must be 1 or 2, got {up}")
        self.up, self.resolution = up, resolution
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.fused: bool | None = None  # None: grouped kernel only without autograd (see modulated_conv2d)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None, fused: bool | None = None) -> torch.Tensor:
        _noise_generator_check(noise_mode)
        if self.up == 2:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        styles = self.affine(w)
        fused = self.fused if fused is None else fused
        if fused is None:
            fused = not torch.is_grad_enabled()  # grouped kernel when only sampling (faster there)
        x = modulated_conv2d(x, self.weight, styles, demodulate=True, fused=fused)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], generator=generator).to(x)
            x = x + noise * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        return F.leaky_relu(x + self.bias.to(x.dtype)[:, None, None], 0.2) * LRELU_GAIN


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to RGB without demodulation (the style carries the gain ``1/sqrt(in)``)."""

    def __init__(self, in_channels: int, w_dim: int, out_channels: int = 3):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.fused: bool | None = None

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool | None = None) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        fused = self.fused if fused is None else fused
        if fused is None:
            fused = not torch.is_grad_enabled()
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return x + self.bias.to(x.dtype)[:, None, None]


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator.

    At ``4x4``: the learned constant, one modulated convolution, ``toRGB``. Above: 2x upsampling
    convolution, a second convolution, ``toRGB`` added to the bilinearly upsampled image of the blocks
    before. Consumes ``num_conv + 1`` consecutive ``w`` (the ``toRGB`` one is shared with the next
    block's first convolution, as in StyleGAN2).

    Shapes: ``x (N, in, r/2, r/2)`` (ignored at 4x4), ``img (N, 3, r/2, r/2)`` or ``None``,
    ``ws (N, num_conv + 1, w_dim)`` -> ``x (N, out, r, r)``, ``img (N, 3, r, r)``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int = 3):
        super().__init__()
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, w_dim, img_channels)
        self.num_conv = 1 if resolution == 4 else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None, layers: list | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        wi = iter(ws.unbind(dim=1))
        if self.conv0 is None:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        else:
            x = self.conv0(x, next(wi), noise_mode, generator)
            if layers is not None:
                layers.append(x)
        x = self.conv1(x, next(wi), noise_mode, generator)
        if layers is not None:
            layers.append(x)
        y = self.torgb(x, next(wi))
        if img is not None:
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
            y = img.to(y.dtype) + y
        return x, y


class SynthesisNetwork(nn.Module):
    """``ws (N, num_ws, w_dim) -> img (N, 3, R, R)``: one :class:`SynthesisBlock` per resolution 4..R.

    Args:
        w_dim: size of ``w``.
        resolution: ``R``, a power of 2 >= 4.
        channel_base, channel_max: channels at ``r`` are ``min(channel_base // r, channel_max)``.
        img_channels: 3.
    """

    def __init__(self, w_dim: int, resolution: int, channel_base: int = 32768, channel_max: int = 512,
                 img_channels: int = 3):
        super().__init__()
        self.w_dim, self.resolution, self.img_channels = w_dim, resolution, img_channels
        self.channels = channels_for(resolution, channel_base, channel_max)
        self.blocks = nn.ModuleList()
        self.num_ws = 0
        for r, c in self.channels.items():
            block = SynthesisBlock(self.channels.get(r // 2, 0), c, w_dim, r, img_channels)
            self.blocks.append(block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last toRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", return_features: bool | str = False,
                generator: torch.Generator | None = None):
        """See :meth:`Generator.synthesis`."""
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        _noise_generator_check(noise_mode)
        if return_features not in (False, True, "blocks", "layers"):
            raise ValueError(f"return_features must be False, True, 'blocks' or 'layers', got {return_features!r}")
        x = img = None
        feats: list[torch.Tensor] = []
        layers = [] if return_features == "layers" else None
        idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, idx: idx + block.num_conv + 1], noise_mode, generator, layers)
            idx += block.num_conv
            feats.append(x)
        if return_features == "layers":
            return img, layers
        if return_features:
            return img, feats
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: :class:`MappingNetwork` then :class:`SynthesisNetwork`.

    Args:
        z_dim, w_dim: latent sizes.
        resolution: output side ``R`` (power of 2 >= 4).
        channel_base, channel_max: synthesis widths (``min(channel_base // r, channel_max)``).
        mapping_layers: fully connected layers of the mapping network.
        mapping_lr: learning-rate multiplier of the mapping network (0.01).
        w_avg_beta: decay of the tracked ``w_avg`` (0.995).

    Example::

        G = Generator(z_dim=128, w_dim=128, resolution=64, channel_base=4096, channel_max=64)
        ws = G.mapping(torch.randn(4, 128), truncation_psi=0.7)   # (4, G.num_ws, 128)
        img, feats = G.synthesis(ws, return_features=True)        # (4, 3, 64, 64), 5 maps
    """

    def __init__(self, z_dim: int = 512, w_dim: int = 512, resolution: int = 256, channel_base: int = 32768,
                 channel_max: int = 512, mapping_layers: int = 8, mapping_lr: float = 0.01,
                 w_avg_beta: float = 0.995, img_channels: int = 3):
        super().__init__()
        self.z_dim, self.w_dim, self.resolution, self.img_channels = z_dim, w_dim, resolution, img_channels
        self.synthesis_net = SynthesisNetwork(w_dim, resolution, channel_base, channel_max, img_channels)
        self.num_ws = self.synthesis_net.num_ws
        self.mapping_net = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr, w_avg_beta)

    @property
    def w_avg(self) -> torch.Tensor:
        """The tracked average ``w`` ``(w_dim,)`` (the truncation centre)."""
        return self.mapping_net.w_avg

    @property
    def block_resolutions(self) -> list[int]:
        return list(self.synthesis_net.channels)

    @property
    def block_channels(self) -> list[int]:
        """Channels of each block's output feature map, in block order."""
        return list(self.synthesis_net.channels.values())

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        """``z (N, z_dim) -> ws (N, num_ws, w_dim)``, truncated towards ``w_avg`` by ``truncation_psi``
        (:class:`MappingNetwork`)."""
        return self.mapping_net(z, truncation_psi, update_w_avg)

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const", return_features: bool | str = False,
                  generator: torch.Generator | None = None):
        """``ws (N, num_ws, w_dim) -> img (N, 3, R, R)`` (about ``[-1, 1]``, not clamped).

        Args:
            ws: per-layer latents from :meth:`mapping`.
            noise_mode: ``"random"`` (fresh noise from ``generator``), ``"const"`` (the fixed per-layer
                noise buffers: deterministic output) or ``"none"``.
            return_features: ``True`` / ``"blocks"``: also return every block's output feature map
                ``(N, C_b, H_b, W_b)``, in block order (``H_b = 4, 8, ..., R``); ``"layers"``: every
                modulated 3x3 convolution's output instead, in order.
            generator: random stream of ``"random"`` noise (``None``: torch's global one).

        Returns:
            ``img`` or ``(img, feats)``.
        """
        return self.synthesis_net(ws, noise_mode, return_features, generator)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "const",
                return_features: bool | str = False, generator: torch.Generator | None = None):
        """``synthesis(mapping(z, truncation_psi), noise_mode, return_features)``."""
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode, return_features, generator)


# --------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------

def minibatch_stddev(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """Minibatch standard deviation layer (Karras et al. 2018; StyleGAN2's variant).

    The batch is split into groups of ``G = min(group_size, N)`` samples (``N`` divisible by ``G``;
    sample ``n`` is in group ``n mod (N / G)``, as in the reference's reshape); the ``C`` channels into
    ``F = num_channels`` sets. For each group and set: the standard deviation over the group of every
    feature and pixel, ``sqrt(var + 1e-8)`` (population variance), averaged over the set's channels and
    the pixels, gives one value, appended to every member of the group as a constant channel.

    Shapes: ``(N, C, H, W) -> (N, C + F, H, W)``.

    Raises:
        ValueError: ``N`` not divisible by ``G`` or ``C`` not by ``F``.
    """
    n, c, h, w = x.shape
    g = min(group_size, n) if group_size > 0 else n
    f = num_channels
    if n % g or c % f:
        raise ValueError(f"minibatch_stddev: batch {n} must be divisible by the group size {g} and channels {c} "
                         f"by num_channels {f}")
    y = x.reshape(g, n // g, f, c // f, h, w).float()
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()  # (n/g, F, c/F, H, W)
    y = y.mean(dim=(2, 3, 4))  # (n/g, F)
    y = y.reshape(n // g, f, 1, 1).repeat(g, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: ``(x_skip + x) / sqrt(2)`` with ``x = conv3x3_down(conv3x3(x))``,
    ``x_skip = conv1x1_down(x)`` (no bias, linear). Shapes: ``(N, in, r, r) -> (N, out, r/2, r/2)``.
    The top block also holds ``fromRGB`` (1x1 conv, leaky ReLU)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, from_rgb: int = 0):
        super().__init__()
        self.fromrgb = EqualConv2d(from_rgb, tmp_channels, 1, activation="lrelu") if from_rgb else None
        self.conv0 = EqualConv2d(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(tmp_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = EqualConv2d(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        y = self.skip(x) * math.sqrt(0.5)
        x = self.conv1(self.conv0(x)) * math.sqrt(0.5)
        return y + x


class Discriminator(nn.Module):
    """StyleGAN2's residual discriminator: ``img (N, 3, R, R) -> logits (N, 1)``.

    ``fromRGB`` at ``R``, :class:`DiscriminatorBlock` s ``R -> R/2 -> ... -> 4``, then the epilogue at
    ``4x4``: :func:`minibatch_stddev` (group ``mbstd_group``, ``mbstd_channels``), 3x3 convolution, fully
    connected ``(C 16 -> C)``, fully connected ``(C -> 1)``.

    Args:
        resolution, channel_base, channel_max: as :class:`Generator`.
        mbstd_group: group size of the minibatch standard deviation (4; 0 or 1: layer off -- a group of
            one sample has zero deviation).
        mbstd_channels: feature sets of that layer (1).
        img_channels: 3.
    """

    def __init__(self, resolution: int = 256, channel_base: int = 32768, channel_max: int = 512,
                 mbstd_group: int = 4, mbstd_channels: int = 1, img_channels: int = 3):
        super().__init__()
        self.resolution = resolution
        ch = channels_for(resolution, channel_base, channel_max)
        self.mbstd_group, self.mbstd_channels = mbstd_group, mbstd_channels if mbstd_group > 1 else 0
        blocks = []
        for r in sorted(ch, reverse=True):
            if r == 4:
                break
            blocks.append(DiscriminatorBlock(ch[r], ch[r], ch[r // 2], from_rgb=img_channels if r == resolution else 0))
        self.blocks = nn.ModuleList(blocks)
        c4 = ch[4]
        self.fromrgb4 = EqualConv2d(img_channels, c4, 1, activation="lrelu") if resolution == 4 else None
        self.conv = EqualConv2d(c4 + self.mbstd_channels, c4, 3, activation="lrelu")
        self.fc = EqualLinear(c4 * 16, c4, activation="lrelu")
        self.out = EqualLinear(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        if img.dim() != 4 or img.shape[2:] != (r, r):
            raise ValueError(f"Discriminator expects (N, C, {r}, {r}), got {tuple(img.shape)}")
        x = img
        if self.fromrgb4 is not None:
            x = self.fromrgb4(x)
        for block in self.blocks:
            x = block(x)
        if self.mbstd_channels:
            x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x)


def num_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return int(sum(np.prod(p.shape) for p in module.parameters() if p.requires_grad))
