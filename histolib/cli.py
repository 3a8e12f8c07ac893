"""``histolib`` command line: build the data, show or check parameters.

Examples::

    histolib build-data                     # the DVC `data` stage, params.yaml's profile
    histolib build-data --profile smoke --set data.n_train=4
    histolib params                         # resolved parameters of the active profile (YAML)
    histolib params --explain unet          # every option of a section with its help text
"""

from __future__ import annotations

import argparse
import sys
import time

import yaml

from histolib.config import describe, load_params
from histolib.errors import HistolibError
from histolib.paths import project_root


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise HistolibError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="histolib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-data", help="write data/prepared/* and manifest.json")
    p = sub.add_parser("params", help="print resolved parameters")
    for s in (b, p):
        s.add_argument("--profile", choices=("smoke", "cpu", "paper"), help="override params.yaml's profile")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one parameter")
    b.add_argument("--out", help="output folder (default data/prepared/<profile>)")
    p.add_argument("--explain", metavar="SECTION", help="list a section's options with their help")
    args = parser.parse_args(argv)
    try:
        if args.command == "params" and args.explain:
            print(describe(args.explain))
            return 0
        P = load_params(args.profile, _parse_sets(args.set))
        if args.command == "params":
            print(yaml.safe_dump(P.resolved, sort_keys=False))
            return 0
        from histolib.data.builder import build_all

        t0 = time.perf_counter()
        root = project_root()
        build_all(P, root, prepared=args.out)
        print(f"data built for profile {P.profile!r} in {time.perf_counter() - t0:.1f} s")
        return 0
    except HistolibError as e:
        print(f"histolib: error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"histolib: error: unknown section {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
