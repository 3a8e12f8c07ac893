"""Checkpoints, run identity and completion (issue 9, "Integrity"), and complete-or-nothing folders."""

import json
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from histolib.errors import CheckpointError, HistolibError, TrainingDiverged
from histolib.fileio import complete_dir
from histolib.train import checkpoint as C
from histolib.train import segmentation as seg
from histolib.train.checkpoint import Checkpointer, fingerprint, sha256_file
from histolib.train.gan import TensorBatches, train_gan
from histolib.train.monitor import TrainingLog, check_finite

CFG = SimpleNamespace(width=4, depth=2, epochs=2, batch_size=4, lr=0.01, augment_p=0.5, loss="ce_dice")




def _cfg(**kw):
    return SimpleNamespace(**{**vars(CFG), **kw})


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Interrupt(Exception):
    pass


# --------------------------------------------------------------------------------------------------
# The basics
# --------------------------------------------------------------------------------------------------

def test_checkpointer_round_trip_and_complete(tmp_path):
    c = Checkpointer(tmp_path, {"lr": 0.1})
    assert c.load_last() is None and not c.is_complete() and c.run().status == "new"
    c.save(3, {"w": [1, 2]}, best=True)
    c.save(4, {"w": [3]})
    assert c.load_last()["step"] == 4 and c.load_best()["w"] == [1, 2]
    assert c.load_last()["args"] == {"lr": 0.1}
    c.mark_complete({"best_epoch": 3})
    assert c.is_complete() and not Checkpointer(tmp_path, {"lr": 0.2}).is_complete()
    assert Checkpointer(tmp_path, {"lr": 0.1}).completion() == {"best_epoch": 3}
    run = Checkpointer(tmp_path, {"lr": 0.1}).run()
    assert run.status == "complete" and run.step == 4 and run.summary == {"best_epoch": 3}


def test_numpy_state_is_stored_so_it_loads_with_weights_only(tmp_path):
    rng = np.random.default_rng([0, 1])
    rng.random(3)
    c = Checkpointer(tmp_path, {"seed": np.int64(3), "blocks": (1, 2), "where": Path("/x")})
    c.save(1, {"rng": rng.bit_generator.state, "score": np.float64(0.5), "arr": np.arange(3),
               "model": torch.nn.Linear(2, 1).state_dict()})
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["args"] == {"seed": 3, "blocks": [1, 2], "where": "/x"}
    assert state["score"] == 0.5 and torch.equal(state["arr"], torch.arange(3))
    again = np.random.default_rng(0)
    again.bit_generator.state = state["rng"]
    assert again.random() == rng.random()  # the numpy generator resumes exactly
    with pytest.raises(TypeError, match=r"checkpoint\['bad'\] is a .*SimpleNamespace"):
        c.save(2, {"bad": SimpleNamespace()})  # refused when written, not when resumed


def test_fingerprint_formula_and_edge_cases():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert fingerprint() == "e3b0c44298fc1c14"  # sha256 of nothing
    import hashlib
    h = hashlib.sha256(b"(2, 3)||u1|" + a.tobytes())
    assert fingerprint(a) == h.hexdigest()[:16]
    assert fingerprint(a) != fingerprint(a.astype(np.int8))  # same bytes, other dtype
    assert fingerprint(a) != fingerprint(a.reshape(3, 2))
    assert fingerprint(a, a[:1]) != fingerprint(a[:1], a)
    assert fingerprint(np.zeros((0, 4))) != fingerprint(np.zeros((0, 5)))  # empty still has a shape
    assert fingerprint([a[0], a[1]]) == fingerprint(a) == fingerprint(torch.from_numpy(a))
    assert len(fingerprint([a, a[:1]])) == 16  # ragged lists are hashed item by item
    assert fingerprint(a.T) == fingerprint(np.ascontiguousarray(a.T))
    with pytest.raises(TypeError, match="object"):
        fingerprint(np.array([None, 1], dtype=object))


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


# --------------------------------------------------------------------------------------------------
# Item 1: no code runs when a checkpoint is loaded
# --------------------------------------------------------------------------------------------------

class _Probe:
    """Unpickling this object opens (creates) ``marker``: the proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _craft(path, marker, args):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 1, "args": args, "payload": _Probe(marker)}, path)


def test_probe_checkpoint_is_refused_without_running_code(tmp_path, square_pairs):
    marker = tmp_path / "pwned"
    train, val = square_pairs(8, 0), square_pairs(4, 1)
    args = seg.unet_run_args(train, CFG, seed=0)
    run_dir = tmp_path / "run"
    _craft(run_dir / "last.pt", marker, args)
    with pytest.raises(CheckpointError, match=r"run/last\.pt is not a readable checkpoint \(it refers to "
                                              r"\S*open, .*refused without running it\); delete it to retrain"):
        seg.train_unet(train, val, CFG, seed=0, out_dir=run_dir, progress=False)
    # also when a completion record vouches for the crafted file (its digest is easy to compute)
    (run_dir / "COMPLETE.json").write_text(json.dumps(
        {"args": C.normalise_args(args), "files": {"last.pt": sha256_file(run_dir / "last.pt")}}))
    with pytest.raises(CheckpointError, match="last.pt"):
        Checkpointer(run_dir, args).run()
    # the GAN driver (SPADE, Pix2Pix) and the direct loaders refuse it too
    _craft(tmp_path / "gan" / "checkpoints" / "last.pt", marker, {"steps": 2, "seed": 0})
    with pytest.raises(CheckpointError, match="checkpoints/last.pt"):
        train_gan(SimpleNamespace(), None, steps=2, out_dir=tmp_path / "gan", seed=0, progress=False)
    _craft(tmp_path / "b" / "best.pt", marker, {})
    with pytest.raises(CheckpointError, match="best.pt"):
        Checkpointer(tmp_path / "b").load_best()
    assert not marker.exists()
    # control: the probe is live, the old weights_only=False load would have run it
    torch.load(run_dir / "last.pt", weights_only=False)
    assert marker.exists()


# --------------------------------------------------------------------------------------------------
# Item 2: a completion marker does not vouch for another run's weights
# --------------------------------------------------------------------------------------------------

def test_stale_completion_marker_is_not_complete(tmp_path):
    a = Checkpointer(tmp_path, {"lr": 0.1})
    a.save(2, {"w": torch.zeros(2)}, best=True)
    a.mark_complete({"best_epoch": 2})
    b = Checkpointer(tmp_path, {"lr": 0.2})  # run B in the same folder, interrupted after one save
    b.save(1, {"w": torch.ones(2)}, best=True)
    again = Checkpointer(tmp_path, {"lr": 0.1})
    assert again.completion() is None
    with pytest.warns(UserWarning, match=r"other options \(lr: stored 0.2, now 0.1\); starting over"):
        run = again.run()
    assert run.status == "new" and run.checkpoint is None and "other options" in run.reason


def test_stale_completion_marker_retrains_the_unet(tmp_path, square_pairs):
    train, val = square_pairs(8, 0), square_pairs(4, 1)
    fresh = seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path / "fresh", progress=False)
    seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path / "run", progress=False)  # run A, complete
    calls = {"n": 0}
    real_evaluate = seg.evaluate

    def interrupting(*a, **k):  # run B (other options) is killed during its second epoch
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupt
        return real_evaluate(*a, **k)

    seg.evaluate = interrupting
    try:
        with pytest.raises(Interrupt), pytest.warns(UserWarning, match="other options"):
            seg.train_unet(train, val, _cfg(epochs=5, lr=0.05), seed=0, out_dir=tmp_path / "run", progress=False)
    finally:
        seg.evaluate = real_evaluate
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["args"]["epochs"] == 5
    with pytest.warns(UserWarning, match="other options"):
        back = seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path / "run", progress=False)
    # A retrained, not B's weights under A's name
    assert back.best_epoch == fresh.best_epoch and back.best_val_dice == fresh.best_val_dice
    assert _same_weights(back.model, fresh.model)
    assert Checkpointer(tmp_path / "run", seg.unet_run_args(train, CFG, 0)).is_complete()


def test_completion_needs_the_weights_it_vouches_for(tmp_path):
    c = Checkpointer(tmp_path, {"x": 1})
    c.save(1, {"w": torch.zeros(1)})
    c.mark_complete()
    record = json.loads((tmp_path / "COMPLETE.json").read_text())
    assert record["files"] == {"last.pt": sha256_file(tmp_path / "last.pt")} and record["args"] == {"x": 1}
    Checkpointer(tmp_path, {"x": 1}).save(1, {"w": torch.ones(1)})  # same args, other weights
    assert not Checkpointer(tmp_path, {"x": 1}).is_complete()
    assert Checkpointer(tmp_path, {"x": 1}).run().status == "resume"  # last.pt is this run's: resumes
    (tmp_path / "last.pt").unlink()
    assert not Checkpointer(tmp_path, {"x": 1}).is_complete()
    # a marker from before digests were recorded vouches for nothing
    (tmp_path / "COMPLETE.json").write_text(json.dumps({"args": {"x": 1}}))
    assert not Checkpointer(tmp_path, {"x": 1}).is_complete()


# --------------------------------------------------------------------------------------------------
# Item 3: best.pt before last.pt
# --------------------------------------------------------------------------------------------------

def test_best_is_written_before_last(tmp_path, monkeypatch):
    written = []
    real_save = C.atomic_save
    monkeypatch.setattr(C, "atomic_save", lambda obj, path: (written.append(Path(path).name), real_save(obj, path)))
    Checkpointer(tmp_path, {}).save(1, {}, best=True)
    assert written == ["best.pt", "last.pt"]


def test_crash_between_best_and_last_is_not_complete(tmp_path, monkeypatch):
    c = Checkpointer(tmp_path, {"epochs": 2})
    c.save(1, {"w": torch.zeros(1)}, best=True)
    real_save = C.atomic_save

    def crash_on_last(obj, path):
        if Path(path).name == "last.pt":
            raise Interrupt
        real_save(obj, path)

    monkeypatch.setattr(C, "atomic_save", crash_on_last)
    with pytest.raises(Interrupt):
        c.save(2, {"w": torch.ones(1)}, best=True)
    monkeypatch.undo()
    assert torch.load(tmp_path / "best.pt", weights_only=True)["step"] == 2  # best got ahead of last
    with pytest.warns(UserWarning, match=r"best.pt is not the one last.pt refers to"):
        run = Checkpointer(tmp_path, {"epochs": 2}).run()
    assert run.status == "new"


def test_unet_with_best_missing_retrains_instead_of_failing(tmp_path, square_pairs):
    train, val = square_pairs(8, 0), square_pairs(4, 1)
    first = seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path, progress=False)
    (tmp_path / "best.pt").unlink()  # completion marker and last.pt still there (old code: TypeError)
    with pytest.warns(UserWarning, match="best.pt, which last.pt refers to, is missing"):
        again = seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path, progress=False)
    assert again.best_epoch == first.best_epoch and _same_weights(again.model, first.model)
    # the final last.pt without its completion marker (a crash just before mark_complete) and no best.pt
    (tmp_path / "COMPLETE.json").unlink()
    (tmp_path / "best.pt").unlink()
    with pytest.warns(UserWarning, match="is missing"):
        third = seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path, progress=False)
    assert _same_weights(third.model, first.model)


# --------------------------------------------------------------------------------------------------
# Item 4: unreadable files are named
# --------------------------------------------------------------------------------------------------

def _corrupt(path, kind):
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 10)
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # a valid torch file that is not a histolib checkpoint
        torch.save([1, 2, 3], path)


@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated", "foreign"])
@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_corrupt_checkpoint_names_the_file(tmp_path, kind, name):
    c = Checkpointer(tmp_path, {"a": 1})
    c.save(1, {"w": torch.arange(100.0)}, best=True)
    _corrupt(tmp_path / name, kind)
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / name)) + " is not a readable checkpoint"):
        (c.load_last if name == "last.pt" else Checkpointer(tmp_path).load_best)()
    with pytest.raises(CheckpointError, match=re.escape(name)):
        Checkpointer(tmp_path, {"a": 1}).run()  # the one rule reads both before resuming
    assert issubclass(CheckpointError, HistolibError)


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_unet_with_a_corrupt_checkpoint_names_it(tmp_path, name, square_pairs):
    train, val = square_pairs(8, 0), square_pairs(4, 1)
    seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path, progress=False)
    _corrupt(tmp_path / name, "truncated")
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / name)) + ".*delete it to retrain"):
        seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path, progress=False)


@pytest.mark.parametrize("text", ["", '{"args": {"lr', "\xff\xfe", "[1, 2]"])
def test_torn_completion_file_counts_as_unfinished(tmp_path, text):
    c = Checkpointer(tmp_path, {"lr": 0.1})
    c.save(2, {"w": torch.zeros(1)})
    c.mark_complete()
    (tmp_path / "COMPLETE.json").write_bytes(text.encode("latin-1"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = Checkpointer(tmp_path, {"lr": 0.1}).run()
    assert run.status == "resume" and run.step == 2  # resumes from last.pt: nothing lost, nothing trusted
    if text != "[1, 2]":
        assert any("COMPLETE.json is not readable" in str(w.message) for w in caught)


def test_unet_with_torn_completion_file_finishes_again(tmp_path, square_pairs):
    train, val = square_pairs(8, 0), square_pairs(4, 1)
    first = seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path, progress=False)
    (tmp_path / "COMPLETE.json").write_text('{"best_epoch": ')
    with pytest.warns(UserWarning, match="COMPLETE.json is not readable"):
        again = seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path, progress=False)
    assert again.best_epoch == first.best_epoch and _same_weights(again.model, first.model)
    assert Checkpointer(tmp_path, seg.unet_run_args(train, CFG, 0)).is_complete()


# --------------------------------------------------------------------------------------------------
# The divergence message names a checkpoint that exists, or says there is none
# --------------------------------------------------------------------------------------------------

def test_divergence_message_names_an_existing_checkpoint_or_none(tmp_path, monkeypatch, square_pairs):
    train, val = square_pairs(8, 0), square_pairs(4, 1)
    monkeypatch.setattr(seg, "segmentation_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDiverged, match="no checkpoint of this run was saved yet") as e:
        seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path / "fresh", progress=False)
    assert "last.pt" not in str(e.value)
    monkeypatch.undo()
    seg.train_unet(train, val, _cfg(epochs=1), seed=0, out_dir=tmp_path / "run", progress=False)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    ckpt["args"]["epochs"] = 2  # resume a 2-epoch run from its first epoch
    torch.save(ckpt, tmp_path / "run" / "last.pt")
    monkeypatch.setattr(seg, "segmentation_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDiverged, match=r"'segmentation' is nan at step 2") as e:
        seg.train_unet(train, val, CFG, seed=0, out_dir=tmp_path / "run", progress=False)
    named = re.search(r"kept in (\S+) \(step 1\)", str(e.value))
    assert named and Path(named.group(1)) == tmp_path / "run" / "last.pt" and Path(named.group(1)).is_file()


def test_gan_divergence_before_any_checkpoint_says_so(tmp_path):
    class Nan:
        modules, optimizers = {}, {}

        def train_step(self, batch, step, generator):
            return {"loss": float("nan")}

        def state_dict(self):
            return {}

    with pytest.raises(TrainingDiverged, match="no checkpoint of this run was saved yet"):
        train_gan(Nan(), TensorBatches(torch.zeros(2, 1), batch_size=1), steps=3, out_dir=tmp_path, seed=0,
                  progress=False)


def test_without_later_defaults_drops_options_at_their_defaults_with_their_dependents():
    opts = {"lr": 0.1, "ema_kimg": 0.0, "ema_rampup": 0.05, "upsample": "resize"}
    out = C.without_later_defaults(opts, {"ema_kimg": 0.0, "upsample": "transpose", "absent": 1},
                                   {"ema_kimg": ("ema_rampup",)})
    assert out == {"lr": 0.1, "upsample": "resize"}
    assert opts["ema_kimg"] == 0.0 and "ema_rampup" in opts  # the input is not changed
    used = C.without_later_defaults({**opts, "ema_kimg": 2.5}, {"ema_kimg": 0.0}, {"ema_kimg": ("ema_rampup",)})
    assert used == {**opts, "ema_kimg": 2.5}  # in use: kept, dependents too
    assert C.without_later_defaults({}, {"x": 0}) == {}
