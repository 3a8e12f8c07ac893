"""Session-wide test settings: every notebook and test runs the `smoke` profile, headless."""

import os
import tempfile

os.environ.setdefault("HISTOLIB_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
# results and models of test runs go to a throw-away folder, never over the study's results/
os.environ.setdefault("HISTOLIB_OUTPUT", tempfile.mkdtemp(prefix="histolib-test-"))
