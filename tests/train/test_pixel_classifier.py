"""Training the pixel classifier from a feature file: a separable problem is solved; resume and reload."""

import numpy as np
import pytest
import torch

from histolib.errors import ParamError
from histolib.ops.pixel_features import write_pixel_features
from histolib.train.pixel_classifier import PixelClassifierOptions, class_accuracy, predict_file, train_pixel_classifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks (conftest.py)



def _separable(tmp_path, name, n, seed, size=4, d=6, classes=3):
    """Per-pixel features = one-hot of the class (+ noise) in the first `classes` channels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, (n, size, size))
    feats = rng.normal(0, 0.3, (n, d, size, size)).astype(np.float32)
    for c in range(classes):
        feats[:, c] += 2.0 * (labels == c)
    t = torch.from_numpy(feats)
    path = write_pixel_features(lambda s, e: [t[s:e]], n, size, tmp_path / f"{name}.npy", chunk=2)
    return path, labels


def test_class_accuracy():
    pred = np.array([[0, 1], [1, 1]])
    tgt = np.array([[0, 0], [1, 1]])
    acc = class_accuracy(pred, tgt, 3)
    assert acc[0] == 0.5 and acc[1] == 1.0 and np.isnan(acc[2])


@pytest.mark.parametrize("optimizer,lr", [("adam", 1e-2), ("sgd", 0.1)])
def test_solves_a_separable_problem_then_loads_it(tmp_path, optimizer, lr):
    tr, ytr = _separable(tmp_path, "train", 6, 0)
    va, yva = _separable(tmp_path, "val", 2, 1)
    opts = PixelClassifierOptions(optimizer=optimizer, lr=lr, momentum=0.9 if optimizer == "sgd" else 0.0,
                                  epochs=6, batch_size=16, patience=0, hidden=(16, 8), dropout=0.0, n_classes=3)
    res = train_pixel_classifier(tr, ytr, va, yva, opts, seed=0, out_dir=tmp_path / "run", data="t")
    pred, js = predict_file([res.model], va, 2, 16)
    assert np.nanmean(class_accuracy(pred, yva.reshape(2, -1), 3)) > 0.95
    assert res.best_val > 0.95 and (js == 0).all()
    assert (tmp_path / "run" / "COMPLETE.json").is_file()
    again = train_pixel_classifier(tr, ytr, va, yva, opts, seed=0, out_dir=tmp_path / "run", data="t")
    x = torch.randn(5, 6)
    assert torch.equal(again.model(x), res.model(x)) and again.best_epoch == res.best_epoch


def test_patience_stops_early_and_bad_labels_fail(tmp_path):
    tr, ytr = _separable(tmp_path, "train", 4, 0)
    va, yva = _separable(tmp_path, "val", 2, 1)
    opts = PixelClassifierOptions(optimizer="sgd", lr=0.0, epochs=20, batch_size=16, patience=2, hidden=(8, 8),
                                  n_classes=3)
    res = train_pixel_classifier(tr, ytr, va, yva, opts, seed=0, out_dir=tmp_path / "p", data="t")
    assert len(res.history) == 3  # lr 0: no improvement after the first epoch, stops after 2 more
    with pytest.raises(ParamError, match="outside"):
        train_pixel_classifier(tr, ytr + 3, va, yva, opts, seed=0, out_dir=tmp_path / "q", data="t")
    with pytest.raises(ParamError, match="optimizer"):
        train_pixel_classifier(tr, ytr, va, yva, PixelClassifierOptions(optimizer="rmsprop"), 0, tmp_path / "r", "t")
