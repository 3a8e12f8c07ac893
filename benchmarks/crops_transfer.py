"""Issue 15's glomerulus-crops target, screened: phantom-only U-Nets framed like the crops, one configuration each.

Notebook 00's real run (``histolib run-real 00``) trains U-Nets on phantom patches framed as tight as the
real crops (``histolib.studies.transfer``) and scores them on the real crops split by slide as notebook
01's real run splits them. This script repeats only its *phantom only* setting for several configurations
(``--config NAME:key=value,...``, params overrides such as ``sim2real.mix_fill=[0.9,0.99]`` or
``data.n_train=480``), so phantom levers can be compared without the rest of the notebook. Each
configuration is scored on the real test split and on all crops (the phantom-only model sees no real label),
beside the all-glomerulus baseline and a fixed centred mask drawn from the phantom masks (a U-Net must beat it
to show that it reads the image, not the framing).

    OMP_NUM_THREADS=1 python benchmarks/crops_transfer.py --tag fill --config base \\
        --config tight:sim2real.mix_fill=[0.93,0.99] --config more:data.n_train=480

Writes ``results/real/benchmarks/crops_transfer_<tag>.json``: numbers computed from the real crops, so
git-ignored like every real-run output (quote them, never commit them). Skips (exit 0) when the crops are
absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import parse_config  # noqa: E402  (benchmarks/_record.py)

from histolib import viz  # noqa: E402
from histolib.config import load_params  # noqa: E402
from histolib.studies import transfer as tr  # noqa: E402
from histolib.studies.data_overview import all_foreground_baseline  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", required=True, help="name of the result file")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: notebook 00's")
    ap.add_argument("--config", action="append", required=True, metavar="NAME[:key=value,...]")
    ap.add_argument("--crops", default="../shared/data/real/glomeruli_crops",
                    help="real glomerulus crops, relative to the project root (default %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "models" / "crops_transfer"))
    a = ap.parse_args(argv)
    configs = [parse_config(c) for c in a.config]
    if not (ROOT / a.crops / "images").is_dir():
        print(f"real crops absent at {a.crops}: skipped")
        return 0
    load0 = os.getloadavg()
    results = []
    for name, overrides in configs:
        P = load_params(a.profile, overrides)
        seeds = a.seeds if a.seeds is not None else [P.seed + k for k in range(P.unet.n_seeds)]
        t0 = time.perf_counter()
        real = tr.crop_splits(P, ROOT, a.crops)
        tight = tr.tight_phantom(P, P.sim2real.mix_fill)
        rows = tr.phantom_and_real(real, tight, P.unet, seeds, Path(a.out) / name, settings=("phantom only",))
        fixed = tr.fixed_baselines(tight["train"].masks, real)
        table = tr.mix_table(rows, all_foreground_baseline(real["test"]), fixed)
        results.append({"config": name, "overrides": overrides, "seeds": seeds, "runs": rows,
                        "seconds": time.perf_counter() - t0, "table": table})
        print(f"== {name} {overrides}\n{viz.markdown_table(table)}\n", flush=True)
    record = {"tag": a.tag, "profile": a.profile, "crops": a.crops, "configs": results,
              "load_average_at_start": list(load0), "load_average_at_end": list(os.getloadavg())}
    out = ROOT / "results" / "real" / "benchmarks" / f"crops_transfer_{a.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
