"""Texture masks and structure label maps on a hand-made 4x4 patch (seed 000, Sec. II-B)."""

import numpy as np
import pytest

from histolib.errors import ParamError
from histolib.ops.structure import STRUCTURE_CLASSES, saturation, structure_label_map, texture_mask

WHITE, MAGENTA, PALE = (250, 250, 250), (200, 100, 200), (200, 180, 200)  # S = 0, 0.5, 0.1 exactly


def _patch():
    """Left half white, right half stained; bottom-left pixel pale (S = 0.1, on the threshold)."""
    img = np.empty((4, 4, 3), np.uint8)
    img[:, :2], img[:, 2:] = WHITE, MAGENTA
    img[3, 0] = PALE
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 255                      # glomerulus in the centre, 0/255 like the data
    return img, mask


def test_saturation_matches_hand_values():
    img, _ = _patch()
    s = saturation(img)
    assert s[0, 0] == 0 and s[0, 3] == pytest.approx(0.5) and s[3, 0] == pytest.approx(0.1)
    assert saturation(np.zeros((1, 1, 3), np.uint8))[0, 0] == 0          # black: max == 0
    assert saturation(img / 255.0)[0, 3] == pytest.approx(0.5)          # scale-free


def test_texture_threshold_is_strict():
    img, _ = _patch()
    expected = np.array([[0, 0, 1, 1]] * 4, bool)
    assert np.array_equal(texture_mask(img, 0.1), expected)              # S == 0.1 is not textured
    loose = expected.copy()
    loose[3, 0] = True
    assert np.array_equal(texture_mask(img, 0.099), loose)


def test_structure_classes_of_hand_made_patch():
    img, mask = _patch()
    expected = np.array([[0, 0, 1, 1],
                         [0, 2, 3, 1],
                         [0, 2, 3, 1],
                         [0, 0, 1, 1]], np.uint8)
    out = structure_label_map(img, mask)
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    assert np.array_equal(structure_label_map(img, mask > 0), expected)   # bool mask
    assert np.array_equal(structure_label_map(img, mask // 255), expected)  # 0/1 mask
    assert np.array_equal(out // 2, mask // 255)                           # glomerulus bit recovered
    assert len(STRUCTURE_CLASSES) == 4


def test_batches_give_the_per_image_maps():
    img, mask = _patch()
    batch_img = np.stack([img, img[::-1]])
    batch_mask = np.stack([mask, mask[:, ::-1]])
    out = structure_label_map(batch_img, batch_mask)
    assert out.shape == (2, 4, 4)
    for i in range(2):
        assert np.array_equal(out[i], structure_label_map(batch_img[i], batch_mask[i]))
    assert texture_mask(batch_img).shape == (2, 4, 4)


@pytest.mark.parametrize("image, mask, word", [
    (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5)), "mask shape"),
    (np.zeros((4, 4), np.uint8), np.zeros((4, 4)), "image"),
    (np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 2), "mask must be binary"),
    (np.full((4, 4, 3), -1.0), np.zeros((4, 4)), "image"),
])
def test_bad_inputs_raise_param_error_naming_the_argument(image, mask, word):
    with pytest.raises(ParamError, match=word):
        structure_label_map(image, mask)
