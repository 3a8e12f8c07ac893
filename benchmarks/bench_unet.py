"""U-Net training throughput of the study's harness against a plain PyTorch U-Net of the same size.

Both run in this process on the same random 64-px data, batch 16, width 16, depth 4 (the `cpu`
profile), channels_last, fp32. The harness number is the training steps of one `train_unet` epoch (live
flips/rotations, CE + soft Dice, forward, backward, Adam; the epoch's `train_seconds` in its log) in
training images per second; the whole call (model set-up, validation pass, checkpoints) is recorded
beside it. The reference is a bare loop (forward, CE, backward, Adam step) over a minimal U-Net.

Against the machine: the CPU's convolution peak is measured in the same process (a 3x3 convolution,
128 -> 128 channels on 64-px maps, batch 16, forward + backward, fp32 and bf16), the floating-point
operations of one training step of the study's U-Net are counted with ``torch.utils.flop_counter``
(forward + backward convolutions and matrix products), and the harness's achieved GFLOP/s is reported
as a fraction of the fp32 and bf16 peaks.

Run: `.venv/bin/python benchmarks/bench_unet.py [--quick]`; writes benchmarks/results/unet.json.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from histolib.data.folder import Pairs
from histolib.models.unet import UNet
from histolib.train.segmentation import train_unet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import save_record  # noqa: E402  (benchmarks/_record.py, beside this script)

SIZE, WIDTH, DEPTH, BATCH, N_TRAIN, REPEATS = 64, 16, 4, 16, 512, 3


class PlainUNet(nn.Module):
    """The obvious U-Net: conv-BN-ReLU pairs, max-pool, transposed conv, concatenation."""

    def __init__(self, width=WIDTH, depth=DEPTH):
        super().__init__()
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),  # noqa: E731
                                           nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())
        ch = [width * 2**k for k in range(depth)]
        self.enc = nn.ModuleList([block(3, ch[0])] + [block(ch[k - 1], ch[k]) for k in range(1, depth)])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(ch[k], ch[k - 1], 2, 2) for k in range(depth - 1, 0, -1)])
        self.dec = nn.ModuleList([block(2 * ch[k - 1], ch[k - 1]) for k in range(depth - 1, 0, -1)])
        self.out = nn.Conv2d(ch[0], 2, 1)

    def forward(self, x):
        skips = []
        for i, e in enumerate(self.enc):
            x = e(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.dec, strict=True):
            x = dec(torch.cat([skips.pop(), up(x)], 1))
        return self.out(x)


def plain_rate(x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(0)
    net = PlainUNet().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = x.contiguous(memory_format=torch.channels_last)

    def epoch():
        for i in range(0, len(x), BATCH):
            loss = F.cross_entropy(net(x[i:i + BATCH]), y[i:i + BATCH])
            opt.zero_grad()
            loss.backward()
            opt.step()

    epoch()  # warm-up
    t0 = time.perf_counter()
    epoch()
    return len(x) / (time.perf_counter() - t0)


def harness_rate(images: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    train = Pairs(images, masks, [str(i) for i in range(len(images))])
    val = Pairs(images[:16], masks[:16], [str(i) for i in range(16)])
    cfg = SimpleNamespace(width=WIDTH, depth=DEPTH, epochs=1, batch_size=BATCH, lr=1e-3, augment_p=0.5,
                          loss="ce_dice")
    with tempfile.TemporaryDirectory() as tmp:
        train_unet(train, val, cfg, seed=0, out_dir=Path(tmp) / "warm", progress=False)
        t0 = time.perf_counter()
        result = train_unet(train, val, cfg, seed=0, out_dir=Path(tmp) / "run", progress=False)
        whole = time.perf_counter() - t0
        return len(images) / result.history[-1]["train_seconds"], len(images) / whole


def conv_peak(dtype: torch.dtype, repeats: int = 3) -> dict:
    """GFLOP/s of a 3x3 convolution's forward + backward (128 -> 128 channels, 64 px, batch 16), best of
    ``repeats`` after a warm-up; the FLOPs are counted, not assumed."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    conv = nn.Conv2d(128, 128, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(16, 128, 64, 64).contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = conv(x)
        out.float().sum().backward()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"gflop_per_s": flops / min(times) / 1e9, "flops": flops, "seconds": times}


def unet_step_flops() -> int:
    """FLOPs of one training step (forward + backward, batch BATCH) of the harness's U-Net."""
    from torch.utils.flop_counter import FlopCounterMode

    net = UNet(3, 2, WIDTH, DEPTH).to(memory_format=torch.channels_last)
    x = torch.rand(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (BATCH, SIZE, SIZE))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), y).backward()
    return counter.get_total_flops()


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat, print only (no record written)")
    args = ap.parse_args()
    repeats = 1 if args.quick else REPEATS
    load_start = os.getloadavg()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_TRAIN, SIZE, SIZE, 3), dtype=np.uint8)
    masks = (rng.random((N_TRAIN, SIZE, SIZE)) > 0.5).astype(np.uint8)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float() / 255
    y = torch.from_numpy(masks.astype(np.int64))
    plain, ours, ours_whole = [], [], []
    for _ in range(repeats):  # interleaved, so a load change on the machine hits both alike
        plain.append(plain_rate(x, y))
        steps, whole = harness_rate(images, masks)
        ours.append(steps)
        ours_whole.append(whole)
    peak = {"fp32": conv_peak(torch.float32), "bf16": conv_peak(torch.bfloat16)}
    flops_per_img = unet_step_flops() / BATCH
    achieved = flops_per_img * float(np.median(ours)) / 1e9
    record = {
        "setting": {"size": SIZE, "width": WIDTH, "depth": DEPTH, "batch": BATCH, "n_train": N_TRAIN,
                    "memory_format": "channels_last", "dtype": "float32", "repeats": repeats,
                    "torch_threads": torch.get_num_threads()},
        "plain_unet_img_per_s": float(np.median(plain)),
        "histolib_harness_img_per_s": float(np.median(ours)),
        "ratio_harness_to_plain": float(np.median(ours) / np.median(plain)),
        "histolib_whole_epoch_img_per_s": float(np.median(ours_whole)),
        "ratio_whole_epoch_to_plain": float(np.median(ours_whole) / np.median(plain)),
        "all_runs": {"plain": plain, "harness": ours, "harness_whole_epoch": ours_whole},
        "conv_peak": peak,
        "unet_training_flops_per_image": flops_per_img,
        "harness_gflop_per_s": achieved,
        "fraction_of_fp32_conv_peak": achieved / peak["fp32"]["gflop_per_s"],
        "fraction_of_bf16_conv_peak": achieved / peak["bf16"]["gflop_per_s"],
    }
    save_record("unet", record, load_start, quick=args.quick)


if __name__ == "__main__":
    main()
