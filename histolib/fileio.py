"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Every writer goes through a temporary name in the target's own folder (so the final
:func:`os.replace` is a rename on one file system) and removes that temporary on any failure,
Ctrl-C included, so a failed write leaves neither a torn target nor a stray ``.name.XXXX`` file.
Files get the permissions a plain ``open(path, "w")`` would give (``0666`` minus the umask) and
folders those of :func:`os.mkdir` (``0777`` minus the umask): :func:`tempfile.mkstemp` and
:func:`tempfile.mkdtemp` create them ``0600`` / ``0700``, which would hide the study's outputs
from the other users of a shared machine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux ``/proc``).

    Elsewhere it falls back to setting and restoring it, which is not thread-safe but harmless
    here (the value written back is the value read).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file beside ``path``, then move it into place.

    The temporary file is removed on any exception (``BaseException``: Ctrl-C too) and given
    ``0666 & ~umask`` before the rename, so the result looks like a normally written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a temporary file, so readers see the old or the new file."""
    return _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text through a temporary file in the same folder, then rename."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    return _atomic_write(path, write)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON (stable bytes for DVC)."""
    # serialise first: an unserialisable value fails before any file is touched
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextmanager
def complete_dir(path: str | os.PathLike):
    """Build a folder under a temporary name and move it to ``path`` only when the block succeeds.

    A reader therefore never mistakes a partial output for a complete one: either ``path`` is the
    previous complete version, or the new complete one. The folder gets ``0777 & ~umask`` (as
    :func:`os.mkdir` would), not :func:`tempfile.mkdtemp`'s ``0700``.

    Yields:
        The temporary folder to write into.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial.", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
    except BaseException:
        _rmtree(tmp)
        raise
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        _rmtree(old)
        os.replace(path, old)
        os.replace(tmp, path)
        _rmtree(old)
    else:
        os.replace(tmp, path)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
