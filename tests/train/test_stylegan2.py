import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from histolib.config import load_params, section, sections
from histolib.errors import CheckpointError, DataError, ParamError
from histolib.train import stylegan2 as sg
from histolib.train.stylegan2 import (
    BGC,
    StyleGAN2Options,
    StyleGAN2Trainer,
    generate,
    load_generator,
    path_length_penalty,
    r1_penalty,
    train_stylegan2,
)


def _opts(**kw) -> StyleGAN2Options:
    """A tiny configuration that exercises every path: ADA moving p, R1 and path length every 2nd step,
    style mixing."""
    base = dict(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, mapping_lr=0.01, channel_base=64, channel_max=8,
                mbstd_group=2, batch_size=4, steps=4, lr=0.0025, beta1=0.0, beta2=0.99, r1_gamma=1.0, r1_interval=2,
                pl_weight=2.0, pl_interval=2, style_mixing=0.5, ema_kimg=0.01, ema_rampup=0.05, ada_ops=list(BGC),
                ada_target=0.0, ada_interval=1, ada_kimg=0.01, precision="fp32", checkpoint_every=2, n_grid=3)
    base.update(kw)
    return StyleGAN2Options(**base)


def _images(n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# -- regularisers ---------------------------------------------------------------------------------

class LinearD(nn.Module):
    """D(x) = sum(a * x): grad_x D = a, so R1 = sum(a^2) for every sample."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x):
        return (self.a * x).sum(dim=(1, 2, 3))[:, None]


def test_r1_on_a_hand_made_discriminator():
    a = torch.tensor([1.0, -2.0, 0.5, 3.0]).reshape(1, 1, 2, 2)
    x = torch.randn(3, 1, 2, 2, requires_grad=True)
    r1 = r1_penalty(LinearD(a)(x), x)
    torch.testing.assert_close(r1, torch.full((3,), 1 + 4 + 0.25 + 9.0))
    # D(x) = c * sum(x^2): grad = 2 c x -> R1 = 4 c^2 sum(x^2), per sample
    x = torch.tensor([[1.0, 2.0], [0.0, 3.0]]).reshape(2, 1, 1, 2).requires_grad_(True)
    logits = 0.5 * x.square().sum(dim=(1, 2, 3))
    r1 = r1_penalty(logits, x)
    torch.testing.assert_close(r1, torch.tensor([5.0, 9.0]))
    r1.sum().backward()  # differentiable (create_graph): d/dx 4 c^2 sum x^2 = 8 c^2 x = 2 x
    torch.testing.assert_close(x.grad, 2 * x.detach())
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(logits.detach(), x.detach())


def test_path_length_penalty_hand_case():
    ws = torch.randn(1, 2, 6, requires_grad=True)
    img = 3.0 * ws[:, 0].reshape(1, 3, 1, 2)  # depends on the first copy only
    noise = torch.ones(1, 3, 1, 2)
    penalty, lengths = path_length_penalty(img, ws, torch.tensor(1.0), noise)
    # J^T y = 3 on ws[:, 0] (6 entries), 0 on ws[:, 1] -> mean over copies of sum of squares = 54 / 2
    assert float(lengths) == pytest.approx(math.sqrt(27.0))
    assert float(penalty) == pytest.approx((math.sqrt(27.0) - 1.0) ** 2)


# -- options and params ----------------------------------------------------------------------------

def test_options_are_the_stylegan2_params_section():
    assert sections()["stylegan2"] is StyleGAN2Options
    assert section("stylegan2")(StyleGAN2Options) is StyleGAN2Options  # registering again: no-op
    for profile in ("smoke", "cpu", "paper"):
        o = load_params(profile).stylegan2
        assert isinstance(o, StyleGAN2Options)
        assert o.ada_ops == list(BGC)
    smoke = load_params("smoke").stylegan2
    assert len(sg.build_generator(smoke).block_resolutions) >= 5  # DatasetGAN reads the last 5 blocks
    with pytest.raises(ParamError, match="stylegan2.lr"):
        load_params("smoke", overrides={"stylegan2.lr": 2.0})
    with pytest.raises(ParamError, match="stylegan2.precision"):
        load_params("smoke", overrides={"stylegan2.precision": "fp16"})


def test_bad_options_and_images_are_named():
    with pytest.raises(ParamError, match="ada_ops"):
        StyleGAN2Trainer(_opts(ada_ops=["xflip", "warp"]))
    with pytest.raises(ParamError, match="mbstd_group"):
        StyleGAN2Trainer(_opts(batch_size=6, mbstd_group=4))
    with pytest.raises(ParamError, match="power of 2"):
        StyleGAN2Trainer(_opts(resolution=24))
    with pytest.raises(DataError, match="resolution is 16"):
        train_stylegan2(_images(size=32), "/nonexistent", _opts(), seed=0)
    with pytest.raises(DataError, match="uint8"):
        train_stylegan2(_images().astype(np.float32), "/nonexistent", _opts(), seed=0)


# -- training --------------------------------------------------------------------------------------

def test_one_step_lowers_d_loss_and_moves_every_network():
    tr = StyleGAN2Trainer(_opts(ada_ops=[]), seed=0)
    x = torch.from_numpy(_images(4)).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        fake = tr.G.synthesis(tr.G.mapping(z), noise_mode="const")
        before = float(nn.functional.softplus(tr.D(fake)).mean() + nn.functional.softplus(-tr.D(x)).mean())
    params = {k: [p.detach().clone() for p in m.parameters()] for k, m in tr.modules.items()}
    stats = tr.train_step((x,), 0, torch.Generator().manual_seed(1))
    assert {"loss_D", "loss_G", "r1", "pl_penalty", "p"} <= set(stats)
    with torch.no_grad():
        after = float(nn.functional.softplus(tr.D(fake)).mean() + nn.functional.softplus(-tr.D(x)).mean())
    assert after < before
    for k, m in tr.modules.items():
        moved = any(not torch.equal(a, b) for a, b in zip(params[k], m.parameters(), strict=True))
        assert moved, f"{k} did not change"
    assert float(tr.pl_mean) > 0


def _state(run):
    return {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in run.trainer.modules.items()}


def _assert_same(a, b):
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), f"{name}.{k} differs"


def test_training_is_deterministic_resumes_exactly_and_writes_its_files(tmp_path, monkeypatch):
    images, o = _images(), _opts()
    full = train_stylegan2(images, tmp_path / "full", o, seed=3, progress=False)
    assert not full.skipped and full.G is full.trainer.G_ema and not full.G.training
    again = train_stylegan2(images, tmp_path / "again", o, seed=3, progress=False)
    _assert_same(_state(full), _state(again))
    other = train_stylegan2(images, tmp_path / "other", o, seed=4, progress=False)
    assert not torch.equal(other.G.synthesis_net.blocks[0].const, full.G.synthesis_net.blocks[0].const)

    class Interrupt(Exception):
        pass

    step_fn = StyleGAN2Trainer.train_step

    def crashing(self, batch, step, generator):
        if step == 3:  # after the checkpoint of step 2
            raise Interrupt
        return step_fn(self, batch, step, generator)

    monkeypatch.setattr(StyleGAN2Trainer, "train_step", crashing)
    with pytest.raises(Interrupt):
        train_stylegan2(images, tmp_path / "cut", o, seed=3, progress=False)
    monkeypatch.setattr(StyleGAN2Trainer, "train_step", step_fn)
    resumed = train_stylegan2(images, tmp_path / "cut", o, seed=3, progress=False)
    assert resumed.log[0]["step"] == 1 and [r["step"] for r in resumed.log] == [1, 2, 3, 4]
    _assert_same(_state(full), _state(resumed))
    assert resumed.trainer.ada.state_dict() == full.trainer.ada.state_dict() and full.trainer.p > 0
    assert torch.equal(resumed.trainer.pl_mean, full.trainer.pl_mean)

    run = tmp_path / "full"
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and "r1" in rows[0] and "img_per_sec" in rows[0]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"step_{s:07d}.png" for s in (0, 2, 4)]
    from PIL import Image

    grid = np.asarray(Image.open(run / "samples" / "step_0000004.png"))
    assert grid.shape == (3 * 16 + 2 * 2, 3 * 16 + 2 * 2, 3)  # rows: reals, psi 1, psi 0.7; n_grid 3
    # a finished run is loaded, not retrained; load_generator gives the EMA generator
    skipped = train_stylegan2(images, run, o, seed=3, progress=False)
    assert skipped.skipped
    _assert_same(_state(full), _state(skipped))
    G = load_generator(run)
    for k, v in full.G.state_dict().items():
        assert torch.equal(G.state_dict()[k], v)
    imgs, z = generate(G, 5, seed=1, truncation_psi=0.7, batch_size=2)
    assert imgs.shape == (5, 16, 16, 3) and imgs.dtype == np.uint8 and z.shape == (5, 8)
    imgs2, _ = generate(G, 5, seed=1, truncation_psi=0.7, batch_size=5)
    assert np.array_equal(imgs, imgs2)


def test_load_generator_refuses_unfinished_or_foreign_runs(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="no finished"):
        load_generator(tmp_path)
    o = _opts(steps=4, checkpoint_every=2, pl_weight=0.0, ada_ops=[])
    step_fn = StyleGAN2Trainer.train_step

    def crashing(self, batch, step, generator):
        if step == 3:
            raise RuntimeError("stop")
        return step_fn(self, batch, step, generator)

    monkeypatch.setattr(StyleGAN2Trainer, "train_step", crashing)
    with pytest.raises(RuntimeError):
        train_stylegan2(_images(), tmp_path, o, seed=0, progress=False)
    with pytest.raises(CheckpointError, match="no finished"):
        load_generator(tmp_path)
    G = load_generator(tmp_path, require_complete=False)  # the step-2 checkpoint
    assert G.resolution == 16 and not any(p.requires_grad for p in G.parameters())


def test_bf16_step_runs_and_keeps_float32_weights():
    tr = StyleGAN2Trainer(dataclasses.replace(_opts(), precision="bf16"), seed=0)
    x = torch.from_numpy(_images(4)).permute(0, 3, 1, 2).float() / 127.5 - 1
    for step in range(2):  # an R1 step (float32 real pass) and a plain one
        stats = tr.train_step((x,), step, torch.Generator().manual_seed(step))
        assert all(math.isfinite(v) for v in stats.values())
    assert all(p.dtype == torch.float32 for p in tr.G.parameters())
