"""Notebook 03 memory: peak resident memory of DatasetGAN's feature extraction + classifier training against N.

Run: ``.venv/bin/python benchmarks/bench_datasetgan_memory.py [--sizes 16 64 256] [--quick]``
Writes ``benchmarks/results/datasetgan_memory.json`` (``--quick``: N = 4 and 16, prints, writes nothing).

For each N (generated images) and each approach, a fresh child process (so that ``ru_maxrss`` is its own peak):

* **memmap (ours)**: ``histolib.ops.pixel_features.write_pixel_features`` writes the last ``feature_blocks``
  synthesis blocks' upsampled features of the N images, ``feature_chunk`` at a time, to an ``(N*H*W, d)`` float16
  ``.npy`` memory map; ``histolib.train.pixel_classifier.train_pixel_classifier`` trains one epoch of the
  3-layer MLP on random 64-pixel batches read from it (:class:`~histolib.ops.pixel_features.PixelBatches`).
* **in RAM (the DatasetGAN reference's approach)**: the same features in one preallocated
  ``np.zeros((N*H*W, d), float16)`` array filled image by image, then one epoch of the same classifier on random
  64-pixel batches indexed from that array.

Both use the ``cpu`` profile's generator architecture (``stylegan2`` section; random weights: memory does not depend
on training) and random 5-class labels. Reported: ``ru_maxrss`` at the end (peak resident set, KiB on Linux), the
resident set after building the generator (the baseline), their difference, the size of the feature array, and
seconds. Memory flat in N for ours, growing by ``N*H*W*d*2`` bytes for the reference's is the claim checked.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_now_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(n: int, mode: str, out: Path) -> None:
    import numpy as np
    import torch

    from histolib.config import load_params
    from histolib.studies import datasetgan as dg
    from histolib.train.stylegan2 import build_generator

    torch.set_num_threads(1)
    P = load_params("cpu")
    c = P.datasetgan
    G = build_generator(P.stylegan2).eval()
    size = int(P.stylegan2.resolution)
    z = dg.latents(G, n, 0)
    fn = dg.feature_fn(G, z, c.truncation_psi, c.feature_blocks)
    with torch.no_grad():
        fn(0, 1)  # warm up the generator's buffers before the baseline
    labels = np.random.default_rng(0).integers(0, 5, (n, size, size)).astype(np.uint8)
    base = _rss_now_kib()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "memmap":
            from histolib.ops.pixel_features import write_pixel_features
            from histolib.train.pixel_classifier import PixelClassifierOptions, train_pixel_classifier

            path = write_pixel_features(fn, n, size, Path(tmp) / "train.npy", chunk=c.feature_chunk)
            val = write_pixel_features(lambda s, e: fn(s, e), 2, size, Path(tmp) / "val.npy", chunk=2)
            d = int(np.load(path, mmap_mode="r").shape[1])
            t_feat = time.perf_counter() - t0
            opts = PixelClassifierOptions(optimizer="adam", lr=1e-3, epochs=1, batch_size=64, patience=0,
                                          hidden=tuple(c.clf_hidden), dropout=c.clf_dropout)
            train_pixel_classifier(path, labels, val, labels[:2], opts, 0, Path(tmp) / "clf", "bench")
        else:
            from histolib.models.pixel_classifier import PixelClassifier
            from histolib.ops.pixel_features import upsample_concat

            hw = size * size
            feats = None
            for s in range(0, n, c.feature_chunk):  # the reference fills one big in-RAM array
                e = min(s + c.feature_chunk, n)
                with torch.no_grad():
                    x = upsample_concat(fn(s, e), size)
                rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).numpy().astype(np.float16)
                if feats is None:
                    feats = np.zeros((n * hw, rows.shape[1]), np.float16)
                feats[s * hw:e * hw] = rows
            d = int(feats.shape[1])
            t_feat = time.perf_counter() - t0
            torch.manual_seed(0)
            model = PixelClassifier(d, 5, tuple(c.clf_hidden), c.clf_dropout)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            y_all = torch.from_numpy(labels.reshape(-1).astype(np.int64))
            order = np.random.default_rng(0).permutation(n * hw)
            for i in range(0, len(order), 64):
                idx = order[i:i + 64]
                if len(idx) < 2:
                    continue
                loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(feats[idx].astype(np.float32))),
                                                         y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.write_text(json.dumps({"n": n, "mode": mode, "size": size, "d": d, "feature_bytes": n * size * size * d * 2,
                               "baseline_rss_kib": base, "peak_rss_kib": peak, "peak_above_baseline_kib": peak - base,
                               "feature_seconds": round(t_feat, 2), "seconds": round(seconds, 2)}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--quick", action="store_true", help="N = 4 and 16; print, write nothing")
    ap.add_argument("--child", nargs=3, metavar=("N", "MODE", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(int(a.child[0]), a.child[1], Path(a.child[2]))
        return 0
    from histolib.repro import environment_record

    sizes = [4, 16] if a.quick else a.sizes
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for mode in ("memmap", "in_ram"):
                out = Path(tmp) / f"{n}_{mode}.json"
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                       "TQDM_DISABLE": "1"}
                subprocess.run([sys.executable, __file__, "--child", str(n), mode, str(out)], check=True, env=env)
                row = json.loads(out.read_text())
                rows.append(row)
                print(f"N={n:4d} {mode:7s}: peak {row['peak_rss_kib'] / 1024:7.1f} MiB, above baseline "
                      f"{row['peak_above_baseline_kib'] / 1024:7.1f} MiB (features {row['feature_bytes'] / 2**20:7.1f} "
                      f"MiB), {row['seconds']:.1f} s", flush=True)
    result = {"benchmark": "datasetgan_memory", "rows": rows, "load_average": os.getloadavg(),
              "environment": environment_record("cpu", ROOT),
              "note": "peak resident set (ru_maxrss) of one child process per (N, approach); memmap pages are "
                      "released every remap_every batches, so they do not accumulate in the resident set"}
    if not a.quick:
        path = ROOT / "benchmarks" / "results" / "datasetgan_memory.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
