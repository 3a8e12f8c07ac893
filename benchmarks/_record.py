"""What the training-speed benchmarks share: the record's load and environment fields, and where it is written."""

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
