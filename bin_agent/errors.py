"""The one root of every error a person can act on, and the exit statuses it carries.

Each layer raises its own subclass (``ConfigError``, ``StoreError``, ``ModelFilesError`` ...);
the CLI catches :class:`BinAgentError` once, prints its message as one line (never a
traceback) and exits with :attr:`BinAgentError.exit_code`. The statuses are sysexits.h's
(``os.EX_*``): systemd's unit treats ``EX_CONFIG`` (78) as "do not restart".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

EX_CONFIG = os.EX_CONFIG
"""Exit status for configuration errors (sysexits.h); systemd does not restart on it."""
EX_FAILURE = 1
"""A fault that may pass (a camera that comes back, a second agent that stops): systemd restarts on it.
sysexits.h has no name for it."""
EX_REFUSED = 2
"""An input a command refuses (a broken model, an unknown label, a bad file argument): argparse's
status for a bad argument, which the learning and training commands share."""
EX_IOERR = os.EX_IOERR
"""A file or folder a command was given, or makes, cannot be read or written (:func:`file_problem`)."""


class BinAgentError(Exception):
    """An error with a message for a person and the process exit status it maps to."""

    exit_code: int = os.EX_SOFTWARE

    def describe(self) -> str:
        """The message for a person (what the CLI and the scripts print)."""
        return str(self)


class ConfigError(BinAgentError):
    """One or more configuration problems, each a line naming the key and the fix."""

    exit_code = EX_CONFIG

    def __init__(self, problems: list[str], source: Path | str | None = None) -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return f"config error: {where}{self.problems[0]}"
        lines = [f"config error: {where}{len(self.problems)} problems"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def file_problem(exc: OSError) -> str | None:
    """One line for an ``OSError`` about a named file or folder (a file where a folder should be,
    no permission, a full or read-only card), naming it; None when it names none (a socket, a
    bug), which keeps its traceback. The last net under every command and script: the places
    that know what the file is for say more before it is reached."""
    if exc.filename is None:
        return None
    names = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    why = exc.strerror or str(exc)
    if isinstance(exc, FileExistsError) and not Path(exc.filename).is_dir():
        why = "a file is there where a folder is needed"  # mkdir of an output folder, or of a file's folder
    elif isinstance(exc, NotADirectoryError):
        why = "part of the path is a file, not a folder"
    elif isinstance(exc, IsADirectoryError):
        why = "a folder, where a file is needed"
    return f"{names}: cannot be read or written ({why})"


def run_script(main: Callable[[], int | None]) -> NoReturn:
    """Exit with ``main()``'s status, as the CLI ends its commands: a :class:`BinAgentError`
    becomes one line on stderr, the program's name first, and its exit status, never a
    traceback; so does an ``OSError`` naming a file (:func:`file_problem`, :data:`EX_IOERR`). The operator's scripts (``scripts/*.py``) end through it."""
    try:
        status = main()
    except BinAgentError as exc:
        print(f"{Path(sys.argv[0]).name}: {exc.describe()}", file=sys.stderr)
        status = exc.exit_code
    except OSError as exc:
        if (problem := file_problem(exc)) is None or isinstance(exc, BrokenPipeError):
            raise
        print(f"{Path(sys.argv[0]).name}: {problem}", file=sys.stderr)
        status = EX_IOERR
    raise SystemExit(status or 0)
