import subprocess

import pytest

from histolib.repro import _git_commit


def _git(root, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


def test_git_commit_ignores_the_pipelines_own_outputs_but_not_code(tmp_path):
    try:
        _git(tmp_path, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git not available")
    (tmp_path / "results").mkdir()
    for name in ("code.py", "dvc.lock", "results/table.md"):
        (tmp_path / name).write_text("a\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    assert not _git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "results/table.md").write_text("b\n")  # written by the run being recorded
    (tmp_path / "dvc.lock").write_text("b\n")
    assert not _git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "code.py").write_text("b\n")
    assert _git_commit(tmp_path).endswith("+dirty")
