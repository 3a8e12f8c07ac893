"""U-Net: shapes at several depths, and input-size checking."""

import pytest
import torch

from histolib.errors import ParamError
from histolib.models.unet import UNet


@pytest.mark.parametrize("depth, size", [(2, 8), (3, 16), (4, 32)])
def test_output_matches_input(depth, size):
    net = UNet(3, 4, width=2, depth=depth)
    assert net(torch.rand(2, 3, size, size)).shape == (2, 4, size, size)


def test_bad_size_and_args():
    with pytest.raises(ParamError, match="divisible by 8"):
        UNet(3, 2, 2, depth=4)(torch.rand(1, 3, 20, 20))
    with pytest.raises(ParamError, match="depth"):
        UNet(depth=1)
