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
