"""A small, generic, resumable GAN training driver.

The driver owns everything that is not the paper's own update rule: the step loop with a progress
bar, resuming from the last checkpoint, the divergence guard, the JSON-lines log, fixed-condition
sample grids and the final "complete" marker. The paper-specific part is a *task* object that
implements :class:`GanTask`; ``histolib.train.spade.SpadeTrainer`` is one, a Pix2Pix trainer fits
the same way::

    class Pix2PixTrainer:
        def __init__(self, G, D, ...):
            self.modules = {"G": G, "D": D}
            self.optimizers = {"G": Adam(G.parameters(), 2e-4, betas=(0.5, 0.999)), "D": ...}

        def train_step(self, batch, step, generator):
            cond, real = batch
            fake = self.G(cond)                         # D update, then G update (L_adv + lambda L1)
            ...
            return {"loss_D": loss_d, "loss_G_adv": adv, "loss_G_l1": l1}

        def sample(self, batch):                       # rows of the sample grid, each (N, 3, H, W)
            cond, real = batch
            with torch.no_grad():
                return [cond_to_rgb(cond), real, self.G(cond)]

        def state_dict(self): return {}                 # extra state (e.g. ADA's p)
        def load_state_dict(self, state): pass

    result = train_gan(Pix2PixTrainer(G, D), TensorBatches(cond, images, batch_size=1),
                       steps=20000, out_dir=run_dir, seed=0, args=cfg_dict,
                       fixed_batch=(cond[:8], images[:8]))

Exact resume. Randomness of step ``t`` (batch indices, noise, augmentations) comes from a
generator seeded with ``(seed, t)`` (:func:`step_generator`), so no RNG state needs saving: a run
interrupted after checkpoint ``k`` and resumed reaches the same weights as an uninterrupted one
(on CPU, same thread count). A checkpoint holds every module's and optimiser's ``state_dict``, the
task's extra state, the step, and the run's ``args`` (via :class:`Checkpointer`).

Divergence. Every value a step returns whose name contains ``loss`` is checked; a NaN or infinite one raises
:class:`~histolib.errors.TrainingDiverged` naming the loss and step, *before* anything is saved,
so ``last.pt`` stays the last good checkpoint (the message names it, or says none was saved yet).
Weights are also checked before each save.

New, resumed or complete: :meth:`histolib.train.checkpoint.Checkpointer.run` decides (args equal,
``COMPLETE.json`` vouching for ``last.pt`` by sha256, ``weights_only`` loading).

Files in ``out_dir``: ``checkpoints/last.pt`` (+ ``COMPLETE.json`` when finished), ``log.jsonl``
(one line per logged step: the task's stats plus ``sec`` and ``img_per_sec``), and
``samples/step_XXXXXXX.png`` (the fixed-condition grid, also at step 0 and at the end).
"""

from __future__ import annotations

import ctypes
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from histolib.errors import TrainingDiverged
from histolib.train.checkpoint import COMPLETE, RESUME, Checkpointer, Run, normalise_args
from histolib.train.monitor import TrainingLog, check_finite

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a dependency
    tqdm = None


class GanTask(Protocol):
    """What :func:`train_gan` needs from a paper's trainer."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def train_step(self, batch: Any, step: int, generator: torch.Generator) -> dict[str, Any]:
        """One optimisation step of every network; returns scalar stats (losses, ``p`` ...)."""

    def sample(self, batch: Any) -> list[torch.Tensor]:
        """Rows of the sample grid for ``batch``: each ``(N, 3, H, W)`` in ``[-1, 1]``."""

    def state_dict(self) -> dict:
        """Extra state to checkpoint (not modules or optimisers)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


def tune_cpu_allocator(mmap_threshold: int = 1 << 30) -> bool:
    """Stop glibc from returning large freed blocks to the OS (process-wide, Linux only).

    By default glibc serves allocations above 32 MB with fresh ``mmap`` pages and unmaps them on
    free, so every large activation tensor of a training step page-faults its memory in again:
    measured here, a ReLU over a 50 MB tensor takes 19 ms instead of 3.6 ms. Raising the mmap and
    trim thresholds keeps freed memory in the heap for reuse (resident memory then stays at its
    peak). Safe to call more than once.

    Returns:
        True when both ``mallopt`` calls succeeded.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold))) and bool(
        libc.mallopt(m_trim_threshold, 2**31 - 1))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU random stream of training step ``step`` of a run with ``seed`` (order-free)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class TensorBatches:
    """Random minibatches (with replacement across steps, without within a batch) from tensors.

    Args:
        *tensors: tensors with the same first dimension ``N``.
        batch_size: ``B <= N``.

    Calling it with a generator returns a tuple of ``B``-row slices.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int):
        if not tensors:
            raise ValueError("TensorBatches needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[len(t) for t in tensors]}")
        if n == 0:
            raise ValueError("TensorBatches got an empty training set")
        if not 1 <= batch_size:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors, self.batch_size = tensors, min(batch_size, n)
        self.n = n

    def __call__(self, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        idx = torch.randperm(self.n, generator=generator)[: self.batch_size]
        return tuple(t[idx] for t in self.tensors)


@dataclass
class GanResult:
    """What :func:`train_gan` did."""

    steps: int
    resumed_from: int
    out_dir: Path
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    skipped: bool = False  # True when a complete run with the same args was found


def run_args(args: dict | None, steps: int, seed: int) -> dict:
    """The JSON-normalised options a run of :func:`train_gan` stores in its checkpoints."""
    return normalise_args({**(args or {}), "steps": steps, "seed": seed})


def _checkpointer(out_dir: str | Path, args: dict | None, steps: int, seed: int) -> Checkpointer:
    return Checkpointer(Path(out_dir) / "checkpoints", run_args(args, steps, seed))


def complete_run(out_dir: str | Path, args: dict | None, steps: int, seed: int) -> Run | None:
    """The *complete* run in ``out_dir`` made with the same options, else ``None``.

    Complete means :meth:`~histolib.train.checkpoint.Checkpointer.completion`: same args and the
    final ``last.pt`` still the one the run finished with. Reads only: a finished run that is
    another pipeline stage's output is never touched.

    Returns:
        :class:`~histolib.train.checkpoint.Run` with ``checkpoint`` (load it with
        :func:`load_task_state`) and ``summary`` (``steps``, ``seconds``, ``resumed_from`` and
        whatever the caller passed as ``summary`` to :func:`train_gan`).
    """
    ckpt = _checkpointer(out_dir, args, steps, seed)
    summary = ckpt.completion()
    if summary is None:
        return None
    last = ckpt.load_last()
    if last is None or last["step"] != steps:
        return None
    return Run(COMPLETE, last, summary)


def read_log(out_dir: str | Path) -> list[dict]:
    """The rows of ``out_dir/log.jsonl`` (read only; a torn last line is ignored)."""
    return TrainingLog.read_file(Path(out_dir) / "log.jsonl")


def _all_finite(modules: dict[str, nn.Module]) -> str | None:
    for name, m in modules.items():
        for pname, p in m.state_dict().items():
            if p.is_floating_point() and not torch.isfinite(p).all():
                return f"{name}.{pname}"
    return None


def save_grid(rows: list[torch.Tensor], path: str | Path) -> Path:
    """Write rows of ``(N, C, H, W)`` images in ``[-1, 1]`` (C = 1 or 3) as one PNG grid, 2 px gaps."""
    from PIL import Image

    rows = [r.detach().float().cpu() for r in rows]
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[-2:]
    gap = 2
    canvas = np.full((len(rows) * (h + gap) - gap, n * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        if row.shape[1] == 1:
            row = row.expand(-1, 3, -1, -1)
        img = ((row.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for j, im in enumerate(img):
            canvas[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = im
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


def _state(task: GanTask) -> dict:
    return {"modules": {k: m.state_dict() for k, m in task.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in task.optimizers.items()},
            "task": task.state_dict()}


def load_task_state(task: GanTask, checkpoint: dict) -> None:
    """Restore modules, optimisers and extra state of ``task`` from a checkpoint dict."""
    for k, m in task.modules.items():
        m.load_state_dict(checkpoint["modules"][k])
    for k, o in task.optimizers.items():
        o.load_state_dict(checkpoint["optimizers"][k])
    task.load_state_dict(checkpoint.get("task", {}))


def train_gan(task: GanTask, batches: Callable[[torch.Generator], Any], *, steps: int,
              out_dir: str | Path, seed: int, args: dict | None = None, fixed_batch: Any = None,
              checkpoint_every: int = 500, sample_every: int = 500, log_every: int = 1,
              images_per_step: int | None = None, progress: bool = True,
              desc: str = "GAN", summary: dict | None = None) -> GanResult:
    """Run (or resume, or skip) ``steps`` training steps of ``task``.

    Args:
        task: implements :class:`GanTask`.
        batches: ``batches(generator) -> batch`` for one step (e.g. :class:`TensorBatches`).
        steps: total optimisation steps of the run.
        out_dir: the run's folder (checkpoints, log, samples).
        seed: the run's seed; step ``t`` uses ``step_generator(seed, t)``.
        args: JSON-able options that define the run; stored in every checkpoint. A checkpoint
            with other ``args`` is not resumed (a warning says so and training restarts). A
            complete run with the same ``args`` is loaded without writing anything.
        fixed_batch: batch whose :meth:`GanTask.sample` rows make the sample grids; ``None``: no grids.
        checkpoint_every: steps between checkpoints (also at the end).
        sample_every: steps between sample grids.
        log_every: steps between log lines.
        images_per_step: for the ``img_per_sec`` column (default: length of the batch's first item).
        progress: show a tqdm bar.
        desc: progress-bar label.
        summary: JSON-able values recorded with the completion (read back by
            :func:`complete_run`), e.g. which feature network a loss used.

    Returns:
        :class:`GanResult`; the task's modules hold the final weights.

    Raises:
        TrainingDiverged: a NaN/inf loss or weight; the last good checkpoint stays in
            ``out_dir/checkpoints``.
        CheckpointError: an unreadable ``last.pt`` (named).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    for name, v in (("checkpoint_every", checkpoint_every), ("sample_every", sample_every),
                    ("log_every", log_every)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    out_dir = Path(out_dir)
    ckpt = _checkpointer(out_dir, args, steps, seed)
    run = ckpt.run()  # warns when a last.pt of other options is discarded
    if run.status == COMPLETE:  # read-only: nothing in out_dir is written
        load_task_state(task, run.checkpoint)
        return GanResult(steps, steps, out_dir, read_log(out_dir), float(run.summary.get("seconds", 0.0)),
                         skipped=True)
    tune_cpu_allocator()
    start = 0
    if run.status == RESUME:
        load_task_state(task, run.checkpoint)
        start = run.step
    log = TrainingLog(out_dir / "log.jsonl", resume_step=start)
    samples_dir = out_dir / "samples"

    def write_samples(step: int) -> None:
        if fixed_batch is not None:
            save_grid(task.sample(fixed_batch), samples_dir / f"step_{step:07d}.png")

    if start == 0:
        write_samples(0)
    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress or tqdm is None,
               dynamic_ncols=True) if tqdm is not None else None
    t0 = time.perf_counter()
    t_last, n_since = t0, 0
    try:
        for step in range(start, steps):
            gen = step_generator(seed, step)
            batch = batches(gen)
            stats = task.train_step(batch, step, gen)
            done = step + 1
            stats = {k: (float(v.detach()) if isinstance(v, torch.Tensor) else v) for k, v in stats.items()}
            n_since += 1
            bad = {k: v for k, v in stats.items()
                   if "loss" in k and isinstance(v, float) and not math.isfinite(v)}
            if bad:
                log.log(done, **stats)
                check_finite(bad, done, ckpt.last_good)
            if done % log_every == 0 or done == steps:
                now = time.perf_counter()
                n_img = images_per_step or (len(batch[0]) if isinstance(batch, (tuple, list)) else 0)
                log.log(done, **stats, sec=now - t0, img_per_sec=n_img * n_since / max(now - t_last, 1e-9))
                t_last, n_since = now, 0
            if done % sample_every == 0 or done == steps:
                write_samples(done)
            if done % checkpoint_every == 0 or done == steps:
                broken = _all_finite(task.modules)
                if broken:
                    raise TrainingDiverged(f"weight {broken!r} is not finite at step {done}: training "
                                           f"diverged; {ckpt.last_good()}")
                ckpt.save(done, _state(task))
            if bar is not None:
                bar.update(1)
                if done % 10 == 0:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in stats.items() if isinstance(v, float)}, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    ckpt.mark_complete({**(summary or {}), "steps": steps, "seconds": seconds, "resumed_from": start})
    return GanResult(steps, start, out_dir, log.read(), seconds)
