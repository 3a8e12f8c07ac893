"""The setup every notebook shares: find the project, load and check params, seed, record the environment.

A notebook's setup cell is::

    S = start("01", profile, overrides)   # then S.params, S.out, S.models, S.root

and its last cell writes ``S.out / "metrics.json"`` with :func:`write_metrics`.

Run by papermill, :func:`start` first checks the parameters papermill injected against the ones the
notebook declares (:func:`histolib.nbparams.check_parameters`): ``-p profle cpu`` is an error, not a warning.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from histolib.config import Params, load_params
from histolib.fileio import write_json
from histolib.nbparams import check_parameters
from histolib.paths import data_tag, models_dir, project_root, results_dir
from histolib.repro import environment_record, seed_everything


@dataclass
class Session:
    """What a notebook needs after setup."""

    notebook: str
    root: Path
    params: Params
    out: Path       # results/<nb>/ (real data: results/real/<tag>/<nb>/): metrics, tables, figures, grids
    models: Path    # models/<profile>/<nb>/ (real data: models/real/<tag>/...): checkpoints (gitignored)
    env: dict
    tag: str = ""   # histolib.paths.data_tag: "" for the phantom, else the real folders' names

    @property
    def conditions(self) -> dict:
        """Profile, seed and data source: printed beside every table."""
        d = self.params.data
        return {"profile": self.params.profile, "seed": self.params.seed, "data": self.tag or "phantom",
                "data_source": d.source, "patch_size": d.patch_size}


def start(notebook: str, profile: str | None = None, overrides: dict | None = None,
          parameters: Iterable[str] | None = None) -> Session:
    """Load params (profile/overrides from the parameters cell), seed everything, print the environment.

    Args:
        notebook: ``"00"``, ``"01"``, ... (names the results folder).
        profile: ``None`` keeps ``$HISTOLIB_PROFILE`` or params.yaml's profile.
        overrides: dotted keys, e.g. ``{"unet.epochs": 3}``.
        parameters: the notebook's parameter names (default: read from its ``parameters`` cell).

    Raises:
        ParamError: papermill injected a parameter the notebook does not declare (:func:`check_parameters`),
            or params.yaml/overrides are invalid.
    """
    check_parameters(declared=parameters)
    root = project_root()
    P = load_params(profile, overrides or {})
    seed_everything(P.seed)
    if P.unet.threads:
        torch.set_num_threads(P.unet.threads)
    env = environment_record(P.profile, root)
    print(f"histolib notebook {notebook}: profile {P.profile!r}, seed {P.seed}, device {env['device']}, "
          f"torch {env['packages']['torch']} ({env['torch_threads']} threads), commit {env['git_commit']}")
    tag = data_tag(P)
    if tag:
        print(f"real data ({tag}): results in {results_dir(notebook, root, tag)}; only text and numbers there are "
              "committable (.gitignore), figures and executed notebooks stay local")
    return Session(notebook, root, P, results_dir(notebook, root, tag),
                   models_dir(notebook, P.profile, root, tag), env, tag)


def write_metrics(session: Session, metrics: dict, name: str = "metrics.json") -> Path:
    """Write ``metrics`` with the run's conditions, params and environment beside them."""
    payload = {**metrics, "conditions": session.conditions, "environment": session.env,
               "params": json.loads(json.dumps(session.params.resolved))}
    return write_json(session.out / name, payload)
