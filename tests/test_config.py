"""params.yaml validation: every bad key or value is named in the error."""

import dataclasses
import json

import pytest
import yaml

from histolib.config import PROFILES, apply_overrides, load_params, sections
from histolib.errors import ParamError
from histolib.paths import project_root

ROOT = project_root()


def _write(tmp_path, mutate):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_resolves(profile):
    P = load_params(profile, path=ROOT / "params.yaml")
    assert P.profile == profile
    assert P.unet.width >= 1 and P.data.patch_size >= 16


def test_profile_value_is_picked_and_plain_override_applies_to_all():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert load_params("smoke", path=ROOT / "params.yaml").unet.width == raw["unet"]["width"]["smoke"]
    assert load_params("paper", {"unet.width": 5}).unet.width == 5
    assert load_params("cpu", {"unet.width.cpu": 7}).unet.width == 7
    assert load_params("smoke", {"unet.width.cpu": 7}).unet.width == raw["unet"]["width"]["smoke"]


def test_env_profile_and_overrides(monkeypatch):
    monkeypatch.setenv("HISTOLIB_PROFILE", "paper")
    monkeypatch.setenv("HISTOLIB_OVERRIDES", json.dumps({"unet.depth": 3}))
    P = load_params()
    assert P.profile == "paper" and P.unet.depth == 3
    assert load_params(overrides={"unet.depth": 2}).unet.depth == 2  # the argument wins


@pytest.mark.parametrize("overrides, named", [
    ({"unet.widht": 3}, "unet.widht"),
    ({"nosuch.key": 1}, "nosuch.key"),
    ({"unet.depth": 1}, "unet.depth"),
    ({"unet.augment_p": 1.5}, "unet.augment_p"),
    ({"data.stain": "giemsa"}, "data.stain"),
    ({"unet.lr": "fast"}, "unet.lr"),
    ({"unet.epochs": 2.5}, "unet.epochs"),
    ({"unet.loss": True}, "unet.loss"),
])
def test_bad_override_names_the_key(overrides, named):
    with pytest.raises(ParamError, match=named.replace(".", r"\.")):
        load_params("smoke", overrides)


def test_unknown_key_in_file_is_named(tmp_path):
    path = _write(tmp_path, lambda raw: raw["unet"].update(epochz=3))
    with pytest.raises(ParamError, match=r"unet\.epochz.*did you mean 'epochs'"):
        load_params("smoke", path=path)


def test_missing_key_and_partial_profile_map(tmp_path):
    with pytest.raises(ParamError, match=r"missing parameter 'unet\.lr'"):
        load_params("smoke", path=_write(tmp_path, lambda raw: raw["unet"].pop("lr")))
    with pytest.raises(ParamError, match=r"unet\.width.*per-profile"):
        load_params("smoke", path=_write(tmp_path, lambda raw: raw["unet"].update(width={"smoke": 2, "cpu": 4})))


def test_bad_profile():
    with pytest.raises(ParamError, match="profile"):
        load_params("laptop")


def test_apply_overrides_does_not_mutate():
    raw = {"a": {"b": 1}}
    assert apply_overrides(raw, {"a.b": 2}) == {"a": {"b": 2}} and raw == {"a": {"b": 1}}


# --- issue 9 (integrity): the params gaps ----------------------------------------------------------------------

@pytest.mark.parametrize("overrides, named", [
    ({"unet.lr": float("nan")}, "unet.lr"),
    ({"unet.lr": float("inf")}, "unet.lr"),
    ({"spade.lr_D": "nan"}, "spade.lr_D"),
    ({"data.fill": [0.5, float("inf")]}, r"data.fill\[1\]"),
    ({"nuclei.style_weight": float("-inf")}, "nuclei.style_weight"),
])
def test_nan_and_inf_are_rejected_naming_the_key(overrides, named):
    with pytest.raises(ParamError, match=named.replace(".", r"\.") + ".*finite"):
        load_params("smoke", overrides)


def test_nan_in_the_file_is_rejected(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("  lr: 0.001\n", "  lr: .nan\n", 1))
    with pytest.raises(ParamError, match=r"unet\.lr.*finite"):
        load_params("smoke", path=path)


def test_every_learning_rate_has_a_sane_maximum():
    lr_knobs = [(name, f) for name, cls in sections().items() for f in dataclasses.fields(cls)
                if f.name.startswith("lr") or f.name.endswith("_lr")]
    assert len(lr_knobs) >= 7
    for name, f in lr_knobs:
        assert f.metadata["max"] is not None and f.metadata["max"] <= 1.0, f"{name}.{f.name}"
        with pytest.raises(ParamError, match=rf"{name}\.{f.name}.*maximum"):
            load_params("smoke", {f"{name}.{f.name}": 1e6})


def test_exponent_floats_are_numbers(tmp_path):
    path = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    path.write_text(text.replace("  lr: 0.001\n", "  lr: 1e-3\n", 1).replace("  lr: 0.0002\n", "  lr: 2E-4\n"))
    P = load_params("smoke", path=path)
    assert P.unet.lr == 0.001 and P.pix2pix.lr == 0.0002
    assert load_params("smoke", {"unet.lr": "2e-3"}).unet.lr == 0.002  # a string that parses as a float


def test_duplicated_key_is_an_error_naming_key_and_line(tmp_path):
    path = tmp_path / "params.yaml"
    lines = (ROOT / "params.yaml").read_text().splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if ln.startswith("  epochs:"))
    lines.insert(at + 1, "  epochs: 99\n")
    path.write_text("".join(lines))
    with pytest.raises(ParamError, match=rf"duplicate key 'epochs' at line {at + 2} \(first at line {at + 1}\)"):
        load_params("smoke", path=path)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_out_of_range_is_named(seed, tmp_path):
    path = _write(tmp_path, lambda raw: raw.update(seed=seed))
    with pytest.raises(ParamError, match="'seed'"):
        load_params("smoke", path=path)


@pytest.mark.parametrize("key, value", [
    ("data.n_tiles", [2, 1]), ("data.real_split", [0.5, 0.5]), ("data.fill", [0.4, 0.5, 0.6]),
    ("data.n_nuclei", [1, 1, 1, 1]),
])
def test_list_of_the_wrong_length_is_named(key, value):
    with pytest.raises(ParamError, match=key.replace(".", r"\.") + r".*exactly"):
        load_params("smoke", {key: value})
