"""Session-wide test settings: every notebook and test runs the `smoke` profile, headless."""

import os
import tempfile

os.environ.setdefault("HISTOLIB_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
# results and models of test runs go to a throw-away folder, never over the study's results/
os.environ.setdefault("HISTOLIB_OUTPUT", tempfile.mkdtemp(prefix="histolib-test-"))


import pytest  # noqa: E402  (after the environment defaults above, which must precede any histolib import)


@pytest.fixture
def one_torch_thread():
    """Run a test of tiny networks on one torch thread (two threads spin-wait on every small op of a shared
    2-core machine); the thread count is restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _real_like_root(root):
    """Tiny folders shaped like ../shared/data/real: fluorescence nuclei (grey as RGB, 16-bit ids, non-square),
    H&E nuclei (RGB, 16-bit ids) and glomerulus crops (binary 0/255, labels.csv classes)."""
    import numpy as np

    from histolib.data.folder import save_pairs

    yy, xx = np.mgrid[:48, :80]
    inst = np.zeros((48, 80), np.int32)
    for k, (cy, cx) in enumerate([(12, 12), (30, 40), (20, 65)]):
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = 1000 + k
    grey = np.where(inst > 0, 180, 10).astype(np.uint8)
    save_pairs(root / "fluo", np.repeat(grey[None, ..., None], 3, axis=3).repeat(3, 0), [inst] * 3,
               ["a.png", "b.png", "c.png"], mask_kind="instances")
    he = np.where(inst[..., None] > 0, np.array([90, 40, 120], np.uint8), np.array([230, 160, 200], np.uint8))
    save_pairs(root / "he", np.stack([he] * 2), [inst] * 2, ["x.png", "y.png"], mask_kind="instances")
    glom = np.zeros((2, 40, 40), np.uint8)
    glom[:, 5:35, 5:35] = 1
    save_pairs(root / "crops", np.full((2, 40, 40, 3), (200, 120, 180), np.uint8), glom, ["s-1.png", "s-2.png"],
               [{"class": "GS", "slide": "s"}, {"class": "nonGS", "slide": "s"}])
    (root / "notes").mkdir()  # not a data set: ignored


@pytest.fixture
def real_like_root():
    """A function ``(root) -> None`` writing tiny folders shaped like ../shared/data/real under ``root``:
    ``fluo`` (grey as RGB, 16-bit instances), ``he`` (RGB, 16-bit instances), ``crops`` (binary glomerulus
    masks, labels.csv) and a ``notes`` folder that is not a data set."""
    return _real_like_root
