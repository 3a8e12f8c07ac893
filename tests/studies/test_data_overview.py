"""Notebook 00's helpers on hand-made inputs."""

import numpy as np
import pytest

from histolib.data.folder import Pairs
from histolib.studies import data_overview as ov


def test_equivalent_diameter_fraction():
    m = np.zeros((10, 10), np.uint8)
    m[:5, :5] = 1  # area 25 -> d = sqrt(100/pi)
    assert ov.equivalent_diameter_fraction([m])[0] == pytest.approx(np.sqrt(100 / np.pi) / 10)


def test_colour_statistics_white_is_not_tissue():
    im = np.full((4, 4, 3), 245, np.uint8)
    im[:2] = (200, 80, 160)           # saturated magenta half
    s = ov.colour_statistics([im])
    assert s["tissue_fraction"][0] == pytest.approx(0.5)
    assert s["saturation"][0] == pytest.approx(120 / 200, abs=1e-6)


def test_rescale_matches_glomerulus_diameter():
    m = np.zeros((40, 40), np.uint8)
    m[10:30, 10:30] = 1               # d = sqrt(1600/pi) ~ 22.6 px
    pairs = Pairs([np.zeros((40, 40, 3), np.uint8)], [m], ["a.png"])
    out = ov.rescale_to_glomerulus_size(pairs, target_diameter=11.3)
    assert out.images[0].shape[0] == 20 and out.masks[0].shape == (20, 20)
    assert set(np.unique(out.masks[0])) <= {0, 1}


def test_baseline_and_claims():
    m = np.zeros((4, 4), np.uint8)
    m[:2] = 1
    base = ov.all_foreground_baseline(Pairs([np.zeros((4, 4, 3), np.uint8)], [m], ["a"]))
    assert base["dice"] == pytest.approx(2 * 8 / (2 * 8 + 8))
    summary = {"real_dice": {"mean": 0.9, "std": 0.01, "ci_low": 0.88, "ci_high": 0.92, "n": 3},
               "real_baseline": {"dice": 0.8}}
    rows = [{"statistic": "hue", "phantom": "0.900 [0.8, 1.0]", "real": "0.850 [0.800, 0.950]"}]
    claims = ov.realism_claims(summary, rows)
    assert claims[0]["verdict"] == "holds" and claims[1]["verdict"] == "holds"
    summary["real_dice"].update(ci_low=0.5, ci_high=0.7)
    assert ov.realism_claims(summary, [])[0]["verdict"] == "does not hold"
    assert ov.realism_claims({}, [])[0]["verdict"] == "not measured"
    # keyed like every paper claim, so a real run's verdicts line up with the phantom's (histolib.realruns)
    assert [c["key"] for c in claims] == ["00-sim2real-beats-baseline", "00-colour-hue"]
    from histolib.realruns import compare_claims

    rows = compare_claims(ov.realism_claims({}, []), claims)
    assert [(r["claim"], r["phantom"], r["real"]) for r in rows] == [
        ("00-sim2real-beats-baseline", "not measured", "holds"), ("00-colour-hue", "—", "holds")]


def test_sim_to_real_summary_with_and_without_real_crops():
    rows = [{"phantom_dice": 0.9, "real_dice": 0.4, "real_precision": 0.9, "real_recall": 0.3},
            {"phantom_dice": 0.8, "real_dice": 0.6, "real_precision": 0.95, "real_recall": 0.4}]
    summary, table = ov.sim_to_real_summary(rows, None)
    assert set(summary) == {"phantom_test_dice"} and len(table) == 1
    assert summary["phantom_test_dice"]["mean"] == pytest.approx(0.85)
    m = np.zeros((4, 4), np.uint8)
    m[:2] = 1
    real = Pairs([np.zeros((4, 4, 3), np.uint8)], [m], ["a"])
    summary, table = ov.sim_to_real_summary(rows, real)
    assert summary["real_dice"]["mean"] == pytest.approx(0.5)
    assert summary["real_baseline"]["dice"] == pytest.approx(2 / 3)  # 8 of 16 pixels glomerulus
    assert [r["model"] for r in table] == ["U-Net (phantom-trained)", "U-Net (phantom-trained)",
                                          "all-glomerulus baseline"]
    assert table[1]["evaluated on"] == "real crops (n=1)"


def test_find_real_sets_kinds_and_modalities(tmp_path, real_like_root):
    real_like_root(tmp_path)
    sets = ov.find_real_sets(tmp_path)
    assert {k: (v["kind"], v["modality"]) for k, v in sets.items()} == {
        "crops": ("glomeruli", "brightfield"), "fluo": ("nuclei", "fluorescence"), "he": ("nuclei", "brightfield")}
    assert ov.find_real_sets(tmp_path / "absent") == {}


def test_nuclei_statistics_by_hand():
    m = np.zeros((10, 20), np.int32)
    m[:2, :2] = 7        # area 4
    m[5:7, 5:7] = 9      # area 4: median diameter 2 sqrt(4 / pi)
    im = np.full((10, 20, 3), 10, np.uint8)
    im[m > 0] = 200
    d = 2 * np.sqrt(4 / np.pi)
    s = ov.nuclei_statistics([im], [m], target_diameter=2 * d)  # scale x2: the image counts 4x the area
    assert s["background_intensity"][0] == 10 and s["nucleus_intensity"][0] == 200 and s["contrast"][0] == 190
    assert s["nucleus_fraction"][0] == pytest.approx(8 / 200) and s["saturation"][0] == 0
    assert s["nucleus_diameter_px"][0] == pytest.approx(d)
    assert s["nuclei_per_1e4_px_at_target"][0] == pytest.approx(2 / (200 * 4) * 1e4)


def test_compare_real_sets_writes_grids_only_to_the_given_folder(tmp_path, real_like_root):
    from histolib.config import load_params

    real_like_root(tmp_path / "real")
    P = load_params("smoke", {"sim2real.n_grid": 2, "data.nuclei_size": 32})
    rows, figs = ov.compare_real_sets(ov.find_real_sets(tmp_path / "real"), P, tmp_path / "figs")
    assert sorted(p.name for p in figs) == ["side_by_side_crops.png", "side_by_side_fluo.png", "side_by_side_he.png"]
    assert all(p.parent == tmp_path / "figs" and p.is_file() for p in figs)
    assert {(r["real set"], r["phantom style"]) for r in rows} == {("fluo", "fluorescence"), ("he", "he")}
    assert len(rows) == 2 * len(ov.NUCLEI_STATS)
    assert all(isinstance(r["difference of medians"], float) for r in rows)
