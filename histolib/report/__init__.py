"""What every notebook reports the same way: claims and their verdicts, two-level intervals over
generator replicates and seeds, faithfulness gates, and tables beside the paper's with conditions.

``from histolib import report`` then ``report.Claim``, ``report.assess``, ``report.two_level_difference``,
``report.Conditions``, ``report.beside_paper``, ``report.faithfulness_precondition``.
"""

from histolib.report.claims import (
    OUTCOMES,
    Claim,
    Evidence,
    Precondition,
    assess,
    claims_markdown,
    evidence_from_test,
    verdict,
    write_claims,
)
from histolib.report.stats import (
    minimum_detectable_effect,
    single_level,
    two_level_contrast,
    two_level_difference,
    two_level_summary,
)
from histolib.report.tables import Conditions, beside_paper, fmt_interval, fmt_mean_std, write_table

FAITHFULNESS_GATE = 0.8  # issue "Evidence that holds": below 0.8 of the segmenter's real score, untestable


def faithfulness_precondition(result: dict, threshold: float = FAITHFULNESS_GATE,
                              name: str = "generator") -> Precondition:
    """The faithfulness gate as a :class:`Precondition`: ``result`` from
    :func:`histolib.metrics.faithfulness.faithfulness` (``synthetic``, ``real``, ``ratio``) is met when
    ``synthetic >= threshold * real``; the detail shows both numbers."""
    met = bool(result["ratio"] == result["ratio"] and result["ratio"] >= threshold)
    return Precondition(
        name=f"{name} faithfulness >= {threshold:g} x the real-image score",
        met=met,
        detail=f"{result['synthetic']:.3f} on generated images vs {result['real']:.3f} on real test images "
               f"(ratio {result['ratio']:.2f})")


__all__ = [
    "OUTCOMES", "Claim", "Evidence", "Precondition", "assess", "claims_markdown", "evidence_from_test", "verdict",
    "write_claims", "minimum_detectable_effect", "single_level", "two_level_contrast", "two_level_difference",
    "two_level_summary",
    "Conditions", "beside_paper", "fmt_interval", "fmt_mean_std", "write_table", "FAITHFULNESS_GATE",
    "faithfulness_precondition",
]
