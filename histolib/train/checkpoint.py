"""Checkpoints that carry the arguments that made them, written atomically, resumable.

A crash or Ctrl-C mid-write never leaves a truncated ``last.pt``: every file is written to a
temporary name in the same folder and moved into place with :func:`os.replace`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from histolib.fileio import _json_default, atomic_save, atomic_write_text, complete_dir, write_json

__all__ = ["Checkpointer", "atomic_save", "atomic_write_text", "complete_dir", "write_json"]


class Checkpointer:
    """Keeps ``last.pt`` (for resuming) and ``best.pt`` (the validation choice) in one folder.

    Every checkpoint is a dict ``{"step": int, "args": dict, **state}``; ``args`` are the options
    the run was started with, so a checkpoint alone says how it was made.

    Args:
        folder: where the files live; created on first save.
        args: JSON-able options of the run; stored in every checkpoint.
    """

    def __init__(self, folder: str | os.PathLike, args: dict | None = None):
        self.folder = Path(folder)
        self.args = dict(args or {})

    @property
    def last_path(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    def save(self, step: int, state: dict, best: bool = False) -> Path:
        """Write ``state`` (model/optimiser ``state_dict``s, counters) as ``last.pt`` and, if
        ``best``, also as ``best.pt``."""
        payload = {"step": int(step), "args": self.args, **state}
        atomic_save(payload, self.last_path)
        if best:
            atomic_save(payload, self.best_path)
        return self.last_path

    def _load(self, path: Path) -> dict | None:
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=False)

    def load_last(self) -> dict | None:
        """The checkpoint to resume from, or ``None`` when the run starts fresh."""
        return self._load(self.last_path)

    def load_best(self) -> dict | None:
        """The validation-chosen checkpoint, or ``None`` if none was marked best."""
        return self._load(self.best_path)

    def mark_complete(self, summary: dict | None = None) -> None:
        """Record that training finished; :meth:`is_complete` tells a later run to skip it."""
        write_json(self.folder / "COMPLETE.json", {"args": self.args, **(summary or {})})

    def is_complete(self) -> bool:
        """True when a finished run with the same ``args`` left its ``COMPLETE.json`` here."""
        path = self.folder / "COMPLETE.json"
        if not path.is_file():
            return False
        done = json.loads(path.read_text())
        return json.loads(json.dumps(self.args, default=_json_default)) == done.get("args")


def data_fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of the arrays' shapes, dtypes and bytes: stored with a run's options, so a
    finished run is reused only for the same training data, not just the same options."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


_NOT_IDENTITY = ("steps", "ckpt_every", "log_every")


def resumable(state: dict | None, args: dict) -> bool:
    """Whether checkpoint ``state`` continues the run ``args`` describes: same options and data,
    whatever the target step count (a longer run resumes a shorter one)."""
    if state is None:
        return False
    old = {k: v for k, v in state.get("args", {}).items() if k not in _NOT_IDENTITY}
    new = {k: v for k, v in json.loads(json.dumps(args)).items() if k not in _NOT_IDENTITY}
    return old == new and state.get("step", 0) <= args.get("steps", 0)
