"""The commands of the learning loop: ``deploy``, ``label``, ``compare``.

``bin_agent.cli`` calls :func:`register`. Each command prints one line per
problem on stderr and exits 2 for a refused input (a broken model, an unknown
label), 78 for a bad config file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import EX_CONFIG, Config, ConfigError, load_config

DEFAULT_CONFIG = Path("/etc/bin-agent/bin-agent.toml")


def _fail(message: str, code: int = 2) -> int:
    print(f"bin-agent: {message}", file=sys.stderr, flush=True)
    return code


def _config(path: Path) -> Config:
    return load_config(path, check_model=False)


# ---------------------------------------------------------------------- deploy


def cmd_deploy(args: argparse.Namespace) -> int:
    from . import deploy

    try:
        config = _config(args.config)
    except ConfigError as exc:
        return _fail(exc.describe(), EX_CONFIG)
    reload_hint = ("the running agent switches before its next item after `systemctl reload bin-agent` "
                   "(SIGHUP) or MQTT cmd/reload_model")
    try:
        if args.list:
            rows = deploy.installed(config)
            for row in rows:
                print(f"{row['folder']}  {row['role']}")
            print(f"in use: {deploy.active_model_path(config)}")
            return 0
        if args.rollback:
            before, now = deploy.rollback(config)
            print(f"rolled back: {before} -> {now}")
            print(reload_hint)
            return 0
        if args.model is None:
            return _fail("deploy: give a MODEL .tflite, or --rollback, or --list")
        validation = deploy.validate(args.model, config, args.reference)
        for line in validation.checks:
            print(f"  ok: {line}")
        installed = deploy.install(args.model, config, validation)
    except deploy.DeployError as exc:
        return _fail(f"deploy refused: {exc}")
    except OSError as exc:
        return _fail(f"deploy: cannot write {deploy.models_dir(config)} ({exc}); run it as the agent's user")
    print(f"deployed {validation.classifier.version}: {installed}")
    print(reload_hint)
    return 0


# ---------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the learning-loop commands to the bin-agent CLI."""
    p = subparsers.add_parser(
        "deploy", help="validate a model and install it for the agent (atomic; --rollback goes back)")
    p.add_argument("model", nargs="?", type=Path, metavar="MODEL",
                   help="candidate .tflite with its .labels.txt and .json beside it")
    p.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG,
                   help=f"the agent's config (its state_dir and router; default {DEFAULT_CONFIG})")
    p.add_argument("--reference", action="append", type=Path, default=[], metavar="PHOTO",
                   help="photo the candidate must classify (repeatable; default: a grey frame)")
    p.add_argument("--rollback", action="store_true", help="return to the model before the last deploy")
    p.add_argument("--list", action="store_true", help="list the installed models and the one in use")
    p.set_defaults(func=cmd_deploy)
