"""Record what a frame source sees, as files a replay plays back as they are.

``bin-agent record DIR --seconds N`` saves every frame of the configured
source (the Pi camera, after its warm-up) as ``frame-000000.png``,
``frame-000001.png``, … in ``DIR``. ``[camera.replay] mode = "sequence"`` with
``path = DIR`` then replays exactly those frames, one per file in name order,
so a trigger can be tuned on your own bin on a laptop. PNG is lossless: what
is replayed is what was recorded (JPEG is smaller, and lossy).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from PIL import Image

from .base import FrameSource, SourceError
from .replay import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

FRAME_NAME = "frame-{index:06d}.{suffix}"


def record(source: FrameSource, folder: Path, seconds: float, image_format: Literal["png", "jpg"] = "png") -> int:
    """Save the frames ``source`` delivers during ``seconds`` of frame time
    (or until it ends) into ``folder``; return how many were saved.

    The source is started and closed here. ``seconds`` is measured on the
    frames' own timestamps, so a virtual-clock replay records the same frames
    on every run.

    :raises SourceError: the source fails, or ``folder`` already holds images
        (a recording mixed into another would replay both).
    """
    folder = Path(folder)
    if folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
        raise SourceError(f"record: {folder} already holds images; choose an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    saved = 0
    try:
        source.start()
        first: float | None = None
        while (frame := source.read()) is not None:
            if first is None:
                first = frame.timestamp
            if frame.timestamp - first >= seconds - 1e-6:  # a microsecond: float rounding
                break
            path = folder / FRAME_NAME.format(index=saved, suffix=image_format)
            if image_format == "jpg":
                Image.fromarray(frame.image).save(path, quality=95)
            else:
                Image.fromarray(frame.image).save(path, compress_level=1)
            saved += 1
    finally:
        source.close()
    log.info("recorded %d frame(s) into %s", saved, folder)
    return saved
