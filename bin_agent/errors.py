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


def run_script(main: Callable[[], int | None]) -> NoReturn:
    """Exit with ``main()``'s status, as the CLI ends its commands: a :class:`BinAgentError`
    becomes one line on stderr, the program's name first, and its exit status, never a
    traceback. The operator's scripts (``scripts/*.py``) end through it."""
    try:
        status = main()
    except BinAgentError as exc:
        print(f"{Path(sys.argv[0]).name}: {exc.describe()}", file=sys.stderr)
        status = exc.exit_code
    raise SystemExit(status or 0)
