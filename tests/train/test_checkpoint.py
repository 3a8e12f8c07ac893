"""Checkpoints and complete-or-nothing output folders."""

import pytest

from histolib.errors import TrainingDiverged
from histolib.fileio import complete_dir
from histolib.train.checkpoint import Checkpointer
from histolib.train.monitor import TrainingLog, check_finite


def test_checkpointer_round_trip_and_complete(tmp_path):
    c = Checkpointer(tmp_path, {"lr": 0.1})
    assert c.load_last() is None and not c.is_complete()
    c.save(3, {"w": [1, 2]}, best=True)
    c.save(4, {"w": [3]})
    assert c.load_last()["step"] == 4 and c.load_best()["w"] == [1, 2]
    assert c.load_last()["args"] == {"lr": 0.1}
    c.mark_complete()
    assert c.is_complete() and not Checkpointer(tmp_path, {"lr": 0.2}).is_complete()


def test_complete_dir_keeps_old_version_on_failure(tmp_path):
    target = tmp_path / "out"
    with complete_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with complete_dir(target) as tmp:
            (tmp / "a.txt").write_text("partial")
            raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_log_truncates_on_resume(tmp_path):
    log = TrainingLog(tmp_path / "log.jsonl")
    for s in (1, 2, 3):
        log.log(s, loss=1.0 / s)
    assert [r["step"] for r in TrainingLog(tmp_path / "log.jsonl", resume_step=2).read()] == [1, 2]


def test_check_finite_names_the_loss():
    check_finite({"g": 1.0}, 0)
    with pytest.raises(TrainingDiverged, match="'d_hinge' is nan at step 7.*ckpt"):
        check_finite({"g": 1.0, "d_hinge": float("nan")}, 7, where="ckpt")
