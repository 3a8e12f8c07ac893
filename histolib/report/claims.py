"""Claims as data and the one verdict rule every notebook uses.

A paper's claim is a :class:`Claim` (paper, section, the claim's full text, the metric, what is
compared, the direction the paper states, the paper's own numbers). A notebook measures
:class:`Evidence` for it (an estimate of the effect, its interval, a test's p-value and the minimum
detectable effect) and states the :class:`Precondition` s the test rests on (a generator faithful
enough to its labels, enough runs). :func:`assess` turns the three into one row with exactly one of
five outcomes:

- ``reproduced``: the effect has the paper's direction and is significant at ``alpha``;
- ``not reproduced``: significant in the opposite direction;
- ``inconclusive``: neither (reported with the minimum detectable effect at this sample size);
- ``untestable here``: a stated precondition failed (named, with its numbers);
- ``extension``: the study's own question, which the paper does not claim (the evidence is still
  reported, never scored against the paper).

"Significant" means ``p < alpha`` when the evidence carries a p-value, else an interval at level
``1 - alpha`` that excludes 0. Claims of the form "A is no worse / not collapsed" are written as a
directional effect against a stated line (e.g. ``diversity - 0.5``), so the same rule applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from histolib.errors import ParamError

__all__ = ["OUTCOMES", "Claim", "Precondition", "Evidence", "verdict", "assess", "claims_markdown",
           "write_claims", "evidence_from_test"]

OUTCOMES = ("reproduced", "not reproduced", "inconclusive", "untestable here", "extension")


@dataclass(frozen=True)
class Claim:
    """One claim of a paper (or, with ``extension=True``, a question of this study).

    Args:
        key: a short stable identifier (``"000-mix-best"``), unique within the study.
        paper: the seed id (``"000"``).
        section: where the paper states it (``"Sec. III, Table I"``).
        text: the claim's full text, never cut.
        metric: what is measured (``"test Dice (%)"``).
        comparison: the effect in words, as ``A - B`` (``"Real + SPADE-GTMask - Real"``).
        direction: ``+1`` when the paper says the effect is positive, ``-1`` negative.
        paper_numbers: the paper's own numbers for it (``"94.07 vs 93.31 (+0.76)"``).
        extension: True for the study's own question (outcome ``extension``).
    """

    key: str
    paper: str
    section: str
    text: str
    metric: str
    comparison: str
    direction: int = 1
    paper_numbers: str = ""
    extension: bool = False

    def __post_init__(self):
        if self.direction not in (1, -1):
            raise ParamError(f"claim {self.key!r}: direction must be +1 or -1, got {self.direction!r}")
        if not self.text.strip():
            raise ParamError(f"claim {self.key!r} has no text")


@dataclass(frozen=True)
class Precondition:
    """Something the test of a claim rests on, e.g. ``faithfulness >= 0.8 x real``; ``detail`` shows
    the numbers either way."""

    name: str
    met: bool
    detail: str = ""


@dataclass(frozen=True)
class Evidence:
    """A measured effect (``claim.comparison``) and its test.

    Args:
        estimate: the effect (in ``unit``).
        low, high: its interval at level ``1 - alpha`` (NaN when undefined).
        p: two-sided p-value of the test (NaN when there is none; the interval decides then).
        test: what test and which units (``"Welch t, 2 generators x 3 seeds vs 3 seeds"``).
        mde: minimum detectable effect at this sample size (same unit; NaN if unknown).
        unit: ``"points"``, ``"x real"``, ...
        detail: extra numbers for the reader (means of both sides, counts).
    """

    estimate: float
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan
    test: str = ""
    mde: float = math.nan
    unit: str = ""
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def text(self) -> str:
        u = f" {self.unit}" if self.unit else ""
        s = f"{self.estimate:+.3g}{u}"
        if math.isfinite(self.low) and math.isfinite(self.high):
            s += f" [{self.low:+.3g}, {self.high:+.3g}]"
        if math.isfinite(self.p):
            s += f", p = {self.p:.2g}"
        if self.detail:
            s += f"; {self.detail}"
        return s


def evidence_from_test(test: dict, scale: float = 1.0, unit: str = "", detail: str = "") -> Evidence:
    """:class:`Evidence` from :func:`histolib.report.stats.two_level_difference`'s result (or any dict
    with ``estimate``, ``ci_low``, ``ci_high``, ``p``, ``mde``, ``test``), scaled (e.g. 100 for points)."""
    get = lambda k: float(test.get(k, math.nan)) * scale  # noqa: E731
    return Evidence(estimate=get("estimate"), low=get("ci_low"), high=get("ci_high"), p=float(test.get("p", math.nan)),
                    test=str(test.get("test", "")), mde=get("mde"), unit=unit, detail=detail)


def _significant(ev: Evidence, alpha: float) -> bool | None:
    """True / False, or None when the evidence supports no test at all."""
    if math.isfinite(ev.p):
        return ev.p < alpha
    if math.isfinite(ev.low) and math.isfinite(ev.high):
        return ev.low > 0 or ev.high < 0
    return None


def verdict(claim: Claim, evidence: Evidence | None, preconditions: Iterable[Precondition] = (),
            alpha: float = 0.05) -> tuple[str, str]:
    """The outcome for ``claim`` and the reason, by the rule of the module docstring.

    Returns:
        ``(outcome, reason)`` with ``outcome`` in :data:`OUTCOMES`.
    """
    if claim.extension:
        return "extension", "the study's own question; the paper makes no such claim"
    failed = [p for p in preconditions if not p.met]
    if failed:
        return "untestable here", "; ".join(f"precondition failed: {p.name} ({p.detail})" for p in failed)
    if evidence is None or not math.isfinite(evidence.estimate):
        return "inconclusive", "no estimate of the effect"
    sig = _significant(evidence, alpha)
    mde = (f"; minimum detectable effect at this sample size: {evidence.mde:.3g}"
           f"{' ' + evidence.unit if evidence.unit else ''}") if math.isfinite(evidence.mde) else ""
    if sig is None:
        return "inconclusive", "the evidence supports no test (a single unit at one level)" + mde
    if sig and evidence.estimate * claim.direction > 0:
        return "reproduced", f"the paper's direction, significant at {alpha}"
    if sig:
        return "not reproduced", f"significant at {alpha} in the opposite direction"
    return "inconclusive", f"not significant at {alpha}" + mde


def assess(claim: Claim, evidence: Evidence | None, preconditions: Sequence[Precondition] = (),
           alpha: float = 0.05) -> dict:
    """One claims-table row: the claim's fields, the evidence, the preconditions and the verdict.

    The row is JSON-able (it goes into ``metrics.json`` as it is) and keeps the claim's full text.
    """
    outcome, reason = verdict(claim, evidence, preconditions, alpha)
    return {
        "key": claim.key, "paper": claim.paper, "section": claim.section, "claim": claim.text,
        "metric": claim.metric, "comparison": claim.comparison,
        "expected": "positive" if claim.direction > 0 else "negative",
        "paper numbers": claim.paper_numbers,
        "evidence": evidence.text() if evidence is not None else "",
        "test": evidence.test if evidence is not None else "",
        "estimate": evidence.estimate if evidence is not None else math.nan,
        "ci": [evidence.low, evidence.high] if evidence is not None else [math.nan, math.nan],
        "p": evidence.p if evidence is not None else math.nan,
        "mde": evidence.mde if evidence is not None else math.nan,
        "preconditions": [asdict(p) for p in preconditions],
        "verdict": outcome, "reason": reason, "alpha": alpha,
    }


def claims_markdown(rows: Sequence[dict], conditions: str = "", title: str = "Claims") -> str:
    """``claims.md``: one section per claim with its full text, the paper's numbers, the evidence,
    the test, the preconditions and the verdict with its reason; a count of outcomes first."""
    counts = {o: sum(r["verdict"] == o for r in rows) for o in OUTCOMES}
    lines = [f"# {title}", "", "Outcomes: " + ", ".join(f"{o} {n}" for o, n in counts.items()), ""]
    if conditions:
        lines += [f"*Conditions:* {conditions}", ""]
    for i, r in enumerate(rows, 1):
        lines += [f"## {i}. {r['claim']}", "",
                  f"- **Verdict: {r['verdict']}** ({r['reason']})",
                  f"- Paper {r['paper']}, {r['section']}; metric: {r['metric']}; effect: {r['comparison']} "
                  f"(paper's direction: {r['expected']})"]
        if r.get("paper numbers"):
            lines.append(f"- Paper's numbers: {r['paper numbers']}")
        lines.append(f"- Evidence here: {r['evidence'] or 'none'}")
        if r.get("test"):
            lines.append(f"- Test: {r['test']}")
        for p in r.get("preconditions", []):
            lines.append(f"- Precondition {'met' if p['met'] else 'FAILED'}: {p['name']} ({p['detail']})")
        lines.append("")
    return "\n".join(lines)


def write_claims(path: str | Path, rows: Sequence[dict], conditions: str = "", title: str = "Claims") -> Path:
    """Write :func:`claims_markdown` to ``path`` (atomically) and return it."""
    from histolib.fileio import atomic_write_text

    return atomic_write_text(path, claims_markdown(rows, conditions, title) + "\n")
