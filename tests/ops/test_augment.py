"""Live flips and 90-degree rotations move image and label together (seed 000, Sec. II)."""

import pytest
import torch

from histolib.errors import ParamError
from histolib.ops.augment import random_flip_rot90


def _batch(n=16, size=5):
    # an asymmetric L-shaped object: every one of the 8 symmetries gives a distinct picture
    img = torch.zeros(n, 2, size, size)
    img[:, :, 0, :3] = 1.0
    img[:, :, :2, 0] = 1.0
    img[:, 1] *= 2
    lab = (img[:, 0] > 0).to(torch.uint8) * 3
    return img, lab


def test_same_transform_on_image_and_label():
    img, lab = _batch()
    out, out_lab = random_flip_rot90(img, lab, p=0.9, generator=torch.Generator().manual_seed(0))
    assert out.shape == img.shape and out_lab.dtype == torch.uint8
    assert torch.equal((out[:, 0] > 0).to(torch.uint8) * 3, out_lab)
    assert torch.equal(out[:, 1], 2 * out[:, 0])                       # channels moved alike
    # every output is one of the 8 dihedral images of the input
    variants = [torch.rot90(x, k, (-2, -1)) for x in (img[0], img[0].flip(-1)) for k in range(4)]
    assert all(any(torch.equal(o, v) for v in variants) for o in out)
    assert len({o.numpy().tobytes() for o in out}) > 2                  # several transforms drawn


def test_p_zero_is_identity_and_p_one_always_moves():
    img, lab = _batch()
    same, same_lab = random_flip_rot90(img, lab, p=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(same, img) and torch.equal(same_lab, lab)
    moved, _ = random_flip_rot90(img, None, p=1.0, generator=torch.Generator().manual_seed(1))
    assert all(not torch.equal(m, img[0]) for m in moved)   # flip + 1..3 turns is never the identity


def test_reproducible_and_label_shape_kept():
    img, lab = _batch()
    a = random_flip_rot90(img, lab[:, None], generator=torch.Generator().manual_seed(3))
    b = random_flip_rot90(img, lab[:, None], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[1].shape == (16, 1, 5, 5)


def test_non_square_images_keep_their_shape():
    img = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 1, 3, 4)
    out, _ = random_flip_rot90(img, p=1.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == img.shape
    assert torch.equal(out, img.flip(-1).rot90(2, (-2, -1)))    # flip + 180 degrees


def test_bad_inputs_raise():
    img, lab = _batch()
    with pytest.raises(ParamError, match="labels"):
        random_flip_rot90(img, lab[:, :4])
    with pytest.raises(ParamError, match="p must"):
        random_flip_rot90(img, lab, p=1.5)
    with pytest.raises(ParamError, match="images"):
        random_flip_rot90(img[0], lab)
