import json

import numpy as np
import pytest
import torch

from histolib.train.segmenters import SegOptions, predict_classes, seg_loss, train_segmenter


def test_seg_loss_is_half_bce_plus_dice():
    target = torch.tensor([[[0, 1], [2, 2]]])
    good = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20 - 10
    assert float(seg_loss(good, target)) < 0.01
    logits = torch.zeros(1, 3, 2, 2)  # p = 0.5 everywhere
    onehot = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    inter = (0.5 * onehot).sum((0, 2, 3))
    dice = (1 - (2 * inter + 1) / (0.5 * 4 + onehot.sum((0, 2, 3)) + 1)).mean()
    assert float(seg_loss(logits, target)) == pytest.approx(0.5 * np.log(2) + float(dice), rel=1e-5)


def _data(n=4, s=32):
    rng = np.random.default_rng(0)
    labels = np.zeros((n, s, s), np.uint8)
    labels[:, 4:12, 4:12] = 1
    labels[:, 18:26, 18:28] = 2
    images = rng.integers(0, 30, (n, s, s, 3)).astype(np.uint8) + (labels[..., None] * 100).astype(np.uint8)
    return images, labels


def test_train_segmenter_runs_keeps_best_and_reloads(tmp_path):
    images, labels = _data()
    opts = SegOptions(model="unet", steps=4, batch_size=2, crop=16, eval_every=2, unet_width=2,
                      decoder_channels=(8, 8, 8, 8, 8))
    res = train_segmenter(images, labels, images, labels, opts, 0, tmp_path)
    assert res.best_step in (2, 4) and 0 <= res.best_val <= 1
    assert (tmp_path / "best.pt").is_file()
    # the finished run's last.pt holds the chosen weights without the optimiser state (COMPLETE.json vouches for it)
    assert "optimizer" not in torch.load(tmp_path / "last.pt", weights_only=True)
    done = json.loads((tmp_path / "COMPLETE.json").read_text())
    assert done["best_step"] == res.best_step and set(done["files"]) == {"last.pt", "best.pt"}
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    pred = predict_classes(res.segmenter, images)
    again = train_segmenter(images, labels, images, labels, opts, 0, tmp_path)  # loaded, not retrained
    np.testing.assert_array_equal(predict_classes(again.segmenter, images), pred)
    assert again.best_step == res.best_step


def test_interrupted_run_resumes_exactly(tmp_path):
    images, labels = _data()
    kw = dict(model="unet", batch_size=2, crop=16, eval_every=2, unet_width=2, decoder_channels=(8, 8, 8, 8, 8))
    full = train_segmenter(images, labels, images, labels, SegOptions(steps=4, **kw), 0, tmp_path / "a")
    # an interrupted run: last.pt at step 2 of the same 4-step run, then resumed
    part = tmp_path / "b"
    opts = SegOptions(steps=4, **kw)
    from histolib.train import segmenters as S

    orig = S.evaluate_classes
    calls = []

    def stop_after_first(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return orig(*a, **k)

    S.evaluate_classes = stop_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            train_segmenter(images, labels, images, labels, opts, 0, part)
    finally:
        S.evaluate_classes = orig
    assert (part / "last.pt").is_file()
    resumed = train_segmenter(images, labels, images, labels, opts, 0, part)
    for a, b in zip(full.net.state_dict().values(), resumed.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_predict_pads_sizes_that_are_not_multiples():
    from histolib.models.segmenters import build_segmenter

    seg = build_segmenter("unet", 3, unet_width=2)
    out = predict_classes(seg, np.zeros((2, 20, 28, 3), np.uint8))
    assert out.shape == (2, 20, 28) and out.dtype == np.uint8


def test_foreground_windows_are_centred_near_glomeruli():
    from histolib.train.gan import step_generator
    from histolib.train.segmenters import _batch

    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[1, 40:44, 8:12] = 2
    images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    fg = torch.nonzero(labels > 0)
    opts = SegOptions(batch_size=16, crop=16, fg_fraction=1.0, augment_p=0.0)
    _, y = _batch(images, labels, opts, step_generator(0, 0), fg)
    assert (y == 2).flatten(1).any(1).all()  # every window holds the glomerulus (jitter <= a quarter window)
    uniform = SegOptions(batch_size=16, crop=16, fg_fraction=0.0, augment_p=0.0)
    _, y0 = _batch(images, labels, uniform, step_generator(0, 0), fg)
    assert not (y0 == 2).flatten(1).any(1).all()


def test_bn_momentum_is_applied_to_every_batch_norm():
    from histolib.models.segmenters import build_segmenter

    seg = build_segmenter("effb3_unet", 3, (8, 8, 8, 8, 8), bn_momentum=0.1)
    bns = [m for m in seg.net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.momentum == 0.1 for m in bns)
    default = build_segmenter("effb3_unet", 3, (8, 8, 8, 8, 8))
    assert any(m.momentum == pytest.approx(0.01) for m in default.net.encoder.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
