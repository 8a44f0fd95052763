"""Temporary files and folders that a power cut left behind (written under a temporary name,
then renamed: the rename never came). Their owner removes them where it starts, only those of
its own naming: never a person's file."""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

MIN_AGE_SECONDS = 600.0
"""A leftover that another process may still be writing (a ``bin-agent learn`` or ``deploy``
run beside the agent) is younger than this: writing one takes seconds."""


def remove_leftovers(folder: Path, pattern: re.Pattern[str], *, min_age_s: float = 0.0, what: str) -> list[str]:
    """Delete the entries of ``folder`` whose whole name matches ``pattern`` (files, links, and
    folders, not followed), last modified at least ``min_age_s`` ago; one log line naming them.
    Returns their names. Never raises: what cannot be deleted stays, with a warning."""
    removed: list[str] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:  # no folder yet, or unreadable: its owner says so elsewhere
        return removed
    now = time.time()
    for path in entries:
        if not pattern.fullmatch(path.name):
            continue
        try:
            if now - path.lstat().st_mtime < min_age_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            log.warning("%s: cannot remove this leftover %s (%s)", path, what, exc.strerror or exc)
            continue
        removed.append(path.name)
    if removed:
        log.warning(
            "%s: removed %d leftover %s of an interrupted write (a power cut?): %s",
            folder,
            len(removed),
            what,
            ", ".join(removed[:10]) + (", ..." if len(removed) > 10 else ""),
        )
    return removed
