"""Pix2Pix losses (Eq. 2-5 of seed 001) and the training step."""

import copy
import math

import numpy as np
import pytest
import torch

from histolib.errors import ParamError
from histolib.models.pix2pix import Pix2PixDiscriminator, Pix2PixGenerator
from histolib.train.gan import train_gan
from histolib.train.pix2pix import (
    PairBatches,
    Pix2PixLossWeights,
    Pix2PixOptions,
    Pix2PixTrainer,
    condition_tensor,
    discriminator_loss,
    generator_losses,
    input_sensitivity,
    l1_loss,
    make_optimizers,
    mode_seeking_in_batch,
    mode_seeking_loss,
    reference_train_step,
    synthesize,
    train_step,
)


def _const(value, channels=3, n=1, side=2):
    return torch.full((n, channels, side, side), float(value))


def test_mode_seeking_hand_case_falls_as_outputs_move_apart():
    x1, x2 = _const(-1, 1), _const(1, 1)  # conditions 2 apart per element
    y1 = _const(0)
    near = mode_seeking_loss(x1, x2, y1, _const(0.5), eps=0.0)
    far = mode_seeking_loss(x1, x2, y1, _const(1.0), eps=0.0)
    assert near.item() == pytest.approx(2 / 0.5)
    assert far.item() == pytest.approx(2 / 1.0)
    assert far < near


def test_mode_seeking_skips_identical_conditions_and_empty_is_zero():
    x = _const(1, 1, n=3)
    x[2] = -1  # items 0 and 1 share a condition; item 2 differs from both by 2
    y = torch.stack([_const(0)[0], _const(0.5)[0], _const(1)[0]])
    # pairs (0,2): 2 / 1, (1,2): 2 / 0.5; pair (0,1) is left out
    assert mode_seeking_in_batch(x, y, eps=0.0).item() == pytest.approx((2.0 + 4.0) / 2)
    y.requires_grad_(True)
    zero = mode_seeking_in_batch(x[:2], y[:2])
    assert zero.item() == 0.0
    zero.backward()  # stays attached to the graph
    assert mode_seeking_in_batch(x[:1], y[:1].detach()).item() == 0.0  # batch of one: no pair


def test_input_sensitivity_is_the_reciprocal_ratio():
    x = torch.stack([_const(-1, 1)[0], _const(1, 1)[0]])
    y = torch.stack([_const(0)[0], _const(0.5)[0]])
    assert input_sensitivity(x, y).tolist() == pytest.approx([0.25])
    assert input_sensitivity(torch.cat([x[:1], x[:1]]), y).numel() == 0


def test_discriminator_loss_and_l1_values():
    zero = torch.zeros(4, 1)
    out = discriminator_loss(zero, zero)  # D undecided: -log(1/2) twice
    assert out["loss_d"].item() == pytest.approx(2 * math.log(2))
    assert l1_loss(_const(0.5), _const(-0.5)).item() == pytest.approx(1.0)
    with pytest.raises(ParamError, match="same shape"):
        l1_loss(_const(0), _const(0, side=4))


def _nets(condition_channels=0, seed=0, size=32):
    gen = torch.Generator().manual_seed(seed)
    g = Pix2PixGenerator(in_channels=2, size=size, width=4, generator=gen)
    d = Pix2PixDiscriminator(condition_channels=condition_channels, size=size, width=4, generator=gen)
    return g, d


def _batch(n=4, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cond = torch.randint(0, 2, (n, 2, size, size), generator=gen).float() * 2 - 1
    real = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
    return cond, real


@pytest.mark.parametrize("condition_channels", [0, 2])
def test_one_generator_step_lowers_the_generator_loss(condition_channels):
    g, d = _nets(condition_channels)
    cond, real = _batch()
    opt_g, _ = make_optimizers(g, d, lr=2e-4)
    weights = Pix2PixLossWeights()

    def loss():  # same dropout masks before and after the step
        return generator_losses(d, cond, real, g(cond, torch.Generator().manual_seed(3)), weights)["loss_g"]

    before = loss()
    opt_g.zero_grad()
    before.backward()
    opt_g.step()
    with torch.no_grad():
        after = loss()
    assert after < before.detach()


def test_train_step_updates_both_networks_and_reports_finite_losses():
    g, d = _nets()
    cond, real = _batch()
    opt_g, opt_d = make_optimizers(g, d)
    g0 = [p.clone() for p in g.parameters()]
    d0 = [p.clone() for p in d.parameters()]
    stats = train_step(g, d, opt_g, opt_d, cond, real, rng=torch.Generator().manual_seed(0))
    assert set(stats) >= {"loss_d", "loss_g", "loss_g_gan", "loss_l1", "loss_ms", "d_real", "d_fake"}
    assert all(math.isfinite(v) for v in stats.values())
    assert stats["loss_ms"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(g0, g.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, d.parameters(), strict=True))
    assert all(p.requires_grad for p in d.parameters())  # D unfrozen after the G update


def test_batch_of_one_needs_partner_conditions():
    g, d = _nets(condition_channels=2)
    cond, real = _batch(n=2)
    opt_g, opt_d = make_optimizers(g, d)
    with pytest.raises(ParamError, match="partner"):
        train_step(g, d, opt_g, opt_d, cond[:1], real[:1])
    stats = train_step(g, d, opt_g, opt_d, cond[:1], real[:1], partner=cond[1:])
    assert stats["loss_ms"] > 0
    # the "no L_ms" ablation needs no partner
    train_step(g, d, opt_g, opt_d, cond[:1], real[:1], Pix2PixLossWeights(mu_ms=0.0))


def test_fast_step_matches_the_obvious_step():
    cond, real = _batch()
    results = []
    for step, fused in ((train_step, True), (reference_train_step, False)):
        g, d = _nets(seed=1)
        opt_g, opt_d = make_optimizers(g, d, fused=fused)
        for i in range(2):
            stats = step(g, d, opt_g, opt_d, cond, real, rng=torch.Generator().manual_seed(i))
        results.append((stats, torch.cat([p.flatten() for p in g.parameters()])))
    (s_fast, p_fast), (s_ref, p_ref) = results
    for key in s_ref:
        assert s_fast[key] == pytest.approx(s_ref[key], rel=1e-4, abs=1e-5), key
    assert torch.allclose(p_fast, p_ref, atol=1e-5)


def test_condition_tensor_maps_binary_to_plus_minus_one():
    masks = np.array([[[0, 255], [255, 0]]], np.uint8)
    structure = np.array([[[1, 1], [0, 0]]], np.uint8)
    c = condition_tensor(masks, structure)
    assert c.shape == (1, 2, 2, 2)
    assert c[0, 0].tolist() == [[-1, 1], [1, -1]] and c[0, 1].tolist() == [[1, 1], [-1, -1]]
    assert condition_tensor(np.zeros((1, 2, 2), np.uint8)).tolist() == [[[[-1, -1], [-1, -1]]]]
    with pytest.raises(ParamError, match="binary"):
        condition_tensor(np.array([[[0, 2], [1, 0]]]))
    with pytest.raises(ParamError, match="match"):
        condition_tensor(masks, np.zeros((1, 3, 3)))


def test_pair_batches_draw_partners_from_other_examples():
    cond = torch.arange(5).float().view(5, 1, 1, 1)
    images = torch.zeros(5, 3, 1, 1)
    c, _, partner = PairBatches(cond, images, batch_size=5, partners=True)(torch.Generator().manual_seed(0))
    assert sorted(c.flatten().tolist()) == [0, 1, 2, 3, 4]  # no repeats within a batch
    assert (c != partner).all()


def test_synthesize_is_reproducible_for_a_seed():
    g, _ = _nets()
    cond, _ = _batch(n=3)
    a = synthesize(g, cond, seed=4, batch_size=2)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, synthesize(g, cond, seed=4, batch_size=2))
    assert not np.array_equal(a, synthesize(g, cond, seed=5, batch_size=2))  # test-time dropout
    assert g.training  # mode restored


def test_trainer_runs_under_the_gan_driver_keeps_the_best_and_resumes(tmp_path):
    cond, real = _batch(n=4)
    opts = Pix2PixOptions(image_size=32, ngf=4, ndf=4, eval_every=2)
    scores = iter([1.0, 3.0])

    def make():
        return Pix2PixTrainer(opts, seed=0, evaluator=lambda G: next(scores), steps=4)

    trainer = make()
    train_gan(trainer, PairBatches(cond, real, 2), steps=4, out_dir=tmp_path, seed=0, args={"x": 1},
              fixed_batch=(cond[:2], real[:2]), checkpoint_every=2, progress=False)
    assert [h["step"] for h in trainer.history] == [2, 4]
    assert trainer.best_step == 2 and trainer.best_score == 1.0
    final = trainer.G.state_dict()
    assert any(not torch.equal(v, final[k]) for k, v in trainer.best_generator_state().items())
    assert (tmp_path / "samples" / "step_0000004.png").is_file()
    # the task state (chosen generator, score history) loads without unpickling code
    stored = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["task"]
    assert stored["best_step"] == 2 and [h["step"] for h in stored["history"]] == [2, 4]
    again = make()  # a complete run is skipped and its trainer state (the chosen generator) restored
    result = train_gan(again, PairBatches(cond, real, 2), steps=4, out_dir=tmp_path, seed=0, args={"x": 1},
                       progress=False)
    assert result.skipped and again.best_step == 2
    for k, v in trainer.best_generator_state().items():
        assert torch.equal(v, again.best_generator_state()[k])


def test_without_mode_seeking_the_term_is_logged_but_not_optimised():
    g, d = _nets()
    cond, real = _batch()
    out = generator_losses(d, cond, real, g(cond, torch.Generator().manual_seed(0)), Pix2PixLossWeights(mu_ms=0.0))
    assert out["loss_ms"].item() > 0 and not out["loss_ms"].requires_grad
    assert out["loss_g"].item() == pytest.approx((out["loss_g_gan"] + 10 * out["loss_l1"]).item())


def test_early_evaluations_are_logged_but_not_chosen_before_select_from():
    cond, real = _batch(n=4)
    scores = iter([1.0, 3.0])
    trainer = Pix2PixTrainer(Pix2PixOptions(image_size=32, ngf=4, ndf=4, eval_every=2, select_from=0.75), seed=0,
                             evaluator=lambda G: next(scores), steps=4)
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        trainer.train_step(PairBatches(cond, real, 2)(gen), step, gen)
    assert [h["score"] for h in trainer.history] == [1.0, 3.0]
    assert trainer.best_step == 4 and trainer.best_score == 3.0  # step 2 < 0.75 * 4 is not eligible


def test_weight_average_is_what_gets_evaluated_chosen_and_checkpointed(tmp_path):
    cond, real = _batch(n=4)
    seen = []
    opts = Pix2PixOptions(image_size=32, ngf=4, ndf=4, eval_every=2, ema_kimg=0.002, ema_rampup=0.0)
    trainer = Pix2PixTrainer(opts, seed=0, evaluator=lambda G: seen.append(G) or 1.0, steps=2)
    assert trainer.sampling_G is trainer.G_ema and trainer.modules["G_ema"] is trainer.G_ema
    assert not any(p.requires_grad for p in trainer.G_ema.parameters())
    start = copy.deepcopy(trainer.G_ema.state_dict())
    gen = torch.Generator().manual_seed(0)
    trainer.train_step(PairBatches(cond, real, 2)(gen), 0, gen)
    beta = 0.5 ** (2 / 2.0)  # batch 2, half-life 2 images: the average moves halfway
    trained = dict(trainer.G.named_parameters())
    for name, p in trainer.G_ema.named_parameters():
        torch.testing.assert_close(p, beta * start[name] + (1 - beta) * trained[name].detach())
    trainer.train_step(PairBatches(cond, real, 2)(gen), 1, gen)
    assert seen == [trainer.G_ema]  # the evaluator scored the average ...
    for k, v in trainer.best_generator_state().items():  # ... and the average is the one kept
        assert torch.equal(v, trainer.G_ema.state_dict()[k])
    plain = Pix2PixTrainer(Pix2PixOptions(image_size=32, ngf=4, ndf=4), seed=0)
    assert plain.G_ema is None and plain.sampling_G is plain.G and "G_ema" not in plain.modules
    with pytest.raises(ParamError, match="ema_kimg"):
        Pix2PixTrainer(Pix2PixOptions(image_size=32, ngf=4, ndf=4, ema_kimg=-1.0))
