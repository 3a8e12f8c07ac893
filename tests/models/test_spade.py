import pytest
import torch
import torch.nn.functional as F

from histolib.models.spade import (
    SPADE,
    MultiscaleDiscriminator,
    SPADEGenerator,
    SPADEResBlock,
    count_parameters,
    init_weights,
    one_hot,
    to_channels_last,
)


def _labels(n_classes, b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return one_hot(torch.randint(0, n_classes, (b, size, size), generator=g), n_classes)


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("fin,fout", [(8, 8), (8, 4)])
def test_resblock_keeps_spatial_shape_for_2_and_4_class_maps(n_classes, fin, fout):
    block = SPADEResBlock(fin, fout, n_classes, hidden=8, norm="instance")
    x = torch.randn(2, fin, 16, 16)
    out = block(x, _labels(n_classes, size=32))  # label map resized inside
    assert out.shape == (2, fout, 16, 16)
    assert block.learned_shortcut == (fin != fout)


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_generator_output_shape_and_range(n_classes, norm):
    G = SPADEGenerator(n_classes, ngf=2, image_size=32, z_dim=4, norm=norm, spade_hidden=8)
    out = G(_labels(n_classes, b=3), torch.randn(3, 4))
    assert out.shape == (3, 3, 32, 32)
    assert out.abs().max() <= 1.0
    assert G(_labels(n_classes, b=3)).shape == (3, 3, 32, 32)  # z=None: zero noise


def test_generator_depends_on_noise_and_label_map():
    G = SPADEGenerator(2, ngf=2, image_size=32, z_dim=4, norm="instance", spade_hidden=8,
                       generator=torch.Generator().manual_seed(0))
    lab = _labels(2)
    z = torch.randn(2, 4)
    base = G(lab, z)
    assert not torch.allclose(base, G(lab, z + 1.0))
    assert not torch.allclose(base, G(_labels(2, seed=1), z))


def test_generator_is_deterministic_for_a_seed():
    def make():
        return SPADEGenerator(4, ngf=2, image_size=32, z_dim=3, spade_hidden=8, norm="instance",
                              generator=torch.Generator().manual_seed(7))

    lab, z = _labels(4), torch.randn(2, 3)
    assert torch.equal(make()(lab, z), make()(lab, z))


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        SPADEGenerator(2, image_size=48)
    with pytest.raises(ValueError, match="n_classes"):
        SPADEGenerator(1, image_size=32)
    G = SPADEGenerator(2, ngf=2, image_size=32, z_dim=4, spade_hidden=8)
    with pytest.raises(ValueError, match="one-hot"):
        G(_labels(4))
    with pytest.raises(ValueError, match="z must be"):
        G(_labels(2), torch.randn(2, 5))


def test_spade_layer_is_the_modulated_normalisation():
    spade = SPADE(3, 2, hidden=4, norm="instance")
    with torch.no_grad():
        for conv, value in ((spade.mlp_gamma, 0.5), (spade.mlp_beta, -2.0)):
            conv.weight.zero_()
            conv.bias.fill_(value)
    x = torch.randn(2, 3, 8, 8)
    expected = F.instance_norm(x) * 1.5 - 2.0
    torch.testing.assert_close(spade(x, _labels(2, size=8)), expected, atol=1e-5, rtol=1e-5)


def test_multiscale_discriminator_returns_features_of_every_scale():
    D = MultiscaleDiscriminator(4, ndf=4, n_layers=4, num_D=2)
    out = D(_labels(4, b=2, size=64), torch.randn(2, 3, 64, 64))
    assert len(out) == 2 and all(len(scale) == 5 for scale in out)
    assert out[0][-1].shape == (2, 1, 11, 11)   # pad 2, k4: 64 -> 33 -> 17 -> 9 -> 10 -> 11
    assert out[1][-1].shape == (2, 1, 7, 7)     # input average-pooled to 32
    with pytest.raises(ValueError, match="discriminator input"):
        D(torch.randn(2, 5, 64, 64))


def test_spectral_norm_bounds_the_largest_singular_value():
    D = MultiscaleDiscriminator(2, ndf=4, n_layers=3, num_D=1, generator=torch.Generator().manual_seed(0))
    conv = D.scales[0].blocks[1][0]
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(50.0)
        for _ in range(30):  # power iterations run in training-mode forwards
            D(torch.randn(1, 5, 32, 32))
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert abs(float(sigma) - 1.0) < 1e-3


def test_one_hot_names_out_of_range_labels():
    assert one_hot(torch.tensor([[[0, 3]]]), 4)[0, :, 0, 1].tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match=r"\[0, 4\].*n_classes is 4"):
        one_hot(torch.tensor([[[0, 4]]]), 4)
    with pytest.raises(ValueError, match="integer"):
        one_hot(torch.zeros(1, 2, 2), 2)


def test_channels_last_and_reinit_keep_the_function():
    G = SPADEGenerator(2, ngf=2, image_size=32, z_dim=2, spade_hidden=8, norm="instance")
    lab, z = _labels(2), torch.randn(2, 2)
    G.eval()
    before = G(lab, z)
    to_channels_last(G)
    torch.testing.assert_close(G(lab, z), before, atol=1e-5, rtol=1e-4)
    n = count_parameters(G)
    init_weights(G, torch.Generator().manual_seed(1))
    assert count_parameters(G) == n
    assert not torch.allclose(G(lab, z), before)
