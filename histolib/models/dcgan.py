"""DCGAN (Radford et al., ICLR 2016) for glomerulus masks (He et al., seed 003, Fig. 7).

Generator: ``z (B, z_dim)`` -> 4x4 by a 4x4 transposed convolution, then 4x4 stride-2 transposed
convolutions with batch norm and ReLU doubling the side (channels halving from ``ngf * 2^(k-1)``), a last
transposed convolution to ``channels`` and tanh. Discriminator: 4x4 stride-2 convolutions with
LeakyReLU 0.2 (batch norm from the second layer on) down to 4x4, and a 4x4 convolution to one logit.
Weights are initialised as in DCGAN: N(0, 0.02) for convolutions, N(1, 0.02) for batch-norm scales.

Shapes: generator output ``(B, channels, S, S)`` in ``[-1, 1]``; discriminator input the same,
output ``(B,)`` logits. ``S`` is a power of two, at least 8.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from histolib.errors import ParamError

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "dcgan_init"]


def _levels(size: int) -> int:
    k = int(round(math.log2(size)))
    if size < 8 or 2 ** k != size:
        raise ParamError(f"DCGAN image size must be a power of two >= 8, got {size}")
    return k - 2  # number of x2 steps from 4x4


def dcgan_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """DCGAN initialisation in place (convolutions N(0, 0.02), batch norm N(1, 0.02) and bias 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02, generator=generator)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """``(B, z_dim) -> (B, channels, size, size)`` in ``[-1, 1]``."""

    def __init__(self, size: int = 64, z_dim: int = 100, ngf: int = 64, channels: int = 1):
        super().__init__()
        n = _levels(size)
        self.z_dim, self.size = z_dim, size
        chans = [ngf * 2 ** (n - 1 - i) for i in range(n)]  # 4x4 ... size/2 x size/2
        layers = [nn.ConvTranspose2d(z_dim, chans[0], 4, 1, 0, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU(True)]
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(chans[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), self.z_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """``(B, channels, size, size) -> (B,)`` logits (real: high)."""

    def __init__(self, size: int = 64, ndf: int = 64, channels: int = 1):
        super().__init__()
        n = _levels(size)
        layers, cin = [], channels
        for i in range(n):
            cout = ndf * 2 ** i
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()
