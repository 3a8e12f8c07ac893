"""Structure label maps of a hand-made patch; flips/rotations keep image and label together."""

import numpy as np
import pytest
import torch

from histolib.ops.augment import random_flip_rot90
from histolib.ops.structure import structure_label_map, texture_mask


def test_structure_map_of_hand_made_patch():
    img = np.full((2, 2, 3), 250, np.uint8)      # white: S = 0
    img[0, 1] = (200, 100, 200)                  # S = 0.5 -> textured
    img[1, 1] = (200, 185, 200)                  # S = 0.075 -> not textured at 0.1
    mask = np.array([[0, 0], [1, 1]])
    assert texture_mask(img).tolist() == [[False, True], [False, False]]
    assert structure_label_map(img, mask).tolist() == [[0, 1], [2, 2]]
    assert structure_label_map(img, mask, threshold=0.05).tolist() == [[0, 1], [2, 3]]


def test_structure_map_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="mask shape"):
        structure_label_map(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5)))


def test_flip_rot_moves_image_and_label_together():
    img = torch.zeros(8, 1, 6, 6)
    img[:, :, 0:2, 0:3] = 1.0
    lab = (img[:, 0] > 0).long() * 3
    g = torch.Generator().manual_seed(0)
    out_img, out_lab = random_flip_rot90(img, lab, p=0.9, generator=g)
    assert torch.equal((out_img[:, 0] > 0).long() * 3, out_lab)
    assert not torch.equal(out_img, img)
    same, _ = random_flip_rot90(img, lab, p=0.0)
    assert torch.equal(same, img)
