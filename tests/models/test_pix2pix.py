"""Pix2Pix generator and discriminators (seed 001, appendix Tables 1 and 2): shapes, dropout, sizes."""

import pytest
import torch

from histolib.errors import ParamError
from histolib.models.pix2pix import (
    Pix2PixDiscriminator,
    Pix2PixGenerator,
    _up_conv,
    count_parameters,
    dropout_with_generator,
)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("kernel_size", [4, 5])
def test_generator_keeps_shape_and_range(size, kernel_size):
    g = Pix2PixGenerator(in_channels=2, size=size, width=4, kernel_size=kernel_size,
                         generator=torch.Generator().manual_seed(0))
    assert g.depth == {32: 5, 64: 6}[size]  # down to 1x1
    x = torch.randint(0, 2, (2, 2, size, size)).float() * 2 - 1
    y = g(x, torch.Generator().manual_seed(1))
    assert y.shape == (2, 3, size, size)
    assert y.abs().max() < 1  # tanh


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("head", ["linear", "patch"])
def test_discriminators_keep_shape(size, head):
    image = torch.rand(3, 3, size, size) * 2 - 1
    cond = torch.rand(3, 2, size, size) * 2 - 1
    d_uncond = Pix2PixDiscriminator(condition_channels=0, size=size, width=4, head=head)
    d_cond = Pix2PixDiscriminator(condition_channels=2, size=size, width=4, head=head)
    out_u, out_c = d_uncond(image), d_cond(image, cond)
    if head == "linear":
        assert out_u.shape == out_c.shape == (3, 1)
    else:  # k=4 stride-1 convs trim one pixel each: size/8 - 2
        assert out_u.shape == out_c.shape == (3, 1, size // 8 - 2, size // 8 - 2)
    assert not d_uncond.conditional and d_cond.conditional


def test_discriminator_condition_checks():
    d_cond = Pix2PixDiscriminator(condition_channels=2, size=32, width=4)
    d_uncond = Pix2PixDiscriminator(size=32, width=4)
    image = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ParamError, match="condition"):
        d_cond(image)
    with pytest.raises(ParamError, match="unconditional"):
        d_uncond(image, torch.zeros(1, 2, 32, 32))
    with pytest.raises(ParamError, match="32x32"):
        d_uncond(torch.zeros(1, 3, 64, 64))


def test_conditional_discriminator_depends_on_condition():
    d = Pix2PixDiscriminator(condition_channels=1, size=32, width=4, generator=torch.Generator().manual_seed(0))
    image = torch.rand(1, 3, 32, 32)
    a = d(image, torch.ones(1, 1, 32, 32))
    b = d(image, -torch.ones(1, 1, 32, 32))
    assert not torch.allclose(a, b)


def test_dropout_is_the_randomness_and_follows_the_generator():
    g = Pix2PixGenerator(in_channels=1, size=32, width=4, generator=torch.Generator().manual_seed(0)).eval()
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    a = g(x, torch.Generator().manual_seed(5))
    b = g(x, torch.Generator().manual_seed(5))
    c = g(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)  # reproducible for a seed
    assert not torch.allclose(a, c)  # dropout stays on at inference (Pix2Pix)
    g.dropout_at_inference = False
    assert torch.equal(g(x), g(x))  # deterministic without test-time dropout


def test_dropout_mask_ignores_memory_format():
    x = torch.rand(2, 4, 3, 3)
    a = dropout_with_generator(x, 0.5, torch.Generator().manual_seed(0))
    b = dropout_with_generator(x.contiguous(memory_format=torch.channels_last), 0.5,
                               torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert set(torch.unique(a / x).tolist()) <= {0.0, 2.0}  # inverted dropout scale 1 / (1 - p)


@pytest.mark.parametrize("kernel_size", [4, 5])
@pytest.mark.parametrize("upsample", ["resize", "bilinear"])
def test_resize_upsampling_keeps_shape_and_range_without_transposed_convolutions(kernel_size, upsample):
    g = Pix2PixGenerator(in_channels=1, size=32, width=4, kernel_size=kernel_size, upsample=upsample,
                         generator=torch.Generator().manual_seed(0))
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    y = g(torch.ones(2, 1, 32, 32), torch.Generator().manual_seed(1))
    assert y.shape == (2, 3, 32, 32) and y.abs().max() < 1


def test_resize_upsampling_has_no_checkerboard_where_a_5_tap_transposed_kernel_has_one():
    # a constant input through an all-ones kernel: a stride-2 transposed 5x5 kernel covers even and odd
    # output pixels with 3 and 2 taps per axis (values 9, 6, 4 in the interior); nearest x2 then 3x3: 9 taps
    x = torch.ones(1, 1, 8, 8)
    for mode, expected in (("transpose", {4.0, 6.0, 9.0}), ("resize", {9.0}), ("bilinear", {9.0})):
        up = _up_conv(1, 1, 5, bias=False, upsample=mode)
        for m in up.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.ones_(m.weight)
        with torch.no_grad():
            y = up(x)
        assert y.shape == (1, 1, 16, 16)
        assert set(y[0, 0, 3:-3, 3:-3].unique().tolist()) == expected, mode


def test_bad_arguments_name_themselves():
    with pytest.raises(ParamError, match="size"):
        Pix2PixGenerator(size=48)
    with pytest.raises(ParamError, match="kernel_size"):
        Pix2PixGenerator(size=32, kernel_size=3)
    with pytest.raises(ParamError, match="n_dropout"):
        Pix2PixGenerator(size=8, n_dropout=3)
    with pytest.raises(ParamError, match="upsample"):
        Pix2PixGenerator(size=32, upsample="bicubic")
    g = Pix2PixGenerator(in_channels=2, size=32, width=4)
    with pytest.raises(ParamError, match="x must be"):
        g(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ParamError, match="divisible"):
        g(torch.zeros(1, 2, 48, 48))


def test_layer_sizes_match_the_paper_tables():
    # Tables 1 and 2 of the appendix list per-layer parameters with 5x5 kernels, a bias on every
    # conv and a scale + offset per normalised channel; we drop the bias before a normalisation.
    with torch.device("meta"):
        g = Pix2PixGenerator(in_channels=2, size=256, width=64, kernel_size=5)
        d = Pix2PixDiscriminator(size=256, width=64, kernel_size=5)
    assert g.depth == 8
    assert count_parameters(g.downs[1]) + 128 == 205184  # conv 64 -> 128 at 64x64
    assert count_parameters(g.downs[4]) + 512 == 6555136  # conv 512 -> 512 at 8x8
    assert count_parameters(g.ups[1]) + 512 == 13108736  # deconv 1024 -> 512 at 4x4
    assert count_parameters(g.ups[6]) + 64 == 409792  # deconv 256 -> 64 at 128x128
    assert count_parameters(g.last) == 9603  # deconv 128 -> 3 at 256x256
    body = 4864 + 205184 + 819968 + 3278336 - (128 + 256 + 512)
    assert count_parameters(d) == body + 32 * 32 * 512 + 1  # + the linear layer (printed as 0)
