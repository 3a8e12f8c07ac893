"""The segmentation harness: learns a trivial task, chooses on validation, resumes, reruns nothing."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from histolib.errors import TrainingDiverged
from histolib.train import segmentation as seg

CFG = SimpleNamespace(width=4, depth=2, epochs=3, batch_size=4, lr=0.01, augment_p=0.5, loss="ce_dice")




def test_training_learns_and_is_deterministic(tmp_path, square_pairs):
    train, val = square_pairs(16, 0), square_pairs(8, 1)
    cfg = SimpleNamespace(**dict(vars(CFG), epochs=8))
    a = seg.train_unet(train, val, cfg, seed=3, out_dir=tmp_path / "a", progress=False)
    b = seg.train_unet(train, val, cfg, seed=3, out_dir=tmp_path / "b", progress=False)
    assert a.best_val_dice > 0.8
    untimed = lambda history: [{k: v for k, v in h.items() if k != "train_seconds"} for h in history]  # noqa: E731
    assert untimed(a.history) == untimed(b.history)
    assert all("train_seconds" in h for h in a.history)  # recorded; its value is timing, not tested
    assert [h["val_dice"] for h in a.history][a.best_epoch - 1] == pytest.approx(a.best_val_dice)


def test_resume_after_interruption_equals_uninterrupted(tmp_path, square_pairs):
    train, val = square_pairs(8, 0), square_pairs(4, 1)
    full = seg.train_unet(train, val, CFG, seed=1, out_dir=tmp_path / "full", progress=False)
    short = dict(vars(CFG), epochs=1)
    seg.train_unet(train, val, SimpleNamespace(**short), seed=1, out_dir=tmp_path / "cut", progress=False)
    # simulate the interruption: the first run stopped after epoch 1 of 3 (same args except epochs)
    ckpt = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    ckpt["args"]["epochs"] = 3
    torch.save(ckpt, tmp_path / "cut" / "last.pt")
    (tmp_path / "cut" / "COMPLETE.json").unlink()
    resumed = seg.train_unet(train, val, CFG, seed=1, out_dir=tmp_path / "cut", progress=False)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in full.history])


def test_complete_run_is_loaded_not_retrained(tmp_path, monkeypatch, square_pairs):
    train, val = square_pairs(8, 0), square_pairs(4, 1)
    first = seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path, progress=False)
    monkeypatch.setattr(seg, "segmentation_loss", lambda *a, **k: pytest.fail("retrained"))
    again = seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path, progress=False)
    assert again.best_val_dice == first.best_val_dice
    assert again.history == first.history  # the whole run's log, not just up to the best epoch
    assert json.loads((tmp_path / "COMPLETE.json").read_text())["args"]["seed"] == 0


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path, monkeypatch, square_pairs):
    train, val = square_pairs(8, 0), square_pairs(4, 1)
    seg.train_unet(train, val, SimpleNamespace(**dict(vars(CFG), epochs=1)), 0, tmp_path, progress=False)
    (tmp_path / "COMPLETE.json").unlink()
    monkeypatch.setattr(seg, "segmentation_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDiverged, match="segmentation.*NaN|nan"):
        seg.train_unet(train, val, SimpleNamespace(**dict(vars(CFG), epochs=1)), 0, tmp_path / "x", progress=False)
    assert (tmp_path / "last.pt").is_file()


def test_predict_pads_odd_sizes():
    net = seg.UNet(3, 2, 2, depth=3)
    out = seg.predict(net, np.zeros((2, 10, 13, 3), np.uint8))
    assert out.shape == (2, 10, 13) and out.dtype == np.uint8


def test_run_experiment_rows(tmp_path, square_pairs):
    sets = {"A": square_pairs(8, 0), "B + C": square_pairs(8, 2)}
    rows = seg.run_experiment(sets, square_pairs(4, 1), square_pairs(4, 3),
                              SimpleNamespace(**dict(vars(CFG), epochs=1)), [0, 1], tmp_path, progress=False)
    assert [(r["set"], r["seed"]) for r in rows] == [("A", 0), ("A", 1), ("B + C", 0), ("B + C", 1)]
    assert all(0 <= r["dice"] <= 1 for r in rows)
    assert len(json.loads((tmp_path / "runs.json").read_text())) == 4
