"""Render speed of the phantom's default and calibrated modes at the cpu profile's data sizes.

Interleaves the two modes round by round (same seeds) so a shared, loaded machine slows both alike, and
writes ``benchmarks/results/phantom_build_speed.json``: items per second of each mode and their ratio, for
glomerulus patches (``data.patch_size``, ``data.fill``) and tissue tiles (``data.tile_size``,
``data.glomerulus_diameter``). Nuclei fields (``data.nuclei_size``, ``data.nucleus_diameter``; H&E and
fluorescence, which have no calibrated mode) are timed in the same rounds and reported as fields per second and
as time per field over the default patch's.

    nice -n 19 python benchmarks/phantom_build_speed.py [--rounds 3] [--n 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _record import save_record  # noqa: E402

from histolib.calibration import phantom_calibration  # noqa: E402
from histolib.config import load_params  # noqa: E402
from histolib.data import phantom  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=20, help="patches per round (tiles: n / 5)")
    ap.add_argument("--calibration", default="calibration/glomeruli_crops.json")
    a = ap.parse_args(argv)
    load0 = os.getloadavg()
    d = load_params("cpu").data
    cal = phantom_calibration(ROOT / a.calibration)
    secs = {(kind, mode): 0.0 for kind in ("patch", "tile") for mode in ("default", "calibrated")}
    counts = {"patch": 0, "tile": 0}
    field_secs = {"he": 0.0, "fluorescence": 0.0}  # nuclei fields: default mode only
    for r in range(a.rounds):
        for kind, n in (("patch", a.n), ("tile", max(1, a.n // 5))):
            for mode, c in ((("default", None), ("calibrated", cal)) if r % 2 == 0 else
                            (("calibrated", cal), ("default", None))):
                t0 = time.perf_counter()
                for i in range(n):
                    s = 1000 * r + i
                    if kind == "patch":
                        phantom.glomerulus_patch(s, size=d.patch_size, stain=d.stain, fill=tuple(d.fill),
                                                 sclerosed=i % 5 == 0, calibration=c)
                    else:
                        phantom.render_tile(s, size=(d.tile_size, d.tile_size), stain=d.stain,
                                            glomerulus_diameter=d.glomerulus_diameter,
                                            sclerosed_fraction=d.sclerosed_fraction, calibration=c)
                secs[(kind, mode)] += time.perf_counter() - t0
            counts[kind] += n
        for style in field_secs:
            t0 = time.perf_counter()
            for i in range(a.n):
                phantom.nuclei_field(1000 * r + i, size=d.nuclei_size, style=style, nucleus_diameter=d.nucleus_diameter)
            field_secs[style] += time.perf_counter() - t0
    rec = {"profile": "cpu", "rounds": a.rounds, "items": counts}
    patch_rate = counts["patch"] / secs[("patch", "default")]
    for style, sec in field_secs.items():
        rate = a.rounds * a.n / sec
        rec[f"nuclei_{style}"] = {"per_second": rate, "time_ratio_over_default_patch": patch_rate / rate}
    for kind in ("patch", "tile"):
        rate = {m: counts[kind] / secs[(kind, m)] for m in ("default", "calibrated")}
        rec[kind] = {"per_second": rate, "time_ratio_calibrated_over_default": rate["default"] / rate["calibrated"]}
    save_record("phantom_build_speed", rec, load0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
