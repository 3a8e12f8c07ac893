"""What the benchmarks share: the record's load and environment fields, where it is written, and the
``--config NAME[:key=value,...]`` parser of the lever screens."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def save_record(name: str, record: dict, load_start, quick: bool = False) -> None:
    """Print ``record`` (with the load average at start and now, and the environment) and, unless ``quick``,
    write it to ``benchmarks/results/<name>.json``."""
    from histolib.repro import environment_record

    record = {**record, "load_average_1_5_15min_at_start": list(load_start),
              "load_average_1_5_15min_at_end": list(os.getloadavg()),
              "environment": environment_record(None, ROOT)}
    text = json.dumps(record, indent=2)
    if not quick:
        path = ROOT / "benchmarks" / "results" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    print(text)


def parse_config(text: str) -> tuple[str, dict]:
    """``NAME[:key=value,...]`` -> ``(NAME, {dotted params key: YAML value})``, e.g.
    ``ema:pix2pix.ema_kimg=2.5`` -> ``("ema", {"pix2pix.ema_kimg": 2.5})``; a value may be a YAML list
    (``fill:sim2real.mix_fill=[0.9,0.99]``: commas inside brackets do not separate pairs)."""
    import re

    import yaml

    name, _, rest = text.partition(":")
    pairs = [kv.split("=", 1) for kv in re.split(r",(?![^\[]*\])", rest) if kv]
    bad = [kv for kv in pairs if len(kv) != 2]
    if not name or bad:
        raise SystemExit(f"--config {text!r}: expected NAME[:key=value,...]")
    return name, {k: yaml.safe_load(v) for k, v in pairs}
