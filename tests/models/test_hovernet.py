import pytest
import torch

from histolib.models.hovernet import HoVerNet, hovernet_loss, hv_gradients


def test_output_shapes_for_any_input_size():
    model = HoVerNet(width=4, blocks=(1, 1, 1)).eval()
    out = model(torch.randn(2, 3, 30, 37))
    assert out["np"].shape == (2, 2, 30, 37) and out["hv"].shape == (2, 2, 30, 37)
    with pytest.raises(ValueError, match="width"):
        HoVerNet(width=0)


def test_hv_gradients_of_ramps():
    x = torch.arange(12.0).view(1, 1, 1, 12).expand(1, 1, 12, 12)
    hv = torch.cat([x, x.transpose(-1, -2)], dim=1)  # h = x, v = y
    g = hv_gradients(hv)[..., 3:-3, 3:-3]
    # sum over the 5x5 kernel of h * h / (h^2 + v^2) for a unit ramp: the same for both channels
    assert torch.allclose(g[:, 0], g[0, 0, 0, 0].expand_as(g[:, 0]))
    assert g[0, 0, 0, 0] > 0
    torch.testing.assert_close(g[:, 0], g[:, 1])
    flat = hv_gradients(torch.cat([x.transpose(-1, -2), x], dim=1))[..., 3:-3, 3:-3]
    torch.testing.assert_close(flat, torch.zeros_like(flat))  # d/dx of a y-ramp is 0


def test_loss_is_zero_for_a_perfect_prediction_and_positive_otherwise():
    np_t = torch.zeros(1, 8, 8, dtype=torch.long)
    np_t[0, 2:6, 2:6] = 1
    hv_t = torch.zeros(1, 2, 8, 8)
    hv_t[0, 0, 2:6, 2:6] = torch.linspace(-1, 1, 4)
    logits = torch.stack([1 - np_t, np_t], dim=1).float() * 40 - 20
    perfect = hovernet_loss({"np": logits, "hv": hv_t.clone()}, np_t, hv_t)
    assert perfect["ce"] < 1e-6 and perfect["dice"] < 1e-3
    assert perfect["mse"] == 0 and perfect["msge"] == 0
    off = hovernet_loss({"np": -logits, "hv": -hv_t}, np_t, hv_t, weights={"msge": 2.0})
    assert off["ce"] > 10 and off["mse"] > 0 and off["msge"] > 0
    torch.testing.assert_close(off["total"], off["ce"] + off["dice"] + off["mse"] + 2 * off["msge"])


def test_one_optimisation_step_lowers_the_loss():
    torch.manual_seed(0)
    model = HoVerNet(width=4, blocks=(1, 1))
    x = torch.randn(2, 3, 16, 16)
    np_t = (torch.rand(2, 16, 16) > 0.5).long()
    hv_t = torch.rand(2, 2, 16, 16) * 2 - 1
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    before = hovernet_loss(model(x), np_t, hv_t)["total"]
    opt.zero_grad()
    before.backward()
    opt.step()
    after = hovernet_loss(model(x), np_t, hv_t)["total"]
    assert after < before


def test_bottleneck_encoder_is_the_preact_resnet50_shape():
    net = HoVerNet(width=4, blocks=(3, 4, 6, 3), block="bottleneck")
    # ResNet-50's stages: 3, 4, 6, 3 bottlenecks at 4 x width x 2^s output channels (64 -> 256..2048)
    assert [len(s) for s in net.stages] == [3, 4, 6, 3]
    assert [s[-1].conv3.out_channels for s in net.stages] == [16, 32, 64, 128]
    out = net(torch.randn(1, 3, 20, 24))
    assert out["np"].shape == (1, 2, 20, 24) and out["hv"].shape == (1, 2, 20, 24)
    with pytest.raises(ValueError, match="block"):
        HoVerNet(width=4, block="dense")
