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


REAL = "real"  # results/real/, models/real/, data/prepared/real/: where runs on real folders go


def data_tag(params) -> str:
    """Name of the real data a run reads, ``""`` for the phantom.

    Every knob called ``source`` or ``*_source`` in any params section (``data.source``,
    ``data.nuclei_source``, ``inpainting.source``, ``nuclei.cross_source``, ...) that is neither
    ``"phantom"`` nor empty names a real folder; the tag joins those folders' names with ``+`` in the
    order of their dotted keys (``data.*`` before ``inpainting.*`` before ``nuclei.*``:
    ``"glomeruli_crops"``, ``"fluo_dsb+fluo_u2os"``), never in the order sections happen to be
    registered, which depends on what a process imported first. A non-empty tag sends the run's
    results, models and prepared data under ``real/<tag>/`` (see :func:`results_dir`), so a real run
    never overwrites the phantom's committed results, and ``.gitignore`` admits only text there.

    Args:
        params: a :class:`histolib.config.Params` (anything with a ``resolved`` dict of sections).
    """
    names: list[str] = []
    for _, section in sorted(params.resolved.items()):
        if not isinstance(section, dict):
            continue
        for key, value in sorted(section.items()):
            if (key == "source" or key.endswith("_source")) and isinstance(value, str) \
                    and value not in ("", "phantom"):
                folder = Path(value.rstrip("/\\")).name or value
                if folder not in names:
                    names.append(folder)
    return "+".join(names)


def _tagged(base: Path, tag: str) -> Path:
    return base / REAL / tag if tag else base


def results_dir(notebook: str, root: Path | None = None, tag: str = "") -> Path:
    """``results/<notebook>/`` (phantom) or ``results/real/<tag>/<notebook>/`` (real data, :func:`data_tag`):
    metrics, tables, figures and grids of one notebook; created if missing."""
    out = _tagged(output_root(root) / "results", tag) / notebook
    out.mkdir(parents=True, exist_ok=True)
    return out


def prepared_dir(profile: str, root: Path | None = None, tag: str = "") -> Path:
    """``data/prepared/<profile>`` (or ``data/prepared/real/<tag>/<profile>``) under the project root: the
    builder's output for one profile and data source, so running the smoke tests never overwrites the
    ``cpu`` data, nor a real run the phantom's (or the other way round)."""
    return _tagged((root or project_root()) / "data" / "prepared", tag) / profile


def models_dir(notebook: str, profile: str, root: Path | None = None, tag: str = "") -> Path:
    """``models/<profile>/<notebook>/`` (or ``models/real/<tag>/<profile>/<notebook>/``): trained weights and
    checkpoints (DVC outs, gitignored)."""
    return _tagged(output_root(root) / "models", tag) / profile / notebook
