"""Folder datasets in the study's plain layout: ``images/*.png``, ``masks/*.png``, optional ``labels.csv``.

Masks come in three kinds:

- ``binary``: 0/255 (or 0/1) PNG, returned as ``{0, 1}`` ``uint8``;
- ``classes``: class indices ``0..n_classes-1``, returned as ``uint8``;
- ``instances``: 16-bit instance labels (0 = background), returned as ``int32``.

Every image is returned as ``(H, W, 3) uint8`` RGB: grey and RGBA files are converted with a warning.
Bad files raise :class:`~histolib.errors.DataError` naming the file (``strict=True``) or are skipped and
listed in :attr:`Pairs.skipped` with the reason (``strict=False``), never dropped silently.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from histolib.errors import DataError

MASK_KINDS = ("binary", "classes", "instances")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


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


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB.

    Grey images are repeated to three channels and RGBA loses its alpha, each with a warning.

    Raises:
        DataError: the file cannot be read as an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("RGBA", "LA", "P", "PA"):
                if mode != "P":
                    warnings.warn(f"{path}: {mode} image converted to RGB (alpha dropped)", stacklevel=2)
                im = im.convert("RGB")
            elif mode in ("L", "I", "I;16", "F", "1"):
                warnings.warn(f"{path}: grey image ({mode}) converted to RGB", stacklevel=2)
                arr = np.asarray(im)
                if arr.dtype != np.uint8:
                    arr = np.clip(arr, 0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            elif mode != "RGB":
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from e
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
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable mask ({e})") from e
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


def read_labels_csv(path: Path) -> dict[str, dict]:
    """``labels.csv`` rows keyed by their ``file`` column (the first column if none is called so)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    key = "file" if "file" in rows[0] else next(iter(rows[0]))
    return {Path(r[key]).name: r for r in rows}


def _stack_if_same(arrays: list[np.ndarray]) -> np.ndarray | list:
    if arrays and all(a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    return arrays


def load_pairs(folder: str | os.PathLike, mask_kind: str = "binary", n_classes: int | None = None,
               strict: bool = True, limit: int | None = None) -> Pairs:
    """Load every ``images/<name>`` with its ``masks/<name>`` from ``folder``.

    Args:
        folder: holds ``images/`` and ``masks/`` (same file names) and optionally ``labels.csv``.
        mask_kind: ``binary``, ``classes`` or ``instances`` (see :func:`read_mask`).
        n_classes: number of classes for ``classes`` masks.
        strict: raise on the first bad file (default); else skip it and record why in ``skipped``.
        limit: load at most this many pairs (in name order).

    Returns:
        :class:`Pairs`.

    Raises:
        DataError: missing folder, no images, or (strict) an unreadable file, a missing mask, an
            image/mask size mismatch or mask values outside ``mask_kind``, naming the file.
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
    labels = read_labels_csv(folder / "labels.csv") if (folder / "labels.csv").is_file() else {}
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
