"""U-Net training throughput of the study's harness against a plain PyTorch U-Net of the same size.

Both run in this process on the same random 64-px data, batch 16, width 16, depth 4 (the `cpu`
profile), channels_last, fp32. The harness number is the training steps of one `train_unet` epoch (live
flips/rotations, CE + soft Dice, forward, backward, Adam; the epoch's `train_seconds` in its log) in
training images per second; the whole call (model set-up, validation pass, checkpoints) is recorded
beside it. The reference is a bare loop (forward, CE, backward, Adam step) over a minimal U-Net.

Run: `.venv/bin/python benchmarks/bench_unet.py`; writes benchmarks/results/unet.json.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from histolib.data.folder import Pairs
from histolib.repro import environment_record
from histolib.train.segmentation import train_unet

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


def main() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_TRAIN, SIZE, SIZE, 3), dtype=np.uint8)
    masks = (rng.random((N_TRAIN, SIZE, SIZE)) > 0.5).astype(np.uint8)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float() / 255
    y = torch.from_numpy(masks.astype(np.int64))
    plain, ours, ours_whole = [], [], []
    for _ in range(REPEATS):  # interleaved, so a load change on the machine hits both alike
        plain.append(plain_rate(x, y))
        steps, whole = harness_rate(images, masks)
        ours.append(steps)
        ours_whole.append(whole)
    record = {
        "setting": {"size": SIZE, "width": WIDTH, "depth": DEPTH, "batch": BATCH, "n_train": N_TRAIN,
                    "memory_format": "channels_last", "dtype": "float32", "repeats": REPEATS},
        "plain_unet_img_per_s": float(np.median(plain)),
        "histolib_harness_img_per_s": float(np.median(ours)),
        "ratio_harness_to_plain": float(np.median(ours) / np.median(plain)),
        "histolib_whole_epoch_img_per_s": float(np.median(ours_whole)),
        "ratio_whole_epoch_to_plain": float(np.median(ours_whole) / np.median(plain)),
        "all_runs": {"plain": plain, "harness": ours, "harness_whole_epoch": ours_whole},
        "load_average_1_5_15min_at_end": list(os.getloadavg()),
        "environment": environment_record("cpu"),
    }
    out = Path(__file__).parent / "results" / "unet.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"plain U-Net {record['plain_unet_img_per_s']:.1f} img/s, histolib harness "
          f"{record['histolib_harness_img_per_s']:.1f} img/s (ratio {record['ratio_harness_to_plain']:.2f})")


if __name__ == "__main__":
    main()
