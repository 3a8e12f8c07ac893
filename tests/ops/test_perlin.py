import numpy as np
import pytest
import torch

from histolib.ops import perlin as P


def test_perlin_noise_shape_range_and_determinism():
    a = P.perlin_noise(40, 50, 0.1, batch=3, generator=torch.Generator().manual_seed(0))
    b = P.perlin_noise(40, 50, 0.1, batch=3, generator=torch.Generator().manual_seed(0))
    c = P.perlin_noise(40, 50, 0.1, batch=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 40, 50)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1.0 + 1e-5 and a.std() > 0.1


def test_perlin_noise_is_smooth_at_its_lattice_scale():
    n = P.perlin_noise(64, 64, 1 / 16, batch=4, generator=torch.Generator().manual_seed(0))
    step = (n[:, 1:] - n[:, :-1]).abs().max()
    assert step < 0.25  # a cell of 16 px: neighbouring pixels differ little
    coarse = P.perlin_noise(64, 64, 1 / 2, batch=4, generator=torch.Generator().manual_seed(0))
    assert (coarse[:, 1:] - coarse[:, :-1]).abs().mean() > 3 * (n[:, 1:] - n[:, :-1]).abs().mean()


def test_fractal_noise_gradients_reach_frequency_and_persistence():
    f = torch.tensor(0.05, requires_grad=True)
    g = torch.tensor(0.5, requires_grad=True)
    out = P.fractal_noise(32, 32, f, g, octaves=3, generator=torch.Generator().manual_seed(0))
    (out ** 2).mean().backward()
    assert f.grad is not None and torch.isfinite(f.grad) and f.grad != 0
    assert g.grad is not None and torch.isfinite(g.grad)
    with pytest.raises(ValueError, match="frequency"):
        P.perlin_noise(8, 8, 0.0)
    with pytest.raises(ValueError, match="octaves"):
        P.fractal_noise(8, 8, 0.1, 0.5, octaves=0)


def test_prior_maps_lie_in_unit_interval():
    params = P.PerlinParams(cell=20, persistence=0.5, gain=3, bias=-1)
    prior = P.perlin_prior(params, 2, 30, 40, generator=torch.Generator().manual_seed(0))
    assert prior.shape == (2, 30, 40) and prior.min() > 0 and prior.max() < 1
    assert params.to_dict()["octaves"] == 4


def test_density_target_is_the_blurred_foreground():
    inst = np.zeros((2, 20, 20), np.int32)
    inst[1] = 7
    d = P.density_target(inst, sigma=2.0)
    assert d.shape == (2, 20, 20) and d.dtype == np.float32
    np.testing.assert_allclose(d[0], 0)
    np.testing.assert_allclose(d[1], 1, atol=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        P.density_target(inst, 0)


def test_fit_moves_towards_the_parameters_that_made_the_targets():
    true = P.PerlinParams(cell=24.0, persistence=0.4, gain=3.0, bias=-1.0, octaves=3)
    targets = P.perlin_prior(true, 16, 64, 64, generator=torch.Generator().manual_seed(0)).numpy()
    init = P.PerlinParams(cell=8.0, persistence=0.7, gain=1.0, bias=0.0, octaves=3)
    fit, losses = P.fit_perlin_prior(targets, octaves=3, steps=120, lr=0.05, batch=4, init=init,
                                     generator=torch.Generator().manual_seed(1))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert abs(np.log(fit.cell / true.cell)) < abs(np.log(init.cell / true.cell)) / 2
    assert abs(fit.bias - true.bias) < 0.5
    with pytest.raises(ValueError, match="targets"):
        P.fit_perlin_prior(np.zeros((0, 8, 8)))
