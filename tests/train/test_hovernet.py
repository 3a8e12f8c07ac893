import json

import numpy as np
import pytest
import torch

from histolib.errors import DataError, TrainingDiverged
from histolib.train import hovernet as T
from histolib.train.checkpoint import STEP_KEYS, Checkpointer, fingerprint


def _data(n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, 3), 230, np.uint8)
    inst = np.zeros((n, size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for k in range(1, 5):
            cy, cx = rng.integers(5, size - 5, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
            inst[i][disc] = k
            images[i][disc] = (90, 40, 140)
    return images, inst


def _config(**kw):
    base = dict(width=4, blocks=(1, 1), crop=16, batch_size=2, steps=4, ckpt_every=2, log_every=1)
    return T.HoVerNetTrainConfig(**{**base, **kw})


def test_sample_batch_targets_follow_the_augmented_crop():
    images, inst = _data()
    x, np_t, hv_t = T.sample_batch(images, inst, 4, 16, np.random.default_rng(0))
    assert x.shape == (4, 3, 16, 16) and np_t.shape == (4, 16, 16) and hv_t.shape == (4, 2, 16, 16)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.all((hv_t.abs().sum(1) > 0) <= (np_t > 0))  # HV only on nuclei
    with pytest.raises(Exception, match="crop"):
        T.sample_batch(images, inst, 1, 64, np.random.default_rng(0))


def test_training_logs_checkpoints_resumes_and_skips_when_complete(tmp_path):
    images, inst = _data()
    model = T.train_hovernet(images, inst, _config(steps=2), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "last.pt").is_file()
    # a longer run with other args in another folder resumes nothing; the same folder with more
    # steps resumes from step 2 (args differ, so it is not "complete")
    resumed = T.train_hovernet(images, inst, _config(steps=4), tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 4 and state["args"]["steps"] == 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    again = T.train_hovernet(images, inst, _config(steps=4), tmp_path / "run", progress=False)
    for a, b in zip(resumed.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not model.training


def test_prediction_and_evaluation_run_end_to_end(tmp_path):
    images, inst = _data()
    model = T.train_hovernet(images, inst, _config(steps=2), tmp_path / "run", progress=False)
    preds = T.predict_instances(model, images)
    assert len(preds) == 3 and preds[0].shape == (32, 32)
    scores = T.evaluate_hovernet(model, images, inst)
    assert 0 <= scores["dice"] <= 1 and scores["n_images"] == 3


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    images, inst = _data()
    T.train_hovernet(images, inst, _config(steps=2), tmp_path / "run", progress=False)
    real_loss = T.hovernet_loss

    def bad_loss(*args, **kw):
        out = real_loss(*args, **kw)
        out["mse"] = out["mse"] * float("nan")
        return out

    monkeypatch.setattr(T, "hovernet_loss", bad_loss)
    with pytest.raises(TrainingDiverged, match="mse"):
        T.train_hovernet(images, inst, _config(steps=4), tmp_path / "run", progress=False)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2


def test_bad_data_is_refused():
    images, inst = _data()
    with pytest.raises(DataError, match="images"):
        T.train_hovernet(images.astype(np.float32), inst, _config(), "/tmp/unused", progress=False)
    with pytest.raises(DataError, match="instances"):
        T.train_hovernet(images, inst[:, :10], _config(), "/tmp/unused", progress=False)


def test_a_finished_run_is_reused_only_for_the_same_data(tmp_path):
    images, inst = _data()
    T.train_hovernet(images, inst, _config(steps=2), tmp_path / "run", progress=False)
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert first["args"]["data"] == fingerprint(images, inst)
    other = images.copy()
    other[0, 0, 0] = 0
    assert fingerprint(other, inst) != first["args"]["data"]
    with pytest.warns(UserWarning, match="other options.*data"):
        T.train_hovernet(other, inst, _config(steps=2), tmp_path / "run", progress=False)
    second = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert second["args"]["data"] == fingerprint(other, inst)


def test_resume_ignores_step_counts_only(tmp_path):
    args = {"width": 4, "steps": 10, "ckpt_every": 5, "log_every": 1, "data": "abc"}
    Checkpointer(tmp_path, {**args, "steps": 5, "ckpt_every": 1}).save(5, {})
    assert Checkpointer(tmp_path, args, resume_ignores=STEP_KEYS).run().status == "resume"
    assert Checkpointer(tmp_path, {**args, "width": 8}, resume_ignores=STEP_KEYS).run(warn=False).status == "new"
    assert Checkpointer(tmp_path, {**args, "data": "xyz"}, resume_ignores=STEP_KEYS).run(warn=False).status == "new"
    assert Checkpointer(tmp_path, {**args, "steps": 4}, resume_ignores=STEP_KEYS).run(warn=False).status == "new"
    assert Checkpointer(tmp_path, args).run(warn=False).status == "new"  # without ignores: exact args
    assert Checkpointer(tmp_path / "empty", args, resume_ignores=STEP_KEYS).run().status == "new"


def _bn_buffers(model):
    return [t.clone() for n, t in model.state_dict().items() if n.endswith(("running_mean", "running_var"))]


def test_batchnorm_recalibration_fixes_stale_running_statistics():
    images, inst = _data(n=4)
    cfg = _config(bn_batches=16, batch_size=4)
    torch.manual_seed(0)
    model = T.build_model(cfg)
    x = T.sample_batch(images, inst, 16, 16, np.random.default_rng(5), cfg.augment)[0]
    with torch.no_grad():
        model.train()
        batch_stats = model(x)["np"]
        for m in model.modules():  # stale averages, as after a run of unrepresentative last batches
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
                m.running_var.fill_(0.01)
        model.eval()
        stale = (model(x)["np"] - batch_stats).abs().mean()  # logits
        weights = [p.clone() for p in model.parameters()]
        T.recalibrate_batchnorm(model, images, inst, cfg)
        first = _bn_buffers(model)
        model.eval()
        fixed = (model(x)["np"] - batch_stats).abs().mean()
        T.recalibrate_batchnorm(model, images, inst, cfg)
    assert fixed < 0.2 * stale, (fixed, stale)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))  # weights untouched
    assert all(torch.equal(a, b) for a, b in zip(first, _bn_buffers(model), strict=True))  # deterministic


def test_bn_batches_is_part_of_the_run_identity(tmp_path):
    images, inst = _data()
    on = T.train_hovernet(images, inst, _config(steps=2), tmp_path / "on", progress=False)
    off = T.train_hovernet(images, inst, _config(steps=2, bn_batches=0), tmp_path / "off", progress=False)
    for a, b in zip(on.parameters(), off.parameters(), strict=True):  # same training, same weights
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(_bn_buffers(on), _bn_buffers(off), strict=True))
    with pytest.warns(UserWarning, match="bn_batches"):  # a run without recalibration is not reused as one with it
        T.train_hovernet(images, inst, _config(steps=2, bn_batches=0), tmp_path / "on", progress=False)
