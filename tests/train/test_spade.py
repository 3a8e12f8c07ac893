import copy

import numpy as np
import pytest
import torch

from histolib.errors import ParamError
from histolib.ops.ada import COLOUR, PAPER_OPS
from histolib.train import spade as spade_module
from histolib.train.features import random_net
from histolib.train.spade import (
    PerceptualLoss,
    SpadeOptions,
    SpadeTrainer,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    resolve_precision,
    synthesize,
    training_tensors,
)


def test_hinge_losses_hand_case():
    real = [torch.tensor([2.0, 0.0]), torch.tensor([0.5])]
    fake = [torch.tensor([-2.0, 1.0]), torch.tensor([0.0])]
    lr, lf = hinge_d_loss(real, fake)
    # real: mean(relu(1 - [2, 0])) = 0.5, relu(1 - 0.5) = 0.5 -> 0.5; fake: mean(relu(1 + [-2, 1])) = 1, 1 -> 1
    assert float(lr) == pytest.approx(0.5) and float(lf) == pytest.approx(1.0)
    assert float(hinge_g_loss(fake)) == pytest.approx(-((-0.5) + 0.0) / 2)


def test_feature_matching_skips_the_logits_and_averages_scales():
    fake = [[torch.zeros(1, 2), torch.zeros(1, 1)], [torch.ones(1, 2), torch.zeros(1, 1)]]
    real = [[torch.ones(1, 2), torch.full((1, 1), 9.0)], [torch.ones(1, 2), torch.full((1, 1), 9.0)]]
    assert float(feature_matching_loss(fake, real, weight=10.0)) == pytest.approx(10.0 / 2 * (1.0 + 0.0))


def _tiny(**kw):
    opts = dict(n_classes=2, image_size=32, ngf=2, ndf=4, z_dim=2, spade_hidden=8, num_D=2, n_layers_D=3,
                norm_G="instance", lr_G=2e-3, lr_D=2e-3, ada_ops=())
    opts.update(kw)
    return SpadeOptions(**opts)


def _batch(n=4, n_classes=2):
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(n, 32, 32, dtype=torch.long)
    labels[:, 8:24, 8:24] = n_classes - 1
    images = torch.where(labels[:, None].bool(), 0.6, -0.4).expand(n, 3, 32, 32).clone()
    return labels, images + 0.05 * torch.randn(n, 3, 32, 32, generator=g)


@pytest.mark.parametrize("perceptual", [False, True])
def test_one_step_lowers_the_d_and_g_losses_on_a_fixed_batch(perceptual):
    torch.manual_seed(0)
    loss = PerceptualLoss(random_net(0)) if perceptual else None
    tr = SpadeTrainer(_tiny(), seed=0, perceptual=loss)
    labels, real = _batch()
    real = tr._fmt(real)
    onehot = tr.encode(labels)
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    tr.G.eval(), tr.D.eval()  # evaluate without power iterations
    with torch.no_grad():
        fake = tr.G(onehot, z)
        d0 = tr.d_losses(onehot, fake, real)
    g_old = copy.deepcopy(tr.G)
    tr.G.train(), tr.D.train()
    stats = tr.train_step((labels, real), 0, torch.Generator().manual_seed(1))
    assert {"loss_D_real", "loss_G_adv", "loss_G_fm"} <= set(stats)
    assert ("loss_G_perceptual" in stats) == perceptual
    tr.G.eval(), tr.D.eval()
    g_old.eval()
    with torch.no_grad():  # D's update lowers its loss on the same fake and real pairs ...
        d1 = tr.d_losses(onehot, fake, real)
    assert float(d1["loss_D_real"] + d1["loss_D_fake"]) < float(d0["loss_D_real"] + d0["loss_D_fake"])
    with torch.no_grad():  # ... and G's update is judged by the updated D, which it was trained against
        before = tr.g_losses(onehot, g_old(onehot, z), real)
        after = tr.g_losses(onehot, tr.G(onehot, z), real)
    assert float(sum(after.values())) < float(sum(before.values()))
    for k in before:  # each term went down
        assert float(after[k]) < float(before[k]), k


def test_train_step_with_ada_and_four_classes_runs_and_adapts_p():
    tr = SpadeTrainer(_tiny(n_classes=4, ada_ops=("xflip", "rotate", "elastic", "hue"), ada_kimg=1.0,
                            ada_interval=1), seed=0)
    labels, real = _batch(n_classes=4)
    tr.ada.p = 0.5
    for step in range(3):
        p_before = tr.p
        stats = tr.train_step((labels, real), step, torch.Generator().manual_seed(step))
        assert np.isfinite(list(stats.values())).all()
        expected = p_before + (0.004 if stats["r_t"] > 0.6 else -0.004)  # batch 4 * interval 1 / (kimg 1 * 1000)
        assert stats["p"] == tr.p == pytest.approx(expected)


def test_synthesize_is_deterministic_and_restores_mode():
    tr = SpadeTrainer(_tiny(norm_G="batch"), seed=0)
    labels, _ = _batch(n=3)
    a = synthesize(tr.G, labels.numpy(), seed=4, batch_size=2)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, synthesize(tr.G, labels.numpy(), seed=4, batch_size=2))
    assert not np.array_equal(a, synthesize(tr.G, labels.numpy(), seed=5, batch_size=2))
    assert tr.G.training
    assert synthesize(tr.G, np.zeros((0, 32, 32), np.int64)).shape == (0, 32, 32, 3)


def test_training_tensors_validate():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    lab, img = training_tensors(images, np.ones((2, 8, 8), np.uint8), 2)
    assert lab.dtype == torch.int64 and img.shape == (2, 3, 8, 8) and float(img.min()) == -1.0
    with pytest.raises(ValueError, match="outside"):
        training_tensors(images, np.full((2, 8, 8), 3), 2)
    with pytest.raises(ValueError, match="do not match"):
        training_tensors(images, np.zeros((3, 8, 8)), 2)


def test_sample_rows():
    tr = SpadeTrainer(_tiny(), seed=0)
    labels, real = _batch(n=2)
    rows = tr.sample((labels, real))
    assert len(rows) == 4 and all(r.shape == (2, 3, 32, 32) or r.shape == (2, 1, 32, 32) for r in rows)


def test_bf16_precision_keeps_float32_outputs_and_weights_and_tracks_fp32():
    labels, real = _batch()
    fp32 = SpadeTrainer(_tiny(), seed=0)
    bf16 = SpadeTrainer(_tiny(precision="bf16"), seed=0)
    onehot = fp32.encode(labels)
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    fp32.G.eval(), bf16.G.eval()
    with torch.no_grad():
        a, b = fp32.generate(onehot, z), bf16.generate(onehot, z)
    assert a.dtype == b.dtype == torch.float32
    assert 0 < float((a - b).abs().max()) < 0.1  # bf16 convolutions: close to fp32, not identical
    bf16.G.train()
    stats = bf16.train_step((labels, bf16._fmt(real)), 0, torch.Generator().manual_seed(1))
    assert all(np.isfinite(v) for v in stats.values())
    assert all(p.dtype == torch.float32 for p in bf16.G.parameters())


def test_unknown_precision_is_named():
    with pytest.raises(ParamError, match="precision"):
        SpadeTrainer(_tiny(precision="fp16"))


@pytest.fixture
def one_thread():
    """Tiny convolutions gain nothing from threads, and lose a lot to a busy machine's scheduler."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_precision_auto_follows_the_cpu_and_falls_back_to_fp32(monkeypatch):
    monkeypatch.setattr(spade_module, "native_bf16", lambda: True)
    assert resolve_precision("auto") == "bf16"
    assert SpadeTrainer(_tiny(precision="auto")).precision == "bf16"
    monkeypatch.setattr(spade_module, "native_bf16", lambda: False)
    assert resolve_precision("auto") == "fp32"
    assert SpadeTrainer(_tiny(precision="auto")).precision == "fp32"
    assert resolve_precision("bf16") == "bf16" and resolve_precision("fp32") == "fp32"
    assert isinstance(spade_module.native_bf16(), bool)


def test_ema_generator_is_checkpointed_averaged_and_sampled(one_thread):
    tr = SpadeTrainer(_tiny(ema_kimg=0.05, ema_rampup=0.0), seed=0)
    assert tr.sampling_G is tr.G_ema and tr.modules["G_ema"] is tr.G_ema
    assert not any(p.requires_grad for p in tr.G_ema.parameters())
    start = copy.deepcopy(tr.G_ema.state_dict())
    labels, real = _batch()
    tr.train_step((labels, tr._fmt(real)), 0, torch.Generator().manual_seed(0))
    beta = 0.5 ** (4 / 50)
    for name, p in tr.G_ema.named_parameters():
        expected = beta * start[name] + (1 - beta) * dict(tr.G.named_parameters())[name].detach()
        torch.testing.assert_close(p, expected, atol=1e-6, rtol=1e-5)
    rows = tr.sample((labels, real))
    assert len(rows) == 4
    assert SpadeTrainer(_tiny(), seed=0).sampling_G is not None
    assert SpadeTrainer(_tiny(), seed=0).G_ema is None
    with pytest.raises(ParamError, match="ema"):
        SpadeTrainer(_tiny(ema_kimg=-1.0))


def test_default_ada_is_the_papers_geometric_set():
    assert SpadeOptions().ada_ops == PAPER_OPS == ("xflip", "rotate90", "rotate", "elastic")
    assert not set(PAPER_OPS) & set(COLOUR)
    pipe = SpadeTrainer(_tiny(ada_ops=PAPER_OPS)).augment
    on = {k for k, v in pipe.strength.items() if v > 0}
    assert on == set(PAPER_OPS)


def _squares(n, size=32, side=12, seed=0):
    """Toy task: a bright square at a random place (label 1) on a dark background (label 0)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        y, x = torch.randint(0, size - side, (2,), generator=g).tolist()
        labels[i, y:y + side, x:x + side] = 1
    images = torch.where(labels[:, None].bool(), 0.7, -0.7).expand(n, 3, size, size).clone()
    return labels, images + 0.05 * torch.randn(n, 3, size, size, generator=g)


def _inside_minus_outside(tr, labels):
    G = tr.sampling_G
    was = G.training
    G.eval()
    with torch.no_grad():
        out = G(tr.encode(labels), torch.zeros(len(labels), tr.opt.z_dim)).mean(1)
    G.train(was)
    inside = labels.bool()
    return float(out[inside].mean() - out[~inside].mean())


def test_a_tiny_spade_learns_to_follow_its_label_map(one_thread):
    """After 60 steps on the toy task the output is bright where the (unseen) label map says 1 and
    dark elsewhere: the label map, not a memorised layout, decides the image (issue 11)."""
    tr = SpadeTrainer(_tiny(num_D=1, n_layers_D=2, ema_kimg=0.05), seed=0)
    labels, images = _squares(64)
    held_out, _ = _squares(16, seed=1)
    before = _inside_minus_outside(tr, held_out)
    for step in range(60):
        g = torch.Generator().manual_seed(step)
        idx = torch.randperm(64, generator=g)[:8]
        tr.train_step((labels[idx], tr._fmt(images[idx])), step, g)
    after = _inside_minus_outside(tr, held_out)
    assert abs(before) < 0.05
    assert after > 0.8, f"inside - outside = {after:.2f} (real: 1.4)"
    # the same noise, two different maps: the square moves with the map
    a, b = held_out[:1], held_out[1:2]
    G = tr.sampling_G
    with torch.no_grad():
        za = G(tr.encode(a), torch.zeros(1, 2)).mean(1)[0]
        zb = G(tr.encode(b), torch.zeros(1, 2)).mean(1)[0]
    assert float(za[a[0].bool()].mean() - zb[a[0].bool() & ~b[0].bool()].mean()) > 0.5
