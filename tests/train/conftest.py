"""Fixtures shared by the training tests."""

import numpy as np
import pytest

from histolib.data.folder import Pairs


def _square_pairs(n: int, seed: int) -> Pairs:
    """``n`` 16x16 toy patches: a dark 8x8 square at a random place on a light background; the mask is the square."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 16, 16, 3), 220, np.uint8)
    masks = np.zeros((n, 16, 16), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, 8, 2)
        images[i, y:y + 8, x:x + 8] = 60
        masks[i, y:y + 8, x:x + 8] = 1
    return Pairs(images, masks, [f"{i}.png" for i in range(n)])


@pytest.fixture
def square_pairs():
    """The toy segmentation task as a factory: ``square_pairs(n, seed) -> Pairs``."""
    return _square_pairs
