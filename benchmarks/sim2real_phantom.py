"""Notebook 00's sim-to-real check, for one phantom setting, without the rest of the notebook.

Renders the ``glomeruli`` train / val / test patches exactly as the ``data`` stage does
(:func:`histolib.data.builder._phantom_glomeruli`, same item seeds), trains notebook 00's phantom-only
U-Net per seed (:func:`histolib.studies.data_overview.sim_to_real`, the ``unet`` section of the profile)
and scores it on the real glomerulus crops rescaled to the phantom's median glomerulus diameter, as the
notebook does. Writes ``results/real/benchmarks/sim2real_phantom_<tag>.json`` (numbers only, but computed from
the real crops, so git-ignored like every real-run output: quote them, never commit them).

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/sim2real_phantom.py --tag before --seeds 0 1 2
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/sim2real_phantom.py --tag calibrated --seeds 0 1 2 \
        --set data.calibration=calibration/glomeruli_crops.json

``--set key=value`` overrides params (YAML values); ``--n-train`` etc. shrink the sets for a quick look.
Skips (exit 0, message) when the real crops are absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from histolib.config import load_params  # noqa: E402
from histolib.data.builder import _phantom_glomeruli  # noqa: E402
from histolib.data.folder import Pairs  # noqa: E402
from histolib.studies import data_overview as ov  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", required=True, help="name of the result file")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: notebook 00's")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--n-train", type=int), ap.add_argument("--n-val", type=int), ap.add_argument("--n-test", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--crops", default="../shared/data/real/glomeruli_crops",
                    help="real glomerulus crops, relative to the project root (default %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "models" / "sim2real_phantom"))
    a = ap.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    for key, v in (("data.n_train", a.n_train), ("data.n_val", a.n_val), ("data.n_test", a.n_test),
                   ("unet.epochs", a.epochs)):
        if v is not None:
            overrides[key] = v
    overrides["data.n_gan"] = 1  # not used here
    P = load_params(a.profile, overrides)
    real = ov.load_real_crops(ROOT / a.crops, P.sim2real.n_real)
    if real is None:
        print(f"real crops absent at {a.crops}: skipped")
        return 0
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    parts = _phantom_glomeruli(P, P.seed)
    build_s = time.perf_counter() - t0
    n_built = sum(len(v["images"]) for v in parts.values())
    sets = {k: Pairs(np.stack(v["images"]), np.stack(v["masks"]), v["names"]) for k, v in parts.items()}
    train, val, test = sets["train"], sets["val"], sets["test"]
    target_d = float(np.median(ov.equivalent_diameter_fraction(train.masks))) * P.data.patch_size
    real_scaled = ov.rescale_to_glomerulus_size(real, target_d)
    seeds = a.seeds if a.seeds is not None else [P.seed + k for k in range(P.unet.n_seeds)]
    t1 = time.perf_counter()
    rows = ov.sim_to_real(train, val, test, real_scaled, P.unet, seeds, Path(a.out) / a.tag, progress=False)
    summary, table = ov.sim_to_real_summary(rows, real_scaled)
    import json

    from histolib import viz

    record = {"tag": a.tag, "profile": P.profile, "overrides": {k: v for k, v in overrides.items()},
              "data": {k: getattr(P.data, k) for k in ("patch_size", "fill", "n_train", "n_val", "n_test", "stain")
                       } | {"calibration": getattr(P.data, "calibration", "none")},
              "unet": {k: getattr(P.unet, k) for k in ("width", "depth", "epochs", "batch_size", "lr")},
              "seeds": seeds, "n_real": len(real), "target_glomerulus_diameter_px": target_d,
              "build_seconds": build_s, "patches_built": n_built, "patches_per_second": n_built / build_s,
              "train_seconds": time.perf_counter() - t1, "load_average_at_start": list(load0),
              "runs": rows, "summary": summary, "table": viz.markdown_table(table)}
    out = ROOT / "results" / "real" / "benchmarks" / f"sim2real_phantom_{a.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(record["table"])
    for k in ("dice", "precision", "recall"):
        s = summary[f"real_{k}"]
        print(f"real {k}: {100 * s['mean']:.1f} +- {100 * s['std']:.1f}")
    print(f"built {n_built} patches in {build_s:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
