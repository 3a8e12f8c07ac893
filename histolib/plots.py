"""The study's DVC plots as pages and images a reader can open offline (``make plots``).

``dvc plots show`` writes an HTML page whose ``<script src>`` tags load vega, vega-lite and vega-embed
from a CDN (dvc-render's ``VegaRenderer.SCRIPTS``), so on a machine without internet the page is
blank. Here the same page is written from ``plots/template.html``, a DVC ``--html-template`` without
the ``scripts`` placeholder whose ``<!-- vendor: FILE -->`` markers are replaced by the vendored
``plots/vendor/FILE`` inlined in a ``<script>`` element (versions and sha256 in
``plots/vendor/vendor.lock.json``): one self-contained file that renders from disk. Each plot's
filled Vega-Lite specification (``dvc plots show --json``) is also rendered to SVG and PNG with
``vl-convert-python`` (its own embedded Vega, no browser), so the curves open as plain images too.

Layout written by :func:`build_plots` (default ``results/plots/``)::

    index.html                  every plot of dvc.yaml, interactive, no network needed
    <plot>.svg                  one image per plot (and .png with formats=("svg", "png")), e.g.
                                00_sim2real_curves.svg for results/00/sim2real_curves.csv
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from histolib.errors import HistolibError
from histolib.fileio import atomic_write_text, complete_dir

TEMPLATE = Path("plots/template.html")
VENDOR = Path("plots/vendor")
LOCK = VENDOR / "vendor.lock.json"
IMAGE_FORMATS = ("svg", "png")

_MARKER = re.compile(r"<!--\s*vendor:\s*([^\s>]+)\s*-->")
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=\S+\s*$", re.MULTILINE)
_PLOTS_PLACEHOLDER = "{plot_divs}"  # dvc_render.html.HTML.PLOTS_PLACEHOLDER
_SCRIPTS_PLACEHOLDER = "{scripts}"  # where dvc-render puts its CDN <script src> tags
_REMOTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)  # http://, https://, //host, ftp://, ...
# elements whose src/href the browser fetches on its own while loading the page (<a href> is only a link)
_FETCHING = {"script": ("src",), "link": ("href",), "iframe": ("src",), "img": ("src", "srcset"),
             "embed": ("src",), "object": ("data",), "source": ("src", "srcset"), "audio": ("src",),
             "video": ("src", "poster"), "track": ("src",), "frame": ("src",), "input": ("src",)}


def load_vendor_lock(root: str | os.PathLike) -> list[dict]:
    """The vendored scripts recorded in ``plots/vendor/vendor.lock.json``.

    Returns:
        One dict per package: ``name``, ``version``, ``file`` (inside ``plots/vendor/``), ``sha256``,
        ``bytes``, ``npm_integrity`` (the npm tarball's), ``licence``, ``licence_file``.

    Raises:
        HistolibError: the lock file is missing or unreadable, or an entry lacks one of those keys.
    """
    path = Path(root) / LOCK
    try:
        packages = json.loads(path.read_text())["packages"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HistolibError(f"{path}: cannot read the vendored-script lock ({e})") from e
    for entry in packages:
        missing = {"name", "version", "file", "sha256", "licence_file"} - set(entry)
        if missing:
            raise HistolibError(f"{path}: entry {entry.get('name', entry)!r} lacks {sorted(missing)}")
    return packages


def verify_vendor(root: str | os.PathLike) -> list[dict]:
    """Check every vendored script and its licence file against the lock.

    Returns:
        The lock's entries (as :func:`load_vendor_lock`).

    Raises:
        HistolibError: naming the file that is missing or whose sha256 differs from the lock.
    """
    root = Path(root)
    packages = load_vendor_lock(root)
    for entry in packages:
        path = root / VENDOR / entry["file"]
        if not path.is_file():
            raise HistolibError(f"{path}: vendored script missing ({entry['name']}@{entry['version']}, "
                                f"see {VENDOR / 'README.md'})")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise HistolibError(f"{path}: sha256 {digest} differs from {LOCK} ({entry['sha256']}); "
                                f"re-vendor {entry['name']}@{entry['version']} as {VENDOR / 'README.md'} says")
        if not (root / VENDOR / entry["licence_file"]).is_file():
            raise HistolibError(f"{root / VENDOR / entry['licence_file']}: licence of {entry['name']} missing")
    return packages


def dvc_cdn_versions() -> dict[str, str]:
    """The package versions the installed dvc-render loads from its CDN, e.g. ``{"vega": "5.20.2", ...}``.

    Read from ``dvc_render.vega.VegaRenderer.SCRIPTS`` (``<script src=".../npm/vega@5.20.2">``), so a test
    notices when a dvc-render upgrade expects other versions than the vendored ones.
    """
    from dvc_render.vega import VegaRenderer

    return dict(re.findall(r"/npm/((?:@[\w.-]+/)?[\w.-]+)@([\w.+-]+)", VegaRenderer.SCRIPTS))


def offline_template(root: str | os.PathLike, template: str | os.PathLike | None = None) -> str:
    """The DVC HTML template with the vendored scripts inlined.

    Each ``<!-- vendor: FILE -->`` marker of the template becomes ``<script>`` + the bytes of
    ``plots/vendor/FILE`` + ``</script>``; FILE must be listed in the lock and match its sha256.

    Args:
        root: the project root.
        template: the template file (default ``plots/template.html`` under ``root``).

    Returns:
        The template text for ``dvc plots show --html-template``, with ``{plot_divs}`` (and
        ``{refresh_tag}``) left for DVC to fill.

    Raises:
        HistolibError: naming the template when it lacks ``{plot_divs}``, holds the ``{scripts}``
            placeholder (DVC would add its CDN scripts there), has no vendor marker, names a file the
            lock does not list, or still references a remote script; or naming a vendored file that
            is missing or altered (:func:`verify_vendor`).
    """
    root = Path(root)
    path = Path(template) if template is not None else root / TEMPLATE
    try:
        text = path.read_text(encoding="utf8")
    except OSError as e:
        raise HistolibError(f"{path}: cannot read the plots template ({e})") from e
    if _PLOTS_PLACEHOLDER not in text:
        raise HistolibError(f"{path}: the template must contain {_PLOTS_PLACEHOLDER} (where DVC puts the plots)")
    if _SCRIPTS_PLACEHOLDER in text:
        raise HistolibError(f"{path}: remove {_SCRIPTS_PLACEHOLDER}: DVC fills it with <script> tags that load "
                            "vega from a CDN, which leaves the page blank offline")
    files = {entry["file"] for entry in verify_vendor(root)}
    named = _MARKER.findall(text)
    if not named:
        raise HistolibError(f"{path}: no '<!-- vendor: FILE -->' marker, so the page would load no vega at all")
    unknown = sorted(set(named) - files)
    if unknown:
        raise HistolibError(f"{path}: vendor marker(s) {unknown} not in {LOCK} (known: {sorted(files)})")

    def inline(match: re.Match) -> str:
        code = (root / VENDOR / match.group(1)).read_text(encoding="utf8")
        if "</script" in code.lower():  # would end the inline element early
            raise HistolibError(f"{root / VENDOR / match.group(1)}: contains '</script', cannot be inlined")
        placeholders = [p for p in (_PLOTS_PLACEHOLDER, _SCRIPTS_PLACEHOLDER, "{refresh_tag}") if p in code]
        if placeholders:  # DVC would replace them inside the script
            raise HistolibError(f"{root / VENDOR / match.group(1)}: contains DVC's {placeholders}, cannot be inlined")
        code = _SOURCE_MAP.sub("", code)  # the .map files are not vendored: no request for them
        return f"<script>/* plots/vendor/{match.group(1)} */\n{code}\n</script>"

    filled = _MARKER.sub(inline, text)
    remote = remote_references(filled)
    if remote:
        raise HistolibError(f"{path}: references remote resources {remote}; the page must work offline")
    return filled


class _FetchedRefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in _FETCHING.get(tag, ()) and value:
                self.refs.append((tag, name, value))
            elif tag == "meta" and name == "content" and value and "url=" in value.lower():
                self.refs.append((tag, name, value.split("=", 1)[-1]))  # <meta http-equiv=refresh content="0; url=...">

    handle_startendtag = handle_starttag


def remote_references(html: str) -> list[str]:
    """Every remote address the page would fetch by itself: ``src``/``href``/``data`` of ``<script>``,
    ``<link>``, ``<img>``, ``<iframe>`` and the other loading elements, and CSS ``@import``/``url()``,
    whose value is absolute (``http://``, ``https://``, any ``scheme://``) or protocol-relative (``//host``).

    Text inside ``<script>`` elements (a URL in a string, such as a ``$schema``) is not a reference, nor
    is ``<a href>`` (a link the reader may follow). Relative paths, ``data:`` URIs and fragments are local.

    Args:
        html: the page's text.

    Returns:
        ``"tag attr=value"`` for each remote reference, in page order; empty for an offline page.
    """
    parser = _FetchedRefs()
    parser.feed(html)
    parser.close()
    found = [f"{tag} {attr}={value}" for tag, attr, value in parser.refs if _REMOTE.match(value)]
    for style in re.findall(r"<style[^>]*>(.*?)</style>", html, flags=re.IGNORECASE | re.DOTALL):
        for value in re.findall(r"(?:@import\s+(?:url\()?|url\()\s*['\"]?([^'\")\s;]+)", style, flags=re.IGNORECASE):
            if _REMOTE.match(value):
                found.append(f"style url={value}")
    return found


def _dvc(root: Path, *args: str) -> str:
    """Run ``python -m dvc ARGS`` in ``root`` (the interpreter's own DVC, whatever PATH says)."""
    cmd = [sys.executable, "-m", "dvc", *args]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise HistolibError(f"`dvc {' '.join(args)}` failed in {root} (exit status {done.returncode}):\n"
                            f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def plot_specs(root: str | os.PathLike) -> dict[str, dict]:
    """The filled Vega-Lite specification of every plot DVC knows (``dvc plots show --json``), data inlined.

    Returns:
        ``{plot id: spec}`` in dvc.yaml's order, e.g. ``"results/00/sim2real_curves.csv": {"$schema": ...}``.

    Raises:
        HistolibError: DVC fails, reports errors for a plot (e.g. a missing results file), or knows no plot.
    """
    out = json.loads(_dvc(Path(root), "plots", "show", "--json"))
    if out.get("errors"):
        raise HistolibError(f"dvc plots show reported errors: {json.dumps(out['errors'])[:2000]}")
    specs = {pid: entry["content"] for pid, entries in out.get("data", {}).items()
             for entry in entries if entry.get("type") == "vega"}
    if not specs:
        raise HistolibError(f"dvc plots show found no vega plot in {root} (dvc.yaml declares none, or the "
                            "results files are missing)")
    return specs


def image_stem(plot_id: str) -> str:
    """File name (without suffix) of a plot's image: ``results/00/sim2real_curves.csv`` -> ``00_sim2real_curves``.

    Folders become ``_``, a leading ``results/`` and the data file's suffix are dropped, any character
    other than letters, digits, ``.``, ``-`` and ``_`` becomes ``_``.
    """
    stem = plot_id[len("results/"):] if plot_id.startswith("results/") else plot_id
    stem = re.sub(r"\.(csv|tsv|json|ya?ml)$", "", stem)
    return re.sub(r"[^\w.-]", "_", stem.replace("/", "_")).strip("._") or "plot"


def render_images(specs: dict[str, dict], out_dir: str | os.PathLike,
                  formats: tuple[str, ...] = IMAGE_FORMATS, scale: float = 2.0) -> list[Path]:
    """Render each Vega-Lite spec to ``out_dir/<image_stem>.<format>`` with ``vl-convert-python``.

    Args:
        specs: ``{plot id: Vega-Lite spec}`` (:func:`plot_specs`).
        out_dir: folder to write into (created).
        formats: any of ``"svg"``, ``"png"``.
        scale: PNG pixels per spec pixel (2: a 300-px-wide plot becomes about 600 px plus axes).

    Returns:
        The written files, in ``specs`` order, formats in the order given.

    Raises:
        HistolibError: an unknown format, two plots with the same image name, vl-convert missing, or a
            spec vl-convert cannot render (the message names the plot).
    """
    bad = sorted(set(formats) - set(IMAGE_FORMATS))
    if bad:
        raise HistolibError(f"image formats {bad} not supported; use {list(IMAGE_FORMATS)}")
    stems = [image_stem(pid) for pid in specs]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise HistolibError(f"plots {[p for p in specs if image_stem(p) in clash]} share the image name(s) {clash}")
    try:
        import vl_convert
    except ImportError as e:
        raise HistolibError("rendering plots to images needs vl-convert-python (`pip install -e '.[dev]'`)") from e
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (pid, spec), stem in zip(specs.items(), stems, strict=True):
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            try:
                if fmt == "svg":
                    path.write_text(vl_convert.vegalite_to_svg(spec), encoding="utf8")
                else:
                    path.write_bytes(vl_convert.vegalite_to_png(spec, scale=scale))
            except (ValueError, RuntimeError) as e:
                raise HistolibError(f"plot {pid}: vl-convert cannot render it as {fmt} ({e})") from e
            written.append(path)
    return written


def write_page(root: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """``dvc plots show --html-template <offline template> -o out_dir``: writes ``out_dir/index.html``.

    Returns:
        The page's path.

    Raises:
        HistolibError: the template or vendored scripts are wrong (:func:`offline_template`), DVC fails,
            or the written page still references a remote resource.
    """
    root, out_dir = Path(root), Path(out_dir).resolve()
    text = offline_template(root)
    with tempfile.TemporaryDirectory(prefix="histolib-plots-") as tmp:
        template = Path(tmp) / "template.html"
        template.write_text(text, encoding="utf8")
        _dvc(root, "plots", "show", "--html-template", str(template), "-o", str(out_dir))
    page = out_dir / "index.html"
    if not page.is_file():
        raise HistolibError(f"dvc plots show wrote no {page}")
    remote = remote_references(page.read_text(encoding="utf8"))
    if remote:
        raise HistolibError(f"{page}: still references remote resources {remote}")
    return page


def build_plots(root: str | os.PathLike, out: str | os.PathLike = "results/plots",
                formats: tuple[str, ...] = ("svg",)) -> list[Path]:
    """Write the offline page and the images of every DVC plot into ``out`` (replaced as a whole).

    The folder is built under a temporary name and swapped in only when everything succeeded
    (:func:`histolib.fileio.complete_dir`), so images of plots no longer declared do not linger.

    Args:
        root: the project root (where ``dvc.yaml`` and the results are).
        out: output folder, relative to ``root`` unless absolute.
        formats: image formats, any of :data:`IMAGE_FORMATS` (``()`` for the page only).

    Returns:
        The written files under ``out``: ``index.html``, the images, ``README.md``.
    """
    root = Path(root)
    out = Path(out) if Path(out).is_absolute() else root / out
    specs = plot_specs(root)
    with complete_dir(out) as tmp:
        write_page(root, tmp)
        images = render_images(specs, tmp, formats) if formats else []
        libraries = ", ".join(f"{e['name']} {e['version']}" for e in load_vendor_lock(root))
        rows = "".join(f"| `{pid}` | " + ", ".join(f"[{p.suffix[1:]}]({p.name})" for p in images
                                                     if p.stem == image_stem(pid)) + " |\n" for pid in specs)
        atomic_write_text(tmp / "README.md", (
            "# Plots (written by `make plots`; do not edit)\n\n"
            "`index.html`: every plot declared in `dvc.yaml`, interactive; it opens from disk with no network "
            f"({libraries} inlined). The same plots as images, rendered with vl-convert-python:\n\n"
            "| plot (data file) | images |\n|---|---|\n" + rows))
    written = [out / "index.html", *(out / p.name for p in images), out / "README.md"]
    return written

