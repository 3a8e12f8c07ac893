import pytest
import torch

from histolib.errors import ParamError
from histolib.models.segmenters import MODELS, build_segmenter

DEC = (8, 8, 8, 8, 8)


@pytest.mark.parametrize("name", MODELS)
def test_build_offline_and_forward_three_classes(name):
    seg = build_segmenter(name, 3, DEC, unet_width=4, unetpp_encoder="resnet18")
    assert seg.name == name and "random init" in seg.encoder
    y = seg.net.eval()(torch.rand(1, 3, 32, 32))
    assert y.shape == (1, 3, 32, 32)


def test_effb3_is_an_efficientnet_b3_unet():
    seg = build_segmenter("effb3_unet", 3, DEC)
    assert type(seg.net).__name__ == "Unet" and type(seg.net.encoder).__name__ == "EfficientNetEncoder"
    assert seg.multiple == 32


def test_encoder_weights_from_a_local_file_only(tmp_path):
    src = build_segmenter("effb3_unet", 3, DEC, seed=1)
    path = tmp_path / "effb3.pth"
    torch.save(src.net.encoder.state_dict(), path)
    seg = build_segmenter("effb3_unet", 3, DEC, encoder_weights=str(path), seed=2)
    assert str(path) in seg.encoder
    k = next(iter(src.net.encoder.state_dict()))
    torch.testing.assert_close(seg.net.encoder.state_dict()[k], src.net.encoder.state_dict()[k])
    with pytest.raises(ParamError, match="does not exist"):
        build_segmenter("effb3_unet", 3, DEC, encoder_weights=str(tmp_path / "missing.pth"))


def test_bad_arguments():
    with pytest.raises(ParamError, match="unknown segmentation model"):
        build_segmenter("swin_unet")
    with pytest.raises(ParamError, match="5 widths"):
        build_segmenter("unetpp", decoder_channels=(8, 8))
