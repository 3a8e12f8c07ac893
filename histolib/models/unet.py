"""The U-Net of Ronneberger et al. (MICCAI 2015), with padded convolutions.

Each level is two 3x3 convolutions (padding 1, so the output has the input's size; the paper used
valid convolutions and overlap-tile cropping), each followed by batch normalisation and ReLU
(batch normalisation is not in the paper: it makes the small-batch CPU trainings of this study
converge in a few epochs); 2x2 max-pooling down, 2x2 transposed convolution ("up-convolution")
up, skip concatenation, and a 1x1 convolution to class logits. Channels double per level from
``width`` (paper: 64) over ``depth`` levels (paper: 5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from histolib.errors import ParamError


class DoubleConv(nn.Sequential):
    """``(conv3x3 -> BN -> ReLU) x 2``: ``(B, c_in, H, W) -> (B, c_out, H, W)``."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net for semantic segmentation.

    Args:
        in_channels: image channels (3 for RGB).
        n_classes: output classes (2 for glomerulus vs background).
        width: channels of the first level; level ``k`` has ``width * 2**k``.
        depth: levels, so ``depth - 1`` poolings; inputs must be divisible by ``2**(depth-1)``
            (:func:`histolib.train.segmentation.predict` pads other sizes).

    Shape:
        ``(B, in_channels, H, W)`` float in ``[0, 1]`` -> logits ``(B, n_classes, H, W)``.
    """

    def __init__(self, in_channels: int = 3, n_classes: int = 2, width: int = 16, depth: int = 4):
        super().__init__()
        if depth < 2:
            raise ParamError(f"UNet depth must be >= 2, got {depth}")
        if width < 1 or n_classes < 1 or in_channels < 1:
            raise ParamError(f"UNet needs positive width/n_classes/in_channels, got {width}/{n_classes}/{in_channels}")
        self.depth = depth
        chans = [width * 2**k for k in range(depth)]
        self.down = nn.ModuleList([DoubleConv(in_channels, chans[0])] +
                                  [DoubleConv(chans[k - 1], chans[k]) for k in range(1, depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[k], chans[k - 1], 2, stride=2)
                                 for k in range(depth - 1, 0, -1)])
        self.merge = nn.ModuleList([DoubleConv(2 * chans[k - 1], chans[k - 1]) for k in range(depth - 1, 0, -1)])
        self.head = nn.Conv2d(chans[0], n_classes, 1)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
            raise ParamError(f"UNet input {tuple(x.shape[-2:])} must be divisible by {self.multiple}")
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
