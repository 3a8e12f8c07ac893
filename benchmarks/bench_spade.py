"""SPADE generator + discriminator training throughput: ours against a plain reference, same process.

Run: ``.venv/bin/python benchmarks/bench_spade.py [--steps N] [--rounds R] [--quick]``
Writes ``benchmarks/results/spade.json``.

Two settings are measured:

* ``issue``: 64 px, ngf 16, batch 8, two-scale discriminator with 4 layers (ndf 64), batch-norm
  SPADE, no perceptual term, no noise input: the settings at which the NVlabs reference code trains
  at 7.5 img/s on this machine (the target is at least 10 img/s);
* ``cpu``: the ``spade`` section of ``params.yaml`` at the ``cpu`` profile (when present).

The reference ("plain") implementation is written here the obvious way, as the NVlabs code does it:
separate SPADE modules with separate ``gamma``/``beta``/shared convs, hook-based
``torch.nn.utils.spectral_norm``, ``nn.InstanceNorm2d``, contiguous (NCHW) tensors, and per step a
generator update (G forward, D forward on ``[fake, real]``, backward through both networks) then a
discriminator update on a fresh fake (second G forward without gradients). Both have the same
number of trainable parameters (checked). Ours is :class:`histolib.train.spade.SpadeTrainer`
(one G forward per step, D frozen during the G update, fused convs, channels-last). ADA is off for
the comparison (the reference has none); ours is also timed with ADA at ``p = 0.5`` and with
``precision="bf16"`` (CPU bfloat16 autocast of the forward passes; the study's ``precision: auto``
picks it on CPUs with native bf16). ``ours`` and ``reference`` run in fp32 without the EMA generator
whatever the params say, so the comparison stays like for like.

Timing: warm-up steps, then ``steps`` rounds of one step of each implementation in turn; the
median step time gives img/s (``img_per_s_best`` uses the fastest step), the median of the per-round
time ratios the speed-up. Other processes on the machine skew absolute numbers; alternating single
steps keeps the ratio fair.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from histolib.models.spade import count_parameters  # noqa: E402
from histolib.repro import environment_record  # noqa: E402
from histolib.train.spade import SpadeOptions, SpadeTrainer  # noqa: E402

SN = nn.utils.spectral_norm


# --------------------------------------------------------------------------------------------------
# Plain reference networks
# --------------------------------------------------------------------------------------------------

class RefSPADE(nn.Module):
    def __init__(self, norm_nc, label_nc, norm="batch", hidden=128):
        super().__init__()
        self.param_free_norm = (nn.BatchNorm2d(norm_nc, affine=False) if norm == "batch"
                                else nn.InstanceNorm2d(norm_nc, affine=False))
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, 3, padding=1)

    def forward(self, x, segmap):
        normalized = self.param_free_norm(x)
        segmap = F.interpolate(segmap, size=x.size()[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class RefBlock(nn.Module):
    def __init__(self, fin, fout, label_nc, norm, hidden):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        self.conv_0 = SN(nn.Conv2d(fin, fmid, 3, padding=1))
        self.conv_1 = SN(nn.Conv2d(fmid, fout, 3, padding=1))
        self.norm_0 = RefSPADE(fin, label_nc, norm, hidden)
        self.norm_1 = RefSPADE(fmid, label_nc, norm, hidden)
        if self.learned_shortcut:
            self.conv_s = SN(nn.Conv2d(fin, fout, 1, bias=False))
            self.norm_s = RefSPADE(fin, label_nc, norm, hidden)

    def forward(self, x, seg):
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class RefGenerator(nn.Module):
    def __init__(self, label_nc, ngf, size, norm, hidden):
        super().__init__()
        nf = 16 * ngf
        self.sw = size // 32
        self.fc = nn.Conv2d(label_nc, nf, 3, padding=1)
        self.head_0 = RefBlock(nf, nf, label_nc, norm, hidden)
        self.G_middle_0 = RefBlock(nf, nf, label_nc, norm, hidden)
        self.G_middle_1 = RefBlock(nf, nf, label_nc, norm, hidden)
        self.up_0 = RefBlock(nf, nf // 2, label_nc, norm, hidden)
        self.up_1 = RefBlock(nf // 2, nf // 4, label_nc, norm, hidden)
        self.up_2 = RefBlock(nf // 4, nf // 8, label_nc, norm, hidden)
        self.up_3 = RefBlock(nf // 8, nf // 16, label_nc, norm, hidden)
        self.conv_img = nn.Conv2d(ngf, 3, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, seg):
        x = self.fc(F.interpolate(seg, size=(self.sw, self.sw)))
        x = self.head_0(x, seg)
        x = self.up(x)
        x = self.G_middle_0(x, seg)
        x = self.G_middle_1(x, seg)
        for block in (self.up_0, self.up_1, self.up_2, self.up_3):
            x = block(self.up(x), seg)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


class RefNLayerD(nn.Module):
    def __init__(self, in_nc, ndf, n_layers):
        super().__init__()
        seq = [[nn.Conv2d(in_nc, ndf, 4, 2, 2), nn.LeakyReLU(0.2, False)]]
        nf = ndf
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            seq += [[SN(nn.Conv2d(nf_prev, nf, 4, stride, 2)), nn.InstanceNorm2d(nf, affine=False),
                     nn.LeakyReLU(0.2, False)]]
        seq += [[nn.Conv2d(nf, 1, 4, 1, 2)]]
        for i, s in enumerate(seq):
            self.add_module(f"model{i}", nn.Sequential(*s))

    def forward(self, x):
        out = [x]
        for sub in self.children():
            out.append(sub(out[-1]))
        return out[1:]


class RefMultiscaleD(nn.Module):
    def __init__(self, in_nc, ndf, n_layers, num_D):
        super().__init__()
        for i in range(num_D):
            self.add_module(f"discriminator_{i}", RefNLayerD(in_nc, ndf, n_layers))

    def forward(self, x):
        out = []
        for d in self.children():
            out.append(d(x))
            x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        return out


class RefTrainer:
    """The obvious training loop: G step (D weight grads computed and discarded), then D step on a
    fresh fake."""

    def __init__(self, o: SpadeOptions):
        self.o = o
        self.G = RefGenerator(o.n_classes, o.ngf, o.image_size, o.norm_G, o.spade_hidden)
        self.D = RefMultiscaleD(o.n_classes + 3, o.ndf, o.n_layers_D, o.num_D)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=o.lr_G, betas=(o.beta1, o.beta2))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=o.lr_D, betas=(o.beta1, o.beta2))

    def discriminate(self, seg, fake, real):
        pred = self.D(torch.cat([torch.cat([seg, fake], 1), torch.cat([seg, real], 1)], 0))
        b = fake.shape[0]
        return [[p[:b] for p in s] for s in pred], [[p[b:] for p in s] for s in pred]

    def train_step(self, batch, step=0, generator=None):
        labels, real = batch
        seg = F.one_hot(labels, self.o.n_classes).permute(0, 3, 1, 2).float()
        self.opt_G.zero_grad()
        fake = self.G(seg)
        pf, pr = self.discriminate(seg, fake, real)
        g_adv = -sum(s[-1].mean() for s in pf) / len(pf)
        fm = sum(F.l1_loss(a, b.detach())
                 for sf, sr in zip(pf, pr, strict=True) for a, b in zip(sf[:-1], sr[:-1], strict=True))
        g_loss = g_adv + fm * self.o.lambda_fm / len(pf)
        g_loss.backward()
        self.opt_G.step()
        self.opt_D.zero_grad()
        with torch.no_grad():
            fake = self.G(seg).detach()
        pf, pr = self.discriminate(seg, fake, real)
        d_loss = (sum(F.relu(1 + s[-1]).mean() for s in pf) + sum(F.relu(1 - s[-1]).mean() for s in pr)) / len(pf)
        d_loss.backward()
        self.opt_D.step()
        return {"loss_G": float(g_loss.detach()), "loss_D": float(d_loss.detach())}


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------

def _time_step(trainer, batch, step):
    gen = torch.Generator().manual_seed(step)
    t = time.perf_counter()
    trainer.train_step(batch, step, gen)
    return time.perf_counter() - t


def measure(o: SpadeOptions, batch_size: int, steps: int, warmup: int = 3) -> dict:
    """Time ``steps`` steps of each implementation, alternating one step of each, so a burst of
    load from other processes hits all of them alike; per-step ratios give the speed-up."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, o.n_classes, (batch_size, o.image_size, o.image_size), generator=g)
    images = torch.rand(batch_size, 3, o.image_size, o.image_size, generator=g) * 2 - 1
    batch = (labels, images)
    plain = o.__class__(**{**o.__dict__, "z_dim": 0, "ada_ops": (), "precision": "fp32", "ema_kimg": 0.0})
    ours = SpadeTrainer(plain, seed=0)
    ref = RefTrainer(plain)
    n_ours = count_parameters(ours.G) + count_parameters(ours.D)
    n_ref = count_parameters(ref.G) + count_parameters(ref.D)
    if n_ours != n_ref:
        raise RuntimeError(f"parameter counts differ: ours {n_ours}, reference {n_ref}")
    ada = SpadeTrainer(o.__class__(**{**o.__dict__}), seed=0)
    ada.ada.p = 0.5
    bf16 = SpadeTrainer(plain.__class__(**{**plain.__dict__, "precision": "bf16"}), seed=0)
    impls = {"ours": ours, "reference": ref, "ours_ada_p0.5": ada, "ours_bf16": bf16}
    for tr in impls.values():
        for i in range(warmup):
            _time_step(tr, batch, i)
    times = {k: [] for k in impls}
    for i in range(steps):
        for k, tr in impls.items():
            times[k].append(_time_step(tr, batch, warmup + i))
    out = {"parameters": n_ours, "batch_size": batch_size, "steps_timed": steps,
           "options": {**o.__dict__, "ada_ops": list(o.ada_ops)}}
    for k, ts in times.items():
        out[k] = {"median_step_s": statistics.median(ts), "best_step_s": min(ts),
                  "img_per_s": batch_size / statistics.median(ts), "img_per_s_best": batch_size / min(ts)}
    ratios = [r / u for r, u in zip(times["reference"], times["ours"], strict=True)]
    out["speedup_vs_reference"] = statistics.median(ratios)
    ratios = [r / u for r, u in zip(times["reference"], times["ours_bf16"], strict=True)]
    out["speedup_bf16_vs_reference"] = statistics.median(ratios)
    return out


def issue_options() -> tuple[SpadeOptions, int]:
    return SpadeOptions(n_classes=2, image_size=64, ngf=16, ndf=64, z_dim=0, norm_G="batch", num_D=2,
                        n_layers_D=4, lambda_perceptual=0.0), 8


def cpu_options() -> tuple[SpadeOptions, int] | None:
    try:
        from histolib.config import load_params
        from histolib.studies.spade import spade_options  # the params section "spade"

        P = load_params("cpu")
        return spade_options(P, n_classes=2), P.spade.batch_size
    except Exception as e:  # noqa: BLE001 - the cpu setting is optional until params.yaml has it
        print(f"cpu profile setting skipped: {e}")
        return None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per implementation")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="2 timed steps (smoke)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "spade.json"))
    a = ap.parse_args(argv)
    steps = 2 if a.quick else a.steps
    if a.threads:
        torch.set_num_threads(a.threads)
    from histolib.train.gan import tune_cpu_allocator

    allocator = tune_cpu_allocator()
    record = {"benchmark": "spade_training", "allocator_tuned": allocator, "settings": {},
              "load_average_1_5_15min_at_start": list(os.getloadavg()), "torch_threads": torch.get_num_threads()}
    settings = {"issue": issue_options()}
    cpu = cpu_options()
    if cpu is not None:
        settings["cpu"] = cpu
    for name, (o, b) in settings.items():
        res = measure(o, b, steps)
        record["settings"][name] = res
        print(f"{name}: ours {res['ours']['img_per_s']:.2f} img/s, reference {res['reference']['img_per_s']:.2f} "
              f"img/s (x{res['speedup_vs_reference']:.2f}); ours with ADA p=0.5 "
              f"{res['ours_ada_p0.5']['img_per_s']:.2f} img/s")
    record["environment"] = environment_record()
    record["load_average_1_5_15min_at_end"] = list(os.getloadavg())  # > cores: other processes skewed it
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
