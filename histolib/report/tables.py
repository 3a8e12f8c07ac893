"""Tables of "ours beside the paper's", which always carry the conditions they were measured under.

Every results table of the study states, next to the numbers: the profile, the resolution, the data
source, the segmentation seeds and the number of generator replicates, and the paper's own
conditions. :class:`Conditions` holds ours; :func:`beside_paper` renders a markdown table followed by
both condition lines, so a table can never be written without them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from histolib.errors import ParamError

__all__ = ["Conditions", "beside_paper", "write_table", "fmt_interval", "fmt_mean_std"]


@dataclass(frozen=True)
class Conditions:
    """What a table's numbers were measured under.

    Args:
        profile: ``smoke``, ``cpu`` or ``paper``.
        resolution: image side in px (or a phrase: ``"64-px patches"``).
        data_source: ``phantom`` or the real folder.
        seeds: the segmentation-model seeds.
        generator_replicates: generators trained per synthetic configuration (``None``: no generator
            in this table).
        extra: further conditions in the order they should be printed (``{"U-Net": "width 16, 15 epochs"}``).
    """

    profile: str
    resolution: int | str
    data_source: str
    seeds: Sequence[int]
    generator_replicates: int | None = None
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        res = f"{self.resolution} px" if isinstance(self.resolution, int) else str(self.resolution)
        parts = [f"profile `{self.profile}`", res, f"data `{self.data_source}`",
                 f"seeds {list(self.seeds)} ({len(self.seeds)} per configuration)"]
        if self.generator_replicates is not None:
            parts.append(f"{self.generator_replicates} generator replicate(s) per synthetic configuration")
        parts += [f"{k}: {v}" for k, v in self.extra.items()]
        return "; ".join(parts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        return d


def beside_paper(rows: Sequence[dict], conditions: Conditions, paper_conditions: str,
                 columns: Sequence[str] | None = None) -> str:
    """A markdown table of ``rows`` (ours and the paper's columns side by side), then *Conditions*
    (ours) and *Paper* (theirs) lines.

    Raises:
        ParamError: ``paper_conditions`` is empty (a table must say what the paper measured under).
    """
    from histolib.viz import markdown_table

    if not paper_conditions.strip():
        raise ParamError("beside_paper needs the paper's conditions")
    return (markdown_table(list(rows), list(columns) if columns else None)
            + f"\n\n*Conditions (ours):* {conditions.line()}.\n\n*Paper:* {paper_conditions}\n")


def write_table(path: str | Path, rows: Sequence[dict], conditions: Conditions, paper_conditions: str,
                columns: Sequence[str] | None = None) -> Path:
    """:func:`beside_paper` written to ``path`` (``.md``) with the rows as CSV beside it (``.csv``)."""
    import pandas as pd

    from histolib.fileio import atomic_write_text

    path = Path(path).with_suffix(".md")
    atomic_write_text(path, beside_paper(rows, conditions, paper_conditions, columns))
    frame = pd.DataFrame(list(rows))
    atomic_write_text(path.with_suffix(".csv"), frame.to_csv(index=False))
    return path


def fmt_mean_std(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    """``"93.22 ± 0.14"`` (percent by default); a NaN std prints the mean alone."""
    if not math.isfinite(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def fmt_interval(summary: dict, scale: float = 100.0, digits: int = 2) -> str:
    """``"94.18 [93.10, 95.20]"`` from a summary with ``mean``, ``ci_low``, ``ci_high`` (a ``*`` marks
    an interval clipped at the metric's range); the mean alone when there is no interval."""
    m = f"{summary['mean'] * scale:.{digits}f}"
    lo, hi = summary.get("ci_low", math.nan), summary.get("ci_high", math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return m
    star = "*" if summary.get("clipped") else ""
    return f"{m} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]{star}"
