import pytest
import torch

from histolib.models import adain as A


def _model(width=0.125, seed=0):
    enc, info = A.vgg19_relu4_1(None, width=width, generator=torch.Generator().manual_seed(seed))
    return A.AdaINStyleTransfer(enc, width=width), info


def test_adain_transfers_channel_mean_and_std():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(2, 5, 8, 8, generator=g) * 3 + 1
    style = torch.randn(2, 5, 6, 6, generator=g) * 0.5 - 2
    out = A.adain(content, style)
    mu_o, sd_o = A.mean_std(out)
    mu_s, sd_s = A.mean_std(style)
    torch.testing.assert_close(mu_o, mu_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sd_o, sd_s, atol=1e-3, rtol=1e-3)


def test_random_init_encoder_is_recorded_frozen_and_seeded():
    enc, info = A.vgg19_relu4_1(None, width=0.25, generator=torch.Generator().manual_seed(1))
    enc2, _ = A.vgg19_relu4_1("/no/such/file.pt", width=0.25, generator=torch.Generator().manual_seed(1))
    assert info.kind == "vgg19-random-init" and info.weights_path is None and info.channels == 128
    assert all(not p.requires_grad for p in enc.parameters())
    pairs = zip(enc.state_dict().values(), enc2.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    taps = enc(torch.rand(1, 3, 32, 32))
    assert [t.shape[1:] for t in taps] == [(16, 32, 32), (32, 16, 16), (64, 8, 8), (128, 4, 4)]


def test_local_weights_are_loaded_when_present(tmp_path):
    src = A.VGGEncoder(1.0)
    state = {f"features.{k}": v for k, v in src.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1)  # a whole-model state dict is fine too
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    enc, info = A.vgg19_relu4_1(str(path))
    assert info.kind == "vgg19-imagenet-local" and info.weights_path == str(path)
    assert torch.equal(enc.features[0].weight, src.features[0].weight)
    with pytest.raises(ValueError, match="width"):
        A.vgg19_relu4_1(str(path), width=0.5)
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="VGG19"):
        A.vgg19_relu4_1(str(tmp_path / "bad.pth"))


def test_output_keeps_the_mask_size_and_range():
    model, _ = _model()
    mask = torch.zeros(1, 30, 45, dtype=torch.long)
    mask[0, 5:12, 8:20] = 3
    out = model(A.flatten_mask(mask), torch.rand(1, 3, 40, 40))
    assert out.shape == (1, 3, 30, 45) and out.min() >= 0 and out.max() <= 1


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model, _ = _model(width=0.125)
    g = torch.Generator().manual_seed(2)
    content = A.flatten_mask((torch.rand(2, 32, 32, generator=g) > 0.7).long())
    style = torch.rand(2, 3, 32, 32, generator=g) * 0.3 + torch.tensor([0.7, 0.3, 0.6]).view(1, 3, 1, 1)
    opt = torch.optim.Adam(model.decoder.parameters(), lr=1e-3)
    model.train()
    first = None
    for _ in range(8):
        loss = model.losses(content, style)
        first = first if first is not None else float(loss["total"].detach())
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
    assert float(model.losses(content, style)["total"].detach()) < first
    assert all(p.grad is None for p in model.encoder.parameters())
    with pytest.raises(ValueError, match="multiple of 8"):
        model.losses(content[..., :30], style)


def test_mismatched_decoder_width_is_refused():
    enc, _ = A.vgg19_relu4_1(None, width=0.25)
    with pytest.raises(ValueError, match="width"):
        A.AdaINStyleTransfer(enc, width=0.5)


def test_flatten_mask_and_style_selection():
    m = torch.tensor([[0, 3], [7, 0]])
    f = A.flatten_mask(m)
    assert f.shape == (1, 3, 2, 2)
    torch.testing.assert_close(f[0, 1], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(A.flatten_mask(m, invert=True), 1 - f)
    assert A.select_style_by_count(10, [3, 9, 20]) == 1
    picks = {A.select_style_by_count(5, [4, 6, 30], torch.Generator().manual_seed(s)) for s in range(20)}
    assert picks == {0, 1}
    with pytest.raises(ValueError, match="empty"):
        A.select_style_by_count(1, [])


def test_nuclei_are_dark_reads_the_polarity_of_real_images():
    import numpy as np

    inst = np.zeros((1, 4, 4), np.int32)
    inst[0, 1:3, 1:3] = 1
    he = np.full((1, 4, 4, 3), 220, np.uint8)
    he[inst > 0] = (90, 40, 140)
    assert A.nuclei_are_dark(he, inst)
    assert not A.nuclei_are_dark(255 - he, inst)  # fluorescence-like: bright nuclei
    assert not A.nuclei_are_dark(he, np.zeros_like(inst))


@pytest.mark.parametrize("depth", [2, 3])
def test_shallower_substitute_encoder_and_mirrored_decoder(depth):
    enc, info = A.vgg19_relu4_1(None, width=0.125, depth=depth)
    assert info.depth == depth and info.to_dict()["layer"] == f"relu{depth}_1"
    taps = enc(torch.rand(1, 3, 16, 16))
    assert len(taps) == depth and taps[-1].shape[-1] == 16 // 2 ** (depth - 1)
    model = A.AdaINStyleTransfer(enc, width=0.125)
    assert model(torch.rand(1, 3, 13, 10), torch.rand(1, 3, 8, 8)).shape == (1, 3, 13, 10)
    assert set(model.losses(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))) == {"content", "style", "total"}
    with pytest.raises(ValueError, match="depth"):
        A.vgg19_relu4_1(None, depth=5)
