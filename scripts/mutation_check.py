#!/usr/bin/env python3
"""Do a module's tests fail when its code breaks? Random one-operator mutations, tests per mutation.

Each mutation flips one operator on one code line of MODULE (``<`` / ``<=``, ``==`` / ``!=``,
``and`` / ``or``, ``is None`` / ``is not None``, ``min`` / ``max``, ``+ 1`` / ``- 1``, a
``not`` dropped), runs ``pytest -x`` on TESTS, and restores the file. A mutation the tests
survive is a place to look: a missing test, or an equivalent mutation (a boundary flip that
changes nothing, a path that writes the same rows).

    python scripts/mutation_check.py bin_agent/fill.py tests/test_fill.py [--count 12] [--seed 1]

Run it in a worktree of its own (``git worktree add``): the module is rewritten in place while
its tests run, and restored after each (a SIGKILL in between leaves it mutated: ``git checkout``
it). Prints one line per mutation: caught or SURVIVED, the line, pytest's last line.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from pathlib import Path

from bin_agent.errors import run_script

SWAPS = (
    (" < ", " <= "),
    (" <= ", " < "),
    (" > ", " >= "),
    (" >= ", " > "),
    (" == ", " != "),
    (" != ", " == "),
    (" and ", " or "),
    (" or ", " and "),
    (" + 1", " - 1"),
    (" - 1", " + 1"),
    ("not ", ""),
    (" is None", " is not None"),
    (" is not None", " is None"),
    ("max(", "min("),
    ("min(", "max("),
)


def candidates(lines: list[str]) -> list[tuple[int, str, str]]:
    """``(line index, old, new)`` for every swap on a code line (not a comment, a docstring or
    inside a string before the operator)."""
    found = []
    in_docstring = False
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.count('"""') == 1:
            in_docstring = not in_docstring
            continue
        if in_docstring or not stripped or stripped.startswith(("#", '"""')):
            continue
        code = line.split("#")[0]
        for old, new in SWAPS:
            if old in code and not ('"' in code and code.index('"') < code.index(old)):
                found.append((index, old, new))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", type=Path, help="the file to mutate, e.g. bin_agent/fill.py")
    parser.add_argument("tests", nargs="+", help="pytest arguments: the test files that guard it")
    parser.add_argument("--count", type=int, default=12, help="mutations to try (default 12)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    original = args.module.read_text()
    lines = original.splitlines(keepends=True)
    chosen = candidates(lines)
    random.Random(args.seed).shuffle(chosen)
    survived = 0
    for index, old, new in chosen[: args.count]:
        mutated = lines[:index] + [lines[index].replace(old, new, 1)] + lines[index + 1 :]
        args.module.write_text("".join(mutated))
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args.tests],
                capture_output=True,
                text=True,
            )
        finally:
            args.module.write_text(original)
        last = ([line for line in result.stdout.splitlines() if line.strip()] or [""])[-1]
        status = "caught" if result.returncode else "SURVIVED"
        survived += not result.returncode
        print(
            f"{status:8s} {args.module}:{index + 1} {old.strip()!r} -> {new.strip()!r}  "
            f"| {lines[index].strip()[:90]}  [{last}]",
            flush=True,
        )
    print(f"{survived} of {min(args.count, len(chosen))} survived")
    return 0


if __name__ == "__main__":
    run_script(main)
