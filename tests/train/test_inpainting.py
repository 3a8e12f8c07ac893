import numpy as np
import pytest
import torch

from histolib.ops.crops import local_region
from histolib.train.features import random_net
from histolib.train.gan import step_generator
from histolib.train.inpainting import (
    LOSS_TERMS,
    InpaintOptions,
    InpaintTrainer,
    MaskGanOptions,
    MaskGanTrainer,
    feature_losses,
    generate_masks,
    gram,
    inpaint,
    weighted_total,
)


def _opts(**kw):
    base = dict(image_size=16, ngf=4, n_blocks=1, ndf=4, d_layers=6, augment=False)
    return InpaintOptions(**{**base, **kw})


def _batch(b=2, s=16):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    m = torch.zeros(b, 1, s, s)
    m[:, :, 4:12, 5:11] = 1
    return x, m


def test_local_discriminator_input_is_eq_6():
    tr = InpaintTrainer(_opts(share_discriminators=False), seed=0)
    seen = []
    tr.D_local.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    x, m = _batch()
    x_rec = tr.generate(x, m)
    tr.d_loss(x, x_rec, local_region(x, m), local_region(x_rec, m))
    real, fake = seen[0].chunk(2)
    torch.testing.assert_close(real, x * m + (1 - m))
    torch.testing.assert_close(fake, x_rec * m + (1 - m))
    assert torch.all(real[:, :, 0, 0] == 1)  # outside the mask: white


def test_shared_discriminator_sees_global_and_local_inputs():
    tr = InpaintTrainer(_opts(), seed=0)
    assert tr.D is tr.D_local and set(tr.modules) == {"G", "D"}
    seen = []
    tr.D.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    x, m = _batch()
    x_rec = tr.generate(x, m)
    tr.d_loss(x, x_rec, local_region(x, m), local_region(x_rec, m))
    xo, xr, ro, rr = seen[0].chunk(4)
    torch.testing.assert_close(xo, x)
    torch.testing.assert_close(ro, x * m + (1 - m))
    torch.testing.assert_close(rr, x_rec * m + (1 - m))


@pytest.mark.parametrize("term", sorted(LOSS_TERMS))
def test_each_loss_weight_reaches_its_term(term):
    terms = {k: torch.tensor(float(i + 1)) for i, k in enumerate(LOSS_TERMS)}
    zero = {w: 0.0 for w in set(LOSS_TERMS.values())}
    opts = _opts(**{**zero, LOSS_TERMS[term]: 3.0})
    expected = 3.0 * sum(v for k, v in terms.items() if LOSS_TERMS[k] == LOSS_TERMS[term])
    assert float(weighted_total(terms, opts)) == pytest.approx(float(expected))


def test_train_step_total_is_the_weighted_sum_of_logged_terms():
    tr = InpaintTrainer(_opts(lambda_adv=0.5, lambda_l1_global=2.0, lambda_l1_local=3.0, lambda_perceptual=0.25,
                              lambda_style=7.0), seed=0, features=random_net(0, widths=(4, 8)))
    stats = tr.train_step(_batch(), 0, step_generator(0, 0))
    total = sum(getattr(tr.opt, w) * stats[f"loss_G_{k}"] for k, w in LOSS_TERMS.items())
    assert stats["loss_G"] == pytest.approx(total, rel=1e-5)
    assert {f"loss_G_{k}" for k in LOSS_TERMS} <= set(stats)


def test_discriminator_gets_no_generator_gradient():
    tr = InpaintTrainer(_opts(), seed=0, features=random_net(0, widths=(4, 8)))
    at_d_step = {}
    g_at_d_step = {}
    orig = tr.optimizers["D"].step

    def spy(*a, **k):
        at_d_step.update({n: p.grad.clone() for n, p in tr.D.named_parameters() if p.grad is not None})
        g_at_d_step.update({n: p.grad for n, p in tr.G.named_parameters()})
        return orig(*a, **k)

    tr.optimizers["D"].step = spy
    tr.train_step(_batch(), 0, step_generator(0, 0))
    assert at_d_step and all(g is None for g in g_at_d_step.values())  # fakes detached for D
    for n, p in tr.D.named_parameters():  # the G update added nothing to D's gradients
        torch.testing.assert_close(p.grad, at_d_step[n], rtol=0, atol=0)
    assert all(p.requires_grad for p in tr.D.parameters())


def test_l1_local_is_the_masked_pixel_mean():
    tr = InpaintTrainer(_opts(), seed=0)
    x, m = _batch()
    x_rec = torch.zeros_like(x)
    terms = tr.g_terms(x, m, x_rec, local_region(x, m), local_region(x_rec, m))
    expected = (x - x_rec).abs()[m.expand_as(x) > 0].mean()
    torch.testing.assert_close(terms["l1_local"], expected)
    torch.testing.assert_close(terms["l1_global"], (x - x_rec).abs().mean())


def test_gram_and_feature_losses():
    f = torch.tensor([[1.0, 2.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    torch.testing.assert_close(gram(f)[0], torch.tensor([[5.0, 2.0], [2.0, 1.0]]) / 4)
    net = random_net(0, widths=(4, 8))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    zero = feature_losses(net, x, x)
    assert float(zero["perceptual"]) == 0 and float(zero["style"]) == 0
    assert float(feature_losses(net, -x, x)["perceptual"]) > 0


def test_inpaint_changes_only_the_masked_pixels():
    tr = InpaintTrainer(_opts(), seed=0)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((3, 16, 16), np.uint8)
    masks[:, 4:9, 4:9] = 1
    out = inpaint(tr.G, imgs, masks)
    np.testing.assert_array_equal(out[masks == 0], imgs[masks == 0])
    assert out.dtype == np.uint8 and out.shape == imgs.shape


def test_mask_gan_step_and_samples():
    tr = MaskGanTrainer(MaskGanOptions(size=16, z_dim=4, ngf=4, ndf=4), seed=0)
    real = (torch.rand(4, 1, 16, 16) > 0.5).float() * 2 - 1
    stats = tr.train_step((real,), 0, step_generator(0, 0))
    assert np.isfinite([stats["loss_D"], stats["loss_G"]]).all()
    rows = tr.sample((real, torch.randn(4, 4)))
    assert [r.shape for r in rows] == [(4, 1, 16, 16)] * 2
    m = generate_masks(tr.G, 5, seed=1)
    assert m.shape == (5, 16, 16) and m.min() >= 0 and m.max() <= 1
    np.testing.assert_array_equal(m, generate_masks(tr.G, 5, seed=1))


def test_random_affine_keeps_masks_in_range_and_background():
    from histolib.train.inpainting import random_affine

    x = -torch.ones(4, 1, 16, 16)
    x[:, :, 5:11, 6:10] = 1
    y = random_affine(x, 0.15, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6
    assert torch.all(y[:, :, 0, 0] == -1)  # corners stay background
    assert not torch.allclose(y, x)
    torch.testing.assert_close(y.gt(0).float().sum((1, 2, 3)), x.gt(0).float().sum((1, 2, 3)), atol=12, rtol=0.5)
