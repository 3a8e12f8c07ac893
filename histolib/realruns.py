"""Run a paper notebook on real annotated folders: ``histolib run-real``.

The default pipeline (``dvc repro``) runs on the embedded phantom and never needs real data. A real
run is the same notebooks, executed by papermill, with parameter overrides that point the data at real
folders. Nothing else changes, so the phantom and real tables are computed by the same code::

    histolib run-real 01 02 04 05                       # every preset that covers these notebooks
    histolib run-real 00                                # notebook 00 against every real set (preset all_sets)
    histolib run-real 05 --preset monuseg               # one preset
    histolib run-real 01 --real-root /data/my_slides    # the presets' folder names under another root
    histolib run-real 01 --set unet.epochs=5 --dry-run  # print the plan only

Where a real run writes (:func:`histolib.paths.data_tag` names the run by its real folders):

* ``results/real/<tag>/<nn>/``: tables, ``metrics.json``, ``claims.md``, executed notebooks, figures and
  sample grids. Every one of them is computed from the real images, so ``.gitignore`` keeps the whole of
  ``results/real/`` out of git (the development data's numbers are reported, never committed);
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
    Preset("glomeruli_crops", ("01", "02", "04", "06"),
           {"data.source": "{real}/glomeruli_crops", "inpainting.source": "{real}/glomeruli_crops"},
           "504 AIDPATH PAS glomerulus crops (16 slides, split by slide), labels.csv GS / nonGS"),
    Preset("fluo_dsb", ("05",),
           {"data.nuclei_source": "{real}/fluo_dsb", "data.nuclei_style": "fluorescence",
            "nuclei.cross_source": "{real}/fluo_u2os"},
           "BBBC038 fluorescence nuclei (the nuclei paper's modality); cross-source test on U2OS (Coelho 2009)"),
    Preset("monuseg", ("05",),
           # 15 images leave 9 for training after the split: the paper's J = 10 does not fit
           {"data.nuclei_source": "{real}/monuseg", "data.nuclei_style": "he", "nuclei.j_values": [2, 5]},
           "15 MoNuSeg H&E images (second modality; J = 2, 5: the training split holds 9 images)"),
    Preset("all_sets", ("00",),
           {"sim2real.crops_source": "{real}/glomeruli_crops", "sim2real.sets_source": "{real}"},
           "notebook 00 against every real set: realism statistics, sim-to-real on the crops, calibration report"),
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
        nb = Path(p.steps[-1].out).parent.name
        log(f"wrote {write_comparison(nb, p.tag, root)}")
    finally:
        if old is None:
            os.environ.pop("HISTOLIB_OVERRIDES", None)
        else:
            os.environ["HISTOLIB_OVERRIDES"] = old
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The real run beside the phantom's and the paper's: results/real/<tag>/<nn>/beside_phantom.md

@dataclass(frozen=True)
class Compared:
    """One results table compared across runs: its CSV name, the columns naming a row, the columns compared."""

    csv: str
    keys: tuple[str, ...]
    values: tuple[str, ...]


# What each notebook's real run is read for (the paper's columns come from the phantom table, which carries them).
COMPARED = {
    "01": (Compared("table1.csv", ("training set",), ("dice", "precision", "recall", "faithfulness")),),
    "02": (Compared("dice_table.csv", ("training set",), ("Dice (%)", "faithfulness (Dice %)")),
           Compared("ablation_table.csv", ("variant",),
                    ("test KID x1e3", "diversity / real", "faithfulness Dice (%)"))),
    "04": (Compared("table3.csv", ("test", "trad. aug.", "class"), ("dice",)),
           Compared("table4.csv", ("test", "synthetic data"), ("dice",)),
           Compared("table5.csv", ("test", "model"), ("dice",))),
    "06": (Compared("gains.csv", ("method", "budget"), ("Dice", "classical Dice", "gain (points)", "verdict")),),
    "05": (Compared("table1.csv", ("setting", "J"), ("AJI", "DICE", "faithfulness AJI (per replicate)")),
           # the cross-source test (nuclei.cross_source; the paper's own Table 1 setting): real runs only
           Compared("table1_cross.csv", ("setting", "J"), ("AJI", "DICE"))),
}
BINARY_GLOMERULI = ("01", "02", "06")  # notebooks whose test split is the prepared binary glomerulus patches


def _read_csv(path: Path) -> list[dict]:
    import csv

    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def compare_tables(phantom: list[dict], real: list[dict], spec: Compared) -> list[dict]:
    """Rows of both tables joined on ``spec.keys`` (phantom order first, then rows only the real run has):
    for each compared column ``c``: ``c (phantom)``, ``c (real)``, and ``paper c`` when the phantom table has it.
    A value missing from one run is ``—``."""
    def key(r):
        return tuple(r.get(k, "") for k in spec.keys)

    by_real = {key(r): r for r in real}
    keys = [key(r) for r in phantom] + [k for k in by_real if k not in {key(r) for r in phantom}]
    by_phantom = {key(r): r for r in phantom}
    rows = []
    for k in keys:
        p, r = by_phantom.get(k, {}), by_real.get(k, {})
        row = dict(zip(spec.keys, k, strict=True))
        for c in spec.values:
            row[f"{c} (phantom)"] = p.get(c) or "—"
            row[f"{c} (real)"] = r.get(c) or "—"
            paper = p.get(f"paper {c}") or r.get(f"paper {c}")
            if paper:
                row[f"paper {c}"] = paper
        rows.append(row)
    return rows


def compare_claims(phantom: list[dict], real: list[dict]) -> list[dict]:
    """Each claim (by ``key``; by its text where a run recorded none) with its verdict on the phantom and on
    real data, and whether they agree."""
    def key(c: dict) -> str:
        return c.get("key") or c["claim"]

    by_real = {key(c): c for c in real}
    by_phantom = {key(c): c for c in phantom}
    rows = []
    for c in phantom + [c for c in real if key(c) not in by_phantom]:
        p, r = by_phantom.get(key(c)), by_real.get(key(c))
        pv, rv = (p or {}).get("verdict", "—"), (r or {}).get("verdict", "—")
        rows.append({"paper": c.get("paper", ""), "claim": key(c), "phantom": pv, "real": rv,
                     "agree": "yes" if pv == rv else "no", "real evidence": (r or {}).get("evidence", "—")})
    return rows


def write_comparison(notebook: str, tag: str, root: Path, prepared: Path | None = None) -> Path:
    """Write ``results/real/<tag>/<nn>/beside_phantom.md``: the real run's conditions beside the phantom run's,
    the all-glomerulus baseline on the real test split (notebooks 01 and 02: the crops are tight), every compared
    table with phantom, real and paper columns, and each claim's verdict on both.

    Args:
        prepared: the real run's prepared-data folder (for the baseline); default from the tag.

    Raises:
        HistolibError: the real run has no ``metrics.json`` (it did not finish).
    """
    from histolib.fileio import atomic_write_text
    from histolib.viz import markdown_table

    root = Path(root)
    ph_dir, re_dir = root / "results" / notebook, root / "results" / "real" / tag / notebook
    if not (re_dir / "metrics.json").is_file():
        raise HistolibError(f"{re_dir / 'metrics.json'}: not found; the real run of notebook {notebook} did not finish")
    real_m = json.loads((re_dir / "metrics.json").read_text())
    ph_m = json.loads((ph_dir / "metrics.json").read_text()) if (ph_dir / "metrics.json").is_file() else {}
    lines = [f"# Notebook {notebook}: real data (`{tag}`) beside the phantom and the paper", ""]
    for name, m in (("real", real_m), ("phantom", ph_m)):
        cond = m.get("table_conditions") or m.get("conditions") or {}
        lines.append(f"*Conditions ({name}):* " + (json.dumps(cond, default=str) if cond else "run absent"))
        lines.append("")
    if notebook in BINARY_GLOMERULI:
        from histolib.data.prepared import load_split
        from histolib.studies.data_overview import all_foreground_baseline

        folder = prepared or _prepared_of(real_m, root, tag)
        try:
            b = all_foreground_baseline(load_split("glomeruli", "test", folder))
            lines += [f"All-glomerulus baseline on the real test split (every pixel called glomerulus; `{folder}`): "
                      f"Dice {100 * b['dice']:.2f}, precision {100 * b['precision']:.2f}, recall "
                      f"{100 * b['recall']:.2f}. A segmenter is only informative above it.", ""]
        except Exception as e:  # the prepared data was removed: say so, keep the rest of the report
            lines += [f"All-glomerulus baseline: not computed ({e}).", ""]
    for spec in COMPARED.get(notebook, ()):
        rows = compare_tables(_read_csv(ph_dir / spec.csv), _read_csv(re_dir / spec.csv), spec)
        lines += [f"## `{spec.csv}`", "", markdown_table(rows) if rows else "(absent in both runs)", ""]
    claims = compare_claims(ph_m.get("claims", []), real_m.get("claims", []))
    if claims:
        n_agree = sum(r["agree"] == "yes" for r in claims)
        lines += ["## Claims: verdict on the phantom and on real data", "",
                  f"{n_agree} of {len(claims)} verdicts agree.", "", markdown_table(claims), ""]
    return atomic_write_text(re_dir / "beside_phantom.md", "\n".join(lines) + "\n")


def _prepared_of(metrics: dict, root: Path, tag: str) -> Path:
    from histolib.paths import prepared_dir

    profile = (metrics.get("conditions") or {}).get("profile", "cpu")
    return prepared_dir(profile, root, tag)
