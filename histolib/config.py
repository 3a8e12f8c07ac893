"""``params.yaml``: the one source of every knob, with profiles and fail-fast validation.

Layout of ``params.yaml``::

    profile: cpu            # smoke | cpu | paper
    seed: 0                 # base seed of the whole study
    unet:
      width: {smoke: 8, cpu: 16, paper: 64}   # one value per profile ...
      depth: 4                                # ... or one value for all of them

A value that is a mapping with exactly the keys ``smoke``, ``cpu`` and ``paper`` is resolved for
the active profile; any other value applies to every profile. So ``dvc exp run -S unet.depth=3``
sets a value for all profiles, and ``-S unet.width.cpu=32`` changes the ``cpu`` one only.

Each section is declared once in code as a dataclass (see :func:`section` and :func:`knob`), which
documents every option where it is declared and lets :func:`load_params` reject an unknown key, a
missing key, a value of the wrong type or one out of range with a message naming the key.

The active profile is, in order: the ``profile`` argument, ``$HISTOLIB_PROFILE``, then
``params.yaml``'s ``profile``. Overrides are dotted keys (``{"unet.width": 8}``) from the
``overrides`` argument and ``$HISTOLIB_OVERRIDES`` (a JSON object), applied before resolution.

``params.yaml`` is read with :class:`ParamsLoader`: a key given twice in one mapping is an error naming
the key and its lines, and ``1e-3`` is a float (YAML 1.2; PyYAML's YAML 1.1 rules would read a string).
Float knobs also accept strings that parse as numbers (``"1e-3"`` from an override) but never NaN or
infinity; list knobs may declare their ``length``; ``seed`` must be in ``0..2**32-1``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import json
import math
import os
import pkgutil
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from histolib.errors import ParamError
from histolib.paths import project_root

PROFILES = ("smoke", "cpu", "paper")
TOP_LEVEL = {"profile": str, "seed": int}
SEED_MAX = 2**32 - 1  # NumPy's legacy seeding (np.random.seed) takes 0..2**32-1

# YAML 1.2 floats (1e-3, 1.5E+2, .5, inf, nan), which PyYAML's YAML 1.1 resolver reads as strings when the
# mantissa has no dot or the exponent no sign.
_FLOAT_RE = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class ParamsLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for params.yaml: YAML 1.2 floats, and duplicated keys are an error."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor` merges may be overridden on purpose
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except TypeError:
                    continue  # an unhashable key: let PyYAML report it
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ParamError(f"{key_node.start_mark.name}: duplicate key {key!r} at line {line} "
                                     f"(first at line {seen[key]}); a key may appear once per mapping")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


# resolvers are per class: copy the inherited table before replacing the float rule
ParamsLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in list("-+0123456789."):
    ParamsLoader.yaml_implicit_resolvers[_first] = [
        (tag, regexp) for tag, regexp in ParamsLoader.yaml_implicit_resolvers.get(_first, [])
        if tag != "tag:yaml.org,2002:float"]
ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def load_yaml(text: str, name: str = "params.yaml") -> Any:
    """Parse params-style YAML with :class:`ParamsLoader` (``name`` appears in error messages)."""
    loader = ParamsLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()

_SECTIONS: dict[str, type] = {}


def knob(help: str, *, min: float | None = None, max: float | None = None,
         choices: tuple | None = None, length: int | None = None) -> Any:
    """Declare one option of a section: its help text and allowed range (``min``/``max`` apply to every
    item of a list), ``choices``, and for a list knob its exact ``length``. No default on purpose:
    ``params.yaml`` must hold every knob."""
    return dataclasses.field(metadata={"help": help, "min": min, "max": max, "choices": choices,
                                       "length": length})


def section(name: str):
    """Class decorator registering a dataclass as the schema of ``params.yaml``'s ``name`` section.

    A plain class becomes a frozen dataclass. A class that is already a frozen dataclass (e.g. a
    trainer's options, declared with :func:`knob` where the trainer lives) is registered as it is:
    ``section("stylegan2")(StyleGAN2Options)`` lets a study module register it without declaring
    any option twice. Registering the same class again under the same name is a no-op.

    Raises:
        TypeError: a dataclass that is not frozen, or ``name`` already taken by another class.
    """

    def register(cls):
        if dataclasses.is_dataclass(cls):
            if not cls.__dataclass_params__.frozen:
                raise TypeError(f"section {name!r}: {cls.__name__} must be a frozen dataclass "
                                "(@dataclass(frozen=True)) or a plain class")
        else:
            cls = dataclasses.dataclass(frozen=True)(cls)
        known = _SECTIONS.get(name)
        if known is not None and known is not cls and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"section {name!r} is already registered by {known.__module__}.{known.__qualname__}")
        _SECTIONS[name] = cls
        return cls

    return register


def sections() -> dict[str, type]:
    """Every registered section schema (imports ``histolib.studies`` so paper sections register)."""
    import histolib.studies as studies

    for mod in pkgutil.iter_modules(studies.__path__):
        importlib.import_module(f"{studies.__name__}.{mod.name}")
    return dict(_SECTIONS)


@dataclasses.dataclass(frozen=True)
class Params:
    """Resolved parameters: ``params.profile``, ``params.seed`` and one attribute per section."""

    profile: str
    seed: int
    sections: dict[str, Any]
    resolved: dict[str, Any]  # plain nested dict, as written into results

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["sections"][name]
        except KeyError:
            raise AttributeError(f"params have no section {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return self.sections[name]


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_profile_map(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == set(PROFILES)


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    """Return a copy of ``raw`` with dotted-key ``overrides`` applied.

    A key must already exist in ``raw`` (unknown keys fail fast). Setting a plain value where the
    file has a per-profile mapping replaces the mapping, so the value holds for every profile.
    """
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for i, part in enumerate(parts):
            where = ".".join(parts[:i]) or "params.yaml"
            if not isinstance(node, dict) or part not in node:
                known = node.keys() if isinstance(node, dict) else []
                raise ParamError(f"unknown parameter {dotted!r}: {where!r} has no key {part!r}"
                                 f"{_suggest(part, known)}")
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return out


def _check_type(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(key, value, arg)
            except ParamError as e:
                errors.append(str(e))
        raise ParamError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamError(f"parameter {key!r} must be a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamError(f"parameter {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, str):  # "1e-3" from YAML 1.1 or a command line
            try:
                value = float(value.strip())
            except ValueError:
                raise ParamError(f"parameter {key!r} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"parameter {key!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ParamError(f"parameter {key!r} must be a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ParamError(f"parameter {key!r} must be an integer, got {value!r}")
        return int(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamError(f"parameter {key!r} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ParamError(f"parameter {key!r} must be a string, got {value!r}")
        return value
    return value


def _build_section(name: str, cls: type, raw: dict, profile: str) -> tuple[Any, dict]:
    if not isinstance(raw, dict):
        raise ParamError(f"section {name!r} of params.yaml must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ParamError(f"unknown parameter '{name}.{key}'{_suggest(key, fields)}; "
                             f"known keys of {name!r}: {', '.join(fields)}")
    values = {}
    for key, f in fields.items():
        full = f"{name}.{key}"
        if key not in raw:
            raise ParamError(f"missing parameter {full!r} in params.yaml ({f.metadata.get('help', '')})")
        value = raw[key]
        if isinstance(value, dict) and set(value) & set(PROFILES):
            if not _is_profile_map(value):
                raise ParamError(f"parameter {full!r} gives per-profile values for "
                                 f"{sorted(value)}; give all of {list(PROFILES)} or one plain value")
            value = value[profile]
        value = _check_type(full, value, hints[key])
        meta = f.metadata
        if meta.get("length") is not None and isinstance(value, list) and len(value) != meta["length"]:
            raise ParamError(f"parameter {full!r} = {value!r} has {len(value)} item(s); it takes exactly "
                             f"{meta['length']} ({meta.get('help', '')})")
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise ParamError(f"parameter {full!r} = {value!r} is not one of {list(meta['choices'])}")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if meta.get("min") is not None and item < meta["min"]:
                    raise ParamError(f"parameter {full!r} = {value!r} is below its minimum {meta['min']}")
                if meta.get("max") is not None and item > meta["max"]:
                    raise ParamError(f"parameter {full!r} = {value!r} is above its maximum {meta['max']}")
        values[key] = value
    return cls(**values), values


def load_params(profile: str | None = None, overrides: dict[str, Any] | None = None,
                path: str | os.PathLike | None = None) -> Params:
    """Read, override, resolve and validate ``params.yaml``.

    Args:
        profile: ``smoke``, ``cpu`` or ``paper``; default ``$HISTOLIB_PROFILE`` then the file's.
        overrides: dotted keys to replace, e.g. ``{"unet.width": 8}``; merged after
            ``$HISTOLIB_OVERRIDES`` (JSON), so an explicit argument wins.
        path: the params file; default ``<project root>/params.yaml``.

    Returns:
        :class:`Params` with one frozen dataclass per section.

    Raises:
        ParamError: naming the unknown, missing, mistyped or out-of-range key.
    """
    path = Path(path) if path else project_root() / "params.yaml"
    try:
        raw = load_yaml(path.read_text(), path.name) or {}
    except yaml.YAMLError as e:
        raise ParamError(f"{path}: not valid YAML: {e}") from e
    merged: dict[str, Any] = {}
    env_over = os.environ.get("HISTOLIB_OVERRIDES")
    if env_over:
        try:
            merged.update(json.loads(env_over))
        except json.JSONDecodeError as e:
            raise ParamError(f"$HISTOLIB_OVERRIDES is not a JSON object: {e}") from e
    merged.update(overrides or {})
    raw = apply_overrides(raw, merged)

    profile = profile or os.environ.get("HISTOLIB_PROFILE") or raw.get("profile")
    if profile not in PROFILES:
        raise ParamError(f"parameter 'profile' = {profile!r} is not one of {list(PROFILES)}")
    schemas = sections()
    for key in raw:
        if key not in TOP_LEVEL and key not in schemas:
            raise ParamError(f"unknown parameter {key!r} in {path.name}"
                             f"{_suggest(key, [*TOP_LEVEL, *schemas])}")
    seed = _check_type("seed", raw.get("seed"), int)
    if not 0 <= seed <= SEED_MAX:
        raise ParamError(f"parameter 'seed' = {seed} must be in 0..{SEED_MAX}")
    built, resolved = {}, {"profile": profile, "seed": seed}
    for name, cls in schemas.items():
        if name not in raw:
            raise ParamError(f"missing section {name!r} in {path.name}")
        built[name], resolved[name] = _build_section(name, cls, raw[name], profile)
    return Params(profile=profile, seed=seed, sections=built, resolved=resolved)


def describe(name: str) -> str:
    """A readable table of one section's options and their help text."""
    cls = sections()[name]
    rows = [f"{f.name}: {f.metadata.get('help', '')}" for f in dataclasses.fields(cls)]
    return "\n".join(rows)
