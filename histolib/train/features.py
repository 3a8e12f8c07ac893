"""Offline feature networks for KID, diversity and perceptual losses (DESIGN.md sections 6 and 7).

Nothing is downloaded. :func:`load_feature_net` returns, in order of preference:

1. ``vgg19``: torchvision's VGG19 with ImageNet weights read from a local file (a path the user
   gives, or ``vgg19-dcbb9e9d.pth`` in the torch hub cache);
2. ``inception``: torchvision's Inception-v3 from a local file (``inception_v3_google-0cc3c7bd.pth``),
   for KID only (pool features, 2048-d);
3. ``encoder``: the recorded substitute: a small convolutional autoencoder trained inside the
   pipeline on the real training patches (L1 reconstruction, a few hundred steps: seconds on CPU);
4. ``random``: the same encoder with random weights (Gram/style statistics of random networks
   still carry texture information, Ustyuzhaninov et al. 2016).

Every :class:`FeatureNet` carries ``backbone``, a string saying which of these was used and where
its weights came from; write it beside every number computed with it.

Shapes: images are ``(B, 3, H, W)`` float in ``[-1, 1]`` or ``(N, H, W, 3)`` uint8.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VGG19_FILE = "vgg19-dcbb9e9d.pth"
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
KINDS = ("auto", "vgg19", "inception", "encoder", "random")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureNet(nn.Module):
    """A frozen feature extractor: a list of stages, each a module applied to the previous output.

    ``forward(x)`` returns every stage's activation (for perceptual losses); :meth:`embed` returns
    one vector per image: the channel means and standard deviations of every stage, concatenated
    (first and second moments of the activations: colour and texture statistics), or the pooled
    features for Inception.

    Attributes:
        backbone: which network and weights (e.g. ``"encoder (autoencoder trained 300 steps on 600
            real patches)"``).
        kind: ``vgg19``, ``inception``, ``encoder`` or ``random``.
        layer_weights: default per-stage weights of a perceptual loss.
    """

    def __init__(self, stages: list[nn.Module], kind: str, backbone: str, layer_weights: tuple[float, ...],
                 imagenet_norm: bool = False, input_size: int | None = None):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.kind, self.backbone = kind, backbone
        self.layer_weights = tuple(layer_weights)
        self.imagenet_norm = imagenet_norm
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureNet:  # always frozen, always eval
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
        if self.imagenet_norm:
            x = ((x + 1) / 2 - self.mean) / self.std
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self._prepare(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[-1, 1]`` -> ``(B, D)`` float32."""
        feats = self.forward(x)
        if self.kind == "inception":
            return feats[-1].flatten(1)
        out = []
        for f in feats:
            std, mean = torch.std_mean(f.flatten(2), dim=2, correction=0)
            out += [mean, std]
        return torch.cat(out, dim=1)


def images_to_tensor(images) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 array -> ``(N, 3, H, W)`` float32 in ``[-1, 1]``; float tensors pass through."""
    if isinstance(images, torch.Tensor) and images.dtype.is_floating_point:
        return images
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8 or (N, 3, H, W) float, got {arr.shape} {arr.dtype}")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@torch.no_grad()
def extract_features(net: FeatureNet, images, batch_size: int = 64) -> np.ndarray:
    """Embed images in batches.

    Args:
        net: a :class:`FeatureNet`.
        images: ``(N, H, W, 3)`` uint8 or ``(N, 3, H, W)`` float in ``[-1, 1]``.
        batch_size: images per forward.

    Returns:
        ``(N, D)`` float64 array; ``(0, D)`` for empty input.
    """
    x = images_to_tensor(images)
    if len(x) == 0:
        dim = net.embed(torch.zeros(1, 3, *x.shape[-2:])).shape[1] if x.dim() == 4 else 0
        return np.zeros((0, dim))
    out = [net.embed(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy()


# --------------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------------

def _hub_file(name: str) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def _load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"cannot read weights file {path}: {e}") from e


def vgg19_net(weights: str | os.PathLike) -> FeatureNet:
    """VGG19 cut at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (the SPADE/pix2pixHD perceptual
    layers, weights ``1/32, 1/16, 1/8, 1/4, 1``), with ImageNet weights from a local file."""
    from torchvision.models import vgg19

    path = Path(weights)
    model = vgg19(weights=None)
    model.load_state_dict(_load_state(path))
    layers = model.features
    cuts = [(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)]
    stages = [nn.Sequential(*[layers[i] for i in range(a, b)]) for a, b in cuts]
    return FeatureNet(stages, "vgg19", f"vgg19 (ImageNet weights, local file {path})",
                      (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0), imagenet_norm=True)


def inception_net(weights: str | os.PathLike) -> FeatureNet:
    """Inception-v3 pool features (2048-d) at 299 px from a local torchvision weights file; KID only."""
    from torchvision.models import inception_v3

    path = Path(weights)
    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    model.load_state_dict(_load_state(path))
    body = nn.Sequential(
        model.Conv2d_1a_3x3, model.Conv2d_2a_3x3, model.Conv2d_2b_3x3, model.maxpool1,
        model.Conv2d_3b_1x1, model.Conv2d_4a_3x3, model.maxpool2,
        model.Mixed_5b, model.Mixed_5c, model.Mixed_5d, model.Mixed_6a, model.Mixed_6b, model.Mixed_6c,
        model.Mixed_6d, model.Mixed_6e, model.Mixed_7a, model.Mixed_7b, model.Mixed_7c, model.avgpool,
    )
    return FeatureNet([body], "inception", f"inception-v3 (ImageNet weights, local file {path})", (1.0,),
                      imagenet_norm=True, input_size=299)


def _encoder_stages(widths: tuple[int, ...], generator: torch.Generator) -> list[nn.Module]:
    stages, cin = [], 3
    for w in widths:
        conv_a = nn.Conv2d(cin, w, 3, padding=1)
        conv_b = nn.Conv2d(w, w, 4, stride=2, padding=1)
        for conv in (conv_a, conv_b):
            nn.init.kaiming_normal_(conv.weight, a=0.2, generator=generator)
            nn.init.zeros_(conv.bias)
        stages.append(nn.Sequential(conv_a, nn.LeakyReLU(0.2), conv_b, nn.LeakyReLU(0.2)))
        cin = w
    return stages


class _Decoder(nn.Module):
    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        layers = []
        rev = list(widths[::-1]) + [widths[0]]
        for a, b in zip(rev[:-1], rev[1:], strict=True):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[0], 3, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def random_net(seed: int = 0, widths: tuple[int, ...] = (16, 32, 64, 128)) -> FeatureNet:
    """The substitute encoder with random (Kaiming) weights drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return FeatureNet(_encoder_stages(widths, g), "random", f"random-init encoder (seed {seed}, widths {widths})",
                      _geometric_weights(len(widths)))


def _geometric_weights(n: int) -> tuple[float, ...]:
    # the same progression as the reference VGG weights (deeper layers weigh more, x2 per stage)
    return tuple(2.0 ** (i - n + 1) for i in range(n))


def encoder_net(images, seed: int = 0, steps: int = 300, batch_size: int = 16, lr: float = 2e-3,
                widths: tuple[int, ...] = (16, 32, 64, 128), progress: bool = False) -> FeatureNet:
    """Train the substitute encoder as an autoencoder on real patches (L1 reconstruction).

    Args:
        images: ``(N, H, W, 3)`` uint8 real patches (``H``, ``W`` divisible by ``2 ** len(widths)``).
        seed: seed of the weights and of the batch order.
        steps: Adam steps (300 take about 10-15 s at 64 px on two cores: ~0.03 GFLOP per image and
            step at the default widths).
        batch_size: patches per step; random flips and 90-degree rotations as augmentation.
        lr: Adam learning rate.
        widths: channels of the four stride-2 stages (small on purpose: the substitute must train in
            seconds inside the pipeline).

    Returns:
        The frozen encoder; ``backbone`` records steps, patch count and the final L1.
    """
    x = images_to_tensor(images)
    if len(x) == 0:
        raise ValueError("encoder_net needs at least one training image, got an empty set")
    h, w = x.shape[-2:]
    if h % 2 ** len(widths) or w % 2 ** len(widths):
        raise ValueError(f"image size {h}x{w} must be divisible by {2 ** len(widths)}")
    g = torch.Generator().manual_seed(seed)
    stages = _encoder_stages(widths, g)
    encoder = nn.Sequential(*stages)
    decoder = _Decoder(widths)
    for m in decoder.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.2, generator=g)
            nn.init.zeros_(m.bias)
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    start, loss = time.perf_counter(), torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=g)
        batch = x[idx]
        k = int(torch.randint(4, (1,), generator=g))
        batch = torch.rot90(batch, k, dims=(2, 3))
        if torch.rand(1, generator=g) < 0.5:
            batch = batch.flip(3)
        loss = (decoder(encoder(batch)) - batch).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    secs = time.perf_counter() - start
    desc = (f"encoder (autoencoder trained in-pipeline: {steps} steps on {len(x)} real patches, "
            f"final L1 {float(loss.detach()):.4f}, {secs:.0f} s; seed {seed})")
    return FeatureNet(list(encoder), "encoder", desc, _geometric_weights(len(widths)))


def load_feature_net(kind: str = "auto", weights: str | os.PathLike | None = None, images=None,
                     seed: int = 0, steps: int = 300, purpose: str = "kid") -> FeatureNet:
    """The feature network to use, never downloading.

    Args:
        kind: ``"auto"`` (best available, see the module docstring), or one of ``vgg19``,
            ``inception``, ``encoder``, ``random``.
        weights: local weights file for ``vgg19`` / ``inception`` (``auto`` infers the network from
            the file name; default: the torch hub cache).
        images: real ``(N, H, W, 3)`` uint8 patches, needed to train the ``encoder`` substitute.
        seed: seed of the substitute.
        steps: training steps of the substitute.
        purpose: ``"kid"`` or ``"perceptual"`` (Inception is not offered for perceptual losses).

    Returns:
        A frozen :class:`FeatureNet`; read ``.backbone`` to know which one it is.

    Raises:
        ValueError: unknown ``kind``; ``vgg19``/``inception`` asked for without a readable local
            file; ``encoder`` without images.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if purpose not in ("kid", "perceptual"):
        raise ValueError(f"purpose must be 'kid' or 'perceptual', got {purpose!r}")
    if weights is not None and not Path(weights).is_file():
        raise ValueError(f"weights file {weights} does not exist (no download is attempted)")
    if kind == "auto":
        if weights is not None:
            kind = "inception" if "inception" in Path(weights).name.lower() else "vgg19"
        elif _hub_file(VGG19_FILE):
            kind = "vgg19"
        elif purpose == "kid" and _hub_file(INCEPTION_FILE):
            kind = "inception"
        else:
            kind = "encoder" if images is not None else "random"
    if kind == "inception" and purpose == "perceptual":
        raise ValueError("inception features are for KID only; use vgg19, encoder or random for a perceptual loss")
    if kind in ("vgg19", "inception"):
        path = weights or _hub_file(VGG19_FILE if kind == "vgg19" else INCEPTION_FILE)
        if path is None:
            raise ValueError(f"no local {kind} weights: pass weights=<file> or put "
                             f"{VGG19_FILE if kind == 'vgg19' else INCEPTION_FILE} in "
                             f"{Path(torch.hub.get_dir()) / 'checkpoints'} (nothing is downloaded)")
        return vgg19_net(path) if kind == "vgg19" else inception_net(path)
    if kind == "encoder":
        if images is None:
            raise ValueError("kind 'encoder' needs the real training patches (images=...)")
        return encoder_net(images, seed=seed, steps=steps)
    return random_net(seed)
