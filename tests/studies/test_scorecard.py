"""The scorecard: claims collected from metrics.json files, counted per paper, and the README section that
`histolib readme-results` writes (the committed README must be current)."""

import json
from pathlib import Path

import pytest

from histolib.errors import HistolibError
from histolib.studies import scorecard as sc

ROOT = Path(__file__).resolve().parents[2]


def _claim(key, paper, verdict):
    return {"key": key, "paper": paper, "claim": f"text of {key}", "verdict": verdict,
            "evidence": f"evidence of {key}", "test": "Welch t"}


PHANTOM = {
    "01": {"claims": [_claim("000-a", "000", "reproduced"), _claim("000-b", "000", "inconclusive"),
                      _claim("000-x", "000", "extension")], "conditions": {"profile": "cpu"}},
    "02": {"claims": [_claim("001-a", "001", "untestable here"), _claim("001-b", "001", "not reproduced")],
           "conditions": {"profile": "cpu"}},
}
REAL = {"01": {"claims": [_claim("000-a", "000", "inconclusive"), _claim("000-b", "000", "inconclusive")],
               "conditions": {"profile": "cpu"}}}


def test_scorecard_rows_put_real_verdicts_beside_the_phantom():
    rows, tags = sc.scorecard_rows({"phantom": PHANTOM, "glomeruli_crops": REAL})
    assert tags == ["glomeruli_crops"]
    assert [r["claim key"] for r in rows] == ["000-a", "000-b", "000-x", "001-a", "001-b"]
    a = rows[0]
    assert a["phantom"] == "reproduced" and a["real: glomeruli_crops"] == "inconclusive"
    assert a["claim"] == "text of 000-a" and a["evidence"] == "evidence of 000-a" and a["test"] == "Welch t"
    assert rows[3]["real: glomeruli_crops"] == sc.NOT_RUN  # notebook 02 was not run on real data


def test_counts_per_paper_and_verdict():
    rows, _ = sc.scorecard_rows({"phantom": PHANTOM, "glomeruli_crops": REAL})
    phantom = {c["paper"]: c for c in sc.counts(rows, "phantom")}
    assert (phantom["000"]["reproduced"], phantom["000"]["inconclusive"], phantom["000"]["extension"]) == (1, 1, 1)
    assert (phantom["001"]["untestable here"], phantom["001"]["not reproduced"], phantom["001"]["claims"]) == (1, 1, 2)
    assert phantom["all"]["claims"] == 5 and phantom["all"]["reproduced"] == 1
    real = {c["paper"]: c for c in sc.counts(rows, "real: glomeruli_crops")}
    assert set(real) == {"000", "all"} and real["000"]["inconclusive"] == 2 and real["000"]["claims"] == 2


def test_rows_without_an_assessed_claim_are_not_counted():
    # notebook 00's data checks carry no key or paper
    assert sc.claim_rows({"claims": [{"claim": "phantom is realistic", "verdict": "holds"}]}) == []


def _results(tmp_path, phantom=PHANTOM, real=REAL):
    for nn, m in phantom.items():
        (tmp_path / nn).mkdir(parents=True, exist_ok=True)
        (tmp_path / nn / "metrics.json").write_text(json.dumps(m))
    for nn, m in (real or {}).items():
        d = tmp_path / "real" / "glomeruli_crops" / nn
        d.mkdir(parents=True, exist_ok=True)
        (d / "metrics.json").write_text(json.dumps(m))
    return tmp_path


def test_collect_reads_real_runs_only_when_asked(tmp_path):
    results = _results(tmp_path)
    sources = sc.collect(results, real=True)
    assert set(sources) == {"phantom", "glomeruli_crops"}
    assert set(sources["phantom"]) == {"01", "02"} and set(sources["glomeruli_crops"]) == {"01"}
    # by default (the README, the phantom's notebook 06) real runs' verdicts are never read
    assert set(sc.collect(results)) == {"phantom"}


def test_readme_never_carries_real_verdicts(tmp_path):
    section = sc.readme_section(_results(tmp_path))
    assert "glomeruli_crops" not in section and "real: " not in section
    assert "| 000 | 000-a | reproduced |" in section


def test_readme_round_trip(tmp_path):
    results = _results(tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nintro\n\n{sc.BEGIN}\nold text\n{sc.END}\n\n## after\n")
    assert sc.write_readme(readme, results) is True
    text = readme.read_text()
    assert text.startswith("# title\n\nintro\n\n") and text.endswith(f"{sc.END}\n\n## after\n")
    assert "old text" not in text and "| 000 | 000-a | reproduced |\n" in text
    assert sc.current_section(text) == sc.readme_section(results).strip()
    assert sc.write_readme(readme, results) is False  # current: unchanged
    with pytest.raises(HistolibError, match="scorecard:begin"):
        sc.replace_section("no markers", "x")


def test_committed_readme_scorecard_is_current():
    """README.md's results section equals what `histolib readme-results` writes from the committed results."""
    text = (ROOT / "README.md").read_text()
    assert sc.current_section(text) == sc.readme_section(ROOT / "results").strip(), \
        "README.md's scorecard is stale: run `histolib readme-results` (or `make readme`)"


def test_scorecard_figure_has_one_row_per_claim():
    import matplotlib

    matplotlib.use("Agg")
    rows, tags = sc.scorecard_rows({"phantom": PHANTOM, "glomeruli_crops": REAL})
    fig = sc.scorecard_figure(rows, tags)
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == len(rows) and len(ax.get_xticklabels()) == 2
