"""Real-data runs: where they write, what git may keep, and the plan read from dvc.yaml."""

import shutil
import subprocess
from pathlib import Path

import pytest

from histolib import realruns
from histolib.cli import main
from histolib.config import load_params
from histolib.errors import HistolibError
from histolib.paths import data_tag, models_dir, prepared_dir, project_root, results_dir

ROOT = project_root(Path(__file__).parent)


def test_data_tag_is_empty_for_the_phantom_and_names_real_folders():
    assert data_tag(load_params("smoke", {})) == ""
    P = load_params("smoke", {"data.source": "../x/glomeruli_crops/", "inpainting.source": "../x/glomeruli_crops"})
    assert data_tag(P) == "glomeruli_crops"  # one folder read by two knobs is named once
    P = load_params("smoke", {"data.nuclei_source": "/abs/fluo_dsb"})
    assert data_tag(P) == "fluo_dsb"


def test_the_default_pipeline_reads_no_real_folder():
    """Every ``*_source`` knob of every profile's defaults is the phantom or empty (notebook 00's realism checks
    included): the default stages never read the real development data, so nothing they commit derives from it."""
    for profile in ("smoke", "cpu", "paper"):
        assert data_tag(load_params(profile, {})) == "", profile


def test_notebook_00_on_the_real_sets_is_a_real_run(tmp_path):
    P = load_params("smoke", {"sim2real.crops_source": "../x/glomeruli_crops", "sim2real.sets_source": "../x/real"})
    assert data_tag(P) == "glomeruli_crops+real"
    (tmp_path / "real" / "glomeruli_crops").mkdir(parents=True)
    plan = realruns.plan("00", "all_sets", ROOT, str(tmp_path / "real"))
    assert plan.tag == "glomeruli_crops+real"
    assert [s.out for s in plan.steps] == ["results/real/glomeruli_crops+real/00/00_data.ipynb"]


def test_data_tag_does_not_depend_on_the_order_sections_were_registered():
    """A notebook kernel imports its study first, so its sections are registered in another order than the
    runner's; both must name the run alike (a real run once wrote half its files under each name)."""
    P = load_params("smoke", {"nuclei.cross_source": "../x/fluo_u2os", "data.nuclei_source": "../x/fluo_dsb"})
    shuffled = type("P", (), {"resolved": dict(reversed(list(P.resolved.items())))})()
    assert data_tag(P) == data_tag(shuffled) == "fluo_dsb+fluo_u2os"


def test_real_runs_write_beside_never_over_the_phantom(tmp_path, monkeypatch):
    monkeypatch.delenv("HISTOLIB_OUTPUT", raising=False)
    assert results_dir("01", tmp_path) == tmp_path / "results" / "01"
    assert results_dir("01", tmp_path, "glomeruli_crops") == tmp_path / "results" / "real" / "glomeruli_crops" / "01"
    assert models_dir("05", "cpu", tmp_path, "fluo_dsb") == tmp_path / "models" / "real" / "fluo_dsb" / "cpu" / "05"
    assert prepared_dir("cpu", tmp_path, "fluo_dsb") == tmp_path / "data" / "prepared" / "real" / "fluo_dsb" / "cpu"
    assert prepared_dir("cpu", tmp_path) == tmp_path / "data" / "prepared" / "cpu"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_gitignore_keeps_every_real_run_output_out_of_git():
    paths = ["results/real/glomeruli_crops/01/fig3_gtmask_synthesis.png",
             "results/real/glomeruli_crops/01/01_spade.ipynb",
             "results/real/fluo_dsb/05/grids/j2.png",
             "results/real/fluo_dsb/05/arrays.npz",
             "results/real/glomeruli_crops/01/table1.md",
             "results/real/glomeruli_crops/01/metrics.json",
             "results/real/fluo_dsb/05/runs.csv"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    ignored = set(out.stdout.split())
    assert ignored == set(paths)
    tracked = subprocess.run(["git", "ls-files", "results/real"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked == "", tracked


def test_notebook_steps_follow_dvc_yaml_with_matrix_expanded():
    steps = realruns.notebook_steps("01", ROOT)
    assert [s.notebook for s in steps] == ["notebooks/01_spade_train.ipynb"] * 2 + ["notebooks/01_spade.ipynb"]
    assert steps[0].papermill_args[-2:] == ["label_map", "gtmask"]
    assert steps[1].papermill_args[-2:] == ["label_map", "structure"]
    with pytest.raises(HistolibError, match="runs no notebook"):
        realruns.notebook_steps("99", ROOT)


def test_plan_sends_every_output_under_results_real(tmp_path):
    (tmp_path / "glomeruli_crops").mkdir()
    p = realruns.plan("01", "glomeruli_crops", ROOT, str(tmp_path), {"unet.epochs": 1})
    assert p.tag == "glomeruli_crops"
    assert p.overrides["data.source"] == f"{tmp_path}/glomeruli_crops" and p.overrides["unet.epochs"] == 1
    assert all(s.out.startswith("results/real/glomeruli_crops/01/") for s in p.steps)


def test_plan_refuses_missing_folders_and_unknown_presets(tmp_path):
    with pytest.raises(HistolibError, match="glomeruli_crops.*not found"):
        realruns.plan("01", "glomeruli_crops", ROOT, str(tmp_path))
    with pytest.raises(HistolibError, match="unknown real-data preset"):
        realruns.plan("01", "nope", ROOT, str(tmp_path))
    with pytest.raises(HistolibError, match="feeds notebooks"):
        realruns.plan("05", "glomeruli_crops", ROOT, str(tmp_path))


def test_cli_dry_run_prints_the_plan(capsys):
    assert main(["run-real", "01", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "results/real/glomeruli_crops/01/01_spade.ipynb" in out
    assert main(["run-real", "03", "--dry-run"]) == 2  # DatasetGAN has no real preset (its real mode: data.source)
    assert "no real-data preset" in capsys.readouterr().err


def test_compare_tables_joins_rows_and_keeps_the_papers_column():
    spec = realruns.Compared("t.csv", ("set",), ("dice",))
    phantom = [{"set": "Real", "dice": "97", "paper dice": "93"}, {"set": "GAN", "dice": "60", "paper dice": "86"}]
    real = [{"set": "GAN", "dice": "70"}, {"set": "Extra", "dice": "5"}]
    rows = realruns.compare_tables(phantom, real, spec)
    assert [r["set"] for r in rows] == ["Real", "GAN", "Extra"]
    assert rows[0] == {"set": "Real", "dice (phantom)": "97", "dice (real)": "—", "paper dice": "93"}
    assert rows[1]["dice (real)"] == "70" and rows[2]["dice (phantom)"] == "—" and "paper dice" not in rows[2]


def test_compare_claims_says_where_verdicts_disagree():
    ph = [{"key": "a", "paper": "000", "verdict": "reproduced"}, {"key": "b", "paper": "000", "verdict": "untestable"}]
    re_ = [{"key": "a", "paper": "000", "verdict": "not reproduced", "evidence": "-3 points"}]
    rows = realruns.compare_claims(ph, re_)
    assert [(r["claim"], r["phantom"], r["real"], r["agree"]) for r in rows] == [
        ("a", "reproduced", "not reproduced", "no"), ("b", "untestable", "—", "no")]
    assert rows[0]["real evidence"] == "-3 points"


def test_write_comparison_needs_a_finished_real_run(tmp_path):
    with pytest.raises(HistolibError, match="did not finish"):
        realruns.write_comparison("01", "glomeruli_crops", tmp_path)
