"""Offline plots (histolib/plots.py): the page loads no remote script, the vendored scripts are the
locked ones dvc-render expects, every spec renders its curves, and headless Chromium with the network
blocked draws them (skipped where no Chromium is installed)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from histolib import plots
from histolib.errors import HistolibError
from histolib.paths import project_root

ROOT = project_root(Path(__file__).parent)
LINE = (0x94, 0x5D, 0xD6)  # colour of a single-revision line in dvc-render's linear template


def declared_plots() -> list[str]:
    """Plot ids (data files) declared in dvc.yaml, read without DVC: stage ``plots:`` and top-level ``plots:``."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    entries = [e for stage in spec.get("stages", {}).values() for e in stage.get("plots", [])]
    entries += spec.get("plots", [])
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def vendored_root(tmp_path: Path) -> Path:
    """A throw-away root holding a copy of plots/ (template and vendor)."""
    shutil.copytree(ROOT / "plots", tmp_path / "plots")
    return tmp_path


# --- remote_references: hand-made pages -------------------------------------------------------------
@pytest.mark.parametrize("html", [
    '<script src="https://cdn.jsdelivr.net/npm/vega@5.20.2"></script>',
    "<script type='text/javascript' SRC='http://example.org/x.js'></script>",
    '<script src="//cdn.example.org/x.js"></script>',
    '<link rel="stylesheet" href="https://example.org/a.css">',
    '<link rel="modulepreload" href="HTTPS://example.org/m.js"/>',
    '<img src="https://example.org/a.png">',
    '<iframe src="https://example.org/"></iframe>',
    '<style>@import url("https://example.org/a.css");</style>',
    '<style>body { background: url(//example.org/bg.png) }</style>',
    '<meta http-equiv="refresh" content="0; url=https://example.org/">',
])
def test_remote_references_finds_each_remote_load(html):
    assert len(plots.remote_references(f"<html><head>{html}</head><body></body></html>")) == 1


@pytest.mark.parametrize("html", [
    '<script src="vendor/vega.min.js"></script>',
    '<script src="../plots/vendor/vega.min.js"></script>',
    '<script src="file:vega.min.js"></script>',
    '<script>var spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json"};</script>',
    '<script>document.write("<script src=\\"https://example.org\\">")</script>',
    '<a href="https://vega.github.io/">a link, not a load</a>',
    '<img src="data:image/png;base64,AAAA">',
    '<style>body { background: url(bg.png) }</style>',
])
def test_remote_references_ignores_local_inline_and_links(html):
    assert plots.remote_references(f"<html><head>{html}</head><body></body></html>") == []


# --- vendored scripts and the template --------------------------------------------------------------
def test_vendored_versions_are_the_ones_dvc_render_loads():
    locked = {e["name"]: e["version"] for e in plots.verify_vendor(ROOT)}
    assert plots.dvc_cdn_versions() == locked == {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}


def test_vendored_files_carry_their_version_and_licence():
    for e in plots.load_vendor_lock(ROOT):
        head = (ROOT / plots.VENDOR / e["file"]).read_text()[:2000]
        assert f'"{e["version"]}"' in head, e["file"]  # the UMD bundle's version string
        licence = (ROOT / plots.VENDOR / e["licence_file"]).read_text()
        assert "Redistribution and use in source and binary forms" in licence, e["licence_file"]


def test_verify_vendor_names_an_altered_file(tmp_path):
    root = vendored_root(tmp_path)
    path = root / plots.VENDOR / "vega-lite.min.js"
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(HistolibError, match="vega-lite.min.js: sha256"):
        plots.verify_vendor(root)
    path.unlink()
    with pytest.raises(HistolibError, match="vega-lite.min.js: vendored script missing"):
        plots.verify_vendor(root)


def test_offline_template_inlines_every_script_and_loads_nothing_remote():
    text = plots.offline_template(ROOT)
    assert plots.remote_references(text) == []
    assert "{plot_divs}" in text and "{scripts}" not in text and "<!-- vendor:" not in text
    for e in plots.load_vendor_lock(ROOT):
        code = (ROOT / plots.VENDOR / e["file"]).read_text()
        assert code.splitlines()[0] in text, e["file"]
    assert "sourceMappingURL" not in text


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("{plot_divs}", ""), r"must contain \{plot_divs\}"),
    (lambda t: t.replace("</head>", "{scripts}</head>"), r"remove \{scripts\}"),
    (lambda t: t.replace("vendor: vega.min.js", "vendor: d3.min.js"), r"\['d3.min.js'\] not in"),
    (lambda t: t.replace("<!-- vendor:", "<!-- gone:"), "no '<!-- vendor: FILE -->' marker"),
    (lambda t: t.replace("</head>", '<script src="https://cdn.example.org/x.js"></script></head>'),
     "references remote resources"),
])
def test_offline_template_rejects_a_bad_template(tmp_path, edit, message):
    root = vendored_root(tmp_path)
    template = root / plots.TEMPLATE
    template.write_text(edit(template.read_text()))
    with pytest.raises(HistolibError, match=message) as info:
        plots.offline_template(root)
    assert "template.html" in str(info.value)


def test_image_stem():
    assert plots.image_stem("results/00/sim2real_curves.csv") == "00_sim2real_curves"
    assert plots.image_stem("results/05/fig5_real.csv") == "05_fig5_real"
    assert plots.image_stem("confusion matrix") == "confusion_matrix"


SPEC = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "mark": "line",
        "data": {"values": [{"x": 0, "y": 1.0}, {"x": 1, "y": 0.5}, {"x": 2, "y": 0.8}]},
        "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": {"field": "y", "type": "quantitative"},
                     "color": {"value": "#945dd6"}}}


def test_render_images_writes_svg_and_png(tmp_path):
    pytest.importorskip("vl_convert")
    written = plots.render_images({"results/99/a.csv": SPEC}, tmp_path, ("svg", "png"))
    assert [p.name for p in written] == ["99_a.svg", "99_a.png"]
    svg = written[0].read_text()
    assert svg.startswith("<svg") and 'stroke="#945dd6"' in svg
    assert written[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_images_rejects_unknown_formats_and_clashing_names(tmp_path):
    with pytest.raises(HistolibError, match="jpeg"):
        plots.render_images({"a.csv": SPEC}, tmp_path, ("jpeg",))
    with pytest.raises(HistolibError, match="share the image name"):
        plots.render_images({"results/a.csv": SPEC, "a.json": SPEC}, tmp_path)


# --- the study's plots, from the committed results ----------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("vl_convert")
    out = tmp_path_factory.mktemp("plots") / "plots"
    return out, plots.build_plots(ROOT, out, ("svg",))


def test_build_plots_writes_an_offline_page_and_one_image_per_declared_plot(built):
    out, written = built
    ids = declared_plots()
    images = {f"{plots.image_stem(i)}.svg" for i in ids}
    assert ids and {p.name for p in written} == {"index.html", "README.md", *images}
    page = (out / "index.html").read_text()
    assert plots.remote_references(page) == []
    assert "cdn." not in page
    for pid in ids:  # dvc-render's div id: the plot id with non-word characters as _
        assert f'<div id = "{"".join(c if c.isalnum() else "_" for c in pid)}">' in page, pid
    assert "vega-embed 6.18.2" in (out / "README.md").read_text()


def test_committed_plots_are_offline_and_cover_dvc_yaml():
    """results/plots/ (committed, written by `make plots`) has no remote script and an image per plot."""
    out = ROOT / "results" / "plots"
    if not (out / "index.html").is_file():
        pytest.skip("results/plots/ not written (run `make plots`)")
    assert plots.remote_references((out / "index.html").read_text()) == []
    missing = [p for p in declared_plots() if not (out / f"{plots.image_stem(p)}.svg").is_file()]
    assert not missing, f"results/plots/ lacks images of {missing}: run `make plots`"


def _line_marks(node, found):
    if isinstance(node, dict):
        if node.get("marktype") == "line":
            found.append(node.get("items", []))
        for value in node.values():
            _line_marks(value, found)
    elif isinstance(node, list):
        for value in node:
            _line_marks(value, found)
    return found


def test_every_spec_renders_a_curve_through_every_data_row():
    """vl-convert's embedded Vega (no browser) lays out each plot: one line mark has a point per data row,
    all inside the plot area. This is the render check that runs where no browser is installed."""
    vl_convert = pytest.importorskip("vl_convert")
    specs = plots.plot_specs(ROOT)
    assert set(specs) == set(declared_plots())
    for pid, spec in specs.items():
        graph = vl_convert.vegalite_to_scenegraph(spec)
        lines = _line_marks(graph["scenegraph"], [])
        rows = len(spec["data"]["values"])
        # one line through every row, or (a plot of several y columns, whose rows DVC flattens to one per
        # column and x; its template draws each line twice, solid and as a faint hover layer) lines whose
        # distinct points are exactly the rows
        points = {(round(i["x"], 3), round(i["y"], 3)) for items in lines for i in items}
        assert rows >= 2 and (any(len(items) == rows for items in lines)
                              or (len(lines) > 1 and len(points) == rows)), (pid, rows, [len(i) for i in lines])
        xy = np.array([(i["x"], i["y"]) for items in lines for i in items], dtype=float)
        assert np.isfinite(xy).all() and (xy[:, 0] >= 0).all() and (xy[:, 0] <= spec["width"] + 1).all(), pid
        assert (xy[:, 1] >= 0).all() and (xy[:, 1] <= spec["height"] + 1).all(), pid


# --- headless browser, network blocked ---------------------------------------------------------------
def _chromium() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def _headless(page: Path, tmp: Path, *mode: str) -> str:
    """Open ``page`` from disk in headless Chromium with every host unresolvable and a dead proxy; stdout."""
    tmp.mkdir(parents=True, exist_ok=True)
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--proxy-server=http://127.0.0.1:9", "--window-size=1000,3600", "--hide-scrollbars",
           "--virtual-time-budget=20000", *mode, page.resolve().as_uri()]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=180).stdout


def _canvases(page: Path, tmp: Path) -> list[tuple[int, int]]:
    """(width, height) of every canvas vega-embed drew into the page (the DOM after the scripts ran)."""
    dom = _headless(page, tmp, "--dump-dom")
    return [(int(w), int(h)) for w, h in re.findall(r'<canvas width="(\d+)" height="(\d+)" class="marks"', dom)]


@pytest.mark.skipif(_chromium() is None, reason="no Chromium (Debian: apt-get install chromium)")
def test_headless_chromium_offline_draws_every_plot(built, tmp_path):
    from PIL import Image

    out, _ = built
    n = len(declared_plots())
    drawn = _canvases(out / "index.html", tmp_path / "ours")
    assert len(drawn) == n and all(w > 200 and h > 200 for w, h in drawn), drawn
    _headless(out / "index.html", tmp_path / "shot", f"--screenshot={tmp_path / 'shot.png'}")
    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB")).astype(int)
    line = np.abs(pixels - np.array(LINE)).max(-1) <= 24
    assert line.sum() > 300 * n, line.sum()  # the curves, in the line colour
    # control: DVC's own page (CDN scripts) under the same blocked network draws nothing
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path / "cdn")], cwd=ROOT,
                   check=True, capture_output=True)
    assert _canvases(tmp_path / "cdn" / "index.html", tmp_path / "control") == []
