"""The three segmentation networks of He et al. (seed 003, Fig. 8 and Table 5), built offline.

* ``effb3_unet``: the paper's model, segmentation-models-pytorch's ``Unet`` with an EfficientNet-B3
  encoder. ImageNet encoder weights are loaded only from a local file (``encoder_weights``: a state
  dict of the smp ``efficientnet-b3`` encoder, or of the whole model); otherwise the encoder starts
  from random weights. :attr:`Segmenter.encoder` records which.
* ``unet``: Ronneberger's U-Net (the study's :class:`histolib.models.unet.UNet`, five levels, plain
  convolution blocks): the classic model the paper compares with.
* ``unetpp``: smp's ``UnetPlusPlus`` (Zhou et al. 2018, nested dense skips) with the encoder named by
  ``unetpp_encoder`` (smp's default ``resnet34``; the paper does not name its backbone), random weights.

Swin-Unet, the fourth model of Table 5, is not re-run: it needs ImageNet-pretrained Swin weights to
train at all (the paper's argument against transformers) and does not fit the CPU budget.

Shapes: ``(B, 3, H, W)`` float in ``[0, 1]`` -> logits ``(B, n_classes, H, W)``; ``H, W`` multiples of
:attr:`Segmenter.multiple` (32 for the smp models, ``2^(depth-1)`` for the U-Net).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from histolib.errors import ParamError
from histolib.models.unet import UNet

__all__ = ["MODELS", "MODEL_NAMES", "Segmenter", "build_segmenter"]

MODELS = ("effb3_unet", "unet", "unetpp")
MODEL_NAMES = {"effb3_unet": "EfficientNetB3-Unet", "unet": "Unet", "unetpp": "Unet++"}


@dataclass
class Segmenter:
    """A built network and what it is: ``name`` (a key of :data:`MODELS`), ``encoder`` (which weights
    the encoder started from), ``multiple`` (input sides must be multiples of it)."""

    net: nn.Module
    name: str
    encoder: str
    multiple: int


def _load_encoder(net: nn.Module, path: str | os.PathLike) -> str:
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"encoder weights file {path} does not exist (nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ParamError(f"cannot read encoder weights {path}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")} or state
    own = net.encoder.state_dict()
    missing = [k for k in own if k not in enc]
    unexpected = [k for k in enc if k not in own]
    if len(missing) > len(own) // 2:
        raise ParamError(f"{path} does not hold EfficientNet-B3 encoder weights ({len(missing)} tensors missing)")
    net.encoder.load_state_dict({k: v for k, v in enc.items() if k in own}, strict=False)
    return f"ImageNet weights from local file {path} ({len(missing)} missing, {len(unexpected)} unexpected tensors)"


def build_segmenter(name: str, n_classes: int = 3, decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
                    unet_width: int = 64, unetpp_encoder: str = "resnet34", encoder_weights: str = "",
                    seed: int = 0, bn_momentum: float = 0.0) -> Segmenter:
    """Build one of :data:`MODELS` (module docstring), seeded with ``seed``; never downloads.

    Args:
        name: ``effb3_unet``, ``unet`` or ``unetpp``.
        n_classes: output channels (3: other, normal, sclerosed glomerulus).
        decoder_channels: the smp decoders' five widths (smp default ``(256, 128, 64, 32, 16)``).
        unet_width: first-level width of the classic U-Net (paper: 64).
        unetpp_encoder: smp encoder of U-Net++.
        encoder_weights: local EfficientNet-B3 weights file for ``effb3_unet`` (``''``: random init).
        seed: weight initialisation seed.
        bn_momentum: when > 0, the momentum of every batch-norm layer's running statistics. smp's
            EfficientNet keeps TensorFlow's 0.99 decay (PyTorch momentum 0.01): after a few hundred steps from
            random weights its running statistics are still mostly their initial values and the model in
            eval mode predicts background only. Short runs set PyTorch's default 0.1 (0: keep each network's).
    """
    if name not in MODELS:
        raise ParamError(f"unknown segmentation model {name!r}; one of {list(MODELS)}")
    decoder_channels = tuple(int(c) for c in decoder_channels)
    if len(decoder_channels) != 5:
        raise ParamError(f"decoder_channels needs 5 widths, got {list(decoder_channels)}")
    torch.manual_seed(seed)
    if name == "unet":
        return _momentum(Segmenter(UNet(3, n_classes, unet_width, 5), name,
                                   "random init (classic U-Net, no encoder backbone)", 16), bn_momentum)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import segmentation_models_pytorch as smp

    if name == "effb3_unet":
        net = smp.Unet("efficientnet-b3", encoder_weights=None, classes=n_classes, decoder_channels=decoder_channels)
        encoder = _load_encoder(net, encoder_weights) if encoder_weights else "random init (no local ImageNet weights)"
    else:
        net = smp.UnetPlusPlus(unetpp_encoder, encoder_weights=None, classes=n_classes,
                               decoder_channels=decoder_channels)
        encoder = f"{unetpp_encoder}, random init"
    return _momentum(Segmenter(net, name, encoder, 32), bn_momentum)


def _momentum(seg: Segmenter, momentum: float) -> Segmenter:
    if momentum > 0:
        for m in seg.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = momentum
    return seg
