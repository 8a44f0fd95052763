"""``python -m bin_agent.training {split,train,evaluate} ...`` (same as ``bin-agent ...``)."""

from __future__ import annotations

import argparse

from ..cli.training import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bin_agent.training", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
