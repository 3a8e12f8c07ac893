"""Determinism and the environment record written beside every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

RECORDED_PACKAGES = (
    "torch", "torchvision", "numpy", "scipy", "scikit-image", "matplotlib", "seaborn",
    "papermill", "dvc",
)


def seed_everything(seed: int, threads: int | None = None) -> torch.Generator:
    """Seed Python, NumPy and torch, ask torch for deterministic kernels, and return a generator.

    Args:
        seed: the run's seed.
        threads: torch intra-op threads; default keeps torch's choice (the core count).

    Returns:
        A ``torch.Generator`` seeded with ``seed`` for code that takes an explicit generator.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
    return torch.Generator().manual_seed(seed)


def numpy_rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent NumPy generator for ``(seed, *stream)``: one stream per item, order-free."""
    return np.random.default_rng([seed, *stream])


def _git_commit(root: Path | None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        # the pipeline's own outputs (results/, dvc.lock) are rewritten by the run being recorded:
        # "+dirty" is kept for uncommitted changes to code, notebooks and params
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":(exclude)results", ":(exclude)dvc.lock"],
            cwd=root, capture_output=True, text=True, timeout=5,
        )
        commit = out.stdout.strip() or "unknown"
        return commit + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_record(profile: str | None = None, root: Path | None = None) -> dict:
    """Package versions, git commit, device and profile: written beside every metrics file."""
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "profile": profile,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": _git_commit(root),
        "packages": versions,
    }


def replicate_seeds(seed: int, n: int) -> list[int]:
    """Seeds of ``n`` generator replicates: ``seed + 100 g`` for ``g = 0 .. n-1`` (replicate 0 keeps the
    study's seed, so a single-replicate run is the run it always was; the stride keeps them apart from
    the segmentation seeds ``seed + k``)."""
    return [int(seed) + 100 * g for g in range(int(n))]
