"""Pix2Pix (seed 001) generator + discriminator training throughput: our step against the obvious one.

Same networks, same initial weights, same data, same process, fp32, batch and sizes of the ``cpu``
profile read from ``params.yaml`` (64 px patches, ngf = ndf = 32, batch 8, 2-channel condition,
unconditional D with the linear head of Table 2):

* ``histolib``: :class:`histolib.train.pix2pix.Pix2PixTrainer`'s step: one G forward, D on real and
  fake in one batched call, D frozen during G's backward, fused Adam, default memory format;
* ``obvious``: :func:`histolib.train.pix2pix.reference_train_step`: two D calls, D's weight gradients
  computed in the G pass, the per-parameter Adam loop, default memory format;
* ``histolib_channels_last``: our step with networks and inputs in channels-last layout, recorded
  because it is *not* faster here (why the trainer keeps the default layout).

After one discarded round (oneDNN creates its kernels on first use), runs are interleaved
(``--repeats`` rounds) so a change of machine load hits every variant alike; each run's rate is the
batch over its median step time, and the median over rounds is reported.

Run: ``.venv/bin/python benchmarks/bench_pix2pix.py``; writes ``benchmarks/results/pix2pix.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from histolib.config import load_params
from histolib.repro import environment_record
from histolib.train.pix2pix import (
    Pix2PixOptions,
    Pix2PixTrainer,
    make_optimizers,
    reference_train_step,
)

CL = torch.channels_last


def _data(n: int, size: int, channels: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cond = torch.randint(0, 2, (n, channels, size, size), generator=g).float() * 2 - 1
    real = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return cond, real


def _rate(step, cond, real, batch: int, steps: int, warmup: int) -> float:
    n = len(cond)
    for i in range(warmup):
        j = (i * batch) % (n - batch + 1)
        step(cond[j:j + batch], real[j:j + batch], i)
    times = []
    for i in range(steps):
        j = (i * batch) % (n - batch + 1)
        t0 = time.perf_counter()
        step(cond[j:j + batch], real[j:j + batch], warmup + i)
        times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))  # the median step: robust to a burst of load from elsewhere


def histolib_rate(opts: Pix2PixOptions, cond, real, batch, steps, warmup, channels_last=False) -> float:
    trainer = Pix2PixTrainer(opts, seed=0)
    if channels_last:
        trainer.G.to(memory_format=CL)
        trainer.D.to(memory_format=CL)
        cond, real = cond.contiguous(memory_format=CL), real.contiguous(memory_format=CL)

    def step(c, r, i):
        trainer.train_step((c, r), i, torch.Generator().manual_seed(i))

    return _rate(step, cond, real, batch, steps, warmup)


def obvious_rate(opts: Pix2PixOptions, cond, real, batch, steps, warmup) -> float:
    trainer = Pix2PixTrainer(opts, seed=0)  # the same networks and initial weights ...
    opt_g, opt_d = make_optimizers(trainer.G, trainer.D, opts.lr, (opts.beta1, opts.beta2), fused=False)

    def step(c, r, i):  # ... trained the obvious way
        reference_train_step(trainer.G, trainer.D, opt_g, opt_d, c, r, trainer.weights,
                             torch.Generator().manual_seed(i))

    return _rate(step, cond, real, batch, steps, warmup)


def main() -> None:
    P = load_params("cpu")  # the sizes of the cpu profile, from params.yaml
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=P.data.patch_size, help="patch side (cpu profile)")
    ap.add_argument("--ngf", type=int, default=P.pix2pix.ngf, help="generator width (cpu profile)")
    ap.add_argument("--ndf", type=int, default=P.pix2pix.ndf, help="discriminator width (cpu profile)")
    ap.add_argument("--batch", type=int, default=P.pix2pix.batch_size, help="batch size (cpu profile)")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per run")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pix2pix.json")
    a = ap.parse_args()

    opts = Pix2PixOptions(image_size=a.size, ngf=a.ngf, ndf=a.ndf, kernel_size=P.pix2pix.kernel_size,
                          norm=P.pix2pix.norm, d_head=P.pix2pix.d_head)
    cond, real = _data(max(64, 4 * a.batch), a.size, opts.in_channels)
    runs: dict[str, list[float]] = {"obvious": [], "histolib": [], "histolib_channels_last": []}
    # one discarded round: the first runs of a process pay for oneDNN's kernel creation
    obvious_rate(opts, cond, real, a.batch, a.warmup, 1)
    histolib_rate(opts, cond, real, a.batch, a.warmup, 1)
    histolib_rate(opts, cond, real, a.batch, a.warmup, 1, True)
    for _ in range(a.repeats):
        runs["obvious"].append(obvious_rate(opts, cond, real, a.batch, a.steps, a.warmup))
        runs["histolib"].append(histolib_rate(opts, cond, real, a.batch, a.steps, a.warmup))
        runs["histolib_channels_last"].append(histolib_rate(opts, cond, real, a.batch, a.steps, a.warmup, True))
    med = {k: float(np.median(v)) for k, v in runs.items()}
    record = {
        "setting": {"size": a.size, "ngf": a.ngf, "ndf": a.ndf, "batch": a.batch, "steps": a.steps,
                    "warmup": a.warmup, "repeats": a.repeats, "dtype": "float32", "norm": opts.norm,
                    "d_head": opts.d_head, "conditional_d": opts.conditional_d, "mu_ms": opts.mu_ms,
                    "unit": "training images per second (one D update + one G update per batch)"},
        "obvious_img_per_s": med["obvious"],
        "histolib_img_per_s": med["histolib"],
        "histolib_channels_last_img_per_s": med["histolib_channels_last"],
        "ratio_histolib_to_obvious": med["histolib"] / med["obvious"],
        "all_runs": runs,
        "environment": environment_record("cpu"),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"obvious {med['obvious']:.1f} img/s | histolib {med['histolib']:.1f} img/s "
          f"(x{record['ratio_histolib_to_obvious']:.2f}) | histolib channels-last "
          f"{med['histolib_channels_last']:.1f} img/s  -> {a.out}")


if __name__ == "__main__":
    main()
