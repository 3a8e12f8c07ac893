"""SPADE: semantic image synthesis with spatially-adaptive normalisation (Park et al., CVPR 2019).

The networks of seed 000 (Allender et al., BHI 2022, section II-B and its Fig. 2): a generator
that turns a label map (plus a noise vector) into an RGB patch, and a multiscale PatchGAN
discriminator that judges ``(one-hot label map, image)`` pairs.

Architecture as in the SPADE paper and its reference code (see ``reference/methods.md`` (a)):

* :class:`SPADE`: ``out = norm(x) * (1 + gamma(m)) + beta(m)``, ``norm`` parameter-free batch or
  instance norm, ``gamma``/``beta`` 3x3 convolutions on a shared ``3x3 conv(label -> hidden) + ReLU``
  of the label map ``m`` resized (nearest) to ``x``.
* :class:`SPADEResBlock`: ``(SPADE -> LeakyReLU(0.2) -> conv3x3) x 2`` plus a shortcut that is a
  learned ``SPADE -> conv1x1`` when the channel count changes; spectral norm on the three convs.
* :class:`SPADEGenerator`: no image encoder. The label map, downsampled (nearest) to
  ``image_size / 32``, concatenated with the noise vector broadcast over that grid, goes through a
  3x3 conv to ``16 ngf`` channels; then ``head_0, up, G_middle_0, G_middle_1`` at ``16 ngf`` and
  ``up, up_0 ... up, up_3`` (``16 -> 8 -> 4 -> 2 -> 1 x ngf``), nearest x2 upsampling, then
  ``LeakyReLU -> conv3x3 -> tanh``.
* :class:`MultiscaleDiscriminator`: ``num_D`` PatchGANs (4x4 kernels, ``n_layers``, spectral +
  instance norm), scale ``i`` sees the input average-pooled ``i`` times; every intermediate
  activation is returned for the feature-matching loss.

Decisions (where the paper is silent):

* Noise input. The seed says the generator "can take a random vector as input, which enables
  multi-modal synthesis" but trains no encoder. The SPADE reference feeds noise only through its
  VAE branch (a linear layer to a ``16 ngf x sh x sw`` tensor). Without an encoder we keep the
  label-map path of the first block and concatenate the noise, broadcast over the ``sh x sw``
  grid, to the downsampled label map before the first conv: cheaper than the linear layer and
  keeps the label map's layout. ``z_dim=0`` gives the deterministic reference generator.
* ``SPADE_0`` and ``SPADE_s`` of a residual block normalise the same tensor, so it is normalised
  once.
* Initialisation: Xavier-normal with gain 0.02, zero biases (the reference's ``init_type xavier``),
  drawn from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

NORMS = ("batch", "instance")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Spectral norm with an explicit generator
# --------------------------------------------------------------------------------------------------

class _SpectralNorm(nn.Module):
    """Parametrisation ``W -> W / sigma(W)`` with one power iteration per training forward.

    Same estimator as ``torch.nn.utils.parametrizations.spectral_norm`` (Miyato et al. 2018); own
    class so the power-iteration vectors are drawn from an explicit generator (determinism).
    """

    def __init__(self, weight: torch.Tensor, generator: torch.Generator | None = None,
                 n_power_iterations: int = 1, eps: float = 1e-12):
        super().__init__()
        w = weight.detach().flatten(1)
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        u = F.normalize(torch.randn(w.shape[0], generator=generator, dtype=w.dtype), dim=0, eps=eps)
        v = F.normalize(torch.randn(w.shape[1], generator=generator, dtype=w.dtype), dim=0, eps=eps)
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)
        self._power_method(w, 15)

    @torch.no_grad()
    def _power_method(self, w: torch.Tensor, n: int) -> None:
        for _ in range(n):
            self._v.copy_(F.normalize(torch.mv(w.t(), self._u), dim=0, eps=self.eps))
            self._u.copy_(F.normalize(torch.mv(w, self._v), dim=0, eps=self.eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.flatten(1)
        if self.training:
            self._power_method(w.detach(), self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()
        sigma = torch.dot(u, torch.mv(w, v))
        return weight / sigma


def spectral_norm(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Register spectral normalisation on ``module.weight`` (in place) and return ``module``."""
    parametrize.register_parametrization(module, "weight", _SpectralNorm(module.weight, generator))
    return module


# --------------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------------

def _xavier_(weight: torch.Tensor, gain: float, generator: torch.Generator | None,
             chunks: tuple[int, ...] | None = None) -> None:
    """Xavier-normal init; ``chunks`` splits the output channels of a fused conv so each logical
    conv gets the std of its own fan-out."""
    chunks = chunks or (weight.shape[0],)
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in = weight.shape[1] * receptive
    start = 0
    with torch.no_grad():
        for size in chunks:
            std = gain * math.sqrt(2.0 / (fan_in + size * receptive))
            weight[start:start + size].normal_(0.0, std, generator=generator)
            start += size


def init_weights(module: nn.Module, generator: torch.Generator | None = None, gain: float = 0.02) -> None:
    """(Re)initialise every conv of ``module`` as the SPADE reference does: Xavier-normal with
    ``gain``, zero biases; spectral-norm power-iteration vectors are redrawn and re-converged.

    Args:
        module: a network of this file.
        generator: the random stream; ``None`` uses torch's global one.
        gain: Xavier gain (reference 0.02).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if parametrize.is_parametrized(m, "weight"):
                weight = m.parametrizations.weight.original
            else:
                weight = m.weight
            _xavier_(weight, gain, generator, getattr(m, "fused_chunks", None))
            if m.bias is not None:
                with torch.no_grad():
                    m.bias.zero_()
            if parametrize.is_parametrized(m, "weight"):
                for p in m.parametrizations.weight:
                    if isinstance(p, _SpectralNorm):
                        w = weight.detach().flatten(1)
                        with torch.no_grad():
                            p._u.copy_(F.normalize(torch.randn(w.shape[0], generator=generator), dim=0))
                            p._v.copy_(F.normalize(torch.randn(w.shape[1], generator=generator), dim=0))
                        p._power_method(w, 15)


def _conv(cin: int, cout: int, k: int, *, bias: bool = True, sn: bool = False, stride: int = 1,
          padding: int | None = None, chunks: tuple[int, ...] | None = None,
          generator: torch.Generator | None = None) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if padding is None else padding, bias=bias)
    if chunks:
        conv.fused_chunks = chunks
    _xavier_(conv.weight, 0.02, generator, chunks)
    if bias:
        nn.init.zeros_(conv.bias)
    return spectral_norm(conv, generator) if sn else conv


# --------------------------------------------------------------------------------------------------
# SPADE layer and residual block
# --------------------------------------------------------------------------------------------------

def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Parameter-free instance norm over ``(H, W)``; a ``1 x 1`` map normalises to 0 (its own mean),
    where ``F.instance_norm`` refuses it (the first block of a 32-px generator is ``1 x 1``)."""
    if x.shape[-1] * x.shape[-2] == 1:
        return x - x.detach()  # zeros, keeping the graph
    return F.instance_norm(x, eps=eps)


class _ParamFreeNorm(nn.Module):
    """Batch norm without affine parameters (with running statistics, used in eval mode), or
    instance norm over ``(H, W)``."""

    def __init__(self, channels: int, kind: str, eps: float = 1e-5):
        super().__init__()
        if kind not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
        self.kind = kind
        self.eps = eps
        self.bn = nn.BatchNorm2d(channels, affine=False, eps=eps) if kind == "batch" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is not None:
            return self.bn(x)
        return instance_norm(x, self.eps)


class SPADE(nn.Module):
    """Spatially-adaptive (de)normalisation, eq. (1) of Park et al.:

    ``out = norm(x) * (1 + gamma(h)) + beta(h)``, ``h = ReLU(conv3x3(m))``, ``gamma``, ``beta``
    3x3 convs.

    Args:
        channels: ``C`` of ``x``.
        label_nc: channels of the label map (number of classes, one-hot).
        hidden: channels of the shared label embedding ``h`` (reference: 128).
        norm: ``"batch"`` or ``"instance"`` (parameter-free), or ``None`` when the caller passes an
            already normalised ``x`` (a residual block shares one normalisation between two SPADEs).

    Shapes:
        ``x (B, C, H, W)`` float; ``label (B, label_nc, H', W')`` one-hot float, resized to
        ``(H, W)`` by nearest neighbour; output ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, label_nc: int, hidden: int = 128, norm: str | None = "instance",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.norm = _ParamFreeNorm(channels, norm) if norm is not None else None
        self.mlp_shared = _conv(label_nc, hidden, 3, generator=generator)
        self.mlp_gamma = _conv(hidden, channels, 3, generator=generator)
        self.mlp_beta = _conv(hidden, channels, 3, generator=generator)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if label.shape[-2:] != x.shape[-2:]:
            label = F.interpolate(label, size=x.shape[-2:], mode="nearest")
        normalized = self.norm(x) if self.norm is not None else x
        h = F.relu(self.mlp_shared(label))
        return torch.addcmul(self.mlp_beta(h), normalized, self.mlp_gamma(h) + 1.0)


class SPADEResBlock(nn.Module):
    """SPADE residual block (Park et al. Fig. 4; seed Fig. 2 top-right).

    ``dx = conv_1(lrelu(SPADE_1(conv_0(lrelu(SPADE_0(x, m))), m)))``, ``out = shortcut(x) + dx``,
    with ``shortcut = conv1x1(SPADE_s(x, m))`` (no bias) when ``fin != fout``, else identity.
    The middle width is ``min(fin, fout)``; spectral norm on ``conv_0``, ``conv_1``, ``conv_s``.
    ``SPADE_0`` and ``SPADE_s`` normalise the same ``x``: it is normalised once (same function;
    with batch norm the two identical running statistics of the reference are kept once).

    Args:
        fin, fout: input and output channels.
        label_nc: one-hot label channels.
        hidden: SPADE hidden width.
        norm: ``"batch"`` or ``"instance"``.
        spectral: apply spectral norm to the block's convs.

    Shapes:
        ``x (B, fin, H, W)``, ``label (B, label_nc, H, W)`` (already at ``x``'s size) ->
        ``(B, fout, H, W)``.
    """

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int = 128, norm: str = "instance",
                 spectral: bool = True, generator: torch.Generator | None = None):
        super().__init__()
        self.fin, self.fout = fin, fout
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        self.norm_x = _ParamFreeNorm(fin, norm)
        self.norm_0 = SPADE(fin, label_nc, hidden, None, generator)
        self.norm_1 = SPADE(fmid, label_nc, hidden, norm, generator)
        self.conv_0 = _conv(fin, fmid, 3, sn=spectral, generator=generator)
        self.conv_1 = _conv(fmid, fout, 3, sn=spectral, generator=generator)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, hidden, None, generator)
            self.conv_s = _conv(fin, fout, 1, bias=False, sn=spectral, generator=generator)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if label.shape[-2:] != x.shape[-2:]:
            label = F.interpolate(label, size=x.shape[-2:], mode="nearest")
        xn = self.norm_x(x)
        x_s = self.conv_s(self.norm_s(xn, label)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(xn, label), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, label), 0.2))
        return x_s + dx


# --------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------

def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(B, H, W)`` integer label map in ``[0, n_classes)`` -> ``(B, n_classes, H, W)`` float one-hot.

    Raises:
        ValueError: a label outside ``[0, n_classes)`` (the reference's cryptic "invalid index in
            scatter", its issue #68), naming the offending value.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"labels hold values in [{lo}, {hi}] but n_classes is {n_classes}: "
                             f"class ids must lie in [0, {n_classes})")
    return F.one_hot(labels.long(), n_classes).permute(0, 3, 1, 2).to(torch.float32)


class SPADEGenerator(nn.Module):
    """SPADE generator without encoder (seed Fig. 2 bottom row).

    Args:
        n_classes: classes of the label map (2 for a binary mask, 4 for a structure map).
        ngf: base width; the blocks have ``16, 16, 16, 8, 4, 2, 1 x ngf`` output channels
            (reference 64).
        image_size: side of the square output; must be divisible by ``2**n_up``.
        z_dim: noise channels (0: deterministic generator).
        norm: parameter-free norm inside SPADE, ``"batch"`` (reference ``spectralspadebatch3x3``)
            or ``"instance"``.
        spade_hidden: SPADE hidden width (reference 128).
        n_up: number of x2 upsamplings: 5 (reference "normal": the first block is at
            ``image_size / 32``) or 6 ("more": one more between the middle blocks).
        out_channels: image channels (3).
        generator: random stream for the initial weights.

    Shapes:
        ``forward(label (B, n_classes, S, S) one-hot float, z (B, z_dim) float or None)`` ->
        ``(B, out_channels, S, S)`` in ``[-1, 1]`` (tanh). ``z=None`` with ``z_dim > 0`` means zero
        noise. Empty batches give empty outputs.
    """

    def __init__(self, n_classes: int, ngf: int = 64, image_size: int = 256, z_dim: int = 256,
                 norm: str = "instance", spade_hidden: int = 128, n_up: int = 5, out_channels: int = 3,
                 spectral: bool = True, generator: torch.Generator | None = None):
        super().__init__()
        for name, value in (("n_classes", n_classes), ("ngf", ngf), ("image_size", image_size),
                            ("spade_hidden", spade_hidden), ("n_up", n_up)):
            _check_positive(name, value)
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        if z_dim < 0:
            raise ValueError(f"z_dim must be >= 0, got {z_dim}")
        if n_up not in (5, 6):
            raise ValueError(f"n_up must be 5 (reference 'normal') or 6 ('more'), got {n_up}")
        if image_size % 2**n_up:
            raise ValueError(f"image_size {image_size} must be divisible by 2**n_up = {2 ** n_up}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.n_classes, self.ngf, self.image_size, self.z_dim, self.n_up = n_classes, ngf, image_size, z_dim, n_up
        self.sw = image_size // 2**n_up
        nf = 16 * ngf
        kw = {"label_nc": n_classes, "hidden": spade_hidden, "norm": norm, "spectral": spectral,
              "generator": generator}
        self.fc = _conv(n_classes + z_dim, nf, 3, generator=generator)
        self.head_0 = SPADEResBlock(nf, nf, **kw)
        self.G_middle_0 = SPADEResBlock(nf, nf, **kw)
        self.G_middle_1 = SPADEResBlock(nf, nf, **kw)
        # n_up = 5: one upsampling before G_middle_0 and one before each of up_0..up_3
        self.up_blocks = nn.ModuleList([SPADEResBlock(nf // 2**i, nf // 2**(i + 1), **kw) for i in range(4)])
        self.conv_img = _conv(ngf, out_channels, 3, generator=generator)

    def forward(self, label: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if label.dim() != 4 or label.shape[1] != self.n_classes:
            raise ValueError(f"label must be one-hot (B, {self.n_classes}, H, W), got {tuple(label.shape)}")
        if label.shape[-1] != self.image_size or label.shape[-2] != self.image_size:
            raise ValueError(f"label must be {self.image_size}x{self.image_size}, got "
                             f"{tuple(label.shape[-2:])}")
        b = label.shape[0]
        # label pyramid: one nearest resize per resolution instead of one per SPADE layer
        sizes = [self.sw * 2**i for i in range(self.n_up + 1)]
        pyramid = {s: F.interpolate(label, size=(s, s), mode="nearest") if s != self.image_size else label
                   for s in sizes}
        x = pyramid[self.sw]
        if self.z_dim:
            if z is None:
                z = label.new_zeros(b, self.z_dim)
            if z.shape != (b, self.z_dim):
                raise ValueError(f"z must be ({b}, {self.z_dim}), got {tuple(z.shape)}")
            x = torch.cat([x, z[:, :, None, None].expand(b, self.z_dim, self.sw, self.sw)], dim=1)
        x = self.fc(x)
        s = self.sw
        x = self.head_0(x, pyramid[s])
        x, s = _up(x), s * 2
        x = self.G_middle_0(x, pyramid[s])
        if self.n_up == 6:
            x, s = _up(x), s * 2
        x = self.G_middle_1(x, pyramid[s])
        for block in self.up_blocks:
            x, s = _up(x), s * 2
            x = block(x, pyramid[s])
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


# --------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------

class _InstanceNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN ("NLayer") discriminator of pix2pixHD/SPADE.

    ``conv4x4/2 -> lrelu``, then ``n_layers - 1`` blocks ``SN-conv4x4 -> instance norm -> lrelu``
    (width doubling up to 512, stride 2 except the last, which has stride 1), then a plain
    ``conv4x4/1`` to one logit per patch. Padding 2, as in the reference.

    Args:
        in_channels: label classes + image channels.
        ndf: width of the first layer (reference 64).
        n_layers: conv layers before the output (reference 4).
        norm: ``"instance"`` or ``"none"`` for the middle layers.
        spectral: spectral norm on the middle convs.

    Shapes:
        ``(B, in_channels, H, W)`` -> list of ``n_layers + 1`` activations, the last being the
        logits ``(B, 1, H', W')``.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 4, norm: str = "instance",
                 spectral: bool = True, generator: torch.Generator | None = None):
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("ndf", ndf)
        _check_positive("n_layers", n_layers)
        if norm not in ("instance", "none"):
            raise ValueError(f"norm must be 'instance' or 'none', got {norm!r}")
        blocks = [nn.Sequential(_conv(in_channels, ndf, 4, stride=2, padding=2, generator=generator),
                                nn.LeakyReLU(0.2))]
        nf = ndf
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            layers = [_conv(nf_prev, nf, 4, stride=stride, padding=2, sn=spectral, generator=generator)]
            if norm == "instance":
                layers.append(_InstanceNorm())
            layers.append(nn.LeakyReLU(0.2))
            blocks.append(nn.Sequential(*layers))
        blocks.append(nn.Sequential(_conv(nf, 1, 4, stride=1, padding=2, generator=generator)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` :class:`PatchDiscriminator` s; scale ``i`` sees the input average-pooled ``i`` times
    (3x3, stride 2, padding 1, padding not counted), as in pix2pixHD/SPADE.

    Args:
        n_classes: label classes (the input is ``cat([one-hot label, image])``).
        image_channels: 3.
        ndf, n_layers, norm, spectral: of each PatchGAN.
        num_D: number of scales (reference 2).

    Shapes:
        ``forward(label (B, n_classes, H, W), image (B, 3, H, W))`` or ``forward(x)`` with the
        concatenation -> ``list[num_D]`` of ``list[n_layers + 1]`` activations; ``out[i][-1]`` are
        the logits of scale ``i``.
    """

    def __init__(self, n_classes: int, image_channels: int = 3, ndf: int = 64, n_layers: int = 4,
                 num_D: int = 2, norm: str = "instance", spectral: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        _check_positive("num_D", num_D)
        self.in_channels = n_classes + image_channels
        self.scales = nn.ModuleList([
            PatchDiscriminator(self.in_channels, ndf, n_layers, norm, spectral, generator) for _ in range(num_D)
        ])

    def forward(self, label: torch.Tensor, image: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
        x = label if image is None else torch.cat([label, image], dim=1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"discriminator input must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


def to_channels_last(module: nn.Module) -> nn.Module:
    """Convert ``module`` to channels-last layout (in place), except spectral-norm weights.

    oneDNN convolutions run faster on channels-last activations. Spectral-norm weights stay
    contiguous: their power iteration flattens them to ``(out, in * k * k)`` every forward, a copy
    for a channels-last weight, while the convolution reorders weights anyway.
    """
    module.to(memory_format=torch.channels_last)
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            orig = m.parametrizations.weight.original
            orig.data = orig.data.contiguous()
    return module


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (spectral-norm originals counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
