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


def faithfulness_gates(results, threshold: float = FAITHFULNESS_GATE, name: str = "generator") -> list[Precondition]:
    """The preconditions of every claim that rests on a set of generator replicates.

    One :func:`faithfulness_precondition` per replicate: *every* replicate must pass (a claim's
    evidence averages over all of them, so one unfaithful generator is enough to make it untestable).
    Before them, the segmenter's own precondition: it must beat the trivial everything-foreground
    prediction on the real test images (``result["trivial"]``), else its faithfulness scores measure
    nothing (a segmenter that predicts everything scores the same on any image). No result at all is a
    failed precondition.

    Args:
        results: :func:`histolib.metrics.faithfulness.faithfulness` results, one per replicate.
        threshold: the gate (``protocol.faithfulness_gate``).
        name: names the generator in the precondition.
    """
    results = list(results or [])
    if not results:
        return [Precondition(f"{name} faithfulness measured", False, "no faithfulness result")]
    first = results[0]
    out = []
    if "trivial" in first:
        out.append(Precondition(
            "the faithfulness segmenter beats predicting everything foreground on real test images",
            bool(first["real"] > first["trivial"]),
            f"{first['real']:.3f} vs {first['trivial']:.3f}"))
    label = (lambda g: f"{name} replicate {g}") if len(results) > 1 else (lambda g: name)
    return out + [faithfulness_precondition(r, threshold, label(g)) for g, r in enumerate(results)]


__all__ = [
    "OUTCOMES", "Claim", "Evidence", "Precondition", "assess", "claims_markdown", "evidence_from_test", "verdict",
    "write_claims", "minimum_detectable_effect", "single_level", "two_level_contrast", "two_level_difference",
    "two_level_summary",
    "Conditions", "beside_paper", "fmt_interval", "fmt_mean_std", "write_table", "FAITHFULNESS_GATE",
    "faithfulness_precondition", "faithfulness_gates",
]
