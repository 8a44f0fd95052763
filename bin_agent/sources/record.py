"""Record what a frame source sees, as files a replay plays back as they are.

``bin-agent record DIR --seconds N`` saves every frame of the configured
source (the Pi camera, after its warm-up) as ``frame-000000.png``,
``frame-000001.png``, … in ``DIR``. ``[camera.replay] mode = "sequence"`` with
``path = DIR`` then replays exactly those frames, one per file in name order,
so a trigger can be tuned on your own bin on a laptop. PNG is lossless: what
is replayed is what was recorded (JPEG is smaller, and lossy).

Frames are large (a 1280x960 main stream: some 2-3 MB a PNG, ten a second), and
the folder is usually on the bin's own SD card: the recording stops, keeping what
it saved and saying why, before the file system's free space would fall below
:data:`RESERVE_BYTES` (or :data:`RESERVE_SHARE` of a small one), so the bin's database
and logs always keep room.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Literal

from PIL import Image

from .base import FrameSource, SourceError
from .replay import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

FRAME_NAME = "frame-{index:06d}.{suffix}"

RESERVE_BYTES = 512 * 1024 * 1024
"""Free space the recording leaves on its folder's file system (the bin's SD card), or
:data:`RESERVE_SHARE` of it where that is less (a small file system of its own)."""

RESERVE_SHARE = 0.05


def record(
    source: FrameSource,
    folder: Path,
    seconds: float,
    image_format: Literal["png", "jpg"] = "png",
    reserve_bytes: int | None = None,
) -> int:
    """Save the frames ``source`` delivers during ``seconds`` of frame time
    (or until it ends) into ``folder``; return how many were saved.

    The source is started and closed here. ``seconds`` is measured on the
    frames' own timestamps, so a virtual-clock replay records the same frames
    on every run.

    :param reserve_bytes: free space left on ``folder``'s file system (``None``:
        :data:`RESERVE_BYTES`, at most :data:`RESERVE_SHARE` of it): a frame that would
        take it below this (as large as the last one) is not saved.
    :raises SourceError: the source fails, ``folder`` already holds images
        (a recording mixed into another would replay both), or the next frame
        would eat into ``reserve_bytes`` (the frames saved so far are kept).
    """
    folder = Path(folder)
    if folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
        raise SourceError(f"record: {folder} already holds images; choose an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    if reserve_bytes is None:
        reserve_bytes = min(RESERVE_BYTES, int(RESERVE_SHARE * shutil.disk_usage(folder).total))
    saved = 0
    last_size = 0
    try:
        source.start()
        first: float | None = None
        while (frame := source.read()) is not None:
            if first is None:
                first = frame.timestamp
            if frame.timestamp - first >= seconds - 1e-6:  # a microsecond: float rounding
                break
            free = shutil.disk_usage(folder).free
            if free - last_size < reserve_bytes:
                raise SourceError(
                    f"record: stopped after {saved} frame(s), {frame.timestamp - first:.1f} s of {seconds:g}: "
                    f"{folder} has {free / 2**20:.0f} MB free and {reserve_bytes / 2**20:.0f} MB are left for "
                    f"the bin; the frames saved are kept (--format jpg is smaller, or record elsewhere)"
                )
            path = folder / FRAME_NAME.format(index=saved, suffix=image_format)
            try:
                if image_format == "jpg":
                    Image.fromarray(frame.image).save(path, quality=95)
                else:
                    Image.fromarray(frame.image).save(path, compress_level=1)
                last_size = path.stat().st_size
            except OSError as exc:  # filled by something else meanwhile, or taken away
                # (Pillow removes the file a failed save created: no frame is left cut short.)
                raise SourceError(
                    f"record: cannot write {path}: {exc.strerror or exc}; the {saved} frame(s) saved before it are kept"
                ) from exc
            saved += 1
    finally:
        source.close()
    log.info("recorded %d frame(s) into %s", saved, folder)
    return saved
