"""The Raspberry Pi camera through picamera2 (libcamera).

The camera is configured ONCE with two streams and never switches mode per
item (a mode switch costs about half a second):

* ``main`` — ``BGR888`` at ``main_size`` (e.g. 640x480): picamera2's BGR888
  arrives as ``[R, G, B]`` per pixel, i.e. the RGB array the classifier wants;
* ``lores`` — ``YUV420`` at ``lores_size`` (e.g. 320x240): its first ``height``
  rows are the Y (luma) plane, a free greyscale image for the trigger.

picamera2 is the Pi's own package (``apt install python3-picamera2``); it is
imported here only, so the rest of bin-agent runs on any machine.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .base import Frame, SourceError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "picamera2 is not installed or not visible to this Python. Fix: on Raspberry Pi OS run "
    "'sudo apt install -y python3-picamera2' and create the venv with --system-site-packages; "
    "without a camera set camera.source = \"replay\""
)


class PiCameraSource:
    """Frames from the Pi camera.

    :param main_size: ``(width, height)`` of the stream that is classified.
    :param lores_size: ``(width, height)`` of the stream the trigger watches.
    :param fps: frame rate asked of the sensor.
    :param timeout_seconds: a frame that takes longer is a camera failure.
    """

    def __init__(
        self,
        main_size: tuple[int, int] = (640, 480),
        lores_size: tuple[int, int] = (320, 240),
        fps: float = 10.0,
        hflip: bool = False,
        vflip: bool = False,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.main_size = main_size
        self.lores_size = lores_size
        self.fps = fps
        self.hflip, self.vflip = hflip, vflip
        self.timeout_seconds = timeout_seconds
        self._camera: Any = None
        self._index = 0

    def start(self) -> None:
        try:
            from picamera2 import Picamera2
            from libcamera import Transform
        except ImportError:
            raise SourceError(INSTALL_HINT) from None
        try:
            camera = Picamera2()
            config = camera.create_video_configuration(
                main={"size": tuple(self.main_size), "format": "BGR888"},
                lores={"size": tuple(self.lores_size), "format": "YUV420"},
                transform=Transform(hflip=int(self.hflip), vflip=int(self.vflip)),
                controls={"FrameRate": float(self.fps)},
                buffer_count=4,
                queue=False,
            )
            camera.configure(config)
            camera.start()
        except Exception as exc:  # libcamera raises RuntimeError, IndexError (no camera)…
            raise SourceError(f"camera cannot start ({type(exc).__name__}: {exc}); "
                              "check the ribbon cable and 'rpicam-hello --list-cameras'") from None
        self._camera = camera
        log.info("camera started: main %s BGR888, lores %s YUV420, %.0f fps",
                 self.main_size, self.lores_size, self.fps)

    def read(self) -> Frame | None:
        if self._camera is None:
            raise SourceError("camera: read() before start()")
        try:
            job = self._camera.capture_request(wait=False)
            request = self._camera.wait(job, timeout=self.timeout_seconds)
        except TimeoutError:
            raise SourceError(f"camera delivered no frame for {self.timeout_seconds:.1f} s") from None
        except Exception as exc:
            raise SourceError(f"camera capture failed ({type(exc).__name__}: {exc})") from None
        try:
            image = request.make_array("main")
            yuv = request.make_array("lores")
        finally:
            request.release()
        width, height = self.lores_size
        frame = Frame(image=image, lores=yuv[:height, :width], timestamp=time.monotonic(),
                      index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._camera is not None:
            try:
                self._camera.stop()
                self._camera.close()
            finally:
                self._camera = None
