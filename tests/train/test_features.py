import numpy as np
import pytest
import torch

from histolib.train.features import (
    encoder_net,
    extract_features,
    images_to_tensor,
    load_feature_net,
    random_net,
)


def _patches(n=8, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_random_net_embeds_and_is_deterministic():
    net = random_net(0)
    f = extract_features(net, _patches(), batch_size=3)
    assert f.shape == (8, 2 * (16 + 32 + 64 + 128)) and f.dtype == np.float64
    assert np.array_equal(f, extract_features(random_net(0), _patches()))
    assert "random" in net.backbone
    assert extract_features(net, np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, f.shape[1])
    assert [t.shape[1] for t in net(images_to_tensor(_patches(2)))] == [16, 32, 64, 128]
    assert not any(p.requires_grad for p in net.parameters())


def test_encoder_substitute_trains_and_records_itself():
    net = encoder_net(_patches(16), seed=0, steps=3, batch_size=4)
    assert net.kind == "encoder" and "3 steps on 16 real patches" in net.backbone
    assert extract_features(net, _patches(2)).shape[0] == 2
    with pytest.raises(ValueError, match="divisible"):
        encoder_net(_patches(2, size=20), steps=1)


def test_load_feature_net_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    assert load_feature_net("auto").kind == "random"
    assert load_feature_net("auto", images=_patches(8), steps=1).kind == "encoder"
    with pytest.raises(ValueError, match="nothing is downloaded"):
        load_feature_net("vgg19")
    with pytest.raises(ValueError, match="does not exist"):
        load_feature_net("auto", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="KID only"):
        load_feature_net("inception", purpose="perceptual")
    with pytest.raises(ValueError, match="kind"):
        load_feature_net("resnet")
