"""histolib.calibration: features on hand-made inputs, the phantom round trip, the CLI, the report."""

import json
from pathlib import Path

import numpy as np
import pytest

from histolib import calibration as cal
from histolib.cli import main
from histolib.data import phantom
from histolib.data.folder import save_pairs
from histolib.errors import DataError
from histolib.ops.stain import stain_matrix
from histolib.ops.stain_estimation import stain_vector_angle

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_saturation_inside_and_outside_by_hand():
    im = np.full((10, 10, 3), 200, np.uint8)  # grey: S = 0
    im[:5] = (200, 100, 200)                 # S = 0.5
    region = np.zeros((10, 10), np.uint8)
    region[:5, :] = 1
    s = cal.saturation_features(im, region)
    assert s == {"saturated_fraction": 0.5, "saturated_fraction_inside": 1.0, "saturated_fraction_outside": 0.0}
    assert np.isnan(cal.saturation_features(im)["saturated_fraction_inside"])


def test_nucleus_features_of_discs():
    m = np.zeros((100, 100), np.int32)
    m[_disc(m.shape, 25, 25, 8)] = 3
    m[_disc(m.shape, 70, 60, 8)] = 9
    f = cal.nucleus_features(m)
    area = _disc(m.shape, 25, 25, 8).sum()
    assert f["nucleus_area_px"] == area and f["nucleus_diameter_px"] == pytest.approx(2 * np.sqrt(area / np.pi))
    assert f["nuclei_per_1e4_px"] == pytest.approx(2.0) and f["nucleus_fraction"] == pytest.approx(2 * area / 1e4)
    assert f["nucleus_solidity"] > 0.9 and f["nucleus_eccentricity"] < 0.2
    assert f["nuclei_per_d2"] == pytest.approx(2 * f["nucleus_diameter_px"] ** 2 / 1e4)
    empty = cal.nucleus_features(np.zeros((8, 8), np.int32))
    assert empty["nuclei_per_1e4_px"] == 0 and np.isnan(empty["nucleus_diameter_px"])


def test_blur_lowers_sharpness_and_spectrum_slope_of_known_fields():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    noise = rng.normal(128, 20, (128, 128))
    sharp = np.repeat(np.clip(noise, 0, 255).astype(np.uint8)[..., None], 3, 2)
    blurred = np.repeat(np.clip(gaussian_filter(noise, 1.5), 0, 255).astype(np.uint8)[..., None], 3, 2)
    s, b = cal.sharpness_features(sharp), cal.sharpness_features(blurred)
    assert b["sharpness"] < 0.2 * s["sharpness"]
    assert abs(s["spectrum_slope"]) < 0.3  # white noise: flat spectrum
    # a 1/f^2 (Brownian) field: slope -2
    f = np.fft.fftfreq(256)
    r = np.hypot(f[:, None], f[None, :])
    r[0, 0] = 1
    field = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(256, 256))) / r))
    field = (field - field.min()) / np.ptp(field) * 255
    img = np.repeat(field.astype(np.uint8)[..., None], 3, 2)
    assert cal.sharpness_features(img)["spectrum_slope"] == pytest.approx(-2.0, abs=0.3)


def test_glomerulus_features_by_hand():
    im = np.full((50, 50, 3), 150, np.uint8)   # |OD| ~ 0.92: not bright
    g = _disc((50, 50), 25, 25, 15).astype(np.uint8)
    im[_disc((50, 50), 25, 25, 5)] = 250          # bright inside
    im[:6, :6] = 250                              # one bright 6x6 region outside
    f = cal.glomerulus_features(im, g)
    assert f["glomerulus_diameter_px"] == pytest.approx(np.sqrt(4 * g.sum() / np.pi))
    assert f["bright_fraction_inside"] == pytest.approx(_disc((50, 50), 25, 25, 5).sum() / g.sum())
    assert f["bright_fraction_outside"] == pytest.approx(36 / (2500 - g.sum()))
    assert f["bright_region_diameter_rel"] == pytest.approx(2 * np.sqrt(36 / np.pi) / f["glomerulus_diameter_px"])


def test_image_features_keys_per_kind_and_blank_image():
    blank = np.full((32, 32, 3), 255, np.uint8)
    for kind in cal.KINDS:
        f = cal.image_features(blank, None, kind)
        assert list(f) == cal.features_of(kind)
    f = cal.image_features(blank, None, "pas")
    assert np.isnan(f["hematoxylin_od_r"]) and f["tissue_fraction"] == 0  # no stain plane: NaN, no error
    with pytest.raises(DataError, match="kind must be one of"):
        cal.image_features(blank, None, "ihc")
    with pytest.raises(DataError, match="mask must have the image's shape"):
        cal.image_features(blank, np.zeros((3, 3)), "he")


def test_round_trip_stain_vectors_and_glomerulus_fill_from_phantom_pas(tmp_path, monkeypatch):
    """Render PAS patches with a known, non-default stain matrix (no per-slide jitter) and recover it.

    The phantom never paints pure hematoxylin (its nuclei carry PAS too: material (1.6, 0.3)), so Macenko's
    robust extreme lies 3-6 degrees inside the pure vector: recovered within 7 degrees, and much closer
    to the known matrix than to the study's default one.
    """
    from histolib.ops.stain import jitter_stain_matrix

    known = jitter_stain_matrix(stain_matrix("pas"), np.random.default_rng(8), sigma=0.2)  # 13 and 16 degrees off
    monkeypatch.setattr(phantom, "stain_matrix", lambda stain: known.copy())
    tiles = [phantom.glomerulus_patch(i, size=96, stain="pas", fill=(0.6, 0.6), stain_jitter=0.0) for i in range(6)]
    save_pairs(tmp_path, np.stack([t.image for t in tiles]), np.stack([(t.glomeruli == 1) for t in tiles]),
               [f"p-{i}.png" for i in range(6)])
    m = cal.measure_folder(tmp_path, "pas", progress=False)
    d = cal.derived_parameters(m.summary, "pas")
    default = stain_matrix("pas")
    for k in range(2):
        got = stain_vector_angle(d["stain_vectors"][k], known[k])
        assert got < 7.0 and got < stain_vector_angle(known[k], default[k]) - 5.0
    assert d["glomerulus_fill"] == pytest.approx(0.6, abs=0.04) and d["image_side_px"] == pytest.approx(96, abs=1)


@pytest.mark.parametrize("style,diameter", [("he", 12.0), ("fluorescence", 20.0)])
def test_round_trip_nucleus_diameter_from_phantom_fields(style, diameter):
    # each field draws its own nucleus size around the nominal one: the median over fields is the parameter
    tiles = [phantom.nuclei_field(i, size=160, style=style, nucleus_diameter=diameter) for i in range(15)]
    m = cal.measure_images([t.image for t in tiles], [t.nuclei.astype(np.int32) for t in tiles], style, "phantom")
    assert cal.derived_parameters(m.summary, style)["nucleus_diameter_px"] == pytest.approx(diameter, rel=0.15)
    if style == "he":
        ref = stain_matrix("he")
        d = cal.derived_parameters(m.summary, "he")["stain_vectors"]
        assert stain_vector_angle(d[0], ref[0]) < 6.0 and stain_vector_angle(d[1], ref[1]) < 6.0


def test_cli_writes_calibration_json_for_real_like_folders(tmp_path, real_like_root, capsys):
    real_like_root(tmp_path)
    expected = {"schema", "source", "kind", "n_images", "n_available", "sampling", "skipped", "features",
                "definitions", "derived", "histolib_version", "git_commit", "date", "subsample_seed"}
    for name, kind in [("crops", "pas"), ("he", "he"), ("fluo", "fluorescence")]:
        out = tmp_path / "cal" / f"{name}.json"
        assert main(["calibrate-phantom", str(tmp_path / name), "--out", str(out)]) == 0
        rec = json.loads(out.read_text())
        assert expected <= set(rec) and rec["kind"] == kind and rec["source"] == name
        assert set(rec["features"]) == set(cal.features_of(kind))
        assert all(set(v) == {"median", "p5", "p95", "n"} for v in rec["features"].values())
        assert cal.read_calibration(out)["n_images"] == rec["n_images"] > 0
    rec = json.loads((tmp_path / "cal" / "fluo.json").read_text())
    assert rec["features"]["nucleus_diameter_px"]["median"] == pytest.approx(2 * np.sqrt(49 / np.pi), rel=0.2)
    # subsample, and the phantom at the folder's scale
    ph = tmp_path / "cal" / "phantom_he.json"
    assert main(["calibrate-phantom", str(tmp_path / "he"), "--kind", "he", "--limit", "1", "--out",
                 str(tmp_path / "cal" / "he1.json"), "--phantom-out", str(ph), "--n-phantom", "1"]) == 0
    assert json.loads((tmp_path / "cal" / "he1.json").read_text())["n_images"] == 1
    assert json.loads(ph.read_text())["calibrated_against"] == "he"


def test_cli_errors_name_the_folder(tmp_path, real_like_root, capsys):
    assert main(["calibrate-phantom", str(tmp_path / "absent")]) == 2
    assert f"{tmp_path / 'absent'}: does not exist" in capsys.readouterr().err
    (tmp_path / "empty" / "images").mkdir(parents=True)
    assert main(["calibrate-phantom", str(tmp_path / "empty")]) == 2
    assert "images/ holds no image" in capsys.readouterr().err
    real_like_root(tmp_path / "r")
    assert main(["calibrate-phantom", str(tmp_path / "r" / "fluo"), "--kind", "he"]) == 2
    assert "every image is grey" in capsys.readouterr().err


def test_report_inside_outside_and_markdown():
    real = {"a": {"median": 1.0, "p5": 0.5, "p95": 2.0, "n": 10}, "b": {"median": 1.0, "p5": 0.9, "p95": 1.1, "n": 10},
            "c": {"median": float("nan"), "p5": float("nan"), "p95": float("nan"), "n": 0}}
    ph = {"a": {"median": 1.5, "p5": 1, "p95": 2, "n": 3}, "b": {"median": 3.0, "p5": 1, "p95": 2, "n": 3},
          "c": {"median": 1.0, "p5": 1, "p95": 1, "n": 3}}
    table, md = cal.report(ph, real, "set")
    assert list(table["inside"]) == ["yes", "no", "n/a"]
    assert "| set | a | 1.5 | 1 [0.5, 2] | 10 | yes |" in md


def test_real_glomerulus_crops_near_the_study_pas_matrix():
    folder = REAL / "glomeruli_crops"
    if not (folder / "images").is_dir():
        pytest.skip(f"real development set {folder} absent")
    m = cal.measure_folder(folder, limit=4, progress=False)
    assert m.kind == "pas" and len(m.per_image) == 4
    d = cal.derived_parameters(m.summary, "pas")
    ref = stain_matrix("pas")
    assert all(stain_vector_angle(d["stain_vectors"][k], ref[k]) < 10 for k in range(2))
    assert d["glomerulus_fill"] > 0.9


def test_report_real_sets_on_real_like_folders(tmp_path, real_like_root):
    real_like_root(tmp_path)
    table, md, metrics = cal.report_real_sets(tmp_path, n_images=2, n_phantom=1)
    assert sorted(metrics) == ["crops", "fluo", "he"]
    assert {m["kind"] for m in metrics.values()} == {"pas", "he", "fluorescence"}
    assert set(table["real set"]) == set(metrics) and set(table["inside"]) <= {"yes", "no", "n/a"}
    assert md.startswith("| real set | feature |") and "- `he` (he):" in md
    empty_table, empty_md, empty_metrics = cal.report_real_sets(tmp_path / "absent", 2, 1)
    assert empty_table.empty and empty_md == "" and empty_metrics == {}
