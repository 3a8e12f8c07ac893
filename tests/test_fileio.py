"""Atomic writes: no temporary file survives a failed write; files and folders get normal permissions."""

import os
import stat

import pytest
import torch

from histolib import fileio
from histolib.train.checkpoint import Checkpointer


@pytest.fixture
def umask():
    """Set the process umask for a test and restore it afterwards."""
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_failed_writes_leave_no_temporary_file_and_keep_the_old_one(tmp_path):
    target = tmp_path / "x.pt"
    fileio.atomic_save({"v": 1}, target)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        fileio.atomic_save({"f": lambda: 0}, target)
    with pytest.raises(TypeError):
        fileio.atomic_write_text(tmp_path / "t.txt", 123)  # the write itself fails
    with pytest.raises(TypeError):
        fileio.write_json(tmp_path / "j.json", {"bad": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]
    assert torch.load(target, weights_only=True) == {"v": 1}


def test_interrupted_write_removes_its_temporary_file(tmp_path, monkeypatch):
    def interrupted(obj, f):
        open(f, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_save({}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_folders_get_permissions_from_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert fileio.current_umask() == mask
    fileio.atomic_write_text(tmp_path / "a.txt", "x")
    fileio.write_json(tmp_path / "b.json", {})
    Checkpointer(tmp_path / "ck", {}).save(1, {}, best=True)
    for p in ("a.txt", "b.json", "ck/last.pt", "ck/best.pt"):
        assert _mode(tmp_path / p) == 0o666 & ~mask, p
    with fileio.complete_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("y")
    assert _mode(tmp_path / "out") == 0o777 & ~mask
    assert _mode(tmp_path / "out") == _mode(tmp_path / "ck")  # like a folder made by mkdir
