"""A HoVer-Net-style network and loss (Graham et al. 2019), sized by a width and a depth.

HoVer-Net segments nuclei with a shared pre-activation residual encoder and two decoder branches:
``NP`` (nuclear pixel, 2-class logits) and ``HV`` (horizontal and vertical distance of each pixel
to its nucleus centroid, see :func:`histolib.ops.instance.hv_maps`); instances come from
:func:`histolib.ops.instance.hovernet_postprocess`.

The encoder is a pre-activation ResNet of ``len(blocks)`` stages, with ``block="basic"`` (two 3x3
convolutions, stage ``s`` at ``width * 2^s`` channels: ``width=64, blocks=(3, 4, 6, 3)`` is ResNet-34's
shape; the CPU profiles) or ``block="bottleneck"`` (1x1 -> 3x3 -> 1x1 with expansion 4, stage ``s`` at
``4 * width * 2^s`` output channels: ``width=64, blocks=(3, 4, 6, 3)`` is the pre-activation ResNet-50
of HoVer-Net, 256..2048 channels; the ``paper`` profile). Remaining differences from the original, for
the CPU and for readability: a 3x3 stem instead of 7x7; "same" padding so the output has the input's size (the original crops 270 -> 80 px); and
U-Net-style decoders (nearest x2 up, add the encoder skip, two 3x3 conv-BN-ReLU) instead of
HoVer-Net's dense decoder blocks. The loss is HoVer-Net's (below).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    """``x + conv(relu(bn(conv(relu(bn(x))))))``, with a strided 1x1 shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (ResNet-50's block): ``x + conv1x1(relu(bn(conv3x3(relu(bn(conv1x1(
    relu(bn(x)))))))))`` with ``mid`` channels inside and ``4 * mid`` out; strided 1x1 shortcut when the
    shape changes (the stride sits on the 3x3, as torchvision's ResNet-50 v1.5 and HoVer-Net)."""

    expansion = 4

    def __init__(self, cin: int, mid: int, stride: int = 1):
        super().__init__()
        cout = mid * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + skip


BLOCKS = ("basic", "bottleneck")


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Decoder(nn.Module):
    def __init__(self, channels: list[int], out_channels: int):
        super().__init__()
        # channels: encoder stage widths, shallow to deep
        self.blocks = nn.ModuleList()
        for deep, shallow in zip(channels[::-1][:-1], channels[::-1][1:], strict=True):
            self.blocks.append(nn.ModuleDict({
                "reduce": nn.Conv2d(deep, shallow, 1, bias=False),
                "conv": nn.Sequential(_ConvBNReLU(shallow, shallow), _ConvBNReLU(shallow, shallow)),
            }))
        self.head = nn.Sequential(nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels[0], out_channels, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, feats[::-1][1:], strict=True):
            x = F.interpolate(block["reduce"](x), size=skip.shape[-2:], mode="nearest")
            x = block["conv"](x + skip)
        return self.head(x)


class HoVerNet(nn.Module):
    """Shared encoder, ``NP`` and ``HV`` decoders.

    Args:
        in_channels: image channels (3).
        width: channels of the first stage; stage ``s`` has ``width * 2^s`` (basic) or
            ``4 * width * 2^s`` (bottleneck) output channels.
        blocks: residual blocks per stage; stage 0 keeps full resolution, each later one halves
            it, so inputs are padded to a multiple of ``2^(len(blocks) - 1)`` internally.
        block: ``"basic"`` (:class:`PreActBlock`) or ``"bottleneck"`` (:class:`PreActBottleneck`).

    Forward:
        ``(B, in_channels, H, W)`` float (normalised image) -> ``{"np": (B, 2, H, W)`` logits,
        ``"hv": (B, 2, H, W)}`` (channel 0 horizontal, 1 vertical; no activation, as HoVer-Net).
    """

    def __init__(self, in_channels: int = 3, width: int = 16, blocks: tuple[int, ...] = (1, 1, 1, 1),
                 block: str = "basic"):
        super().__init__()
        if width < 1 or len(blocks) < 1 or min(blocks) < 1:
            raise ValueError(f"width must be >= 1 and blocks a non-empty tuple of ints >= 1, "
                             f"got width={width}, blocks={blocks}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        mids = [width * 2 ** s for s in range(len(blocks))]
        unit, exp = (PreActBlock, 1) if block == "basic" else (PreActBottleneck, PreActBottleneck.expansion)
        chans = [m * exp for m in mids]
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.stages = nn.ModuleList()
        cin = width
        for s, (mid, n) in enumerate(zip(mids, blocks, strict=True)):
            layers = [unit(cin, mid, stride=1 if s == 0 else 2)]
            layers += [unit(mid * exp, mid) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*layers))
            cin = mid * exp
        self.np_branch = _Decoder(chans, 2)
        self.hv_branch = _Decoder(chans, 2)
        self.multiple = 2 ** (len(blocks) - 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        m = self.multiple
        x = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="replicate") if (h % m or w % m) else x
        feats = []
        y = self.stem(x)
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        return {"np": self.np_branch(feats)[..., :h, :w], "hv": self.hv_branch(feats)[..., :h, :w]}


def _sobel_5x5() -> tuple[torch.Tensor, torch.Tensor]:
    # HoVer-Net's get_sobel_kernel(5): k_h[v, h] = h / (h^2 + v^2), k_v = v / (h^2 + v^2), with
    # h along columns as in its original np.meshgrid (its PyTorch port's torch.meshgrid swaps
    # the axes, so there d/dy meets the horizontal map; the geometric version is kept here).
    r = torch.arange(-2, 3, dtype=torch.float32)
    v, h = torch.meshgrid(r, r, indexing="ij")
    denom = h * h + v * v + 1.0e-15
    return h / denom, v / denom


def hv_gradients(hv: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` -> ``(B, 2, H, W)``: d/dx of the horizontal map and d/dy of the vertical
    one with HoVer-Net's 5x5 Sobel-like kernels (zero padding, as its ``conv2d(padding=2)``)."""
    kh, kv = _sobel_5x5()
    kernel = torch.stack([kh, kv])[:, None].to(hv)
    return F.conv2d(hv, kernel, padding=2, groups=2)


def hovernet_loss(out: dict[str, torch.Tensor], np_target: torch.Tensor, hv_target: torch.Tensor,
                  weights: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """HoVer-Net's loss ``w_ce CE + w_dice Dice + w_mse MSE + w_msge MSGE``.

    * ``CE``: cross-entropy of the ``NP`` logits, mean over pixels.
    * ``Dice``: ``sum_c 1 - (2 sum p_c t_c + s) / (sum p_c + sum t_c + s)`` over both classes,
      softmax ``p``, one-hot ``t``, ``s = 1e-3``.
    * ``MSE``: ``mean (hv - hv*)^2`` over all pixels and both channels.
    * ``MSGE``: ``sum_{nuclei, channels} (grad(hv) - grad(hv*))^2 / (2 |nuclei| + 1e-8)`` with
      :func:`hv_gradients`, i.e. only inside nuclei.

    Args:
        out: model output ``{"np": (B, 2, H, W), "hv": (B, 2, H, W)}``.
        np_target: ``(B, H, W)`` 0/1 nucleus mask (any integer or float dtype).
        hv_target: ``(B, 2, H, W)`` from :func:`histolib.ops.instance.hv_maps`.
        weights: ``{"ce", "dice", "mse", "msge"}``; default all 1 (HoVer-Net's configuration).

    Returns:
        ``{"ce", "dice", "mse", "msge", "total"}`` scalar tensors.
    """
    w = {"ce": 1.0, "dice": 1.0, "mse": 1.0, "msge": 1.0, **(weights or {})}
    target = np_target.long()
    logits = out["np"]
    ce = F.cross_entropy(logits, target)
    prob = logits.softmax(dim=1)
    onehot = F.one_hot(target, 2).permute(0, 3, 1, 2).to(prob)
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    dice = (1.0 - (2.0 * inter + 1e-3) / (prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3)) + 1e-3)).sum()
    hv = out["hv"]
    mse = F.mse_loss(hv, hv_target)
    focus = (target > 0).to(hv)[:, None].expand(-1, 2, -1, -1)
    diff = hv_gradients(hv) - hv_gradients(hv_target)
    msge = (focus * diff * diff).sum() / (focus.sum() + 1.0e-8)
    total = w["ce"] * ce + w["dice"] * dice + w["mse"] * mse + w["msge"] * msge
    return {"ce": ce, "dice": dice, "mse": mse, "msge": msge, "total": total}
