"""Notebook plumbing: papermill parameters are checked, and executed notebooks appear only when finished."""

import os
import sys
from pathlib import Path

import nbformat
import pytest

import histolib.nbparams as nbp
import histolib.notebook as nb
from histolib.cli import main, partial_path
from histolib.errors import ParamError

ROOT = Path(__file__).resolve().parents[1]
PARAMS_CELL = "profile = None      # smoke | cpu | paper\noverrides = {}\n"


def test_assigned_names():
    assert nbp.assigned_names("a = 1\nb: int = 2\nc, (d, *e) = f()\ng += 1\nh.x = 3\nprint(i)\n") == \
        ["a", "b", "c", "d", "e", "g"]
    assert nbp.assigned_names("not python (") == []


def test_papermill_parameter_typo_is_an_error_naming_it():
    history = ["", "import os", PARAMS_CELL, '# Parameters\nprofle = "cpu"\n', "S = start('00', profile)"]
    with pytest.raises(ParamError, match=r"'profle'.*parameters: profile, overrides"):
        nbp.check_parameters(history)
    ok = ["", PARAMS_CELL, '# Parameters\nprofile = "cpu"\noverrides = {"unet.lr": 0.1}\n']
    assert nbp.check_parameters(ok) == ["profile", "overrides"]
    assert nbp.check_parameters(["", PARAMS_CELL, "x = 1"]) == []  # not run by papermill: nothing to check
    with pytest.raises(ParamError, match="'label_map'"):
        nbp.check_parameters(ok[:2] + ['# Parameters\nlabel_map = "gtmask"\n'], declared=["profile"])


def test_start_refuses_an_unknown_papermill_parameter(monkeypatch):
    monkeypatch.setattr(nbp, "_ipython_history", lambda: ["", PARAMS_CELL, '# Parameters\nprofle = "cpu"\n'])
    with pytest.raises(ParamError, match="profle"):
        nb.start("00")


def _notebook(path: Path, body: str) -> Path:
    cells = [nbformat.v4.new_code_cell(PARAMS_CELL, metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("from histolib.nbparams import check_parameters\ncheck_parameters()"),
             nbformat.v4.new_code_cell(body)]
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), path)
    return path


@pytest.fixture
def kernel_env(monkeypatch):
    """The kernel imports this checkout's histolib and writes nothing else."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))


def test_run_notebook_publishes_only_finished_runs(tmp_path, kernel_env, capsys):
    good = _notebook(tmp_path / "good.ipynb", "print(profile)")
    out = tmp_path / "results" / "nn" / "good.ipynb"  # the folder does not exist yet
    assert main(["run-notebook", str(good), str(out), "-k", "python3", "--no-progress-bar",
                 "-p", "profile", "smoke"]) == 0
    assert out.is_file() and not partial_path(out).exists()
    assert "smoke" in out.read_text()

    # a parameter typo (papermill itself only warns) fails the first cell: no finished-looking notebook,
    # an earlier complete copy is left as it was, and the partly executed one keeps the error
    out.write_text("earlier complete run")
    assert main(["run-notebook", str(good), str(out), "-k", "python3", "--no-progress-bar",
                 "-p", "profle", "cpu"]) != 0
    assert out.read_text() == "earlier complete run"
    assert "unknown notebook parameter(s) 'profle'" in partial_path(out).read_text()
    assert "did not finish" in capsys.readouterr().err
