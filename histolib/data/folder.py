"""Folder datasets in the study's plain layout: ``images/*.png``, ``masks/*.png``, optional ``labels.csv``.

Masks come in three kinds:

- ``binary``: 0/255 (or 0/1) PNG, returned as ``{0, 1}`` ``uint8``;
- ``classes``: class indices ``0..n_classes-1``, returned as ``uint8``;
- ``instances``: 16-bit instance labels (0 = background), returned as ``int32``.

Every image is returned as ``(H, W, 3) uint8`` RGB: grey and RGBA files are converted with a warning;
16-bit grey is scaled by its full range (``/ 257``), float grey in ``[0, 1]`` by 255, anything else is
refused. Bad files (unreadable, truncated, decompression bombs, a missing mask, a size mismatch, mask
values outside the kind) raise :class:`~histolib.errors.DataError` naming the file (``strict=True``) or
are skipped and listed in :attr:`Pairs.skipped` with the reason (``strict=False``), never dropped silently.

``labels.csv`` is read strictly (:func:`read_labels_csv`): its delimiter is sniffed (``,``, ``;``, tab),
a ``file`` column is required, unknown classes are an error, and rows without an image or images
without a row are reported with a warning listing them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from histolib.errors import DataError

MASK_KINDS = ("binary", "classes", "instances")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LABEL_DELIMITERS = ",;\t|"


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image file; every failure (decompression bombs included) is a DataError."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that: refuse those too, with the file named
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: unreadable {what}: larger than PIL's decompression-bomb limit of "
                        f"{Image.MAX_IMAGE_PIXELS} pixels ({e}); raise PIL.Image.MAX_IMAGE_PIXELS if the "
                        f"file is trusted") from e
    except Exception as e:  # noqa: BLE001 - PIL raises many types for corrupt files; all mean "unreadable"
        raise DataError(f"{path}: unreadable {what} ({type(e).__name__}: {e})") from e


@dataclass
class Pairs:
    """Images with their masks, in file-name order.

    Attributes:
        images: ``(N, H, W, 3) uint8`` when all sizes agree, else a list of ``(H, W, 3)`` arrays.
        masks: ``(N, H, W)`` (dtype per mask kind) or a list, matching ``images``.
        names: file names (with suffix) of the pairs.
        labels: ``labels.csv`` rows keyed by file name (``{}`` without a ``labels.csv``).
        skipped: ``(file, reason)`` for every file left out (only with ``strict=False``).
    """

    images: np.ndarray | list
    masks: np.ndarray | list
    names: list[str]
    labels: dict[str, dict] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, index) -> Pairs:
        """The pairs at ``index`` (a list of positions), keeping labels."""
        index = list(index)
        pick = (lambda a: a[index]) if isinstance(self.images, np.ndarray) else (lambda a: [a[i] for i in index])
        names = [self.names[i] for i in index]
        return Pairs(pick(self.images), pick(self.masks), names,
                     {n: self.labels[n] for n in names if n in self.labels}, list(self.skipped))

    def label(self, name: str, column: str, default: str = "") -> str:
        """One ``labels.csv`` cell for a file, or ``default``."""
        return self.labels.get(name, {}).get(column, default)


def _grey_to_uint8(arr: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """Scale a one-channel image to ``uint8`` by its type's range, never by clipping.

    8-bit and 1-bit images are kept (1-bit as 0/255); 16-bit integers (PIL modes ``I;16*``, and ``I`` with
    values in ``0..65535``, as 16-bit PNGs open) are divided by 257 so 65535 maps to 255; floats must lie in
    ``[0, 1]`` and are multiplied by 255. Anything else is refused with the file named.
    """
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise DataError(f"{path}: float grey image ({mode}) with values "
                            f"{float(np.nanmin(arr)):g}..{float(np.nanmax(arr)):g}; expected values in [0, 1]")
        return np.round(arr * 255.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min(initial=0)), int(arr.max(initial=0))
        if lo < 0 or hi > 65535:
            raise DataError(f"{path}: integer grey image ({mode}) with values {lo}..{hi}; expected 8-bit "
                            f"(0..255) or 16-bit (0..65535) grey")
        return np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    raise DataError(f"{path}: grey image of type {arr.dtype} ({mode}) is not supported")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB.

    Grey images are repeated to three channels and RGBA loses its alpha, each with a warning. Grey images
    deeper than 8 bits are scaled, not clipped: 16-bit by their full range (``value / 257``, so 65535 is
    255), float in ``[0, 1]`` by 255; other ranges are refused.

    Raises:
        DataError: the file cannot be read as an image (corrupt, truncated, over PIL's decompression-bomb
            limit) or holds grey values of an unsupported range, naming the file.
    """
    path = Path(path)
    im = _open(path, "image")
    mode = im.mode
    if mode in ("RGBA", "LA", "P", "PA"):
        if mode != "P":
            warnings.warn(f"{path}: {mode} image converted to RGB (alpha dropped)", stacklevel=2)
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    elif mode == "RGB":
        arr = np.asarray(im, dtype=np.uint8)
    elif mode in ("L", "1", "F") or mode.startswith("I"):
        warnings.warn(f"{path}: grey image ({mode}) converted to RGB", stacklevel=2)
        arr = _grey_to_uint8(np.asarray(im), mode, path)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    else:
        try:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{path}: unreadable image: mode {mode} cannot be converted to RGB ({e})") from e
    return np.ascontiguousarray(arr)


def read_mask(path: str | os.PathLike, kind: str = "binary", n_classes: int | None = None) -> np.ndarray:
    """Read a mask file and check its values against its kind.

    Args:
        path: a PNG (or TIFF) mask.
        kind: ``binary`` (0/255 or 0/1), ``classes`` (``0..n_classes-1``) or ``instances`` (16-bit labels).
        n_classes: required for ``classes``.

    Returns:
        ``(H, W)``: ``uint8`` in ``{0, 1}`` (binary), ``uint8`` class indices, or ``int32`` instance ids.

    Raises:
        DataError: unreadable file, colour mask, or values outside the declared kind, naming the file.
    """
    path = Path(path)
    if kind not in MASK_KINDS:
        raise DataError(f"mask kind {kind!r} is not one of {MASK_KINDS}")
    arr = np.asarray(_open(path, "mask"))
    if arr.ndim == 3:
        if arr.shape[2] in (3, 4) and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(
                arr[..., 0], arr[..., 2]):
            arr = arr[..., 0]  # a grey mask saved as RGB
        else:
            raise DataError(f"{path}: mask has {arr.shape[2]} colour channels; expected a single-channel mask")
    values = np.unique(arr)
    if kind == "binary":
        if set(values.tolist()) <= {0, 255}:
            return (arr == 255).astype(np.uint8)
        if set(values.tolist()) <= {0, 1}:
            return arr.astype(np.uint8)
        bad = [v for v in values.tolist() if v not in (0, 1, 255)][:5]
        raise DataError(f"{path}: binary mask has values {bad} outside {{0, 255}} (or {{0, 1}})")
    if kind == "classes":
        if n_classes is None:
            raise DataError("read_mask(kind='classes') needs n_classes")
        if values.min() < 0 or values.max() >= n_classes:
            raise DataError(f"{path}: class mask has values {values[values >= n_classes][:5].tolist()} "
                            f"outside 0..{n_classes - 1}")
        return arr.astype(np.uint8)
    if values.min() < 0:
        raise DataError(f"{path}: instance mask has negative labels")
    return arr.astype(np.int32)


def read_labels_csv(path: str | os.PathLike, classes: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Read ``labels.csv`` strictly: rows keyed by the file name in their ``file`` column.

    The delimiter is sniffed among ``,``, ``;``, tab and ``|`` (spreadsheet software writes ``;`` in many
    locales); a UTF-8 byte-order mark and spaces around names and cells are dropped, and column names
    are matched case-insensitively (returned lower-case).

    Args:
        path: the ``labels.csv`` file.
        classes: the allowed values of the ``class`` column (an empty cell is allowed); ``None`` accepts any.

    Returns:
        ``{file name: {column: value}}`` (``file`` keeps only the file name, without folders).

    Raises:
        DataError: naming ``labels.csv``: no header with a ``file`` column (the columns found are listed),
            a row with more cells than the header, a file listed twice, or a class outside ``classes``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable labels.csv ({e})") from e
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path}: labels.csv is empty; expected a header row such as file,class,slide")
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines[:50]), delimiters=LABEL_DELIMITERS)
        delimiter = dialect.delimiter
    except csv.Error:  # one column, or nothing to tell the delimiter by
        delimiter = ","
    reader = (cells for cells in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in cells))
    header = [h.strip().lower() for h in next(reader)]
    if "file" not in header:
        raise DataError(f"{path}: labels.csv has no 'file' column (columns found: {header}, delimiter "
                        f"{delimiter!r}); the first row must be a header naming the columns, e.g. file,class,slide")
    rows: dict[str, dict] = {}
    for lineno, cells in enumerate(reader, start=2):  # lineno counts non-blank rows
        if len(cells) > len(header):
            raise DataError(f"{path}: labels.csv row {lineno} has {len(cells)} cells but the header has "
                            f"{len(header)} columns {header}")
        row = {h: c.strip() for h, c in zip(header, cells, strict=False)}
        row.update({h: "" for h in header[len(cells):]})
        name = Path(row["file"]).name
        if not name:
            raise DataError(f"{path}: labels.csv row {lineno} has an empty 'file' cell")
        if name in rows:
            raise DataError(f"{path}: labels.csv lists {name!r} twice (row {lineno})")
        cls = row.get("class", "")
        if classes is not None and cls and cls not in classes:
            raise DataError(f"{path}: labels.csv row {lineno} ({name}) has unknown class {cls!r}; "
                            f"known classes: {list(classes)}")
        row["file"] = name
        rows[name] = row
    return rows


def _listing(names, limit: int = 10) -> str:
    names = sorted(names)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def listing_fingerprint(folder: str | os.PathLike) -> dict:
    """A cheap fingerprint of a source folder's listing: every file's relative path, size and mtime.

    Contents are not read (a 500-image folder takes milliseconds), so any file added, removed,
    replaced or touched changes it. A missing folder gives ``files: 0`` and ``listing: None``.

    Returns:
        ``{"files": count, "listing": 16-hex-digit SHA-256 of the sorted (path, size, mtime_ns) triples}``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return {"files": 0, "listing": None}
    h = hashlib.sha256()
    n = 0
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            n += 1
    return {"files": n, "listing": h.hexdigest()[:16]}


def _stack_if_same(arrays: list[np.ndarray]) -> np.ndarray | list:
    if arrays and all(a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    return arrays


def load_pairs(folder: str | os.PathLike, mask_kind: str = "binary", n_classes: int | None = None,
               strict: bool = True, limit: int | None = None, classes: tuple[str, ...] | None = None) -> Pairs:
    """Load every ``images/<name>`` with its ``masks/<name>`` from ``folder``.

    Args:
        folder: holds ``images/`` and ``masks/`` (same file names) and optionally ``labels.csv``.
        mask_kind: ``binary``, ``classes`` or ``instances`` (see :func:`read_mask`).
        n_classes: number of classes for ``classes`` masks.
        strict: raise on the first bad file (default); else skip it and record why in ``skipped``.
        limit: load at most this many pairs (in name order).
        classes: allowed values of ``labels.csv``'s ``class`` column (``None``: any).

    Returns:
        :class:`Pairs`. ``labels.csv`` rows without an image and images without a row are reported
        with a warning that lists them.

    Raises:
        DataError: missing folder, no images, a bad ``labels.csv`` (see :func:`read_labels_csv`), or
            (strict) an unreadable file, a missing mask, an image/mask size mismatch or mask values
            outside ``mask_kind``, naming the file.
    """
    folder = Path(folder)
    img_dir, mask_dir = folder / "images", folder / "masks"
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder does not exist")
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise DataError(f"{folder}: expected subfolders images/ and masks/ (found: "
                        f"{sorted(p.name for p in folder.iterdir()) or 'nothing'})")
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{img_dir}: empty folder, no images ({', '.join(IMAGE_SUFFIXES)})")
    labels = read_labels_csv(folder / "labels.csv", classes) if (folder / "labels.csv").is_file() else {}
    if labels:
        on_disk = {p.name for p in files}
        if rows_only := set(labels) - on_disk:
            warnings.warn(f"{folder / 'labels.csv'}: {len(rows_only)} row(s) name no file in {img_dir}: "
                          f"{_listing(rows_only)}", stacklevel=2)
        if images_only := on_disk - set(labels):
            warnings.warn(f"{folder / 'labels.csv'}: {len(images_only)} image(s) have no row (no class; slide "
                          f"taken from the file name): {_listing(images_only)}", stacklevel=2)
    images, masks, names, skipped = [], [], [], []
    for path in files:
        if limit is not None and len(names) >= limit:
            break
        mask_path = mask_dir / path.name
        try:
            if not mask_path.is_file():
                raise DataError(f"{path}: no mask {mask_path.name} in {mask_dir}")
            image = read_rgb(path)
            mask = read_mask(mask_path, mask_kind, n_classes)
            if image.shape[:2] != mask.shape:
                raise DataError(f"{path.name}: image is {image.shape[1]}x{image.shape[0]} px but its mask "
                                f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} px")
        except DataError as e:
            if strict:
                raise
            skipped.append((path.name, str(e)))
            continue
        images.append(image)
        masks.append(mask)
        names.append(path.name)
    orphans = sorted({p.name for p in mask_dir.iterdir()} - {p.name for p in files})
    skipped += [(n, "mask without an image") for n in orphans]
    if not names:
        raise DataError(f"{folder}: no usable image/mask pairs ({len(skipped)} skipped: "
                        f"{skipped[0][1] if skipped else ''})")
    return Pairs(_stack_if_same(images), _stack_if_same(masks), names, labels, skipped)


def save_pairs(folder: str | os.PathLike, images, masks, names: list[str],
               labels: list[dict] | None = None, mask_kind: str = "binary") -> None:
    """Write pairs in the plain layout (the inverse of :func:`load_pairs`).

    Binary masks are written as 0/255 ``uint8``, class maps as ``uint8`` and instance maps as
    16-bit PNG. ``labels`` (one dict per pair) becomes ``labels.csv`` with a ``file`` column.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for image, mask, name in zip(images, masks, names, strict=True):
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(folder / "images" / name, optimize=False)
        if mask_kind == "binary":
            m = (np.asarray(mask) > 0).astype(np.uint8) * 255
        elif mask_kind == "instances":
            if np.asarray(mask).max(initial=0) > 65535:
                raise DataError(f"{name}: more than 65535 instances do not fit a 16-bit mask")
            m = np.asarray(mask).astype(np.uint16)
        else:
            m = np.asarray(mask).astype(np.uint8)
        Image.fromarray(m).save(folder / "masks" / name, optimize=False)
    if labels:
        cols = ["file", *sorted({k for row in labels for k in row} - {"file"})]
        with (folder / "labels.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for name, row in zip(names, labels, strict=True):
                w.writerow({"file": name, **row})
