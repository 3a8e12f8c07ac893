"""Which AdaIN setting lets the nuclei pipeline's generated images pass the faithfulness gate? (issue 11)

Run: ``.venv/bin/python benchmarks/nuclei_style_levers.py [--profile cpu] [--j 5] [--config NAME[:key=value,...]]
... [--threads 1] [--tag NAME]``; writes ``benchmarks/results/nuclei_style_<tag>.json`` and, per configuration,
notebook 05's Fig. 4 (generated masks, style tiles, generated images) beside it.

Every configuration runs notebook 05's own path for one ``J`` and each generator replicate
(:func:`histolib.studies.nuclei.fit_sources`, :func:`~histolib.studies.nuclei.generate_all`: blobs, greedy
placement on the fitted Perlin prior, AdaIN trained on generated masks and the ``J`` real tiles, the generated
set) with the ``nuclei`` overrides given, e.g. ``--config current --config steps1500:nuclei.adain_steps=1500``,
and is scored by the notebook's faithfulness: the "Full dataset" HoVer-Net of the study seed, trained once on
the real training images and shared by every configuration, segments the generated images; AJI against their
generating masks over its AJI on the real test images (:func:`~histolib.studies.nuclei.faithfulness_all`;
issue 11's target: >= 0.8). Also recorded: the mean grey level inside and outside the nuclei of the generated
images beside the real training tiles' (a low-contrast rendering is the usual reason for a low score).

Configurations that change the blobs or the placement (not only AdaIN) are valid too; one that would change the
shared HoVer-Net (its :func:`~histolib.studies.nuclei.hovernet_config`) is refused before anything trains.
The numbers are a screen for the lever worth a full re-run of notebook 05, not a verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _record import parse_config, save_record  # noqa: E402

from histolib.config import load_params  # noqa: E402
from histolib.data.prepared import ensure_prepared  # noqa: E402
from histolib.studies import nuclei as nuc  # noqa: E402
from histolib.viz import save_figure  # noqa: E402


def contrast(images: np.ndarray, masks: np.ndarray) -> dict:
    """Mean grey level (0-255) inside and outside the nuclei of ``(N, H, W, 3)`` images with ``(N, H, W)`` masks."""
    grey = np.asarray(images, np.float64).mean(axis=-1)
    inside = np.asarray(masks) > 0
    return {"inside": float(grey[inside].mean()) if inside.any() else float("nan"),
            "outside": float(grey[~inside].mean()) if (~inside).any() else float("nan")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--j", type=int, default=5, help="number of real images J (one of nuclei.j_values)")
    ap.add_argument("--config", action="append", default=[], help="NAME[:key=value,...]; repeatable")
    ap.add_argument("--tag", default="current")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args(argv)
    configs = [parse_config(c) for c in (args.config or ["current"])]
    base = load_params(args.profile)
    params = {name: load_params(args.profile, overrides).nuclei for name, overrides in configs}
    for name, C in params.items():  # every configuration is scored by the same, once-trained HoVer-Net
        if nuc.hovernet_config(C, base.seed) != nuc.hovernet_config(base.nuclei, base.seed):
            raise SystemExit(f"--config {name}: changes the HoVer-Net that scores every configuration")
    if args.threads:
        torch.set_num_threads(args.threads)
    root = ensure_prepared(base)
    train, test = nuc.load_nuclei(root, "train"), nuc.load_nuclei(root, "test")
    groups = nuc.source_images(root, "train")
    subsets = nuc.image_subsets(groups, base.nuclei.j_values, base.seed)
    if args.j not in subsets:
        raise SystemExit(f"--j {args.j}: not one of nuclei.j_values {sorted(subsets)}")
    subsets = {args.j: subsets[args.j]}
    gan_seeds = nuc.generator_seeds(base.seed, base.protocol.n_gan_seeds)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    result = {"profile": args.profile, "j": args.j, "generator_seeds": gan_seeds, "configs": {}}
    real_tiles = train[0][subsets[args.j]], train[1][subsets[args.j]]
    result["real_contrast"] = contrast(*real_tiles)
    with tempfile.TemporaryDirectory(prefix="nuclei-style-") as tmp:
        t0 = time.perf_counter()
        segment = nuc.real_segmenter(train, base.nuclei, base.seed, Path(tmp),
                                     n_train_images=len(set(groups)))
        result["segmenter_seconds"] = round(time.perf_counter() - t0, 1)
        print("real-trained HoVer-Net ready", result["segmenter_seconds"], "s", flush=True)
        for name, overrides in configs:
            C = params[name]
            t0 = time.perf_counter()
            sources = nuc.fit_sources(*train, subsets, C, gan_seeds)
            sets, encoders = nuc.generate_all(sources, C, gan_seeds, Path(tmp) / name, progress=False)
            faith = nuc.faithfulness_all(segment, sets, test)
            row = {"overrides": overrides, "seconds": round(time.perf_counter() - t0, 1),
                   "aji_ratio": [faith[(args.j, g)]["aji"]["ratio"] for g in range(len(gan_seeds))],
                   "aji_generated": [faith[(args.j, g)]["aji"]["synthetic"] for g in range(len(gan_seeds))],
                   "aji_real": faith[(args.j, 0)]["aji"]["real"],
                   "dice_ratio": [faith[(args.j, g)]["dice"]["ratio"] for g in range(len(gan_seeds))],
                   "contrast": [contrast(sets[(args.j, g)].images, sets[(args.j, g)].masks)
                                for g in range(len(gan_seeds))],
                   "encoder": encoders[(args.j, 0)]}
            result["configs"][name] = row
            print(name, json.dumps(row, default=str), flush=True)
            fig = nuc.style_figure(sets[(args.j, 0)], sources[(args.j, 0)])
            save_figure(fig, out_dir / f"nuclei_style_{args.tag}_{name}.png")
    save_record(f"nuclei_style_{args.tag}", result, load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
