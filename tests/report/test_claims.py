"""The one verdict rule, one hand-made case per outcome, and the claims file."""

import math

import pytest

from histolib import report
from histolib.errors import ParamError
from histolib.report import Claim, Evidence, Precondition, assess, verdict

CLAIM = Claim(key="t-1", paper="000", section="Table I", text="Mixing real and synthetic patches gives the best Dice "
              "of all five training sets, better than real patches alone", metric="Dice (points)",
              comparison="Real + SPADE - Real", direction=1, paper_numbers="94.07 vs 93.31")


def test_reproduced():
    assert verdict(CLAIM, Evidence(2.0, 0.5, 3.5, p=0.01))[0] == "reproduced"


def test_not_reproduced():
    assert verdict(CLAIM, Evidence(-2.0, -3.5, -0.5, p=0.01))[0] == "not reproduced"


def test_inconclusive_reports_the_minimum_detectable_effect():
    outcome, reason = verdict(CLAIM, Evidence(1.0, -2.0, 4.0, p=0.4, mde=5.1, unit="points"))
    assert outcome == "inconclusive" and "5.1 points" in reason


def test_untestable_names_the_precondition():
    gate = Precondition("SPADE-GTMask faithfulness >= 0.8 x real", False, "0.41 vs 0.96")
    outcome, reason = verdict(CLAIM, Evidence(2.0, 0.5, 3.5, p=0.01), [gate])
    assert outcome == "untestable here" and "faithfulness" in reason and "0.41 vs 0.96" in reason


def test_extension():
    ext = Claim(key="x", paper="001", section="-", text="Does synthetic data alone match real data?", metric="Dice",
                comparison="Synthetic - Real", extension=True)
    assert verdict(ext, Evidence(-20.0, -30.0, -10.0, p=0.001))[0] == "extension"


def test_negative_direction_claim():
    lower = Claim(key="t-2", paper="000", section="III", text="Mixtures lower the spread", metric="std",
                  comparison="std(mix) - std(real)", direction=-1)
    assert verdict(lower, Evidence(-0.3, p=0.01))[0] == "reproduced"
    assert verdict(lower, Evidence(+0.3, p=0.01))[0] == "not reproduced"


def test_interval_decides_without_a_p_value():
    assert verdict(CLAIM, Evidence(1.0, 0.2, 1.8))[0] == "reproduced"
    assert verdict(CLAIM, Evidence(1.0, -0.2, 1.8))[0] == "inconclusive"
    assert verdict(CLAIM, Evidence(1.0))[0] == "inconclusive"


def test_assess_keeps_the_full_text_and_writes_claims_md(tmp_path):
    row = assess(CLAIM, Evidence(2.0, 0.5, 3.5, p=0.01, test="Welch t"), [Precondition("gate", True, "0.9 vs 0.95")])
    assert row["claim"] == CLAIM.text and len(row["claim"]) > 50
    assert row["verdict"] == "reproduced" and row["preconditions"][0]["met"]
    path = report.write_claims(tmp_path / "claims.md", [row], conditions="profile `cpu`")
    text = path.read_text()
    assert CLAIM.text in text and "Verdict: reproduced" in text and "profile `cpu`" in text


def test_claim_validation():
    with pytest.raises(ParamError, match="direction"):
        Claim(key="k", paper="0", section="s", text="t", metric="m", comparison="c", direction=0)


def test_faithfulness_gate():
    met = report.faithfulness_precondition({"synthetic": 0.85, "real": 0.95, "ratio": 0.85 / 0.95})
    assert met.met
    failed = report.faithfulness_precondition({"synthetic": 0.5, "real": 0.95, "ratio": 0.5 / 0.95})
    assert not failed.met and "0.500" in failed.detail
    assert not report.faithfulness_precondition({"synthetic": 0.5, "real": 0.0, "ratio": math.nan}).met


def test_beside_paper_carries_conditions():
    c = report.Conditions("cpu", 64, "phantom", [0, 1, 2], generator_replicates=2, extra={"U-Net": "width 16"})
    md = report.beside_paper([{"set": "Real", "Dice": "97.5", "paper Dice": "93.31"}], c, "256 px, 5 runs")
    assert "profile `cpu`" in md and "2 generator replicate" in md and "256 px, 5 runs" in md
    with pytest.raises(ParamError):
        report.beside_paper([], c, "")


def test_faithfulness_gates_every_replicate_and_the_segmenter():
    ok = {"synthetic": 0.9, "real": 0.95, "ratio": 0.9 / 0.95, "trivial": 0.6}
    bad = {"synthetic": 0.4, "real": 0.95, "ratio": 0.4 / 0.95, "trivial": 0.6}
    gates = report.faithfulness_gates([ok, bad], 0.8, "SPADE-GTMask")
    assert [g.met for g in gates] == [True, True, False]
    assert "replicate 1" in gates[2].name
    # a segmenter that predicts everything scores the trivial score: its faithfulness measures nothing
    lazy = {"synthetic": 0.6, "real": 0.6, "ratio": 1.0, "trivial": 0.6}
    assert not report.faithfulness_gates([lazy], 0.8)[0].met
    assert not report.faithfulness_gates([], 0.8)[0].met
    assert verdict(CLAIM, Evidence(2.0, 0.5, 3.5, p=0.01), report.faithfulness_gates([lazy]))[0] == "untestable here"
