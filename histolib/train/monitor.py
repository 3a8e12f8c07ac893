"""What a training run writes while it runs: a JSON-lines log and a divergence guard."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from histolib.errors import TrainingDiverged


class TrainingLog:
    """Append-only JSON-lines log of training statistics, one object per call.

    On resume from step ``resume_step`` the lines of later steps (written after the checkpoint
    that is resumed) are dropped, so the log matches the weights.

    Args:
        path: the ``.jsonl`` file.
        resume_step: keep only lines with ``step <= resume_step``; ``0`` starts a fresh log.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step > 0 and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    break  # a torn last line from a crash
        self.path.write_text("".join(k + "\n" for k in kept))

    def log(self, step: int, **stats: float) -> None:
        """Append ``{"step": step, **stats}`` (tensors become floats)."""
        row = {"step": int(step)}
        for k, v in stats.items():
            row[k] = float(v.detach()) if isinstance(v, torch.Tensor) else v
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    def read(self) -> list[dict]:
        """Every logged row, in order."""
        return self.read_file(self.path)

    @staticmethod
    def read_file(path: str | os.PathLike, up_to_step: int | None = None) -> list[dict]:
        """Every row of a JSON-lines log (``[]`` when the file does not exist; a torn last line from a
        crash is ignored), or only those with ``step <= up_to_step``. Read-only: safe on another
        stage's outputs."""
        path = Path(path)
        rows = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break
        if up_to_step is not None:
            rows = [r for r in rows if r.get("step", 0) <= up_to_step]
        return rows


def check_finite(losses: dict[str, float | torch.Tensor], step: int,
                 where: str | Callable[[], str] = "") -> None:
    """Raise :class:`TrainingDiverged` naming the first NaN/inf loss.

    Args:
        losses: name -> scalar loss value.
        step: the training step, for the message.
        where: the checkpoint path the last good weights are in, or a callable returning the whole
            note, e.g. :meth:`histolib.train.checkpoint.Checkpointer.last_good` (called only on
            failure, so it can tell whether a checkpoint exists yet).
    """
    for name, value in losses.items():
        v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        if not math.isfinite(v):
            note = where() if callable(where) else f"the last good checkpoint is kept in {where}" if where else ""
            hint = f"; {note}" if note else ""
            raise TrainingDiverged(
                f"loss {name!r} is {v} at step {step}: training diverged{hint}. "
                "Lower the learning rate or check the input data for NaNs."
            )
