"""What every command family shares: the default config path, logging set-up, one way to fail."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .. import preflight
from ..config import Config

DEFAULT_CONFIG = Path("/etc/bin-agent/bin-agent.toml")
"""Where scripts/install-pi.sh puts the config and the systemd unit reads it."""


def absolute_config(path: Path) -> Path:
    """``path`` made absolute against the working directory the command started in.

    Done before anything else runs: importing lgpio (gpiozero's pin factory on
    Bookworm) changes the working directory to ``$LG_WD`` (lg's ``lgpio.c``
    makes its notification FIFOs there), after which a relative ``--config``,
    and every path the config names relative to its own folder, would point
    somewhere else.
    """
    return Path(os.path.abspath(os.path.expanduser(path)))


def setup_logging(level: str) -> None:
    """Log to standard error; journald stamps each line itself, a terminal wants the time."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format=fmt, stream=sys.stderr)


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1. argparse prints the error naming the
    option (``argument --threads: 0 must be at least 1``) and exits 2."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def fail(message: str, code: int) -> int:
    """Print ``message`` as one line on standard error and return the exit status ``code``."""
    print(f"bin-agent: {message}", file=sys.stderr)
    return code


def load_config_or_exit(path: Path, *, model: bool = True, host: bool = False) -> Config:
    """The config at ``path``, checked by :mod:`bin_agent.preflight` (``host``: also what
    this machine must provide to run it).

    :raises ConfigError: with every problem; :func:`bin_agent.cli.main` prints it and exits 78.
    """
    return preflight.load(path, model=model, host=host)
