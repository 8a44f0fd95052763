"""The ``bin-agent`` command.

``bin-agent run --config PATH``        run the bin until SIGTERM/SIGINT
``bin-agent check-config PATH``        validate a config, exit 78 if it is wrong
``bin-agent doctor [--config PATH]``   check this machine: camera, model, pins, broker ...
``bin-agent classify IMAGE...``        classify photos, print class + top-3
``bin-agent record DIR --seconds N``   save the configured source's frames for a sequence replay
``bin-agent snapshot OUT.jpg``         a frame with the drop zone and the detection drawn
``bin-agent train`` / ``evaluate``     the model pipeline (``bin_agent.training``)

Errors a user can fix are printed as one line (or one line per problem) on
standard error, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import EX_CONFIG, EX_IOERR, BinAgentError, file_problem
from ..tools.doctor import ONLY_64BIT, python_is_64bit
from .common import absolute_config, fail


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``bin-agent`` parser.

    :param command: the command about to be parsed. The training commands' arguments (whose
        defaults live with numpy) are added only when it is one of them or None, so that
        ``bin-agent --help`` and the device's commands start without numpy and PIL.
    """
    parser = argparse.ArgumentParser(prog="bin-agent", description="Smart waste bin agent.")
    parser.add_argument("--version", action="version", version=f"bin-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from . import dashboards, device, loop

    device.register(sub)
    dashboards.register(sub)
    loop.register(sub)
    try:
        from . import training
    except ImportError:
        pass
    else:
        training.register(sub, arguments=command is None or command in training.HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The first word that is not an option names the command (bin-agent has no global options but
    # --help and --version); "" when there is none.
    parser = build_parser(next((word for word in argv if not word.startswith("-")), ""))
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is not None:  # before lgpio's import moves the working directory
        args.config = absolute_config(args.config)
    # doctor reports it among its checks; everything else stops here, before a
    # confusing failure deep in numpy or LiteRT.
    if args.command != "doctor" and not python_is_64bit():
        return fail(ONLY_64BIT, EX_CONFIG)
    try:
        return int(args.func(args) or 0)
    except BinAgentError as exc:
        # The one place an error a person can act on becomes a line and an exit status.
        return fail(exc.describe(), exc.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # A file or folder a command was given or makes that cannot be read or written (an output
        # path that is a file, no permission, a full card): one line naming it. An OSError naming
        # no file is a bug or a socket: it keeps its traceback.
        if (problem := file_problem(exc)) is None:
            raise
        return fail(problem, EX_IOERR)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
