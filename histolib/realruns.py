"""Run a paper notebook on real annotated folders: ``histolib run-real``.

The default pipeline (``dvc repro``) runs on the embedded phantom and never needs real data. A real
run is the same notebooks, executed by papermill, with parameter overrides that point the data at real
folders. Nothing else changes, so the phantom and real tables are computed by the same code::

    histolib run-real 01 02 04 05                       # every preset that covers these notebooks
    histolib run-real 05 --preset monuseg               # one preset
    histolib run-real 01 --real-root /data/my_slides    # the presets' folder names under another root
    histolib run-real 01 --set unet.epochs=5 --dry-run  # print the plan only

Where a real run writes (:func:`histolib.paths.data_tag` names the run by its real folders):

* ``results/real/<tag>/<nn>/``: tables, ``metrics.json`` and ``claims.md`` (committed), and the
  executed notebooks, figures and sample grids, which show real pixels: ``.gitignore`` admits only
  ``.md``, ``.json`` and ``.csv`` files under ``results/real/``, so they stay on the machine;
* ``models/real/<tag>/<profile>/<nn>/`` and ``data/prepared/real/<tag>/<profile>/`` (gitignored).

The notebooks a number runs, and their papermill arguments, are read from ``dvc.yaml`` (the stages
whose command runs ``notebooks/<nn>_*.ipynb``, in file order, matrix stages expanded), so a real run
executes exactly what ``dvc repro`` executes.

Presets (:data:`PRESETS`) name the folders of ``../shared/data/real`` (see its README): any folder with
the same layout works through ``--real-root`` or ``--set data.source=...``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from histolib.errors import HistolibError

DEFAULT_REAL_ROOT = "../shared/data/real"


@dataclass(frozen=True)
class Preset:
    """One real data set and the notebooks it feeds.

    ``overrides`` values may contain ``{real}``, replaced by the real root (relative to the project
    root, or absolute).
    """

    name: str
    notebooks: tuple[str, ...]
    overrides: dict
    about: str


PRESETS = {p.name: p for p in (
    Preset("glomeruli_crops", ("01", "02", "04"),
           {"data.source": "{real}/glomeruli_crops", "inpainting.source": "{real}/glomeruli_crops"},
           "504 AIDPATH PAS glomerulus crops (16 slides, split by slide), labels.csv GS / nonGS"),
    Preset("fluo_dsb", ("05",),
           {"data.nuclei_source": "{real}/fluo_dsb", "data.nuclei_style": "fluorescence",
            "nuclei.cross_source": "{real}/fluo_u2os"},
           "BBBC038 fluorescence nuclei (the nuclei paper's modality); cross-source test on U2OS (Coelho 2009)"),
    Preset("monuseg", ("05",),
           {"data.nuclei_source": "{real}/monuseg", "data.nuclei_style": "he"},
           "15 MoNuSeg H&E images (second modality)"),
)}


@dataclass
class Step:
    """One notebook execution of a real run."""

    notebook: str                 # notebooks/<nn>_*.ipynb
    out: str                      # results/real/<tag>/<nn>/<name>.ipynb
    papermill_args: list[str] = field(default_factory=list)


@dataclass
class Plan:
    preset: Preset
    overrides: dict               # resolved: real folders substituted, user --set applied
    tag: str
    steps: list[Step]


def _expand(stage: dict) -> list[dict]:
    """A dvc.yaml stage, matrix expanded: one dict with a plain ``cmd`` per matrix item."""
    matrix = stage.get("matrix")
    if not matrix:
        return [stage]
    keys = list(matrix)
    out = []
    for values in itertools.product(*(matrix[k] for k in keys)):
        cmd = stage["cmd"]
        for k, v in zip(keys, values, strict=True):
            cmd = cmd.replace(f"${{item.{k}}}", str(v))
        out.append({**stage, "cmd": cmd})
    return out


def notebook_steps(notebook: str, root: Path) -> list[Step]:
    """The papermill executions ``dvc.yaml`` runs for notebook number ``notebook`` (``"01"``), in order.

    A stage counts when its command executes ``notebooks/<notebook>_*.ipynb`` with ``histolib
    run-notebook`` or ``papermill``; the step keeps its output path and every argument after it.

    Raises:
        HistolibError: ``dvc.yaml`` is missing or runs no notebook ``<notebook>_*``.
    """
    path = Path(root) / "dvc.yaml"
    if not path.is_file():
        raise HistolibError(f"{path}: not found (run from the study's root)")
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {})
    pattern = re.compile(rf"(?:run-notebook|papermill)\s+(notebooks/{re.escape(notebook)}_\S+\.ipynb)\s+(\S+)(.*)")
    steps = []
    for stage in stages.values():
        for item in _expand(stage):
            cmd = " ".join(str(item["cmd"]).split())
            m = pattern.search(cmd)
            if m:
                steps.append(Step(m.group(1), m.group(2), shlex.split(m.group(3))))
    if not steps:
        raise HistolibError(f"dvc.yaml runs no notebook notebooks/{notebook}_*.ipynb")
    return steps


def plan(notebook: str, preset: str | Preset, root: Path, real_root: str = DEFAULT_REAL_ROOT,
         sets: dict | None = None, check_folders: bool = True) -> Plan:
    """Everything one real run of one notebook does, without doing it.

    Args:
        notebook: ``"01"``, ``"02"``, ...
        preset: a name of :data:`PRESETS` (or a :class:`Preset`).
        root: the project root.
        real_root: folder holding the preset's folders (relative to ``root`` or absolute).
        sets: extra dotted overrides (``{"unet.epochs": 5}``); they win over the preset's.
        check_folders: raise when a real folder of the overrides does not exist.

    Raises:
        HistolibError: unknown preset, a preset that does not cover ``notebook``, a missing folder, or a
            run that would read no real folder.
    """
    from histolib.config import load_params
    from histolib.paths import data_tag

    if isinstance(preset, str):
        if preset not in PRESETS:
            raise HistolibError(f"unknown real-data preset {preset!r}; known: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if notebook not in preset.notebooks:
        raise HistolibError(f"preset {preset.name!r} feeds notebooks {', '.join(preset.notebooks)}, not {notebook}")
    overrides = {k: v.replace("{real}", str(real_root)) if isinstance(v, str) else v
                 for k, v in preset.overrides.items()}
    overrides.update(sets or {})
    if check_folders:
        for key, value in overrides.items():
            if (key.endswith(".source") or key.endswith("_source")) and value not in ("", "phantom"):
                folder = (Path(root) / value).resolve()
                if not folder.is_dir():
                    raise HistolibError(f"{key}={value}: folder {folder} not found (real data lives outside the "
                                        f"study; see ../shared/data/real/README.md or pass --real-root)")
    P = load_params(None, overrides)
    tag = data_tag(P)
    if not tag:
        raise HistolibError(f"preset {preset.name!r} with {overrides} reads no real folder")
    steps = []
    for s in notebook_steps(notebook, root):
        out = Path(s.out)
        parts = out.parts[1:] if out.parts and out.parts[0] == "results" else out.parts
        steps.append(Step(s.notebook, str(Path("results", "real", tag, *parts)), s.papermill_args))
    return Plan(preset, overrides, tag, steps)


def presets_for(notebook: str) -> list[str]:
    """Names of the presets that feed ``notebook``."""
    return [p.name for p in PRESETS.values() if notebook in p.notebooks]


def run(p: Plan, root: Path, log=print) -> int:
    """Build the real data, then execute ``p``'s notebooks in order; stop at the first failure.

    The overrides travel in ``$HISTOLIB_OVERRIDES``, which every notebook's ``start()`` reads.

    Returns:
        0 when every notebook finished, else the failing papermill's exit status.
    """
    from histolib.cli import run_notebook
    from histolib.config import load_params
    from histolib.data.prepared import ensure_prepared

    old = os.environ.get("HISTOLIB_OVERRIDES")
    os.environ["HISTOLIB_OVERRIDES"] = json.dumps(p.overrides)
    try:
        ensure_prepared(load_params(None, p.overrides), root, log=log)
        for s in p.steps:
            log(f"[{p.tag}] {s.notebook} -> {s.out}")
            rc = run_notebook(Path(root) / s.notebook, Path(root) / s.out, s.papermill_args)
            if rc:
                return rc
    finally:
        if old is None:
            os.environ.pop("HISTOLIB_OVERRIDES", None)
        else:
            os.environ["HISTOLIB_OVERRIDES"] = old
    return 0
