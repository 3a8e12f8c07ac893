"""``histolib`` command line: build the data, show or check parameters.

Examples::

    histolib build-data                     # the DVC `data` stage, params.yaml's profile
    histolib build-data --profile smoke --set data.n_train=4
    histolib params                         # resolved parameters of the active profile (YAML)
    histolib params --explain unet          # every option of a section with its help text
    histolib run-notebook notebooks/00_data.ipynb results/00/00_data.ipynb -k python3 -p profile smoke
    histolib run-real 01 02 04 05           # the notebooks on ../shared/data/real (histolib.realruns)
    histolib plots                          # dvc.yaml's plots for offline reading: results/plots/ (`make plots`)
    histolib calibrate-phantom ../shared/data/real/glomeruli_crops --kind pas --phantom-out calibration/phantom/x.json
    histolib calibrate-phantom calibration/x.json --phantom-out calibration/phantom/x_cal.json --phantom-calibration \
calibration/x.json
    histolib readme-results                 # README's scorecard section from results/*/metrics.json (`make readme`)

``calibrate-phantom`` measures a real folder (``images/``, optional ``masks/``) feature by feature and writes
the summary numbers (median, 5th/95th percentile, n; never pixels) to ``calibration/<folder>.json``
(:mod:`histolib.calibration`). Given a calibration JSON instead of a folder, it measures only the phantom
at the scale that JSON records (with ``--phantom-calibration``: the calibrated phantom, ``data.calibration``).
``build-data`` prints one line per skipped file with its reason (also listed in the manifest).
``run-notebook`` runs papermill into ``OUT.partial.ipynb`` and renames it to ``OUT`` only when every cell
finished, so a failed or killed run never leaves a finished-looking notebook under ``results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from histolib.config import describe, load_params
from histolib.errors import HistolibError
from histolib.paths import project_root


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise HistolibError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def partial_path(out: str | os.PathLike) -> Path:
    """Where :func:`run_notebook` writes while running: ``x.ipynb`` -> ``x.partial.ipynb`` (gitignored)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial{out.suffix}")


def run_notebook(notebook: str | os.PathLike, out: str | os.PathLike, papermill_args: list[str]) -> int:
    """Execute ``notebook`` with papermill, publishing ``out`` only when the whole run succeeded.

    papermill writes ``OUT.partial.ipynb`` (created folders included); on success it is renamed to
    ``out`` (an atomic replace of any earlier complete copy). On failure, interruption or a kill, ``out``
    is left untouched and the partial copy stays under its ``.partial`` name, with the failing cell's
    traceback, for inspection.

    Args:
        notebook: the notebook to run.
        out: the executed notebook to publish, e.g. ``results/00/00_data.ipynb``.
        papermill_args: passed to papermill unchanged (``-k python3``, ``-p name value``, ``-y YAML``, ...).

    Returns:
        0 on success, else papermill's exit status (130 when interrupted).
    """
    out = Path(out)
    partial = partial_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(partial), *papermill_args]
    try:
        rc = subprocess.call(cmd)
    except KeyboardInterrupt:
        rc = 130
    if rc == 0 and partial.is_file():
        os.replace(partial, out)
        return 0
    kept = f"; the partly executed copy is {partial}" if partial.is_file() else ""
    print(f"histolib: error: {notebook} did not finish (papermill exit status {rc}); {out} was not "
          f"written{kept}", file=sys.stderr)
    return rc or 1


def _plots(out: str, formats: str) -> int:
    from histolib.plots import build_plots

    try:
        t0 = time.perf_counter()
        written = build_plots(project_root(), out, tuple(f.strip() for f in formats.split(",") if f.strip()))
    except HistolibError as e:
        print(f"histolib: error: {e}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in written) / 1e6
    print(f"{len(written)} files ({size:.1f} MB) in {written[0].parent} in {time.perf_counter() - t0:.1f} s; "
          f"open {written[0]} (works offline)")
    return 0


def _readme_results(check: bool) -> int:
    from histolib.studies import scorecard

    root = project_root()
    readme = root / "README.md"
    try:
        if check:
            current = scorecard.current_section(readme.read_text())
            if current != scorecard.readme_section(root / "results").strip():
                print(f"histolib: {readme} scorecard section is stale; run `histolib readme-results`", file=sys.stderr)
                return 1
            print(f"{readme}: scorecard section is current")
            return 0
        changed = scorecard.write_readme(readme, root / "results")
    except HistolibError as e:
        print(f"histolib: error: {e}", file=sys.stderr)
        return 2
    print(f"{readme}: scorecard section {'rewritten' if changed else 'already current'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="histolib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-data", help="write data/prepared/* and manifest.json")
    p = sub.add_parser("params", help="print resolved parameters")
    for s in (b, p):
        s.add_argument("--profile", choices=("smoke", "cpu", "paper"), help="override params.yaml's profile")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one parameter")
    b.add_argument("--out", help="output folder (default data/prepared/<profile>)")
    p.add_argument("--explain", metavar="SECTION", help="list a section's options with their help")
    r = sub.add_parser("run-notebook", help="papermill NOTEBOOK into OUT.partial.ipynb, renamed to OUT on success")
    r.add_argument("notebook")
    r.add_argument("out")
    r.add_argument("papermill_args", nargs=argparse.REMAINDER, help="passed to papermill (-k, -p, -y, ...)")
    rr = sub.add_parser("run-real", help="run notebooks on real folders into results/real/<tag>/ (histolib.realruns)")
    rr.add_argument("notebooks", nargs="+", metavar="NN", help="notebook numbers, e.g. 01 05")
    rr.add_argument("--preset", action="append", default=[], help="real-data preset(s); default: every preset "
                    "that feeds the notebook")
    rr.add_argument("--real-root", default=None, help="folder holding the presets' folders "
                    "(default ../shared/data/real, relative to the study root)")
    rr.add_argument("--profile", choices=("smoke", "cpu", "paper"), help="override params.yaml's profile")
    rr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one parameter")
    rr.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    rr.add_argument("--compare-only", action="store_true", help="only rewrite results/real/<tag>/<nn>/"
                    "beside_phantom.md from finished runs")
    g = sub.add_parser("plots", help="dvc.yaml's plots as an offline HTML page and SVG/PNG images")
    g.add_argument("--out", default="results/plots", help="output folder, replaced as a whole (default %(default)s)")
    g.add_argument("--formats", default="svg", help="image formats (svg, png), comma-separated; '' for the page "
                   "only (default %(default)s)")
    c = sub.add_parser("calibrate-phantom", help="measure a real folder; write its calibration JSON "
                       "(histolib.calibration)")
    c.add_argument("folder", metavar="REAL_FOLDER", help="images/*.png and optional masks/*.png")
    c.add_argument("--kind", choices=("pas", "he", "fluorescence"), help="what the folder holds and its masks "
                   "mean (pas: glomerulus masks; he, fluorescence: nucleus instances); default: guessed")
    c.add_argument("--out", help="JSON to write (default calibration/<folder name>.json in the study root)")
    c.add_argument("--limit", type=int, help="measure at most this many images (a seeded random subset)")
    c.add_argument("--seed", type=int, default=0, help="seed of the subset and of the phantom (default 0)")
    c.add_argument("--phantom-out", help="also measure the phantom at the folder's scale and write it here")
    c.add_argument("--n-phantom", type=int, default=32, help="phantom images for --phantom-out (default 32)")
    c.add_argument("--phantom-calibration", metavar="JSON", help="measure the phantom's calibrated mode "
                   "(data.calibration) calibrated on this JSON instead of the default phantom")
    rm = sub.add_parser("readme-results", help="rewrite README.md's scorecard section from the claims in "
                        "results/*/metrics.json (histolib.studies.scorecard)")
    rm.add_argument("--check", action="store_true", help="only check the section is current (exit 1 if not)")
    args = parser.parse_args(argv)
    if args.command == "calibrate-phantom":
        return _calibrate(args)
    if args.command == "readme-results":
        return _readme_results(args.check)
    if args.command == "run-notebook":
        return run_notebook(args.notebook, args.out, args.papermill_args)
    if args.command == "run-real":
        return _run_real(args)
    if args.command == "plots":
        return _plots(args.out, args.formats)
    try:
        if args.command == "params" and args.explain:
            print(describe(args.explain))
            return 0
        P = load_params(args.profile, _parse_sets(args.set))
        if args.command == "params":
            print(yaml.safe_dump(P.resolved, sort_keys=False))
            return 0
        from histolib.data.builder import build_all

        t0 = time.perf_counter()
        root = project_root()
        build_all(P, root, prepared=args.out)
        print(f"data built for profile {P.profile!r} in {time.perf_counter() - t0:.1f} s")
        return 0
    except HistolibError as e:
        print(f"histolib: error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"histolib: error: unknown section {e}", file=sys.stderr)
        return 2


def _calibrate(args) -> int:
    from histolib.calibration import calibrate

    if args.limit is not None and args.limit < 1:
        print(f"histolib: error: --limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    try:
        t0 = time.perf_counter()
        paths = calibrate(args.folder, args.kind, args.out, args.limit, args.seed, args.phantom_out, args.n_phantom,
                          phantom_calibration_json=args.phantom_calibration)
    except HistolibError as e:
        print(f"histolib: error: {e}", file=sys.stderr)
        return 2
    for what, path in paths.items():
        print(f"wrote {path} ({what})")
    print(f"calibrated in {time.perf_counter() - t0:.1f} s")
    return 0


def _run_real(args) -> int:
    from histolib import realruns

    if args.profile:
        os.environ["HISTOLIB_PROFILE"] = args.profile
    root = project_root()
    try:
        sets = _parse_sets(args.set)
        plans = []
        for nb in args.notebooks:
            names = args.preset or realruns.presets_for(nb)
            if not names:
                known = ", ".join(f"{p.name} ({', '.join(p.notebooks)})" for p in realruns.PRESETS.values())
                raise HistolibError(f"no real-data preset feeds notebook {nb}; presets: {known}")
            plans += [realruns.plan(nb, name, root, args.real_root or realruns.DEFAULT_REAL_ROOT, sets,
                                    check_folders=not (args.dry_run or args.compare_only)) for name in names]
    except HistolibError as e:
        print(f"histolib: error: {e}", file=sys.stderr)
        return 2
    for p in plans:
        print(f"{p.preset.name} -> results/real/{p.tag}/: {json.dumps(p.overrides)}")
        for s in p.steps:
            print(f"  {s.notebook} -> {s.out} {' '.join(s.papermill_args)}")
    if args.dry_run:
        return 0
    if args.compare_only:
        for p in plans:
            print("wrote", realruns.write_comparison(Path(p.steps[-1].out).parent.name, p.tag, root))
        return 0
    for p in plans:
        t0 = time.perf_counter()
        rc = realruns.run(p, root)
        status = "done" if rc == 0 else f"FAILED (exit {rc})"
        print(f"{p.preset.name}: {status} in {(time.perf_counter() - t0) / 60:.1f} min")
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
