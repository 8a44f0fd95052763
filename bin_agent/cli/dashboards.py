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
import os
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

from .common import fail, load_config_or_exit


def _labels(config: Any) -> list[str]:
    from ..classify.classifier import ModelFiles, read_labels

    return read_labels(ModelFiles.beside(config.model.path).labels)


# ---------------------------------------------------------------------- ha-remove


def cmd_ha_remove(args: argparse.Namespace) -> int:
    from ..mqtt.discovery import remove_from_home_assistant

    config = load_config_or_exit(args.config)
    # ConfigError (the password or certificate files of [mqtt]): exit 78; BrokerError: exit 69.
    topics = remove_from_home_assistant(config, _labels(config), timeout=args.timeout)
    for topic in topics:
        print(f"cleared {topic}")
    print(
        f"bin {config.agent.bin_id}: {len(topics)} discovery config(s) cleared; "
        "Home Assistant removes the device (it comes back on the agent's next connect "
        "unless homeassistant.enabled = false)"
    )
    return 0


# ---------------------------------------------------------------------- monitor


def cmd_monitor(args: argparse.Namespace) -> int:
    import json
    import threading

    from ..mqtt.client import CliClient
    from ..mqtt.credentials import broker_password, broker_tls_context
    from ..tools.monitor import Fleet, live, render_table

    host, port, prefix, username, password, tls = "localhost", 1883, "smartbin", "", None, None
    if args.config is not None:
        config = load_config_or_exit(args.config, model=False)
        password, tls = broker_password(config), broker_tls_context(config)
        settings = config.mqtt
        host, port, prefix, username = settings.host, settings.port, settings.topic_prefix, settings.username
    host, port, prefix = args.host or host, args.port or port, args.prefix or prefix
    username = args.username or username
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            return fail(f"--password-file: {args.password_file}: not a readable password file ({exc})", os.EX_NOINPUT)
    fleet = Fleet(prefix, args.bins)
    # A BrokerError (cannot connect, refused): main() prints it and exits 69.
    with CliClient(host, port, username=username, password=password, tls=tls, purpose="monitor") as client:
        client.subscribe(fleet.filters, fleet.handle, args.timeout)
        if not client.sync(args.timeout):
            return fail(f"the broker {host}:{port} did not answer in {args.timeout:g} s", os.EX_UNAVAILABLE)
        silent = fleet.silent()
        if args.json or args.once or not sys.stdout.isatty():
            print(json.dumps(fleet.as_json(), indent=1, sort_keys=True) if args.json else render_table(fleet))
            if silent:
                return fail(
                    f"no data from bin {', '.join(silent)} under {prefix}/ (no such bin, or it never "
                    "connected to this broker)",
                    os.EX_NOINPUT,
                )
            return 0
        stop = threading.Event()
        try:
            live(fleet, sys.stdout, stop, args.refresh)
        except KeyboardInterrupt:
            stop.set()
        return 0


# ---------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    from datetime import datetime

    from ..store import StoreError, StoreReader
    from ..tools.report import (
        ReportError,
        check_picture_path,
        format_table,
        parse_since,
        report_from_store,
        write_csv,
        write_png,
    )

    config = load_config_or_exit(args.config, model=False)
    db = args.db or Path(config.agent.state_dir) / "bin-agent.db"
    if not db.is_file():
        return fail(f"{db}: no state database (has the bin run? --db names another)", os.EX_NOINPUT)
    now = datetime.now(UTC)
    try:
        since = parse_since(args.since, now)
        if args.png:
            check_picture_path(args.png)  # before the work, not after the table
        store = StoreReader(db)  # read-only: no lock, works beside a running agent
    except (ReportError, StoreError) as exc:
        return fail(str(exc), os.EX_USAGE if isinstance(exc, ReportError) else os.EX_IOERR)
    try:
        report = report_from_store(
            store, config.agent.bin_id, since, now, sorted(config.router.compartments), config.compartments
        )
    finally:
        store.close()
    print(format_table(report, args.unsure))
    try:
        if args.csv:
            rows = write_csv(report, args.csv)
            print(f"\nwrote {args.csv} ({rows} rows)")
        if args.png:
            unit = write_png(report, args.png)
            print(f"wrote {args.png} (items per {unit})")
    except ReportError as exc:
        return fail(str(exc), os.EX_UNAVAILABLE)
    except BrokenPipeError:
        raise
    except OSError as exc:
        return fail(f"cannot write: {exc}", os.EX_CANTCREAT)
    return 0


# ---------------------------------------------------------------------- calibrate


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..actuators.sorter import ActuatorError, make_pin_factory
    from ..tools.calibrate import CalibrationError, calibrate, parse_assignments, terminal_keys

    config = load_config_or_exit(args.config, model=False)
    try:
        assignments = parse_assignments(args.set) if args.set else None
        pin_factory = make_pin_factory(config.actuator.pin_factory, config.actuator.gpiochip)
        calibrate(
            config,
            pin_factory,
            assignments=assignments,
            keys=None if assignments is not None else terminal_keys(sys.stdin),
            step=args.step,
        )
    except (CalibrationError, ActuatorError) as exc:
        return fail(str(exc), os.EX_CONFIG)
    return 0


# ---------------------------------------------------------------------- registration


def register(sub: Any) -> None:
    """Add the subcommands to ``bin-agent``'s parser."""
    remove = sub.add_parser("ha-remove", help="remove this bin from Home Assistant (clear its discovery configs)")
    remove.add_argument("--config", "-c", type=Path, required=True, help="the bin's TOML config file")
    remove.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    remove.set_defaults(func=cmd_ha_remove)

    monitor = sub.add_parser("monitor", help="live view of one or many bins (counts, fill, last item, status)")
    monitor.add_argument("bins", nargs="*", metavar="BIN_ID", help="bins to watch (default: every bin)")
    monitor.add_argument("--config", "-c", type=Path, default=None, help="take broker and topic prefix from it")
    monitor.add_argument("--host", default=None, help="broker (default: the config's, else localhost)")
    monitor.add_argument("--port", type=int, default=None, help="broker port (default: the config's, else 1883)")
    monitor.add_argument("--prefix", default=None, help="topic prefix (default: the config's, else smartbin)")
    monitor.add_argument("--username", default=None, help="broker user")
    monitor.add_argument("--password-file", type=Path, default=None, help="file holding the broker password")
    monitor.add_argument("--json", action="store_true", help="print every bin's status and state as JSON, then exit")
    monitor.add_argument("--once", action="store_true", help="print the table once, then exit")
    monitor.add_argument("--refresh", type=float, default=1.0, help="seconds between redraws (default 1)")
    monitor.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    monitor.set_defaults(func=cmd_monitor)

    report = sub.add_parser("report", help="composition report: items per day, class and compartment")
    report.add_argument("--config", "-c", type=Path, required=True, help="the bin's TOML config file")
    report.add_argument("--since", default="7d", help="7d, 12h, 2w or a date like 2026-11-01 (UTC); default 7d")
    report.add_argument(
        "--db", type=Path, default=None, help="state database (default: agent.state_dir/bin-agent.db of the config)"
    )
    report.add_argument("--csv", type=Path, default=None, help="also write one row per day, class and compartment")
    report.add_argument(
        "--png",
        type=Path,
        default=None,
        help="also draw items per day, week or month (.png, .svg or .pdf; needs matplotlib)",
    )
    report.add_argument("--unsure", type=int, default=20, metavar="N", help="list at most N unsure items")
    report.set_defaults(func=cmd_report)

    calibrate = sub.add_parser("calibrate", help="move the servo step by step; save home and compartment angles")
    calibrate.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file to update")
    calibrate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=ANGLE",
        help="move to ANGLE and save it as home or a compartment's angle (repeatable); "
        "without --set: keys (a/d move, h home, 1-9 compartment, w write, q quit)",
    )
    calibrate.add_argument("--step", type=float, default=5.0, help="degrees per key press (default 5)")
    calibrate.set_defaults(func=cmd_calibrate)
