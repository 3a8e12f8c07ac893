"""histolib.train.ema: the decay rule and the update, on hand-computed cases."""

import copy

import pytest
import torch

from histolib.train.ema import ema_beta, ema_update


def test_ema_beta_half_life_and_ramp_up():
    assert ema_beta(8, 0.0, 10_000) == 0.0  # off
    assert ema_beta(10, 0.01, 10_000) == pytest.approx(0.5)  # half-life 10 images, batch 10
    assert ema_beta(8, 0.5, 0, rampup=0.05) == 0.0  # nothing seen yet: copy the weights
    # ramp-up: half-life min(500, 0.05 * 1600 = 80) images
    assert ema_beta(8, 0.5, 1600, rampup=0.05) == pytest.approx(0.5 ** (8 / 80))
    assert ema_beta(8, 0.5, 10**6, rampup=0.05) == pytest.approx(0.5 ** (8 / 500))


def test_ema_update_hand_case():
    model = torch.nn.BatchNorm1d(2)
    average = copy.deepcopy(model)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([3.0, -1.0]))
        average.weight.copy_(torch.tensor([1.0, 1.0]))
        model.running_mean.fill_(7.0)
    ema_update(average, model, beta=0.75)
    torch.testing.assert_close(average.weight.detach(), torch.tensor([0.75 * 1 + 0.25 * 3, 0.75 * 1 + 0.25 * -1]))
    torch.testing.assert_close(average.bias.detach(), torch.zeros(2))
    assert torch.equal(average.running_mean, model.running_mean)  # buffers are copied
    ema_update(average, model, beta=0.0)
    torch.testing.assert_close(average.weight.detach(), model.weight.detach())
    with pytest.raises(ValueError, match="beta"):
        ema_update(average, model, beta=1.5)
