"""Pix2Pix networks of Allender et al. (seed 001): a U-Net generator from (mask, structure map) to RGB,
and the discriminator of their appendix Table 2, unconditional (Eq. 2) or conditional (ablation, sec. 4.2).

What the appendix tables say, read from their parameter counts (the layer list alone is ambiguous):

- Kernels are 5x5 with stride 2 (e.g. 64 -> 128 channels: 5*5*64*128 + 128 bias + 2*128 norm
  = 205184, as printed), i.e. the TensorFlow Pix2Pix port derived from DCGAN, not the 4x4 kernels of
  Isola et al. Both are offered (``kernel_size`` 4 or 5); the output sizes are the same.
- Every down/up convolution but the first, the last and the 1x1 bottleneck is followed by a
  normalisation with scale and offset; the layer order is "activation, then convolution" (the
  table lists each conv with the activation that feeds the next one).
- Dropout (p = 0.5) follows the three innermost transposed convolutions.
- The discriminator is *not* a PatchGAN: three stride-2 convolutions (64, 128, 256), one stride-1
  convolution (512), then a linear layer on the flattened map to one logit. A PatchGAN head
  (a 1-channel convolution, Isola et al.) is offered as ``head="patch"``.
- The printed first layer (1664 parameters = 5*5*1*64 + 64) has one input channel although the
  input is listed with two; we follow the text (mask ++ structure map, 2 channels).

Randomness of the generator. The paper's generator has no noise input (Table 1: input
``(256, 256, 2)``) and its mode-seeking term (Eq. 4) compares two *conditions*, not two noise codes,
so a noise code as in MSGAN would have nothing in the losses that rewards using it. We therefore keep
Pix2Pix's only source of randomness: dropout in the innermost up-blocks, active in training and, as
in Isola et al. (sec. 2.2 and 3.1), at inference (``dropout_at_inference=True``). Dropout masks are
drawn from an explicit ``torch.Generator`` so a run is reproducible on CPU, and in a layout that does
not depend on the tensors' memory format.

Normalisation. With the paper's batch of 1, batch normalisation computes per-image statistics, and
Pix2Pix applies it at test time with the test batch's statistics: both are instance normalisation.
``norm="instance"`` (affine) keeps that behaviour at any batch size and in ``eval()`` mode;
``norm="batch"`` is available for comparison.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from histolib.errors import ParamError

NORMS = ("instance", "batch")
HEADS = ("linear", "patch")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ParamError(f"{name} must be one of {choices}, got {value!r}")


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ParamError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


def _down_conv(cin: int, cout: int, kernel_size: int, bias: bool) -> nn.Conv2d:
    # padding 1 for k=4 and 2 for k=5 both give exactly H/2 on even H
    return nn.Conv2d(cin, cout, kernel_size, stride=2, padding=(kernel_size - 1) // 2, bias=bias)


UPSAMPLES = ("transpose", "resize", "bilinear")


def _up_conv(cin: int, cout: int, kernel_size: int, bias: bool, upsample: str = "transpose") -> nn.Module:
    if upsample in ("resize", "bilinear"):
        # x2 interpolation (nearest for "resize", as Odena et al. 2016 recommend, or bilinear) then a 3x3
        # convolution: every output pixel gets the same number of kernel taps, so no checkerboard from the
        # uneven overlap of a strided transposed kernel
        mode = "nearest" if upsample == "resize" else "bilinear"
        return nn.Sequential(nn.Upsample(scale_factor=2, mode=mode),
                             nn.Conv2d(cin, cout, 3, padding=1, bias=bias))
    # k=4, p=1 and k=5, p=2, output_padding=1 both give exactly 2H (TensorFlow's 'SAME')
    pad = (kernel_size - 1) // 2
    return nn.ConvTranspose2d(cin, cout, kernel_size, stride=2, padding=pad,
                              output_padding=2 * pad + 2 - kernel_size, bias=bias)


def init_gan_weights(module: nn.Module, std: float = 0.02, generator: torch.Generator | None = None) -> None:
    """Pix2Pix/DCGAN initialisation: conv weights ~ N(0, std), norm scales ~ N(1, std), biases 0.

    Args:
        module: the network, initialised in place.
        std: standard deviation of the normal draws.
        generator: explicit random source (``None``: torch's global one).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std, generator=generator)
            nn.init.zeros_(m.bias)


def dropout_with_generator(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout whose mask comes from ``generator``.

    The mask is drawn as a contiguous ``(B, C, H, W)`` tensor, so the same generator state gives the
    same mask whatever the memory format of ``x`` (channels-last or not).

    Args:
        x: ``(B, C, H, W)`` activations.
        p: drop probability in ``[0, 1)``.
        generator: random source on ``x``'s device (``None``: torch's global one).

    Returns:
        ``x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)``, same shape and format as ``x``.
    """
    if p == 0.0:
        return x
    keep = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - p, generator=generator)
    return x * keep.div_(1.0 - p)


class Pix2PixGenerator(nn.Module):
    """U-Net generator of Allender et al., appendix Table 1 (Pix2Pix, Isola et al. 2017).

    ``depth = log2(size)`` stride-2 convolutions take a ``size x size`` patch down to 1x1 (8 at the
    paper's 256 px, 6 at 64 px); as many transposed convolutions bring it back up, each (but the
    first) fed with the concatenation of the previous up-block and the mirrored down-block.
    Channels are ``width * min(2**level, 8)`` (64, 128, 256, 512, 512, ... at ``width=64``).

    Layers: down 0 = conv; down i = LeakyReLU(0.2) -> conv -> norm; bottleneck = LeakyReLU -> conv;
    up j = ReLU -> transposed conv -> norm (-> dropout for the ``n_dropout`` innermost) -> concat skip;
    last = ReLU -> transposed conv -> tanh.

    Args:
        in_channels: condition channels (2: binary mask ++ structure map; 1 for the mask-only ablation).
        out_channels: image channels (3).
        size: patch side the generator is built for, a power of two >= 8; inputs must be divisible
            by ``2**depth`` (a larger input keeps a larger bottleneck).
        width: channels of the first level (paper: 64).
        kernel_size: 4 (Isola et al.) or 5 (the paper's appendix, see the module docstring).
        n_dropout: innermost up-blocks followed by dropout (paper: 3); at most ``depth - 1``.
        dropout: drop probability (paper: 0.5).
        norm: ``"instance"`` or ``"batch"`` (see the module docstring).
        dropout_at_inference: keep dropout in ``eval()`` mode (Pix2Pix's test-time noise).
        generator: random source of the weight initialisation.
        upsample: ``"transpose"`` (the paper and Pix2Pix: stride-2 transposed convolutions of
            ``kernel_size``), ``"resize"`` (nearest-neighbour x2 then a 3x3 convolution) or
            ``"bilinear"`` (bilinear x2 then a 3x3 convolution), for every up-block and the last layer.

    Shape:
        input ``(B, in_channels, H, W)`` float in [-1, 1] (binary maps as -1/+1);
        output ``(B, out_channels, H, W)`` float in (-1, 1).
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 3, size: int = 256, width: int = 64,
                 kernel_size: int = 4, n_dropout: int = 3, dropout: float = 0.5, norm: str = "instance",
                 dropout_at_inference: bool = True, generator: torch.Generator | None = None,
                 upsample: str = "transpose"):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("width", width), ("size", size)):
            _check_positive_int(name, value)
        depth = int(round(math.log2(size)))
        if 2**depth != size or depth < 3:
            raise ParamError(f"size must be a power of two >= 8 (the U-Net goes down to 1x1), got {size}")
        _check_choice("kernel_size", kernel_size, (4, 5))
        _check_choice("norm", norm, NORMS)
        _check_choice("upsample", upsample, UPSAMPLES)
        _check_positive_int("n_dropout", n_dropout, 0)
        if n_dropout > depth - 1:
            raise ParamError(f"n_dropout must be <= depth - 1 = {depth - 1} at size {size}, got {n_dropout}")
        if not 0.0 <= dropout < 1.0:
            raise ParamError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.out_channels, self.size, self.depth = in_channels, out_channels, size, depth
        self.n_dropout, self.dropout = n_dropout, float(dropout)
        self.dropout_at_inference = dropout_at_inference

        ch = [width * min(2**i, 8) for i in range(depth)]
        self.downs = nn.ModuleList()
        for i in range(depth):
            cin = in_channels if i == 0 else ch[i - 1]
            with_norm = 0 < i < depth - 1  # no norm on the input layer nor on the 1x1 bottleneck
            layers = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(_down_conv(cin, ch[i], kernel_size, bias=not with_norm))
            if with_norm:
                layers.append(_norm(norm, ch[i]))
            self.downs.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList()
        for j in range(depth - 1):  # up j produces the resolution of down (depth - 2 - j)
            level = depth - 2 - j
            cin = ch[depth - 1] if j == 0 else 2 * ch[level + 1]
            self.ups.append(nn.Sequential(nn.ReLU(), _up_conv(cin, ch[level], kernel_size, False, upsample),
                                          _norm(norm, ch[level])))
        self.last = nn.Sequential(nn.ReLU(), _up_conv(2 * ch[0], out_channels, kernel_size, True, upsample),
                                  nn.Tanh())
        init_gan_weights(self, generator=generator)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Translate conditions to images; ``generator`` drives dropout (``None``: global RNG)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ParamError(f"x must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ParamError(f"x spatial size {tuple(x.shape[-2:])} must be divisible by 2**depth = "
                             f"{2**self.depth} (generator built for size {self.size})")
        skips = []
        h = x
        for down in self.downs:
            h = down(h)
            skips.append(h)
        use_dropout = self.dropout > 0 and (self.training or self.dropout_at_inference)
        for j, up in enumerate(self.ups):
            h = up(h)
            if use_dropout and j < self.n_dropout:
                h = dropout_with_generator(h, self.dropout, generator)
            h = torch.cat([h, skips[self.depth - 2 - j]], dim=1)
        return self.last(h)


class Pix2PixDiscriminator(nn.Module):
    """Discriminator of Allender et al., appendix Table 2; unconditional (Eq. 2) or conditional.

    Layers: conv(s2) -> LeakyReLU(0.2); ``n_layers - 1`` times conv(s2) -> norm -> LeakyReLU; one
    stride-1 conv (``width * min(2**n_layers, 8)`` channels) -> norm -> LeakyReLU; then the head:
    ``"linear"`` (Table 2) flattens the map to one logit per image; ``"patch"`` (Isola et al.'s
    PatchGAN) is a stride-1 convolution to one logit per receptive field.

    Unconditional (``condition_channels=0``): D sees the image only, the paper's choice ("not feeding
    x to D helps reduce mode collapse"). Conditional (``condition_channels>0``): D sees the condition
    concatenated to the image channels, the classic cGAN and the paper's Fig. 7 ablation.

    Args:
        image_channels: 3 (RGB).
        condition_channels: 0 for the unconditional D, else the condition's channel count.
        size: image side the linear head is built for (the flattened size depends on it).
        width: channels of the first layer (paper: 64).
        n_layers: stride-2 convolutions (paper: 3, so the map is ``size / 8``).
        kernel_size: 4 or 5 (paper's appendix: 5).
        norm: ``"instance"`` or ``"batch"``.
        head: ``"linear"`` or ``"patch"``.
        generator: random source of the weight initialisation.

    Shape:
        ``forward(image, condition=None)``: image ``(B, image_channels, H, W)`` in [-1, 1], condition
        ``(B, condition_channels, H, W)`` (required iff ``condition_channels > 0``);
        output logits ``(B, 1)`` (linear head) or ``(B, 1, h, w)`` (patch head).
    """

    def __init__(self, image_channels: int = 3, condition_channels: int = 0, size: int = 256, width: int = 64,
                 n_layers: int = 3, kernel_size: int = 4, norm: str = "instance", head: str = "linear",
                 generator: torch.Generator | None = None):
        super().__init__()
        for name, value in (("image_channels", image_channels), ("width", width), ("n_layers", n_layers),
                            ("size", size)):
            _check_positive_int(name, value)
        _check_positive_int("condition_channels", condition_channels, 0)
        _check_choice("kernel_size", kernel_size, (4, 5))
        _check_choice("norm", norm, NORMS)
        _check_choice("head", head, HEADS)
        if size % 2**n_layers:
            raise ParamError(f"size {size} must be divisible by 2**n_layers = {2**n_layers}")
        self.image_channels, self.condition_channels = image_channels, condition_channels
        self.size, self.head_kind = size, head
        pad = (kernel_size - 1) // 2
        layers: list[nn.Module] = []
        cin = image_channels + condition_channels
        for i in range(n_layers):
            cout = width * min(2**i, 8)
            layers.append(_down_conv(cin, cout, kernel_size, bias=i == 0))
            if i > 0:
                layers.append(_norm(norm, cout))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        cout = width * min(2**n_layers, 8)
        layers += [nn.Conv2d(cin, cout, kernel_size, stride=1, padding=pad, bias=False), _norm(norm, cout),
                   nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        side = size // 2**n_layers + 2 * pad - kernel_size + 1  # the stride-1 conv keeps or trims 1 px
        if head == "linear":
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(cout * side * side, 1))
        else:
            self.head = nn.Conv2d(cout, 1, kernel_size, stride=1, padding=pad)
        init_gan_weights(self, generator=generator)

    @property
    def conditional(self) -> bool:
        return self.condition_channels > 0

    def forward(self, image: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != self.image_channels:
            raise ParamError(f"image must be (B, {self.image_channels}, H, W), got {tuple(image.shape)}")
        if self.conditional:
            if condition is None or condition.shape != (image.shape[0], self.condition_channels,
                                                        *image.shape[-2:]):
                got = None if condition is None else tuple(condition.shape)
                raise ParamError(f"condition must be (B, {self.condition_channels}, H, W) matching image "
                                 f"{tuple(image.shape)}, got {got}")
            image = torch.cat([condition, image], dim=1)
        elif condition is not None:
            raise ParamError("this discriminator is unconditional (condition_channels=0): pass no condition")
        if self.head_kind == "linear" and image.shape[-2:] != (self.size, self.size):
            raise ParamError(f"image must be {self.size}x{self.size} for the linear head, "
                             f"got {tuple(image.shape[-2:])}")
        return self.head(self.body(image))


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["Pix2PixGenerator", "Pix2PixDiscriminator", "init_gan_weights", "dropout_with_generator",
           "count_parameters"]
