"""Notebook 04 training throughput: the inpainting GAN against a straightforward loop of the same networks, and the
three segmenters, all in this process.

Run: ``.venv/bin/python benchmarks/bench_inpainting.py [--steps N] [--quick]``
Writes ``benchmarks/results/inpainting.json`` (``--quick``: 2 rounds, prints, writes nothing).

Settings: the ``inpainting`` section of ``params.yaml`` at the ``cpu`` profile (64-px crops, ngf 16, ndf 16, eight
AOT blocks, batch 16; segmenters on 64-px windows, batch 8, decoder widths of the profile).

* **Inpainting GAN, ours**: :class:`histolib.train.inpainting.InpaintTrainer` (channels-last; the shared
  global/local discriminator called once on the stack of the four inputs in the D step and once on the two fakes
  in the G step, frozen for G; perceptual and style terms from one feature-network pass), fp32 and bf16 autocast.
* **Inpainting GAN, straightforward**: the *same* generator, discriminator and feature network (copies of the same
  initial weights), written the obvious way: contiguous NCHW tensors; the discriminator called separately on
  each of its four inputs in the D step and on each fake in the G step (not frozen: its gradients are zeroed
  before its next step); the perceptual and the style term each run the feature network on fake and real; fp32.
  Both compute the same losses (checked once on the same batch).
* **Segmenters**: one optimisation step of each model of :mod:`histolib.models.segmenters` (Eq. 14 loss, Adam),
  fp32 and bf16, training images per second.

Timing: warm-up, then ``steps`` rounds of one step of each variant in turn; img/s from the median step time, the
speed-up from the median of the per-round time ratios. Other processes on the machine skew absolute numbers;
alternating single steps keeps ratios fair. Record the machine load (written beside the numbers). On a shared
machine two torch threads stall on every small op; there, compare with ``torch.set_num_threads(1)``
(``--threads 1``).
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
from histolib.models.segmenters import MODELS, build_segmenter  # noqa: E402
from histolib.ops.crops import gap_input, local_region  # noqa: E402
from histolib.studies.inpainting import inpaint_options  # noqa: E402
from histolib.train.features import random_net  # noqa: E402
from histolib.train.gan import step_generator, tune_cpu_allocator  # noqa: E402
from histolib.train.inpainting import InpaintTrainer, gram  # noqa: E402
from histolib.train.segmenters import seg_loss  # noqa: E402


class PlainInpaintLoop:
    """The same networks and losses as :class:`InpaintTrainer`, written the straightforward way."""

    def __init__(self, ours: InpaintTrainer):
        o = self.opt = ours.opt
        self.G = copy.deepcopy(ours.G).to(memory_format=torch.contiguous_format)
        self.D = copy.deepcopy(ours.D).to(memory_format=torch.contiguous_format)
        self.features = ours.features
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))

    def _d_loss(self, x, x_rec, r_ori, r_rec):
        return (self.D(x_rec.detach()).pow(2).mean() + (1 - self.D(x)).pow(2).mean()
                + self.D(r_rec.detach()).pow(2).mean() + (1 - self.D(r_ori)).pow(2).mean())

    def _g_loss(self, x, m, x_rec, r_ori, r_rec):
        o = self.opt
        feats_rec, feats = self.features(x_rec), self.features(x)
        per = sum(F.l1_loss(a, b) for a, b in zip(feats_rec, feats, strict=True))
        sty = sum(F.l1_loss(gram(a), gram(b)) for a, b in zip(feats_rec, feats, strict=True))
        sty = sty / len(self.features.stages)
        return (o.lambda_adv * ((1 - self.D(x_rec)).pow(2).mean() + (1 - self.D(r_rec)).pow(2).mean())
                + o.lambda_l1_global * (x - x_rec).abs().mean()
                + o.lambda_l1_local * (r_ori - r_rec).abs().sum() / (3 * m.sum()).clamp_min(1)
                + o.lambda_perceptual * per + o.lambda_style * sty)

    def losses(self, x, m):
        x_rec = self.G(gap_input(x, m))
        r_ori, r_rec = local_region(x, m), local_region(x_rec, m)
        return self._d_loss(x, x_rec, r_ori, r_rec), self._g_loss(x, m, x_rec, r_ori, r_rec)

    def train_step(self, batch, step, generator):
        x, m = batch
        x_rec = self.G(gap_input(x, m))
        r_ori, r_rec = local_region(x, m), local_region(x_rec, m)
        d_loss = self._d_loss(x, x_rec, r_ori, r_rec)
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        g_loss = self._g_loss(x, m, x_rec, r_ori, r_rec)  # after D's step, as a plain loop does
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        return {}


def _batch(size: int, b: int):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    m = torch.zeros(b, 1, size, size)
    m[:, :, size // 4: 3 * size // 4, size // 4 + 2: 3 * size // 4 - 2] = 1
    return x, m


def _seg_step(name: str, c, size: int, bs: int, precision: str):
    seg = build_segmenter(name, 3, tuple(c.decoder_channels), c.unet_width, c.unetpp_encoder)
    net = seg.net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.rand(bs, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (bs, size, size))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = net(x)
        loss = seg_loss(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 rounds, print only")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 2 if args.quick else args.steps
    tune_cpu_allocator()
    P = load_params("cpu")
    c = P.inpainting
    size, bs = P.data.crop_size, c.batch_size
    load_start = os.getloadavg()
    feats = random_net(0)  # the timing does not depend on the feature weights
    ours = {p: InpaintTrainer(dataclasses.replace(inpaint_options(P), precision=p), 0, feats) for p in ("fp32", "bf16")}
    plain = PlainInpaintLoop(ours["fp32"])
    x, m = _batch(size, bs)
    # same networks and losses: the straightforward loop's losses equal ours on one batch (fp32, same weights; eval
    # mode, so batch norm uses running statistics: in training mode ours normalises D's stacked batch of the four
    # inputs together, the straightforward loop each input alone)
    with torch.no_grad():
        for net in (plain.G, plain.D, ours["fp32"].G, ours["fp32"].D):
            net.eval()
        d_p, g_p = plain.losses(x, m)
        xr = ours["fp32"].generate(x, m)
        ro, rr = local_region(x, m), local_region(xr, m)
        d_o = ours["fp32"].d_loss(x, xr, ro, rr)
        for net in (plain.G, plain.D, ours["fp32"].G, ours["fp32"].D):
            net.train()
    check = {"D loss plain": float(d_p), "D loss ours": float(d_o["loss_D_global"] + d_o["loss_D_local"])}
    variants = {"ours fp32": (ours["fp32"], bs), "ours bf16": (ours["bf16"], bs), "plain fp32": (plain, bs)}
    seg = {f"{n} {p}": (_seg_step(n, c, size, c.seg_batch, p), c.seg_batch) for n in MODELS for p in ("fp32", "bf16")}
    times: dict[str, list[float]] = {k: [] for k in [*variants, *seg]}
    for r in range(args.warmup + rounds):
        for k, (task, _) in variants.items():
            t = time.perf_counter()
            task.train_step((x, m), r, step_generator(0, r))
            if r >= args.warmup:
                times[k].append(time.perf_counter() - t)
        for k, (step, _) in seg.items():
            t = time.perf_counter()
            step()
            if r >= args.warmup:
                times[k].append(time.perf_counter() - t)
    n_img = {**{k: v[1] for k, v in variants.items()}, **{k: v[1] for k, v in seg.items()}}
    out = {k: {"img_per_s": n_img[k] / statistics.median(v), "img_per_s_best": n_img[k] / min(v),
               "median_step_s": statistics.median(v)} for k, v in times.items()}
    ratios = {f"{k} / plain fp32": statistics.median(b / a for a, b in zip(times[k], times["plain fp32"], strict=True))
              for k in ("ours fp32", "ours bf16")}
    result = {"benchmark": "inpainting_training", "settings": {
        "inpainting": f"{size}-px crops, ngf {c.ngf}, ndf {c.ndf}, {c.n_blocks} AOT blocks, batch {bs}, perceptual + "
                      "style on a 4-stage encoder", "segmenters": f"{size}-px windows, batch {c.seg_batch}, decoder "
                      f"{c.decoder_channels}, U-Net width {c.unet_width}, U-Net++ {c.unetpp_encoder}"},
              "rounds": rounds, "throughput": out, "speedup_median_of_rounds": ratios, "loss_check": check}
    save_record("inpainting", result, load_start, args.quick)


if __name__ == "__main__":
    main()
