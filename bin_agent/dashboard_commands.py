"""The ``bin-agent`` subcommands for watching and setting up bins.

``ha-remove``   clear a bin's Home Assistant discovery configs (the device disappears)
``monitor``     live view of one or many bins from any machine on the broker
``report``      composition report (items per day, class, compartment) from the store
``calibrate``   move the servo step by step and save its angles into the config file

Each one's work lives in its own module; this file only parses arguments and
turns errors into one line and an exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .config import EX_CONFIG, ConfigError, load_config


def _fail(message: str, code: int) -> int:
    print(f"bin-agent: {message}", file=sys.stderr)
    return code


def _labels(config: Any) -> list[str]:
    from .classifier import ModelFiles, read_labels

    return read_labels(ModelFiles.beside(config.model.path).labels)


# ---------------------------------------------------------------------- ha-remove


def cmd_ha_remove(args: argparse.Namespace) -> int:
    from .broker import BrokerError
    from .discovery import remove_from_home_assistant

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(exc.describe(), EX_CONFIG)
    try:
        topics = remove_from_home_assistant(config, _labels(config), timeout=args.timeout)
    except BrokerError as exc:
        return _fail(str(exc), 69)  # EX_UNAVAILABLE
    for topic in topics:
        print(f"cleared {topic}")
    print(f"bin {config.agent.bin_id}: {len(topics)} discovery config(s) cleared; "
          "Home Assistant removes the device (it comes back on the agent's next connect "
          "unless homeassistant.enabled = false)")
    return 0


# ---------------------------------------------------------------------- registration


def register(sub: Any) -> None:
    """Add the subcommands to ``bin-agent``'s parser."""
    remove = sub.add_parser("ha-remove", help="remove this bin from Home Assistant (clear its discovery configs)")
    remove.add_argument("--config", "-c", type=Path, required=True, help="the bin's TOML config file")
    remove.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    remove.set_defaults(func=cmd_ha_remove)
