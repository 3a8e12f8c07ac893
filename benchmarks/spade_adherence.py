"""Does a trained SPADE follow its label map? (issue 11) Label adherence and faithfulness at a profile.

Run: ``.venv/bin/python benchmarks/spade_adherence.py [--profile cpu] [--kinds gtmask structure]
[--set spade.steps=400 ...] [--tag NAME]``; writes ``benchmarks/results/spade_adherence_<tag>.json``
and a sample grid per model beside it.

Each SPADE model is trained through the study's own path (``histolib.studies.spade.train_spade`` on
the ``gan`` split, in a temporary folder) and scored on the 120 ``test`` patches:

* ``faithfulness``: pooled Dice of a U-Net trained on the real ``train`` split
  (``histolib.train.segmentation.train_unet``, the ``unet`` params), segmenting the generated
  images against the masks they were generated from, divided by that U-Net's Dice on the real test
  images (DESIGN.md section 6). The phantom's patches are glomerulus-centred, so a generator that
  ignores its label map and always draws a centred glomerulus scores well here: the ``floor`` row
  gives the score of the constant mean test image.
* ``faithfulness_shifted``: the same on label maps rolled by up to +-24 px, rotated by multiples of
  90 degrees and flipped (glomerulus no longer centred), relative to the U-Net on the equally moved
  real patches: only a generator that follows its label map scores here.
* ``inside_minus_outside``: mean generated RGB (in [-1, 1]) inside minus outside the mask, per
  channel, beside the real patches' (PAS: darker inside);
* ``std_across_maps``: pixel standard deviation across the generated images, beside the real one
  (a generator that renders the same patch for every map has a small one).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from histolib.config import load_params  # noqa: E402
from histolib.data.folder import Pairs  # noqa: E402
from histolib.data.prepared import ensure_prepared, load_split  # noqa: E402
from histolib.repro import environment_record  # noqa: E402
from histolib.studies import spade as sp  # noqa: E402
from histolib.train.segmentation import predict, train_unet  # noqa: E402
from histolib.train.spade import synthesize  # noqa: E402


def _split(root, name):
    s = load_split("glomeruli", name, root)
    return np.asarray(s.images), (np.asarray(s.masks) > 0).astype(np.uint8)


def _pairs(images, masks):
    return Pairs(images, masks, [f"{i:05d}.png" for i in range(len(images))])


def dice(pred, mask) -> float:
    """Pooled Dice of class 1."""
    p, m = np.asarray(pred) > 0, np.asarray(mask) > 0
    return float(2 * (p & m).sum() / max(int(p.sum() + m.sum()), 1))


def moved(images, masks, seed: int = 0, max_shift: int = 24):
    """Roll (+-max_shift px, wrapping), rotate by k x 90 degrees and flip each patch with its mask."""
    rng = np.random.default_rng(seed)
    out_i, out_m = [], []
    for im, m in zip(images, masks, strict=True):
        dy, dx = rng.integers(-max_shift, max_shift + 1, 2)
        k = rng.integers(4)
        im, m = np.rot90(np.roll(im, (dy, dx), (0, 1)), k), np.rot90(np.roll(m, (dy, dx), (0, 1)), k)
        if rng.random() < 0.5:
            im, m = im[:, ::-1], m[:, ::-1]
        out_i.append(np.ascontiguousarray(im))
        out_m.append(np.ascontiguousarray(m))
    return np.stack(out_i), np.stack(out_m)


def image_stats(images, masks) -> dict:
    """Inside-minus-outside mean colour per channel and pixel std across images, in [-1, 1] units."""
    x = np.asarray(images, np.float32) / 127.5 - 1
    m = np.asarray(masks).astype(bool)[..., None]
    inside = (x * m).sum((1, 2)) / np.maximum(m.sum((1, 2)), 1)
    outside = (x * ~m).sum((1, 2)) / np.maximum((~m).sum((1, 2)), 1)
    return {"inside_minus_outside": np.round((inside - outside).mean(0), 3).tolist(),
            "std_across_maps": round(float(x.std(0).mean()), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--kinds", nargs="+", default=["gtmask", "structure"])
    ap.add_argument("--set", nargs="*", default=[], help="overrides key=value (YAML values)")
    ap.add_argument("--tag", default="current")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args(argv)
    import yaml

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    P = load_params(args.profile, overrides)
    root = ensure_prepared(P)
    test_i, test_m = _split(root, "test")
    moved_i, moved_m = moved(test_i, test_m)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    load = [round(x, 2) for x in __import__("os").getloadavg()]
    with tempfile.TemporaryDirectory(prefix="spade-adherence-") as tmp:
        t0 = time.perf_counter()
        unet = train_unet(_pairs(*_split(root, "train")), _pairs(*_split(root, "val")), P.unet, seed=P.seed,
                          out_dir=Path(tmp) / "unet", progress=False).model
        real = dice(predict(unet, test_i), test_m)
        real_moved = dice(predict(unet, moved_i), moved_m)
        mean_image = np.repeat(test_i.mean(0, keepdims=True).round().astype(np.uint8), len(test_i), 0)
        result = {"profile": args.profile, "overrides": overrides, "unet_seconds": round(time.perf_counter() - t0, 1),
                  "real": {"dice": real, "dice_shifted": real_moved, **image_stats(test_i, test_m)},
                  "floor_constant_mean_image": {"faithfulness": dice(predict(unet, mean_image), test_m) / real,
                                                "faithfulness_shifted": dice(predict(unet, mean_image), moved_m)
                                                / real_moved},
                  "models": {}}
        gan_i, gan_m = _split(root, "gan")
        for kind in args.kinds:
            run = sp.train_spade(kind, P, gan_i, gan_m, Path(tmp) / kind, progress=False)
            G = run.generator
            labels = sp.label_maps(test_i, test_m, kind, P.spade.structure_threshold)
            labels_moved = sp.label_maps(moved_i, moved_m, kind, P.spade.structure_threshold)
            fake, fake_moved = synthesize(G, labels, seed=P.seed), synthesize(G, labels_moved, seed=P.seed)
            steps = run.log[-1]["step"] if run.log else 0
            result["models"][kind] = {
                "seconds": round(run.seconds, 1), "steps": steps,
                "s_per_step": round(run.seconds / max(steps, 1), 3), "perceptual": run.perceptual,
                "precision": run.trainer.precision, "ema": run.trainer.G_ema is not None,
                "faithfulness": dice(predict(unet, fake), test_m) / real,
                "faithfulness_shifted": dice(predict(unet, fake_moved), moved_m) / real_moved,
                **image_stats(fake, test_m)}
            from histolib import viz

            grid = viz.image_grid([[viz.label_map_to_rgb(m, sp.get_kind(kind).n_classes) for m in labels_moved[:8]],
                                   list(moved_i[:8]), list(fake_moved[:8])],
                                  row_labels=["label map (moved)", "real (moved)", kind], title=f"{args.tag}: {kind}")
            grid.savefig(out_dir / f"spade_adherence_{args.tag}_{kind}.png", dpi=80)
            print(kind, json.dumps(result["models"][kind]), flush=True)
    result["load_average_at_start"] = load
    result["environment"] = environment_record()
    path = out_dir / f"spade_adherence_{args.tag}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
