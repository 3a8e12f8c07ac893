"""The folder loader: the layout, conversions and a clear error for every kind of bad input."""

import numpy as np
import pytest
from PIL import Image

from histolib.data.folder import load_pairs, read_mask, read_rgb, save_pairs
from histolib.errors import DataError


def _folder(tmp_path, n=2, size=(8, 6)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, size[0], size[1], 3), dtype=np.uint8)
    masks = (rng.random((n, *size)) > 0.5).astype(np.uint8)
    save_pairs(tmp_path, images, masks, [f"s1-{i}.png" for i in range(n)], [{"slide": "s1"}] * n)
    return images, masks


def test_round_trip_binary(tmp_path):
    images, masks = _folder(tmp_path)
    pairs = load_pairs(tmp_path)
    assert pairs.images.shape == (2, 8, 6, 3) and pairs.masks.dtype == np.uint8
    np.testing.assert_array_equal(pairs.images, images)
    np.testing.assert_array_equal(pairs.masks, masks)
    assert pairs.label("s1-0.png", "slide") == "s1"


def test_instances_16bit_round_trip(tmp_path):
    inst = np.zeros((5, 5), np.int32)
    inst[1:3, 1:3] = 300
    inst[4, 4] = 70000 - 5000
    save_pairs(tmp_path, [np.zeros((5, 5, 3), np.uint8)], [inst], ["a.png"], mask_kind="instances")
    pairs = load_pairs(tmp_path, "instances")
    np.testing.assert_array_equal(pairs.masks[0], inst)


def test_unreadable_image_is_named(tmp_path):
    _folder(tmp_path)
    (tmp_path / "images" / "s1-0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"s1-0\.png.*unreadable"):
        load_pairs(tmp_path)
    pairs = load_pairs(tmp_path, strict=False)
    assert pairs.names == ["s1-1.png"] and pairs.skipped[0][0] == "s1-0.png"


def test_size_mismatch_is_named(tmp_path):
    _folder(tmp_path)
    Image.fromarray(np.zeros((7, 6), np.uint8)).save(tmp_path / "masks" / "s1-1.png")
    with pytest.raises(DataError, match=r"s1-1\.png.*6x8 px.*6x7 px"):
        load_pairs(tmp_path)


def test_out_of_range_mask_values(tmp_path):
    _folder(tmp_path)
    Image.fromarray(np.full((8, 6), 7, np.uint8)).save(tmp_path / "masks" / "s1-0.png")
    with pytest.raises(DataError, match=r"s1-0\.png.*\[7\]"):
        load_pairs(tmp_path)
    with pytest.raises(DataError, match=r"outside 0\.\.4"):
        read_mask(tmp_path / "masks" / "s1-0.png", "classes", n_classes=5)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_pairs(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        load_pairs(tmp_path)


def test_missing_mask_and_orphan_are_counted(tmp_path):
    _folder(tmp_path)
    (tmp_path / "masks" / "s1-0.png").rename(tmp_path / "masks" / "other.png")
    with pytest.raises(DataError, match="no mask"):
        load_pairs(tmp_path)
    pairs = load_pairs(tmp_path, strict=False)
    assert {f for f, _ in pairs.skipped} == {"s1-0.png", "other.png"}


def test_grey_and_rgba_are_converted_with_warning(tmp_path):
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((4, 4, 4), 9, np.uint8)).save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="grey"):
        assert read_rgb(tmp_path / "g.png").shape == (4, 4, 3)
    with pytest.warns(UserWarning, match="RGBA"):
        assert read_rgb(tmp_path / "a.png").shape == (4, 4, 3)
