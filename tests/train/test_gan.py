import json

import pytest
import torch
from torch import nn

from histolib.errors import TrainingDiverged
from histolib.train.gan import TensorBatches, save_grid, step_generator, train_gan
from histolib.train.spade import SpadeOptions, SpadeTrainer


class ToyTask:
    """A one-parameter 'GAN' whose loss turns NaN at a chosen step."""

    def __init__(self, nan_at=None):
        self.w = nn.Linear(1, 1)
        self.modules = {"G": self.w}
        self.optimizers = {"G": torch.optim.SGD(self.w.parameters(), lr=0.1)}
        self.nan_at = nan_at
        self.calls = 0

    def train_step(self, batch, step, generator):
        (x,) = batch
        loss = (self.w(x) - 1.0).pow(2).mean()
        if self.nan_at is not None and step + 1 >= self.nan_at:
            loss = loss * float("nan")
        self.optimizers["G"].zero_grad()
        loss.backward()
        self.optimizers["G"].step()
        self.calls += 1
        return {"loss_G": loss, "lr": 0.1}

    def sample(self, batch):
        return [torch.zeros(2, 3, 4, 4)]

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def _toy_batches():
    return TensorBatches(torch.linspace(-1, 1, 8)[:, None], batch_size=4)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    task = ToyTask(nan_at=5)
    with pytest.raises(TrainingDiverged, match=r"'loss_G' is nan at step 5.*checkpoints"):
        train_gan(task, _toy_batches(), steps=10, out_dir=tmp_path, seed=0, checkpoint_every=2, progress=False)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 4
    assert all(torch.isfinite(v).all() for v in last["modules"]["G"].values())
    assert not (tmp_path / "checkpoints" / "COMPLETE.json").exists()
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 5  # the bad step is logged for diagnosis


def test_logs_samples_completion_and_skip(tmp_path):
    task = ToyTask()
    fixed = (torch.zeros(2, 1),)
    res = train_gan(task, _toy_batches(), steps=4, out_dir=tmp_path, seed=0, fixed_batch=fixed,
                    checkpoint_every=2, sample_every=2, args={"lr": 0.1}, progress=False)
    assert [r["step"] for r in res.log] == [1, 2, 3, 4] and "img_per_sec" in res.log[0]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step_0000000.png", "step_0000002.png", "step_0000004.png"]
    again = ToyTask()
    res2 = train_gan(again, _toy_batches(), steps=4, out_dir=tmp_path, seed=0, args={"lr": 0.1}, progress=False)
    assert res2.skipped and again.calls == 4 and again.w.weight.item() == task.w.weight.item()
    stored = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["args"]
    assert stored == {"lr": 0.1, "steps": 4, "seed": 0}
    with pytest.warns(UserWarning, match="other options"):
        train_gan(ToyTask(), _toy_batches(), steps=4, out_dir=tmp_path, seed=0, args={"lr": 0.2}, progress=False)


def test_step_generators_are_order_free():
    a = torch.rand(3, generator=step_generator(0, 5))
    assert torch.equal(a, torch.rand(3, generator=step_generator(0, 5)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(0, 6)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(1, 5)))


def _spade_run(out_dir, steps, batches):
    opts = SpadeOptions(n_classes=2, image_size=32, ngf=2, ndf=4, z_dim=2, spade_hidden=8, num_D=1,
                        n_layers_D=2, ada_kimg=0.01, ada_interval=1)
    trainer = SpadeTrainer(opts, seed=0)
    train_gan(trainer, batches, steps=steps, out_dir=out_dir, seed=3, args={"v": 1}, checkpoint_every=2,
              sample_every=100, progress=False)
    return trainer


def test_interrupted_spade_training_resumes_to_identical_weights(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (6, 32, 32), generator=g)
    images = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
    batches = TensorBatches(labels, images, batch_size=2)
    full = _spade_run(tmp_path / "full", 5, batches)

    class Interrupt(Exception):
        pass

    calls = {"n": 0}

    def crashing(gen):
        calls["n"] += 1
        if calls["n"] == 4:  # during step 4, after the checkpoint of step 2
            raise Interrupt
        return batches(gen)

    with pytest.raises(Interrupt):
        _spade_run(tmp_path / "cut", 5, crashing)
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    resumed = _spade_run(tmp_path / "cut", 5, batches)
    assert full.ada.p > 0 and resumed.ada.p == full.ada.p
    for name in ("G", "D"):
        a, b = full.modules[name].state_dict(), resumed.modules[name].state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_save_grid_writes_rows(tmp_path):
    from PIL import Image

    path = save_grid([torch.zeros(3, 1, 4, 4), torch.ones(2, 3, 4, 4)], tmp_path / "g.png")
    img = Image.open(path)
    assert img.size == (3 * 4 + 2 * 2, 2 * 4 + 2)
