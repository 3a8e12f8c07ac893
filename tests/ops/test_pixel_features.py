"""Memory-mapped per-pixel features: exact round trip, random batches, flat memory."""

import numpy as np
import pytest
import torch

from histolib.ops.pixel_features import (
    PixelBatches,
    open_pixel_features,
    read_rows,
    upsample_concat,
    write_pixel_features,
)


def _blocks(seed: int, n: int):
    """Two hand-made 'synthesis blocks' of n items: 2 channels at 2x2 and 3 channels at 4x4."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 2, 2, 2, generator=g), torch.randn(n, 3, 4, 4, generator=g)]


def test_upsample_concat_shapes_and_identity_at_full_size():
    a, b = _blocks(0, 3)
    out = upsample_concat([a, b], 4)
    assert out.shape == (3, 5, 4, 4)
    assert torch.equal(out[:, 2:], b)  # a block already at the image size is copied
    # a constant map upsamples to the same constant
    c = torch.full((1, 1, 2, 2), 3.5)
    assert torch.allclose(upsample_concat([c], 8), torch.full((1, 1, 8, 8), 3.5))
    with pytest.raises(ValueError):
        upsample_concat([], 4)
    with pytest.raises(ValueError, match="shape"):
        upsample_concat([a, torch.randn(2, 3, 4, 4)], 4)


def test_writer_round_trips_exactly_and_row_order_is_item_y_x(tmp_path):
    n, size = 5, 4
    per_item = [_blocks(i, 1) for i in range(n)]  # item i's features do not depend on the chunking

    def fn(start, stop):
        return [torch.cat([per_item[i][k] for i in range(start, stop)]) for k in range(2)]

    path = write_pixel_features(fn, n, size, tmp_path / "f.npy", chunk=2)
    arr = open_pixel_features(path)
    assert arr.shape == (n * size * size, 5) and arr.dtype == np.float16
    full = upsample_concat(fn(0, n), size)  # (n, 5, 4, 4) computed in one go
    expect = full.permute(0, 2, 3, 1).reshape(-1, 5).numpy().astype(np.float16)
    assert np.array_equal(np.asarray(arr), expect)
    # row i*S*S + y*S + x is pixel (y, x) of item i
    i, y, x = 3, 2, 1
    assert np.array_equal(arr[i * 16 + y * 4 + x], full[i, :, y, x].numpy().astype(np.float16))
    assert np.array_equal(read_rows(path, 16, 32), expect[16:32].astype(np.float32))
    # chunk size does not change the file
    path2 = write_pixel_features(fn, n, size, tmp_path / "g.npy", chunk=3)
    assert np.array_equal(np.load(path2), np.load(path))


def test_random_batches_cover_every_pixel_once_with_its_own_row(tmp_path):
    n, size = 3, 4
    blocks = _blocks(7, n)
    path = write_pixel_features(lambda s, e: [b[s:e] for b in blocks], n, size, tmp_path / "f.npy", chunk=1)
    rows = np.load(path).astype(np.float32)
    labels = np.arange(n * size * size) % 5
    pb = PixelBatches(path, labels.reshape(n, size, size), batch_size=7, seed=1, remap_every=2)
    assert len(pb) == -(-48 // 7)
    seen = []
    for x, y in pb.epoch(0):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        for xr, yr in zip(x.numpy(), y.numpy(), strict=True):
            hits = np.nonzero((rows == xr).all(1))[0]
            assert yr in labels[hits]  # every feature row comes with its own label
            seen.extend(hits.tolist())
    assert sorted(set(seen)) == list(range(48))
    order0 = np.concatenate([y.numpy() for _, y in pb.epoch(0)])
    order1 = np.concatenate([y.numpy() for _, y in pb.epoch(1)])
    assert np.array_equal(order0, np.concatenate([y.numpy() for _, y in pb.epoch(0)]))  # deterministic
    assert not np.array_equal(order0, order1)  # a new order each epoch
    ign = PixelBatches(path, np.where(labels == 0, 255, labels), batch_size=64, ignore_index=255)
    (x, y), = list(ign.epoch(0))
    assert len(y) == int((labels != 0).sum()) and (y != 255).all()
    with pytest.raises(ValueError, match="labels"):
        PixelBatches(path, labels[:-1])


def test_peak_memory_of_writer_is_flat_in_n(tmp_path):
    """Python-side allocations while writing stay at one chunk, whatever N (tracemalloc sees numpy buffers)."""
    import tracemalloc

    size, d = 16, 64

    def peak(n):
        g = torch.Generator().manual_seed(0)
        fn = lambda s, e: [torch.randn(e - s, d, size // 2, size // 2, generator=g)]  # noqa: E731
        tracemalloc.start()
        write_pixel_features(fn, n, size, tmp_path / f"m{n}.npy", chunk=2)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(4), peak(64)
    total_large = 64 * size * size * d * 2
    assert large < 2 * small + 200_000, (small, large)
    assert large < total_large / 4  # never anywhere near the whole array
