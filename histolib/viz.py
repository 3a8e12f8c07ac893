"""Figures a pathologist can read: image grids, mask overlays, label-map colours, tables."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

# Colours of label maps: background white-ish grey, then distinct, colour-blind-safe hues (Okabe-Ito).
PALETTE = np.array([
    [235, 235, 235], [230, 159, 0], [86, 180, 233], [0, 158, 115], [204, 121, 167],
    [213, 94, 0], [0, 114, 178], [240, 228, 66], [0, 0, 0],
], dtype=np.uint8)


def label_map_to_rgb(label: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """``(H, W)`` class indices -> ``(H, W, 3) uint8`` colours from :data:`PALETTE` (cycled past 9 classes)."""
    label = np.asarray(label).astype(np.int64)
    return PALETTE[label % len(PALETTE)]


def instances_to_rgb(instances: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(H, W)`` instance ids -> random but stable colours, background black."""
    instances = np.asarray(instances).astype(np.int64)
    rng = np.random.default_rng(seed)
    colours = rng.integers(60, 256, size=(int(instances.max(initial=0)) + 1, 3)).astype(np.uint8)
    colours[0] = 0
    return colours[instances]


def overlay(image: np.ndarray, mask: np.ndarray, colour=(0, 255, 0), alpha: float = 0.35,
            outline: bool = True) -> np.ndarray:
    """The image with the mask tinted and (by default) its outline drawn, ``(H, W, 3) uint8``."""
    from scipy import ndimage as ndi

    out = np.asarray(image, dtype=np.float32).copy()
    m = np.asarray(mask) > 0
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(colour, np.float32)
    if outline:
        edge = m & ~ndi.binary_erosion(m)
        out[edge] = colour
    return out.clip(0, 255).astype(np.uint8)


def image_grid(rows: list[list[np.ndarray]], row_labels: list[str] | None = None,
               col_labels: list[str] | None = None, title: str | None = None, cell: float = 1.6):
    """A figure with one image per cell; ``rows[r][c]`` is an ``(H, W, 3)`` or ``(H, W)`` array.

    Returns:
        The matplotlib ``Figure``.
    """
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols + (1.2 if row_labels else 0), cell * n_rows
                                                      + (0.4 if title else 0)), squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(rows[r]) and rows[r][c] is not None:
                img = rows[r][c]
                ax.imshow(img, cmap="gray" if np.ndim(img) == 2 else None, interpolation="nearest")
            if c == 0 and row_labels:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and col_labels and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def tile_images(images, ncol: int | None = None, pad: int = 2, value: int = 255) -> np.ndarray:
    """Mosaic of ``(N, H, W, 3)`` images into one ``uint8`` image (for large sample grids)."""
    images = [np.asarray(i) for i in images]
    if not images:
        return np.full((1, 1, 3), value, np.uint8)
    h, w = images[0].shape[:2]
    ncol = ncol or int(math.ceil(math.sqrt(len(images))))
    nrow = int(math.ceil(len(images) / ncol))
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), value, np.uint8)
    for i, im in enumerate(images):
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, 2)
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = im
    return out


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save a figure (PNG) and close it; the folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def fmt_mean_std(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    """``"93.22 +- 0.14"`` (percent by default); a NaN std prints as the mean alone."""
    if std != std:  # NaN
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub-markdown table of ``rows`` (dicts) in ``columns`` order."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
