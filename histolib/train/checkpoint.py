"""Run identity, checkpoints and completion: the one rule every trainer of the study follows.

A training run is identified by its *args*: the JSON-normalised options that make it, with a
:func:`fingerprint` of its training data among them. Its folder holds

- ``best.pt`` (optional): the validation-chosen checkpoint;
- ``last.pt``: the checkpoint to resume from; it records the sha256 of the ``best.pt`` it goes with;
- ``COMPLETE.json``: written when training finished: the args, the sha256 of every weights file
  it vouches for, and the run's summary (best epoch, seconds, steps ...).

:meth:`Checkpointer.run` decides, read-only, what a trainer does with the folder (:class:`Run`):

``complete``
    ``COMPLETE.json`` has the same args *and* every weights file it lists still has the recorded
    sha256. A marker whose weights were since overwritten by another run (another run started in
    the same folder and was interrupted) therefore no longer counts: its weights are not returned.
``resume``
    ``last.pt`` has the same args (apart from ``resume_ignores``, e.g. the step count, so a longer
    run continues a shorter one), is not past ``args["steps"]`` when there is one, and the
    ``best.pt`` it refers to is there, unchanged.
``new``
    anything else; a warning names what was found and discarded.

Safety and durability:

- every file is loaded with ``torch.load(weights_only=True)``: a crafted ``last.pt`` cannot run
  code; :meth:`Checkpointer.save` turns numpy values into tensors / python numbers first and
  refuses other objects at write time, so every checkpoint the study writes loads that way;
- ``best.pt`` is written before ``last.pt``: ``last.pt`` never refers to a best checkpoint that
  is not on disk (a crash between the two writes costs a retrain, never a wrong model);
- writes are atomic (:mod:`histolib.fileio`): a crash or Ctrl-C never leaves a torn file;
- an unreadable file (truncated, empty, not a checkpoint) raises :class:`CheckpointError` naming
  it. A torn or unparsable ``COMPLETE.json`` is a marker, not weights: it is treated as "not
  complete" (with a warning), and the run resumes from ``last.pt`` or retrains.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histolib.errors import CheckpointError
from histolib.fileio import _json_default, atomic_save, atomic_write_text, complete_dir, write_json

__all__ = ["COMPLETE", "NEW", "RESUME", "STEP_KEYS", "CheckpointError", "Checkpointer", "Run", "atomic_save",
           "atomic_write_text", "complete_dir", "fingerprint", "normalise_args", "sha256_file", "write_json"]

NEW, RESUME, COMPLETE = "new", "resume", "complete"
COMPLETE_FILE = "COMPLETE.json"
# options that say how long and how often, not what is trained: a run that differs only in these
# continues another's last.pt (``resume_ignores``), e.g. a longer run resumes a finished shorter one
STEP_KEYS = ("steps", "ckpt_every", "log_every")

# keys of COMPLETE.json that are the record itself, not the run's summary
_RECORD_KEYS = ("args", "files")


# --------------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------------

def fingerprint(*arrays: Any) -> str:
    """The study's one fingerprint of training data, stored among a run's args.

    ``sha256( H(a_1) || B(a_1) || H(a_2) || B(a_2) || ... )``, first 16 hex digits (64 bits), where
    for each C-contiguous array ``a_i``, ``H`` is the text ``"{shape}|{dtype.str}|"`` and ``B`` its
    raw bytes. The header fixes each array's byte length, so the concatenation is unambiguous:
    arrays that differ in a value, shape, dtype or order give different fingerprints (byte-equal
    data in another dtype too).

    Args:
        *arrays: numpy arrays, tensors, or (possibly ragged) lists of them; a list that numpy can
            stack hashes like the stacked array, a ragged one as ``"seq{len}|"`` and its items.

    Returns:
        16 lowercase hex characters. No arrays: the digest of nothing, ``"e3b0c44298fc1c14"``;
        an empty array still contributes its shape and dtype.

    Raises:
        TypeError: an object array (its bytes are pointers, not data).
    """
    h = hashlib.sha256()
    for a in arrays:
        _hash_array(h, a)
    return h.hexdigest()[:16]


def _hash_array(h, a: Any) -> None:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    if isinstance(a, (list, tuple)):
        try:
            arr = np.asarray(a)
        except ValueError:  # ragged
            arr = None
        if arr is None or arr.dtype.hasobject:
            h.update(f"seq{len(a)}|".encode())
            for item in a:
                _hash_array(h, item)
            return
        a = arr
    a = np.ascontiguousarray(a)
    if a.dtype.hasobject:
        raise TypeError("fingerprint() needs numeric arrays; got an object array")
    h.update(f"{a.shape}|{a.dtype.str}|".encode())
    h.update(a.reshape(-1).view(np.uint8) if a.size else b"")


def normalise_args(args: dict | None) -> dict:
    """``args`` as they read back from JSON (tuples -> lists, numpy numbers -> python, paths -> str),
    so options compare equal to the copy stored in a checkpoint."""
    return json.loads(json.dumps(dict(args or {}), default=_json_default))


def without_later_defaults(options: dict, defaults: dict, dependents: dict | None = None) -> dict:
    """A run's options for its identity, without the options added after runs were recorded while they keep
    their defaults, so those runs keep their identity and still load.

    Args:
        options: the run's options (e.g. ``dataclasses.asdict`` of them).
        defaults: ``{option: default}`` of the later options; one at its default is left out.
        dependents: ``{option: (other, ...)}``: options that only act through ``option`` and are left out with it.

    Returns:
        A new dict; ``options`` is not changed.
    """
    out = dict(options)
    for key, default in defaults.items():
        if key in out and out[key] == default:
            del out[key]
            for other in (dependents or {}).get(key, ()):
                out.pop(other, None)
    return out


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (what ``COMPLETE.json`` records for each weights file)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# --------------------------------------------------------------------------------------------------
# What goes into a checkpoint
# --------------------------------------------------------------------------------------------------

# what torch.load(weights_only=True) rebuilds besides tensors and containers
_PLAIN = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device, torch.Size)


def _plain(obj: Any, where: str) -> Any:
    """``obj`` with numpy values made tensors / python numbers and paths strings, so the checkpoint
    loads with ``weights_only=True``; anything else that is not a tensor or plain value is refused
    now, at write time, rather than found unloadable on resume.

    Containers are rebuilt only when something inside changed, so a module ``state_dict`` keeps
    its identity (and its ``_metadata``)."""
    if isinstance(obj, np.generic):  # first: np.float64 is also a python float, yet pickles as numpy
        return obj.item()
    if isinstance(obj, (torch.Tensor, *_PLAIN)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"{where} is an object array: checkpoints hold only tensors and plain values")
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict) and type(obj) in (dict, OrderedDict):
        items = {k: _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
        if all(items[k] is v for k, v in obj.items()):
            return obj
        out = type(obj)(items)
        if hasattr(obj, "__dict__"):  # a state_dict's ``_metadata`` (module versions)
            out.__dict__.update(obj.__dict__)
        return out
    if type(obj) in (list, tuple):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return obj if all(a is b for a, b in zip(items, obj, strict=True)) else type(obj)(items)
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: checkpoints hold only "
                    "tensors and plain values (they are loaded with weights_only=True)")


def _why_unreadable(e: Exception) -> str:
    """One short line for the error message (torch's weights-only message is a page long)."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in text:
        # torch's advice to allow-list the global is not ours to give for a file of unknown origin
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        what = f"it refers to {found.group(1)}" if found else "it holds objects"
        return f"{what}, not only tensors and plain values: refused without running it"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


# --------------------------------------------------------------------------------------------------
# The run and its folder
# --------------------------------------------------------------------------------------------------

@dataclass
class Run:
    """What :meth:`Checkpointer.run` found in a run's folder.

    Attributes:
        status: ``"new"`` (train from scratch), ``"resume"`` (continue from ``checkpoint``) or
            ``"complete"`` (load; write nothing).
        checkpoint: ``last.pt`` for ``resume`` and ``complete``, else ``None``.
        summary: for ``complete``, what the finished run recorded (``best_epoch``, ``seconds``,
            ``steps`` ...; ``args`` and file digests left out), else ``None``.
        reason: for ``new``, why an existing ``last.pt`` was not resumed (``""``: there was none).
    """

    status: str
    checkpoint: dict | None = None
    summary: dict | None = None
    reason: str = ""

    @property
    def step(self) -> int:
        """The step training continues from (0 for a new run)."""
        return int(self.checkpoint["step"]) if self.checkpoint is not None else 0


class Checkpointer:
    """Keeps a run's ``best.pt``, ``last.pt`` and ``COMPLETE.json`` in one folder.

    Every checkpoint is a dict ``{"step": int, "args": dict, **state}``; ``args`` are the options
    the run was started with, so a checkpoint alone says how it was made. ``last.pt`` also holds
    ``best_sha256``, the digest of the ``best.pt`` it goes with (``None`` before any).

    Args:
        folder: where the files live; created on first save.
        args: JSON-able options of the run (with a :func:`fingerprint` of its data); normalised
            through JSON and stored in every checkpoint.
        resume_ignores: keys of ``args`` that may differ between ``last.pt`` and a run that
            resumes it (e.g. ``("steps", "ckpt_every", "log_every")``: a longer run continues a
            shorter one). Completion always needs equal args.
    """

    def __init__(self, folder: str | os.PathLike, args: dict | None = None, *,
                 resume_ignores: tuple[str, ...] = ()):
        self.folder = Path(folder)
        self.args = normalise_args(args)
        self.resume_ignores = tuple(resume_ignores)
        # which best.pt this run relies on (set by save, or by run()/completion() from the folder)
        self.best_sha256: str | None = None
        # the step of the last.pt this run wrote or resumed; None: no checkpoint of this run yet
        self.saved_step: int | None = None

    @property
    def last_path(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    @property
    def complete_path(self) -> Path:
        return self.folder / COMPLETE_FILE

    # ---------------------------------------------------------------------------------- writing

    def save(self, step: int, state: dict, best: bool = False) -> Path:
        """Write ``state`` (model/optimiser ``state_dict``s, counters) as ``last.pt`` and, if
        ``best``, first as ``best.pt``.

        Returns:
            The path of ``last.pt``.

        Raises:
            TypeError: ``state`` holds an object that ``weights_only`` loading would refuse.
        """
        payload = _plain({"step": int(step), "args": self.args, **state}, "checkpoint")
        if best:
            # best first: a last.pt on disk always refers to a best.pt that is on disk
            atomic_save(payload, self.best_path)
            self.best_sha256 = sha256_file(self.best_path)
        atomic_save({**payload, "best_sha256": self.best_sha256}, self.last_path)
        self.saved_step = int(step)
        return self.last_path

    def mark_complete(self, summary: dict | None = None) -> None:
        """Record that training finished, vouching for this run's ``last.pt`` (and ``best.pt``)
        by their sha256, in one atomic write of ``COMPLETE.json``.

        Args:
            summary: JSON-able values callers read back from :meth:`completion` (not ``args`` or
                ``files``, which are the record's own).

        Raises:
            CheckpointError: ``best.pt`` is not the one this run wrote or resumed.
        """
        files = {}
        if self.saved_step is not None and self.last_path.is_file():
            files["last.pt"] = sha256_file(self.last_path)
        if self.best_sha256 is not None:
            found = sha256_file(self.best_path) if self.best_path.is_file() else None
            if found != self.best_sha256:
                raise CheckpointError(f"{self.best_path} is not the best checkpoint this run wrote "
                                      "(changed or removed meanwhile); delete the folder to retrain")
            files["best.pt"] = found
        summary = {k: v for k, v in (summary or {}).items() if k not in _RECORD_KEYS}
        write_json(self.complete_path, {**summary, "args": self.args, "files": files})

    # ---------------------------------------------------------------------------------- reading

    def _load(self, path: Path, sha256: str | None = None) -> dict | None:
        """The checkpoint at ``path`` (``None`` if there is none), loaded with ``weights_only``;
        with ``sha256``, only if the file has that digest."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CheckpointError(f"{path} is not a readable checkpoint ({_why_unreadable(e)}); "
                                  "delete it to retrain") from e
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise CheckpointError(f"{path} is not the checkpoint {self.last_path.name} refers to (its sha256 "
                                  "differs: another run wrote it); delete the folder to retrain")
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - every reason to refuse a file, re-raised naming it
            raise CheckpointError(f"{path} is not a readable checkpoint ({_why_unreadable(e)}); "
                                  "delete it to retrain") from e
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "args" not in state:
            raise CheckpointError(f"{path} is not a readable checkpoint (not a histolib checkpoint: no "
                                  "step and args); delete it to retrain")
        return state

    def load_last(self) -> dict | None:
        """``last.pt``, or ``None`` when there is none.

        Raises:
            CheckpointError: the file exists but is unreadable (named in the message).
        """
        return self._load(self.last_path)

    def load_best(self) -> dict | None:
        """``best.pt``, or ``None`` if none was written. When this run knows which ``best.pt`` it
        relies on (it saved one, resumed a ``last.pt`` or found a completion), the file must be
        that one.

        Raises:
            CheckpointError: unreadable, or another ``best.pt`` than the one relied on.
        """
        return self._load(self.best_path, self.best_sha256)

    def completion(self) -> dict | None:
        """The summary of a finished run with these args whose weights are still the ones it
        finished with; ``None`` otherwise (no marker, other args, a weights file changed or gone,
        a marker from before digests were recorded, or a torn marker, with a warning).

        Read-only. On success the run's ``best.pt`` digest is remembered for :meth:`load_best`.
        """
        path = self.complete_path
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            warnings.warn(f"{path} is not readable ({type(e).__name__}: {e}); the run counts as "
                          "unfinished", stacklevel=2)
            return None
        if not isinstance(record, dict) or record.get("args") != self.args:
            return None
        files = record.get("files")
        if not isinstance(files, dict) or "last.pt" not in files:
            return None
        for name, digest in files.items():
            p = self.folder / name
            if not p.is_file() or sha256_file(p) != digest:
                return None
        self.best_sha256 = files.get("best.pt")
        return {k: v for k, v in record.items() if k not in _RECORD_KEYS}

    def is_complete(self) -> bool:
        """True when :meth:`completion` finds a finished run with these args and its weights."""
        return self.completion() is not None

    def _resume_problem(self, state: dict) -> str:
        """Why ``last.pt`` (``state``) does not continue this run; ``""`` when it does."""
        old = {k: v for k, v in normalise_args(state.get("args")).items() if k not in self.resume_ignores}
        new = {k: v for k, v in self.args.items() if k not in self.resume_ignores}
        if old != new:
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k, None) != new.get(k, None))
            diff = "; ".join(f"{k}: stored {_short(old.get(k))}, now {_short(new.get(k))}" for k in keys)
            return f"{self.last_path} was made with other options ({diff})"
        if "steps" in self.args and state["step"] > self.args["steps"]:
            return f"{self.last_path} is at step {state['step']}, past this run's {self.args['steps']} steps"
        want = state.get("best_sha256")
        if want is not None:
            if not self.best_path.is_file():
                return f"{self.best_path}, which {self.last_path.name} refers to, is missing"
            if sha256_file(self.best_path) != want:
                self._load(self.best_path)  # an unreadable best.pt is an error naming it
                return f"{self.best_path} is not the one {self.last_path.name} refers to (another run wrote it)"
        return ""

    def run(self, warn: bool = True) -> Run:
        """Decide, read-only, whether this run is new, resumes or is complete (the module's rule).

        Args:
            warn: warn when an existing ``last.pt`` is discarded, naming why.

        Returns:
            :class:`Run`. For ``resume`` and ``complete`` the checkpointer now knows the run's
            ``best.pt`` digest and last step (:meth:`load_best`, :meth:`last_good`).

        Raises:
            CheckpointError: ``last.pt`` (or a ``best.pt`` that had to be read) is unreadable.
        """
        summary = self.completion()
        if summary is not None:
            last = self.load_last()
            if last is not None:
                self.saved_step = last["step"]
                return Run(COMPLETE, last, summary)
        last = self.load_last()
        if last is None:
            return Run(NEW)
        why = self._resume_problem(last)
        if why:
            if warn:
                warnings.warn(f"{why}; starting over", stacklevel=2)
            return Run(NEW, reason=why)
        self.best_sha256, self.saved_step = last.get("best_sha256"), last["step"]
        return Run(RESUME, last)

    def last_good(self) -> str:
        """For divergence messages: where this run's last good checkpoint is, or that there is none."""
        if self.saved_step is None:
            return f"no checkpoint of this run was saved yet in {self.folder}"
        return f"the last good checkpoint is kept in {self.last_path} (step {self.saved_step})"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."
