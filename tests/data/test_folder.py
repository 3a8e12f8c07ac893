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


# --- issue 9 (integrity): strict labels.csv, deep grey images, decompression bombs ---------------------------

def test_semicolon_labels_csv_is_parsed(tmp_path):
    _folder(tmp_path)
    (tmp_path / "labels.csv").write_text("file;class;slide\ns1-0.png;GS;A\ns1-1.png;nonGS;B\n")
    pairs = load_pairs(tmp_path)
    assert pairs.label("s1-0.png", "slide") == "A" and pairs.label("s1-1.png", "class") == "nonGS"


def test_labels_csv_without_file_column_names_labels_csv_and_columns(tmp_path):
    _folder(tmp_path)
    (tmp_path / "labels.csv").write_text("name,class,slide\ns1-0.png,GS,A\ns1-1.png,GS,B\n")
    with pytest.raises(DataError, match=r"labels\.csv.*no 'file' column.*\['name', 'class', 'slide'\]"):
        load_pairs(tmp_path)
    (tmp_path / "labels.csv").write_text("s1-0.png,GS,A\ns1-1.png,GS,B\n")  # no header row
    with pytest.raises(DataError, match=r"labels\.csv.*no 'file' column"):
        load_pairs(tmp_path)


def test_labels_csv_unknown_class_is_an_error(tmp_path):
    _folder(tmp_path)
    (tmp_path / "labels.csv").write_text("file,class,slide\ns1-0.png,GS,A\ns1-1.png,sclerotic,B\n")
    with pytest.raises(DataError, match=r"labels\.csv.*s1-1\.png.*unknown class 'sclerotic'"):
        load_pairs(tmp_path, classes=("GS", "nonGS"))
    assert load_pairs(tmp_path).label("s1-1.png", "class") == "sclerotic"  # no class list: any class


def test_labels_csv_rows_and_images_that_do_not_correspond_warn(tmp_path):
    _folder(tmp_path, n=3)
    (tmp_path / "labels.csv").write_text("File , Class\ns1-0.png,GS\nghost.png,GS\n")
    with pytest.warns(UserWarning) as record:
        pairs = load_pairs(tmp_path)
    text = " ".join(str(w.message) for w in record)
    assert "ghost.png" in text and "s1-1.png" in text and "s1-2.png" in text
    assert pairs.label("s1-0.png", "class") == "GS"  # header names stripped, matched case-insensitively


def test_16bit_grey_is_scaled_by_its_range_not_clipped(tmp_path):
    grey = np.arange(65536, dtype=np.uint16).reshape(256, 256)  # full 16-bit range
    Image.fromarray(grey).save(tmp_path / "g16.png")
    with pytest.warns(UserWarning, match="grey"):
        rgb = read_rgb(tmp_path / "g16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (256, 256, 3)
    assert (rgb == 255).mean() < 0.01 and rgb.max() == 255 and rgb.min() == 0  # clipping gave 99.6 % white
    assert abs(float(rgb.mean()) - 127.5) < 1
    Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)).save(tmp_path / "f.tif")
    with pytest.warns(UserWarning, match="grey"):
        f = read_rgb(tmp_path / "f.tif")
    assert f[0, 0, 0] == 0 and f[-1, -1, 0] == 255
    Image.fromarray(np.full((4, 4), 7.5, np.float32)).save(tmp_path / "bad.tif")
    with pytest.raises(DataError, match=r"bad\.tif.*\[0, 1\]"), pytest.warns(UserWarning):
        read_rgb(tmp_path / "bad.tif")


def test_decompression_bomb_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "bomb.png")  # 400 px
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # > 2x the limit: PIL raises DecompressionBombError
    with pytest.raises(DataError, match=r"bomb\.png.*decompression-bomb"):
        read_rgb(tmp_path / "bomb.png")
    with pytest.raises(DataError, match=r"bomb\.png.*decompression-bomb"):
        read_mask(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # between 1x and 2x: PIL only warns
    with pytest.raises(DataError, match=r"bomb\.png.*decompression-bomb"):
        read_rgb(tmp_path / "bomb.png")
