"""params.yaml validation: every bad key or value is named in the error."""

import json

import pytest
import yaml

from histolib.config import PROFILES, apply_overrides, load_params
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
