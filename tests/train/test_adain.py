import numpy as np
import pytest
import torch

from histolib.errors import DataError, ParamError
from histolib.train import adain as T


def _data():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 32, 32), np.int32)
    masks[:, 8:16, 8:20] = 1
    masks[1, 20:28, 4:12] = 2
    styles = rng.integers(0, 255, (2, 40, 40, 3), dtype=np.uint8)
    return masks, styles


def _config(**kw):
    return T.AdaINTrainConfig(**{**dict(width=0.125, size=16, batch_size=2, steps=3, ckpt_every=2,
                                        log_every=1), **kw})


def test_train_resume_and_generate(tmp_path):
    masks, styles = _data()
    model, info = T.train_adain(masks, styles, _config(steps=2), tmp_path / "a", progress=False)
    assert info.kind == "vgg19-random-init"
    model, _ = T.train_adain(masks, styles, _config(steps=3), tmp_path / "a", progress=False)
    state = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert state["step"] == 3 and state["encoder"]["kind"] == "vgg19-random-init"
    images, chosen = T.generate_images(model, masks, styles, style_counts=[1, 2])
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(chosen, [0, 1, 0])  # closest nucleus count


def test_augmentations_keep_shapes_and_ranges():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g)
    assert T._photometric(x, g).shape == x.shape
    m = (torch.rand(4, 3, 16, 16, generator=g) > 0.5).float()
    warped = T._random_affine(T._flip(m, g), g, "nearest")
    assert set(torch.unique(warped).tolist()) <= {0.0, 1.0}


def test_bad_inputs():
    masks, styles = _data()
    with pytest.raises(ParamError, match="size"):
        T.train_adain(masks, styles, _config(size=12), "/tmp/unused", progress=False)
    with pytest.raises(DataError, match="styles"):
        T.train_adain(masks, styles.astype(np.float32), _config(), "/tmp/unused", progress=False)


def test_encoder_trained_in_pipeline_then_frozen(tmp_path):
    masks, styles = _data()
    frozen, info0 = T.train_adain(masks, styles, _config(steps=4, warmup_steps=3), tmp_path / "a", progress=False)
    trained, info = T.train_adain(masks, styles, _config(steps=4, warmup_steps=3, encoder_steps=2),
                                  tmp_path / "b", progress=False)
    assert info0.kind == "vgg19-random-init" and info0.trained_steps == 0
    assert info.kind == "vgg19-trained-in-pipeline" and info.trained_steps == 2
    start, _ = T.build_model(_config())  # the same seeded random initialisation
    w0 = start.encoder.features[0].weight
    assert torch.equal(frozen.encoder.features[0].weight, w0)  # random-init encoder never moves
    assert not torch.equal(trained.encoder.features[0].weight, w0)  # trained for 2 steps
    assert not any(p.requires_grad for p in trained.encoder.parameters())
    again, _ = T.train_adain(masks, styles, _config(steps=4, warmup_steps=3, encoder_steps=2), tmp_path / "b",
                             progress=False)  # complete: reloaded with the trained encoder
    assert torch.equal(again.encoder.features[0].weight, trained.encoder.features[0].weight)
    assert T.encoder_steps(_config(steps=4, warmup_steps=1, encoder_steps=5)) == 1  # inside the warm-up
