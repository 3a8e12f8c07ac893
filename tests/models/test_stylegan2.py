import math

import pytest
import torch
import torch.nn.functional as F

from histolib.models.stylegan2 import (
    Discriminator,
    EqualConv2d,
    EqualLinear,
    Generator,
    channels_for,
    minibatch_stddev,
    modulated_conv2d,
    normalize_2nd_moment,
)


def _direct_modconv(x, weight, styles, demodulate):
    """Per-sample loop: scale the kernel by the style, normalise each output filter, convolve."""
    out = []
    for n in range(x.shape[0]):
        w = weight * styles[n][None, :, None, None]
        if demodulate:
            w = w / torch.sqrt((w ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        out.append(F.conv2d(x[n:n + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(out)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_matches_a_direct_per_sample_computation(fused, demodulate):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    styles = torch.randn(3, 4, generator=g, dtype=torch.float64)
    got = modulated_conv2d(x, weight, styles, demodulate=demodulate, fused=fused)
    assert got.shape == (3, 2, 5, 5)
    torch.testing.assert_close(got, _direct_modconv(x, weight, styles, demodulate))


def test_modulated_conv_hand_case_one_pixel():
    # 1x1 kernel, one output channel: y = sum_i s_i w_i x_i / sqrt(sum_i (s_i w_i)^2)
    x = torch.tensor([[1.0, 2.0]]).reshape(1, 2, 1, 1)
    w = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1)
    s = torch.tensor([[1.0, 0.5]])
    y = modulated_conv2d(x, w, s, demodulate=True)
    expected = (1 * 3 * 1 + 0.5 * 4 * 2) / math.sqrt(3.0 ** 2 + 2.0 ** 2)
    assert float(y) == pytest.approx(expected, rel=1e-6)
    assert float(modulated_conv2d(x, w, s, demodulate=False)) == pytest.approx(7.0)


def test_demodulation_gives_unit_output_variance_per_channel():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 32, 40, 40, generator=g)  # unit variance, independent
    weight = torch.randn(6, 32, 3, 3, generator=g) * torch.linspace(0.1, 5.0, 6)[:, None, None, None]
    styles = torch.rand(4, 32, generator=g) * 3 + 0.1  # far from unit scales
    y = modulated_conv2d(x, weight, styles, demodulate=True)[:, :, 1:-1, 1:-1]  # away from the zero padding
    var = y.var(dim=(2, 3))  # per sample and output channel
    assert torch.allclose(var, torch.ones_like(var), atol=0.12), var
    # without demodulation the variances follow the kernel scales instead
    y0 = modulated_conv2d(x, weight, styles, demodulate=False)[:, :, 1:-1, 1:-1]
    assert y0.var(dim=(2, 3)).max() > 10


def test_equal_linear_keeps_unit_scale_and_applies_lr_multiplier():
    torch.manual_seed(0)
    layer = EqualLinear(256, 256, lr_multiplier=0.01)
    assert float(layer.weight.detach().std()) == pytest.approx(100, rel=0.05)  # stored N(0, 1) / lr_mul
    with torch.no_grad():
        y = layer(torch.randn(512, 256))
    assert float(y.std()) == pytest.approx(1.0, rel=0.1)


def test_normalize_2nd_moment_hand_case():
    z = torch.tensor([[3.0, 4.0]])
    # mean square 12.5 -> z / sqrt(12.5)
    torch.testing.assert_close(normalize_2nd_moment(z), z / math.sqrt(12.5 + 1e-8))


def test_downsampling_conv_halves_and_blur_keeps_constants():
    conv = EqualConv2d(2, 3, 3, bias=False, down=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1, 1] = math.sqrt(2 * 9)  # identity-like centre tap (gain 1/sqrt(2*9) cancels)
    x = torch.ones(1, 2, 8, 8)
    y = conv(x)
    assert y.shape == (1, 3, 4, 4)
    assert torch.allclose(y[:, :, 1:-1, 1:-1], torch.full_like(y[:, :, 1:-1, 1:-1], 2.0))  # sum of 2 channels


def test_minibatch_stddev_hand_cases():
    x = torch.tensor([1.0, 3.0]).reshape(2, 1, 1, 1)  # one group of two: population std 1
    y = minibatch_stddev(x, group_size=4)
    assert y.shape == (2, 2, 1, 1)
    torch.testing.assert_close(y[:, 1].flatten(), torch.ones(2), rtol=0, atol=1e-6)
    # N = 4, G = 2: groups are {0, 2} and {1, 3}; two pixels each
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0], [2.0, 4.0], [5.0, 5.0]]).reshape(4, 1, 1, 2)
    y = minibatch_stddev(x, group_size=2)
    assert y.shape == (4, 2, 1, 2)
    # group {0, 2}: pixel stds 1 and 2 -> mean 1.5; group {1, 3}: 0 (sqrt(1e-8))
    expected = torch.tensor([1.5, 1e-4, 1.5, 1e-4])
    torch.testing.assert_close(y[:, 1, 0, 0], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y[:, 1, 0, 1], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        minibatch_stddev(torch.zeros(6, 1, 2, 2), group_size=4)


def _tiny_G(**kw):
    torch.manual_seed(0)
    args = dict(z_dim=8, w_dim=8, resolution=64, channel_base=128, channel_max=8, mapping_layers=2)
    args.update(kw)
    return Generator(**args)


def test_channels_rule():
    assert channels_for(64, 4096, 64) == {4: 64, 8: 64, 16: 64, 32: 64, 64: 64}
    assert channels_for(64, 1024, 32) == {4: 32, 8: 32, 16: 32, 32: 32, 64: 16}
    with pytest.raises(ValueError):
        channels_for(48, 1024, 32)


def test_return_features_shapes_and_count():
    G = _tiny_G()
    assert G.num_ws == 10  # 2 log2(64) - 2, as StyleGAN2
    z = torch.randn(2, 8)
    img, feats = G(z, return_features=True)
    assert img.shape == (2, 3, 64, 64)
    assert [tuple(f.shape) for f in feats] == [(2, c, r, r) for r, c in zip(G.block_resolutions, G.block_channels,
                                                                              strict=True)]
    assert len(feats) == 5 and G.block_resolutions == [4, 8, 16, 32, 64]
    img2, layers = G(z, return_features="layers")
    assert len(layers) == 9 and torch.equal(img, img2)
    assert torch.equal(layers[-1], feats[-1])  # a block's output is its last convolution's output
    assert torch.equal(G(z), img)


def test_truncation_psi_zero_gives_w_avg_and_w_avg_tracks_the_mean():
    G = _tiny_G()
    z = torch.randn(5, 8)
    with torch.no_grad():
        G.mapping_net.w_avg.copy_(torch.arange(8.0))
    ws = G.mapping(z, truncation_psi=0.0)
    assert ws.shape == (5, G.num_ws, 8)
    torch.testing.assert_close(ws, torch.arange(8.0).expand(5, G.num_ws, 8))
    w = G.mapping(z)[:, 0]
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.5)[:, 0], torch.arange(8.0) + 0.5 * (w - torch.arange(8.0)))
    before = G.w_avg.clone()
    G.mapping(z, update_w_avg=True)
    torch.testing.assert_close(G.w_avg, before + (1 - 0.995) * (w.mean(0) - before))


def test_noise_modes():
    G = _tiny_G()
    for m in G.modules():
        if hasattr(m, "noise_strength"):
            m.noise_strength.data.fill_(0.5)
    z = torch.randn(2, 8)
    a, b = G(z, noise_mode="const"), G(z, noise_mode="const")
    assert torch.equal(a, b)
    r1 = G(z, noise_mode="random", generator=torch.Generator().manual_seed(0))
    r2 = G(z, noise_mode="random", generator=torch.Generator().manual_seed(0))
    assert torch.equal(r1, r2) and not torch.allclose(r1, a)
    assert not torch.allclose(G(z, noise_mode="none"), a)
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="fixed")


def test_fused_and_unfused_synthesis_agree():
    G = _tiny_G()
    z = torch.randn(3, 8)
    with torch.no_grad():
        fused = G(z)  # no grad: grouped kernels
    unfused = G(z)  # grad enabled: scale-convolve-scale
    torch.testing.assert_close(fused, unfused.detach(), rtol=1e-4, atol=1e-5)


def test_discriminator_shapes_and_input_check():
    torch.manual_seed(0)
    D = Discriminator(64, channel_base=128, channel_max=8, mbstd_group=4)
    assert D(torch.randn(8, 3, 64, 64)).shape == (8, 1)
    assert D(torch.randn(2, 3, 64, 64)).shape == (2, 1)  # group shrinks to the batch
    with pytest.raises(ValueError, match="64"):
        D(torch.randn(2, 3, 32, 32))
    # one optimisation step on a fixed batch lowers a logistic loss
    x, y = torch.randn(8, 3, 64, 64), torch.tensor([1.0, 0.0] * 4)[:, None]
    opt = torch.optim.Adam(D.parameters(), 1e-3)
    loss0 = F.binary_cross_entropy_with_logits(D(x), y)
    opt.zero_grad()
    loss0.backward()
    opt.step()
    assert float(F.binary_cross_entropy_with_logits(D(x), y)) < float(loss0)
