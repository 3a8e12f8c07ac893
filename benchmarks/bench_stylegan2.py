"""Notebook 03 GAN training throughput: StyleGAN2-ADA (ours) against a straightforward loop of the same networks,
in this process.

Run: ``.venv/bin/python benchmarks/bench_stylegan2.py [--steps N] [--threads 1] [--quick]``
Writes ``benchmarks/results/stylegan2.json`` (``--quick``: 2 rounds, prints, writes nothing).

Settings: the ``stylegan2`` section of ``params.yaml`` at the ``cpu`` profile (64 px; widths, batch, R1 interval
of the profile); ADA on at ``p = 0.2`` for every variant (the same augmentation work).

* **ours**: :class:`histolib.train.stylegan2.StyleGAN2Trainer`: channels-last networks; modulated convolutions
  as scale-convolve-scale with the shared kernel while training; one generator forward per step serves the D
  and the G update; the lazy R1 term folded into the D step's real pass; D frozen during the G update; fp32 and
  bf16 autocast (bf16 is only fast on CPUs with native bf16: AVX512-BF16 or AMX; ``precision: auto`` picks it
  only there).
* **plain**: the *same* generator and discriminator (copies of the same initial weights), written the obvious
  way: contiguous NCHW tensors; modulated convolutions as one grouped convolution with per-sample kernels (the
  reference's ``fused_modconv``); a generator forward for the D update and another for the G update (fresh
  latents, as the reference's phases); R1 as its own discriminator pass on its steps; the discriminator's
  weight gradients computed in the G update and zeroed before its next step; fp32.

Timing: warm-up, then ``steps`` rounds of one step of each variant in turn (step indices cycle through an R1
interval so every variant does its R1 steps); img/s from the median step time and from the total, the speed-up
from the median of the per-round time ratios. Other processes on the machine skew absolute numbers; alternating
single steps keeps ratios fair. The machine load is recorded beside the numbers.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _record import save_record  # noqa: E402  (benchmarks/_record.py, beside this script)

from histolib.config import load_params  # noqa: E402
from histolib.models.stylegan2 import num_parameters  # noqa: E402
from histolib.train.gan import step_generator, tune_cpu_allocator  # noqa: E402
from histolib.train.spade import native_bf16  # noqa: E402
from histolib.train.stylegan2 import StyleGAN2Trainer, r1_penalty  # noqa: E402

P_AUG = 0.2


class PlainStyleGAN2Loop:
    """The same networks, losses and augmentation as :class:`StyleGAN2Trainer`, written the straightforward way."""

    def __init__(self, ours: StyleGAN2Trainer):
        o = self.opt = ours.opt
        self.G = copy.deepcopy(ours.G).to(memory_format=torch.contiguous_format)
        self.D = copy.deepcopy(ours.D).to(memory_format=torch.contiguous_format)
        for m in self.G.modules():
            if hasattr(m, "fused"):
                m.fused = True  # grouped convolution with per-sample kernels, also in training
        self.augment, self.p = ours.augment, P_AUG
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))

    def _d(self, x, g):
        if self.augment is not None:
            x = self.augment(x, None, self.p, g)[0]
        return self.D(x)

    def _fake(self, b, g):
        z = torch.randn(b, self.opt.z_dim, generator=g)
        return self.G.synthesis(self.G.mapping(z, update_w_avg=True), noise_mode="random", generator=g)

    def train_step(self, batch, step, g):
        o, real = self.opt, batch[0]
        b = real.shape[0]
        fake = self._fake(b, g)
        loss_d = F.softplus(self._d(fake.detach(), g)).mean() + F.softplus(-self._d(real, g)).mean()
        self.opt_d.zero_grad()
        loss_d.backward()
        self.opt_d.step()
        if o.r1_gamma > 0 and step % o.r1_interval == 0:
            x = real.detach().requires_grad_(True)
            loss_r1 = r1_penalty(self._d(x, g), x).mean() * (o.r1_gamma / 2) * o.r1_interval
            self.opt_d.zero_grad()
            loss_r1.backward()
            self.opt_d.step()
        loss_g = F.softplus(-self._d(self._fake(b, g), g)).mean()
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()
        return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 rounds, print only")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 variant (slow without native bf16)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 2 if args.quick else args.steps
    tune_cpu_allocator()
    o = load_params("cpu").stylegan2
    bs, res = o.batch_size, o.resolution
    load_start = os.getloadavg()
    precisions = ("fp32",) if args.no_bf16 else ("fp32", "bf16")
    ours = {p: StyleGAN2Trainer(dataclasses.replace(o, precision=p), 0) for p in precisions}
    for tr in ours.values():
        if tr.ada is not None:
            tr.ada.p = P_AUG
            tr.ada.kimg = 1e9  # hold p during the benchmark
    plain = PlainStyleGAN2Loop(ours["fp32"])
    x = torch.rand(bs, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1
    # same networks: both generators give the same images for the same ws (fused against unfused kernels)
    with torch.no_grad():
        ws = ours["fp32"].G.mapping(torch.randn(2, o.z_dim, generator=torch.Generator().manual_seed(1)))
        a = ours["fp32"].G.synthesis(ws)
        b = plain.G.synthesis(ws)
    check = {"max_abs_diff_G_ours_vs_plain": float((a - b).abs().max())}
    variants = {f"ours {p}": tr for p, tr in ours.items()}
    variants["plain fp32"] = plain
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.warmup + rounds):
        step = r % o.r1_interval  # step 0 of each interval is an R1 step
        for k, task in variants.items():
            t = time.perf_counter()
            task.train_step((x,), step, step_generator(0, r))
            if r >= args.warmup:
                times[k].append(time.perf_counter() - t)
    out = {k: {"img_per_s": bs / statistics.median(v), "img_per_s_total": bs * len(v) / sum(v),
               "median_step_s": statistics.median(v)} for k, v in times.items()}
    ratios = {f"{k} / plain fp32": statistics.median(p / a for a, p in zip(times[k], times["plain fp32"], strict=True))
              for k in variants if k != "plain fp32"}
    G, D = ours["fp32"].G, ours["fp32"].D
    result = {"benchmark": "stylegan2_training", "settings": {
        "stylegan2": f"{res} px, channels {G.block_channels} at {G.block_resolutions}, z/w {o.z_dim}/{o.w_dim}, "
                     f"{o.mapping_layers} mapping layers, batch {bs}, R1 every {o.r1_interval} steps, ADA "
                     f"{len(o.ada_ops)} ops at p = {P_AUG}, path length {'on' if o.pl_weight else 'off'}",
        "parameters": {"G": num_parameters(G), "D": num_parameters(D)},
        "threads": torch.get_num_threads(), "native_bf16": native_bf16()},
              "rounds": rounds, "throughput": out, "speedup_median_of_rounds": ratios, "check": check}
    save_record("stylegan2", result, load_start, args.quick)


if __name__ == "__main__":
    main()
