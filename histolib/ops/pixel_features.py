"""Per-pixel generator features on disk: DatasetGAN's feature tensor as a memory-mapped ``(N*H*W, d)`` array.

DatasetGAN (Zhang et al. 2021) classifies each pixel of a generated image from the generator's own
activations: the feature maps of several synthesis blocks, each bilinearly upsampled to the image size and
concatenated along channels, give every pixel a ``d``-dimensional vector. The reference code keeps all of
them in RAM (``N * H * W * d`` float16 values: 160-260 GB for its datasets); Histopathology DatasetGAN
(Rizvi et al., seed 002) writes them to a memory-mapped array instead and reads only the pixels in use.

Here:

* :func:`upsample_concat` -- block outputs ``[(N, C_b, H_b, W_b)]`` -> ``(N, sum C_b, S, S)``;
* :func:`write_pixel_features` -- runs a feature function over the items in chunks and writes each chunk's
  rows straight into an ``.npy`` file opened with :func:`numpy.lib.format.open_memmap` (row
  ``i * H * W + y * W + x`` is pixel ``(y, x)`` of item ``i``); the file is reopened per chunk and
  flushed, so the process never holds more than one chunk of features, whatever ``N``;
* :class:`PixelBatches` -- random pixel minibatches (features as float32 tensors, labels int64) read
  from such a file; the mapping is dropped and reopened every ``remap_every`` batches (default 4), so the pages
  read stop counting towards the process's resident memory (they stay in the page cache).

Peak memory is therefore flat in ``N``: one chunk of upsampled features while writing, a bounded
number of touched pages while reading (``benchmarks/bench_datasetgan_memory.py`` measures it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["upsample_concat", "write_pixel_features", "open_pixel_features", "PixelBatches", "read_rows"]


def upsample_concat(feats: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Bilinearly upsample every block output to ``size`` and concatenate along channels.

    Args:
        feats: block outputs, each ``(N, C_b, H_b, W_b)`` with ``H_b, W_b <= size`` (same ``N``).
        size: the image side ``S``.

    Returns:
        ``(N, d, S, S)`` float32 with ``d = sum_b C_b`` (blocks in the given order). A block already at
        ``S`` is copied, not resampled (``align_corners=False`` bilinear elsewhere, as the reference).

    Raises:
        ValueError: no block, a block that is not 4-D, or blocks with different ``N``.
    """
    if not feats:
        raise ValueError("upsample_concat needs at least one feature map")
    n = feats[0].shape[0]
    out = []
    for k, f in enumerate(feats):
        if f.ndim != 4 or f.shape[0] != n:
            raise ValueError(f"feature map {k} has shape {tuple(f.shape)}; expected (N={n}, C, H, W)")
        f = f.float()
        if f.shape[-2:] != (size, size):
            f = F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False)
        out.append(f)
    return torch.cat(out, 1)


def write_pixel_features(feature_fn: Callable[[int, int], Sequence[torch.Tensor]], n_items: int, size: int,
                         path: str | os.PathLike, chunk: int = 4, dtype=np.float16,
                         progress: Callable[[int], None] | None = None) -> Path:
    """Write the per-pixel features of ``n_items`` items to ``path`` (an ``.npy`` memory map), chunk by chunk.

    Args:
        feature_fn: ``feature_fn(start, stop)`` returns the block outputs of items ``start .. stop - 1``
            (a list of ``(stop - start, C_b, H_b, W_b)`` tensors, e.g. a generator's last synthesis blocks).
        n_items: ``N``.
        size: image side ``S`` the blocks are upsampled to.
        path: the ``.npy`` file written (``(N * S * S, d)``, ``dtype``); its parent is created.
        chunk: items per call of ``feature_fn``: the only features held in memory at once.
        dtype: storage type (float16: the reference's and the paper's).
        progress: called with the number of items written after each chunk.

    Returns:
        ``path``. Row ``i * S * S + y * S + x`` holds pixel ``(y, x)`` of item ``i``.
    """
    if n_items < 1 or chunk < 1:
        raise ValueError(f"n_items and chunk must be >= 1, got {n_items}, {chunk}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hw = size * size
    dim = None
    for start in range(0, n_items, chunk):
        stop = min(start + chunk, n_items)
        with torch.no_grad():
            x = upsample_concat(list(feature_fn(start, stop)), size)  # (n, d, S, S)
        if x.shape[0] != stop - start:
            raise ValueError(f"feature_fn({start}, {stop}) returned {x.shape[0]} items")
        rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).numpy().astype(dtype)
        del x
        if dim is None:  # the first chunk fixes d: create the file (header + zero-filled sparse body)
            dim = rows.shape[1]
            arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_items * hw, dim))
        elif rows.shape[1] != dim:
            raise ValueError(f"feature_fn({start}, {stop}) gave {rows.shape[1]} channels, earlier chunks {dim}")
        else:
            arr = np.lib.format.open_memmap(path, mode="r+")
        arr[start * hw:stop * hw] = rows
        arr.flush()
        del arr, rows  # unmap: the written pages leave this process's resident set
        if progress is not None:
            progress(stop)
    return path


def open_pixel_features(path: str | os.PathLike) -> np.memmap:
    """The feature file at ``path`` as a read-only memory map ``(N * S * S, d)``.

    Raises:
        FileNotFoundError / ValueError: naming the file when it is missing or not a 2-D ``.npy`` array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pixel-feature file")
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 2:
        raise ValueError(f"{path}: pixel features must be 2-D (pixels, channels), got shape {arr.shape}")
    return arr


class PixelBatches:
    """Random pixel minibatches from a feature file and its labels.

    Each epoch visits every labelled pixel once in a random order (``seed``, epoch), ``batch_size`` at a
    time; within a batch, rows are read in file order (sorted indices) for locality, and returned in the
    shuffled order. Pixels whose label is ``ignore_index`` are skipped.

    Args:
        path: an ``.npy`` feature file of :func:`write_pixel_features` (``(P, d)``).
        labels: ``(P,)`` (or any shape with ``P`` values) integer class per row.
        batch_size: pixels per batch (the reference: 64).
        seed: shuffling seed.
        remap_every: batches after which the memory map is dropped and reopened, so the pages read stop
            counting towards resident memory. The kernel maps up to 64 KiB around each row read (fault-around,
            measured here even with MADV_RANDOM), so the map's share stays below ``remap_every * batch_size * 64
            KiB``: 16 MiB by default (measured: remapping every 4 or every 64 batches costs the same time).
        rows: optional subset of row indices to draw from (e.g. one split); default all.
        ignore_index: label value never drawn (``None``: every row).
    """

    def __init__(self, path: str | os.PathLike, labels, batch_size: int = 64, seed: int = 0,
                 remap_every: int = 4, rows: np.ndarray | None = None, ignore_index: int | None = None):
        self.path = Path(path)
        arr = open_pixel_features(self.path)
        self.n_rows, self.dim = int(arr.shape[0]), int(arr.shape[1])
        del arr
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != self.n_rows:
            raise ValueError(f"{self.path}: {self.n_rows} feature rows but {labels.shape[0]} labels")
        # labels and row indices are kept small (uint8 / int32 where they fit): they are the only arrays that grow
        # with N here, d times smaller than the features
        small = labels.min(initial=0) >= 0 and labels.max(initial=0) < 256
        self.labels = labels.astype(np.uint8 if small else np.int64)
        itype = np.int32 if self.n_rows < 2**31 else np.int64
        idx = np.arange(self.n_rows, dtype=itype) if rows is None else np.asarray(rows, dtype=itype)
        if ignore_index is not None:
            idx = idx[self.labels[idx] != ignore_index]
        self.rows = idx
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.remap_every = max(1, int(remap_every))

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.rows) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch``: ``(x (B, d) float32, y (B,) int64)``; deterministic for (seed, epoch)."""
        order = np.random.default_rng([self.seed, int(epoch)]).permutation(self.rows)
        arr = None
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            if arr is None or b % self.remap_every == 0:
                del arr
                arr = open_pixel_features(self.path)
            idx = order[start:start + self.batch_size]
            srt = np.argsort(idx, kind="stable")
            x = np.empty((len(idx), self.dim), np.float32)
            x[srt] = arr[idx[srt]]
            yield torch.from_numpy(x), torch.from_numpy(self.labels[idx].astype(np.int64))
        del arr


def read_rows(path: str | os.PathLike, start: int, stop: int) -> np.ndarray:
    """Rows ``start .. stop - 1`` of a feature file as float32 (e.g. one image's ``S * S`` pixels)."""
    arr = open_pixel_features(path)
    out = np.asarray(arr[start:stop], dtype=np.float32)
    del arr
    return out
