import math

import pytest
import torch

from histolib.errors import ParamError
from histolib.models.dcgan import DCGANDiscriminator, DCGANGenerator
from histolib.models.inpainting import AOTBlock, InpaintGenerator, PatchDiscriminator, SelfAttention, aot_gate


def test_aot_gate_by_hand():
    f = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    sd = math.sqrt(0.5)  # unbiased std of (0, 1)
    expected = [1 / (1 + math.exp(-5 * (2 * (v - 0.5) / sd - 1))) for v in (0.0, 1.0)]
    torch.testing.assert_close(aot_gate(f).flatten(), torch.tensor(expected), rtol=1e-5, atol=1e-7)


def test_aot_block_keeps_shape_and_gates_the_residual():
    torch.manual_seed(0)
    blk = AOTBlock(8, rates=(1, 2, 4, 8))
    x = torch.randn(2, 8, 12, 12)
    assert blk(x).shape == x.shape
    # a constant gate pre-activation: mu = f, sd = eps -> g = sigmoid(-5) everywhere
    torch.nn.init.zeros_(blk.gate.weight)
    torch.nn.init.zeros_(blk.gate.bias)
    g = 1 / (1 + math.exp(5))
    merged = blk.fuse(torch.nn.functional.pad(torch.cat(
        [torch.relu(c(torch.nn.functional.pad(x, (r,) * 4, mode="reflect" if r < 12 else "replicate")))
         for c, r in zip(blk.branches, blk.rates, strict=True)], 1), (1, 1, 1, 1), mode="reflect"))
    torch.testing.assert_close(blk(x), x * (1 - g) + merged * g, rtol=1e-4, atol=1e-5)
    with pytest.raises(ParamError):
        AOTBlock(6, rates=(1, 2, 4, 8))


def test_self_attention_starts_as_identity():
    sa = SelfAttention(16)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(sa(x), x)
    with torch.no_grad():
        sa.gamma.fill_(1.0)
    assert sa(x).shape == x.shape and not torch.allclose(sa(x), x)


@pytest.mark.parametrize("size", [16, 32])
def test_generator_shape_and_range(size):
    torch.manual_seed(0)
    g = InpaintGenerator(ngf=4, n_blocks=2)
    y = g(torch.randn(2, 4, size, size))
    assert y.shape == (2, 3, size, size) and y.abs().max() <= 1
    assert isinstance(g.attention, SelfAttention)
    with pytest.raises(ParamError):
        g(torch.randn(1, 3, size, size))
    with pytest.raises(ParamError):
        g(torch.randn(1, 4, size + 2, size + 2))


@pytest.mark.parametrize("size,n_down", [(32, 3), (64, 4), (256, 6)])
def test_discriminator_patch_map_is_4x4(size, n_down):
    d = PatchDiscriminator(size, ndf=2, n_layers=6)
    assert d.n_down == n_down
    assert d(torch.randn(2, 3, size, size)).shape == (2, 1, 4, 4)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(c.kernel_size == (4, 4) for c in convs)
    assert [c.out_channels for c in convs] == [2, 4, 8, 16, 16, 1]


def test_dcgan_shapes():
    g, d = DCGANGenerator(32, z_dim=8, ngf=4), DCGANDiscriminator(32, ndf=4)
    x = g(torch.randn(3, 8))
    assert x.shape == (3, 1, 32, 32) and x.abs().max() <= 1
    assert d(x).shape == (3,)
    with pytest.raises(ParamError):
        DCGANGenerator(48)
