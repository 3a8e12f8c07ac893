"""The sclerosed-glomerulus inpainting networks of He et al. (Sci. Rep. 2024, seed 003, Figs. 5-6).

Generator (paper section B): an encoder (7x7 convolution with batch norm and LeakyReLU, two 4x4
stride-2 convolutions), eight AOT blocks (Zeng et al. 2022: split-transform-merge over dilation rates
1, 2, 4, 8 with a gated residual), a SAGAN self-attention block (Zhang et al. 2019) on the feature map
before the first upsampling layer (64 x 64 for the paper's 256-px input: a quarter of the input side at
any size), a decoder that mirrors the encoder (two 4x4 stride-2 transposed convolutions, then a 7x7
convolution) with skip connections from the encoder, and tanh.

Discriminator (section C): six 4x4 convolutions (Convolution + LeakyReLU + BatchNorm), channels 64,
128, 256, 512, 512 and 1 (the paper lists "64, 128, 256, 512 and 1" for six layers: the fifth layer
repeats 512, its cap), stride 2, patch outputs. At 256 px the sixth stride-2 layer leaves 4 x 4 patch
scores; at smaller inputs the last layers keep stride 1 ("same" padding) so the patch map stays 4 x 4.
The paper uses the same network (and weights) for the global and the local discriminator.

Differences from the AOT-GAN reference (researchmm/AOT-GAN-for-Inpainting), where the paper is silent
or differs: the input hole is ``X * (1 - M)`` (paper Eq. 1; the reference fills it with 1); the
encoder has batch norm on the first layer (paper); skip connections (paper; the reference has none);
transposed convolutions in the decoder (paper; the reference upsamples bilinearly).

Shapes: images ``(B, 3, H, W)`` in ``[-1, 1]``, masks ``(B, 1, H, W)`` in ``{0, 1}``, ``H = W``
divisible by 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from histolib.errors import ParamError

__all__ = ["aot_gate", "AOTBlock", "SelfAttention", "InpaintGenerator", "PatchDiscriminator", "count_parameters"]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """Reflection padding where the map is large enough, else replicate (tiny maps at smoke size)."""
    if p == 0:
        return x
    return F.pad(x, (p, p, p, p), mode="reflect" if p < min(x.shape[-2:]) else "replicate")


def aot_gate(f: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """The AOT block's spatially-variant gate ``sigmoid(5 * (2 (f - mu) / sd - 1))``.

    ``mu`` and ``sd`` are the mean and (unbiased) standard deviation of each channel of each sample
    over the spatial positions (the reference's ``my_layer_norm``).

    Args:
        f: ``(B, C, H, W)`` with ``H * W >= 2``.

    Returns:
        ``(B, C, H, W)`` in ``(0, 1)``.
    """
    mu = f.mean((2, 3), keepdim=True)
    sd = f.std((2, 3), keepdim=True) + eps
    return torch.sigmoid(5 * (2 * (f - mu) / sd - 1))


class AOTBlock(nn.Module):
    """Aggregated contextual transformations (Fig. 6a).

    Split: ``len(rates)`` branches, each a 3x3 convolution with dilation ``r`` from ``dim`` to
    ``dim / len(rates)`` channels plus ReLU; merge: concatenation and a 3x3 convolution back to
    ``dim``; gated residual: ``out = x (1 - g) + merged g`` with ``g = aot_gate(conv3x3(x))``.

    Shape: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(self, dim: int, rates: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__()
        if dim % len(rates):
            raise ParamError(f"AOTBlock dim {dim} must be divisible by the number of rates {len(rates)}")
        self.rates = tuple(int(r) for r in rates)
        self.branches = nn.ModuleList([nn.Conv2d(dim, dim // len(rates), 3, dilation=r) for r in self.rates])
        self.fuse = nn.Conv2d(dim, dim, 3)
        self.gate = nn.Conv2d(dim, dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat([F.relu(conv(_pad(x, r))) for conv, r in zip(self.branches, self.rates, strict=True)], 1)
        merged = self.fuse(_pad(merged, 1))
        g = aot_gate(self.gate(_pad(x, 1)))
        return x * (1 - g) + merged * g


class SelfAttention(nn.Module):
    """SAGAN self-attention (Fig. 6b): ``y = x + gamma * V softmax(Q^T K)`` with 1x1 projections
    ``Q, K: dim -> dim / 8`` and ``V: dim -> dim``, ``gamma`` initialised to 0 (so the block starts as
    the identity). No ``1/sqrt(d)`` scaling, as in SAGAN.

    Shape: ``(B, dim, H, W) -> (B, dim, H, W)``; memory grows with ``(H W)^2`` per sample.
    """

    def __init__(self, dim: int):
        super().__init__()
        inner = max(dim // 8, 1)
        self.q = nn.Conv2d(dim, inner, 1)
        self.k = nn.Conv2d(dim, inner, 1)
        self.v = nn.Conv2d(dim, dim, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, c')
        k = self.k(x).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.v(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, C)
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # softmax(Q K^T) V, no 1/sqrt(d)
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.gamma * out


class InpaintGenerator(nn.Module):
    """The paper's generator (module docstring).

    Args:
        ngf: channels after the 7x7 convolution (the AOT blocks run at ``4 ngf``; reference 64).
        n_blocks: AOT blocks (paper: 8).
        rates: dilation rates of each AOT block (paper: 1, 2, 4, 8).
        attention: the self-attention block before the decoder (paper: yes).
        skips: encoder-decoder skip connections (concatenation; paper: yes).

    Shape: ``(B, 4, H, W)`` (Eq. 2: gap image ++ mask) -> ``(B, 3, H, W)`` in ``[-1, 1]``.
    """

    def __init__(self, ngf: int = 64, n_blocks: int = 8, rates: tuple[int, ...] = (1, 2, 4, 8),
                 attention: bool = True, skips: bool = True):
        super().__init__()
        if ngf < 1 or n_blocks < 0:
            raise ParamError(f"InpaintGenerator needs ngf >= 1 and n_blocks >= 0, got {ngf}, {n_blocks}")
        self.skips = skips
        k = 2 if skips else 1
        self.enc0 = nn.Sequential(nn.Conv2d(4, ngf, 7), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2, inplace=True))
        self.enc1 = nn.Sequential(nn.Conv2d(ngf, 2 * ngf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))
        self.enc2 = nn.Sequential(nn.Conv2d(2 * ngf, 4 * ngf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))
        self.blocks = nn.Sequential(*[AOTBlock(4 * ngf, rates) for _ in range(n_blocks)])
        self.attention = SelfAttention(4 * ngf) if attention else nn.Identity()
        self.dec2 = nn.Sequential(nn.ConvTranspose2d(k * 4 * ngf, 2 * ngf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))
        self.dec1 = nn.Sequential(nn.ConvTranspose2d(k * 2 * ngf, ngf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))
        self.out = nn.Conv2d(k * ngf, 3, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 4:
            raise ParamError(f"InpaintGenerator input must be (B, 4, H, W) (gap image ++ mask), got {tuple(x.shape)}")
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ParamError(f"InpaintGenerator input side must be divisible by 4, got {tuple(x.shape[-2:])}")
        e0 = self.enc0(_pad(x, 3))
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        y = self.attention(self.blocks(e2))
        y = self.dec2(torch.cat([y, e2], 1) if self.skips else y)
        y = self.dec1(torch.cat([y, e1], 1) if self.skips else y)
        y = self.out(_pad(torch.cat([y, e0], 1) if self.skips else y, 3))
        return torch.tanh(y)


class PatchDiscriminator(nn.Module):
    """The paper's (global = local) discriminator (module docstring).

    Args:
        image_size: input side (sets how many layers keep stride 2: ``min(n_layers, log2(size) - 2)``).
        ndf: channels of the first layer (paper: 64); layer ``i`` has ``min(ndf 2^i, 8 ndf)``.
        n_layers: convolutions (paper: 6), the last one giving 1 channel.
        norm: batch norm after the activation of every hidden layer (paper: yes).

    Shape: ``(B, 3, S, S) -> (B, 1, P, P)`` raw scores (LSGAN: real -> 1, fake -> 0), ``P = 4`` for
    ``S >= 16`` (``S = 2^k``).
    """

    def __init__(self, image_size: int, ndf: int = 64, n_layers: int = 6, norm: bool = True):
        super().__init__()
        if n_layers < 2:
            raise ParamError(f"PatchDiscriminator needs n_layers >= 2, got {n_layers}")
        if image_size < 8:
            raise ParamError(f"PatchDiscriminator image_size must be >= 8, got {image_size}")
        n_down = max(1, min(n_layers, int(math.log2(image_size)) - 2))
        chans = [min(ndf * 2 ** i, 8 * ndf) for i in range(n_layers - 1)] + [1]
        layers, cin = [], 3
        for i, cout in enumerate(chans):
            if i < n_down:
                layers.append(nn.Conv2d(cin, cout, 4, 2, 1))
            else:  # stride 1 with "same" padding for an even kernel: 1 before, 2 after
                layers += [nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(cin, cout, 4, 1, 0)]
            if i < len(chans) - 1:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
                if norm:
                    layers.append(nn.BatchNorm2d(cout))
            cin = cout
        self.net = nn.Sequential(*layers)
        self.n_down = n_down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
