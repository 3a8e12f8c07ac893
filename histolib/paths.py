"""Where the project lives on disk.

papermill runs a notebook's kernel in the caller's directory while nbval and JupyterLab run it in
the notebook's folder, so every notebook calls :func:`project_root` instead of trusting the cwd.
"""

from __future__ import annotations

import os
from pathlib import Path

_MARKERS = ("params.yaml", "dvc.yaml")


def project_root(start: str | os.PathLike | None = None) -> Path:
    """Return the study's root folder: the nearest ancestor holding ``params.yaml`` and ``dvc.yaml``.

    ``HISTOLIB_ROOT`` in the environment wins when set.

    Raises:
        FileNotFoundError: no ancestor of ``start`` (default: the cwd) is a project root.
    """
    env = os.environ.get("HISTOLIB_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / m).is_file() for m in _MARKERS):
            return folder
    raise FileNotFoundError(
        f"no histolib project root (a folder with {' and '.join(_MARKERS)}) above {here}; "
        "set HISTOLIB_ROOT or run from inside the project"
    )


def output_root(root: Path | None = None) -> Path:
    """Where results and models go: ``$HISTOLIB_OUTPUT`` when set (the tests point it at a temporary
    folder, so a smoke run never touches the study's committed results), else the project root."""
    env = os.environ.get("HISTOLIB_OUTPUT")
    return Path(env).resolve() if env else (root or project_root())


def results_dir(notebook: str, root: Path | None = None) -> Path:
    """``results/<notebook>/``: metrics, tables, figures and grids of one notebook; created if missing."""
    out = output_root(root) / "results" / notebook
    out.mkdir(parents=True, exist_ok=True)
    return out


def prepared_dir(profile: str, root: Path | None = None) -> Path:
    """``data/prepared/<profile>`` under the project root: the builder's output for one profile, so
    running the smoke tests never overwrites the ``cpu`` data (or the other way round)."""
    return (root or project_root()) / "data" / "prepared" / profile


def models_dir(notebook: str, profile: str, root: Path | None = None) -> Path:
    """``models/<profile>/<notebook>/``: trained weights and checkpoints (DVC outs, gitignored)."""
    return output_root(root) / "models" / profile / notebook
