"""The Raspberry Pi camera through picamera2 (libcamera).

The camera is configured ONCE with two streams and never switches mode per
item (a mode switch costs about half a second):

* ``main`` — ``BGR888`` at ``main_size`` (e.g. 1280x960): picamera2's BGR888
  arrives as ``[R, G, B]`` per pixel, i.e. the RGB array the classifier wants;
* ``lores`` — ``YUV420`` at ``lores_size`` (e.g. 320x240): its first ``height``
  rows are the Y (luma) plane, a free greyscale image for the trigger.

The sizes are aligned the way the hardware wants them
(``Picamera2.align_configuration``: a YUV420 width becomes a multiple of 64
pixels on a Pi 4, 128 on a Pi 5), and libcamera may adjust them further, so
the lores slice uses the size the camera actually configured, read back from
``camera_config`` after ``configure``; each row may be padded to its stride.

The sensor mode is the smallest one that reads the whole pixel array (see
:func:`full_field_mode`): left to itself picamera2 picks the mode nearest the
main size, and at 640x480 a Camera Module 2 (IMX219) then reads a 1280x960
centre crop, 39 % of the sensor's width (picamera2 #683, #1233); the HQ camera
(IMX477) likewise. Camera Module 3's nearest mode already reads it all.

A camera that stops delivering frames (a loose ribbon cable) leaves its
capture job queued in picamera2, and ``stop()`` is queued behind it, for ever:
after a frame timeout, and before stopping, the queue is emptied with
``cancel_all_and_flush()`` (picamera2 >= 0.3.20; ``wait(timeout=)`` needs
0.3.17: ``bin-agent doctor`` checks the version). Below picamera2 it can be
worse: after a "Camera frontend has timed out!" a Pi 4's ISP driver may never
return from stopping the stream (picamera2 #1264, #1275: the process in the
kernel's D state, ``vb2_wait_for_all_buffers``), and libcamera's Python
``Camera.stop`` does not release the interpreter lock while it waits
(``src/py/libcamera/py_main.cpp``), so every thread of the process stops with
it. Nothing in the process can undo that; only a reboot frees the camera. So
after a frame timeout the agent publishes ``camera_error`` before it closes
the source, and :meth:`PiCameraSource.close` logs what a hang there means
before it calls ``stop()``: the last line in the journal says it.

Per frame only what the trigger needs is copied out of the camera's buffers:
the lores stream (0.1 MB at 320x240). The main stream (3.7 MB at 1280x960 RGB)
is copied when ``frame.image`` is first read, before the next ``read()``: the
frames the trigger fires on. The request is held until then and given back to
the camera after the copy or at the next ``read()`` (picamera2's ``make_array``
copies every time it is called, and an idle bin at 10 fps would copy 37 MB a
second it never looks at). Metadata is read only during the warm-up.

Before the first frame is handed on, the camera warms up for
``warmup_seconds``: auto-exposure and white balance settle (and, with
``exposure``/``white_balance = "locked"``, are then fixed at the values they
settled on), and autofocus (Camera Module 3) runs its cycle, so the motion
trigger learns its empty-bin background from settled frames.

picamera2 is the Pi's own package (``apt install python3-picamera2``); it is
imported here only, so the rest of bin-agent runs on any machine.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Any, Literal

from .base import Frame, SourceError

log = logging.getLogger(__name__)

EX_CONFIG = 78

INSTALL_HINT = (
    "picamera2 is not installed or not visible to this Python. Fix: on Raspberry Pi OS run "
    "'sudo apt install -y python3-picamera2' and create the venv with --system-site-packages; "
    'without a camera set camera.source = "replay"'
)

AF_MODES = ("manual", "auto", "continuous")
FLICKER_PERIODS_US: dict[str, int | None] = {"off": None, "50hz": 10_000, "60hz": 8_333}
"""The period of a lamp's flicker on 50 and 60 Hz mains (it flickers at twice the mains frequency)."""
AF_SCAN_LIMIT_SECONDS = 5.0
"""af_mode = "auto": how much longer than the warm-up a focus scan may take."""
MIN_PICAMERA2 = (0, 3, 20)
"""``wait(job, timeout=)`` came in 0.3.17, ``cancel_all_and_flush()`` in 0.3.20 (CHANGELOG)."""


def full_field_mode(modes: list[dict[str, Any]], fps: float) -> dict[str, Any] | None:
    """The smallest sensor mode that reads the whole pixel array at ``fps`` or faster.

    :param modes: picamera2's ``sensor_modes``: each has ``size`` (the mode's
        output) and ``crop_limits`` ``(x, y, width, height)``, the part of the
        pixel array it reads.
    :returns: ``None`` where no mode says (not a Raspberry Pi camera).

    "Whole" is the widest and tallest ``crop_limits`` among the modes; of the
    modes that read it, those fast enough for ``fps`` and then the smallest
    (binned: less to transfer and scale).
    """
    sized = [mode for mode in modes if "size" in mode and "crop_limits" in mode]
    if not sized:
        return None
    width = max(mode["crop_limits"][2] for mode in sized)
    height = max(mode["crop_limits"][3] for mode in sized)
    full = [mode for mode in sized if mode["crop_limits"][2] >= width and mode["crop_limits"][3] >= height]
    if not full:
        return None
    fast = [mode for mode in full if float(mode.get("fps", fps)) >= fps] or full
    return min(fast, key=lambda mode: mode["size"][0] * mode["size"][1])


def version_tuple(version: str) -> tuple[int, ...]:
    """``"0.3.22"`` → ``(0, 3, 22)``; what does not parse counts as 0."""
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def import_picamera2() -> tuple[Any, Any, Any]:
    """``(Picamera2, Transform, controls)``, or a one-line :class:`SourceError`
    with exit code 78 saying why the import failed and how to fix it.

    Any exception counts, not only ImportError: Raspberry Pi OS's picamera2
    (and its simplejpeg, av) are built against the system's numpy 1.x, and
    with numpy 2 in the venv ``import picamera2`` raises
    ``ValueError: numpy.dtype size changed`` (picamera2 issues #1088, #1211).
    """
    try:
        from libcamera import Transform, controls
        from picamera2 import Picamera2
    except ImportError as exc:
        raise SourceError(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})", EX_CONFIG) from None
    except Exception as exc:
        numpy = sys.modules.get("numpy")
        version = getattr(numpy, "__version__", "?")
        raise SourceError(
            f"picamera2 cannot be imported ({type(exc).__name__}: {exc}); the apt picamera2 is "
            f"built for the system's numpy 1.x and this venv has numpy {version}. "
            'Fix: /opt/bin-agent/venv/bin/pip install "numpy<2" (the venv of bin-agent)',
            EX_CONFIG,
        ) from None
    return Picamera2, Transform, controls


class PiCameraSource:
    """Frames from the Pi camera.

    :param main_size: ``(width, height)`` of the stream that is classified.
    :param lores_size: ``(width, height)`` asked for the stream the trigger
        watches; :attr:`lores_size` is the size the camera configured.
    :param fps: frame rate asked of the sensor.
    :param timeout_seconds: a frame that takes longer is a camera failure.
    :param af_mode: autofocus (only on cameras that have it, e.g. Camera
        Module 3): ``"manual"`` holds the lens at ``lens_position``; ``"auto"``
        focuses once during the warm-up, then holds; ``"continuous"`` keeps
        refocusing.
    :param lens_position: dioptres (1 / distance in metres) for ``"manual"``.
    :param exposure: ``"auto"``, or ``"locked"`` at what auto-exposure
        settled on during the warm-up.
    :param white_balance: ``"auto"``, or ``"locked"`` at what auto white
        balance settled on during the warm-up.
    :param flicker: ``"50hz"`` or ``"60hz"``: the mains frequency of lamps that light the
        bin; auto-exposure keeps to whole periods of their flicker (twice the mains
        frequency: 10,000 or 8,333 us; libcamera's ``AeFlickerMode`` manual), on a camera
        whose libcamera has the control (else one warning). ``"off"``: not set.
    :param warmup_seconds: frames of this long after start are not handed on.
    """

    def __init__(
        self,
        main_size: tuple[int, int] = (1280, 960),
        lores_size: tuple[int, int] = (320, 240),
        fps: float = 10.0,
        hflip: bool = False,
        vflip: bool = False,
        timeout_seconds: float = 5.0,
        af_mode: Literal["manual", "auto", "continuous"] = "auto",
        lens_position: float = 5.0,
        exposure: Literal["auto", "locked"] = "auto",
        white_balance: Literal["auto", "locked"] = "auto",
        flicker: Literal["off", "50hz", "60hz"] = "off",
        warmup_seconds: float = 2.0,
    ) -> None:
        if af_mode not in AF_MODES:
            raise ValueError(f"af_mode must be one of {AF_MODES}, got {af_mode!r}")
        self.main_size = main_size
        self.lores_size = lores_size
        self.fps = fps
        self.hflip, self.vflip = hflip, vflip
        self.timeout_seconds = timeout_seconds
        self.af_mode = af_mode
        self.lens_position = lens_position
        self.exposure = exposure
        self.white_balance = white_balance
        if flicker not in FLICKER_PERIODS_US:
            raise ValueError(f"flicker must be one of {tuple(FLICKER_PERIODS_US)}, got {flicker!r}")
        self.flicker = flicker
        self.warmup_seconds = warmup_seconds
        self.locked_controls: dict[str, Any] = {}
        """What was fixed after the warm-up (``AeEnable``, ``ExposureTime``…), for logs and doctor."""
        self._camera: Any = None
        self._index = 0
        self._timed_out = False  # a frame never came: stop() may hang in the driver (module doc)
        # The last frame's request, until its image is copied or the next frame is read.
        self._held: Any = None

    def start(self) -> None:
        Picamera2, Transform, controls = import_picamera2()
        try:
            camera = Picamera2()
        except Exception as exc:  # libcamera raises RuntimeError, IndexError (no camera)…
            raise SourceError(
                f"camera cannot start ({type(exc).__name__}: {exc}); "
                "check the ribbon cable and 'rpicam-hello --list-cameras'"
            ) from None
        try:
            sensor = self._sensor_mode(camera)
            config = camera.create_video_configuration(
                main={"size": tuple(self.main_size), "format": "BGR888"},
                lores={"size": tuple(self.lores_size), "format": "YUV420"},
                transform=Transform(hflip=int(self.hflip), vflip=int(self.vflip)),
                controls={
                    "FrameRate": float(self.fps),
                    **self._focus_controls(camera, controls),
                    **self._flicker_controls(camera, controls),
                },
                buffer_count=4,
                queue=False,
                **({"sensor": sensor} if sensor else {}),
            )
            camera.align_configuration(config)
            camera.configure(config)
            # What the camera really configured (aligned, maybe adjusted by libcamera).
            configured = camera.camera_config
            main_width, main_height = configured["main"]["size"]
            lores_width, lores_height = configured["lores"]["size"]
            self.main_size = (int(main_width), int(main_height))
            self.lores_size = (int(lores_width), int(lores_height))
            camera.start()
            scan = self.af_mode == "auto" and "AfMode" in camera.camera_controls
            if scan:
                # A focus scan needs a running camera; the warm-up waits for its end.
                camera.set_controls({"AfMode": controls.AfModeEnum.Auto, "AfTrigger": controls.AfTriggerEnum.Start})
        except Exception as exc:
            camera.close()
            raise SourceError(
                f"camera cannot start ({type(exc).__name__}: {exc}); "
                "check the ribbon cable and 'rpicam-hello --list-cameras'"
            ) from None
        self._camera = camera
        log.info(
            "camera started: main %s BGR888, lores %s YUV420 (stride %s), %.0f fps, sensor mode %s",
            self.main_size,
            self.lores_size,
            configured["lores"].get("stride"),
            self.fps,
            (configured.get("sensor") or {}).get("output_size"),
        )
        # A warm-up that fails leaves the camera to close(), as every caller does: the agent
        # says camera_error first, and stop() may hang for good after a frame timeout.
        self._warm_up(controls.AfStateEnum if scan else None)

    def read(self) -> Frame | None:
        """The next frame: its lores Y plane is copied now; its main stream only if
        ``frame.image`` is read before the next ``read()`` (the frames the trigger fires
        on), so an idle bin copies 0.1 MB a frame, not 1 MB (module docstring)."""
        self._release_held()
        request = self._next_request()
        try:
            yuv = request.make_array("lores")
        except BaseException:
            request.release()
            raise
        # Held until its image is copied or the next frame is read.
        self._held = request
        # YUV420 arrives as (height * 3/2, stride): the Y plane is the first
        # `height` rows, each padded from `width` to the stride.
        width, height = self.lores_size
        frame = Frame(
            image=functools.partial(self._main_stream, request, self._index),
            lores=yuv[:height, :width],
            timestamp=time.monotonic(),
            index=self._index,
        )
        self._index += 1
        return frame

    def close(self) -> None:
        self._release_held()
        if self._camera is not None:
            if self._timed_out:
                log.error(
                    "camera: stopping it after a frame timeout; if the agent hangs here, the camera's "
                    "kernel driver is stuck (picamera2 #1264, #1275) and only a reboot frees it"
                )
            try:
                # A capture job left queued by a timeout would hold stop() for ever.
                self._flush()
                self._camera.stop()
                self._camera.close()
            finally:
                self._camera = None

    # ------------------------------------------------------------------ internals

    def _sensor_mode(self, camera: Any) -> dict[str, Any] | None:
        """``sensor=`` for the configuration: the smallest full-field mode (module docstring)."""
        try:
            modes = camera.sensor_modes  # reconfigures the camera once per mode: before configure
        except Exception as exc:  # a camera libcamera cannot list modes of
            log.warning("camera: sensor modes cannot be listed (%s: %s): picamera2 picks one", type(exc).__name__, exc)
            return None
        mode = full_field_mode(list(modes), self.fps)
        if mode is None:
            return None
        sensor: dict[str, Any] = {"output_size": tuple(mode["size"])}
        if mode.get("bit_depth") is not None:
            sensor["bit_depth"] = int(mode["bit_depth"])
        return sensor

    def _flush(self) -> None:
        """Cancel the capture jobs still queued in picamera2 (after a timeout)."""
        flush = getattr(self._camera, "cancel_all_and_flush", None)
        if flush is None:
            log.warning(
                "this picamera2 has no cancel_all_and_flush() (< 0.3.20): a camera that stopped "
                "delivering frames may hang stop(); sudo apt install --only-upgrade python3-picamera2"
            )
            return
        flush()

    def _flicker_controls(self, camera: Any, controls: Any) -> dict[str, Any]:
        """Flicker avoidance set with the configuration (none for ``"off"``, nor where this
        libcamera lacks the control: then one warning, the bin runs without it)."""
        period = FLICKER_PERIODS_US[self.flicker]
        if period is None:
            return {}
        if "AeFlickerMode" not in camera.camera_controls or not hasattr(controls, "AeFlickerModeEnum"):
            log.warning(
                "camera.flicker = %r: this camera's libcamera has no AeFlickerMode control; "
                "running without flicker avoidance (update the OS: sudo apt full-upgrade)",
                self.flicker,
            )
            return {}
        return {"AeFlickerMode": controls.AeFlickerModeEnum.Manual, "AeFlickerPeriod": period}

    def _focus_controls(self, camera: Any, controls: Any) -> dict[str, Any]:
        """The autofocus controls set with the configuration (none without a focus motor)."""
        if "AfMode" not in camera.camera_controls:
            log.info("camera has no autofocus: af_mode = %r does not apply", self.af_mode)
            return {}
        if self.af_mode == "manual":
            return {"AfMode": controls.AfModeEnum.Manual, "LensPosition": float(self.lens_position)}
        if self.af_mode == "continuous":
            return {"AfMode": controls.AfModeEnum.Continuous}
        return {}  # auto: triggered once the camera runs

    def _next_request(self) -> Any:
        """The next completed request (the caller releases it)."""
        if self._camera is None:
            raise SourceError("camera: read() before start()")
        try:
            job = self._camera.capture_request(wait=False)
            return self._camera.wait(job, timeout=self.timeout_seconds)
        except TimeoutError:  # concurrent.futures.TimeoutError is the built-in since 3.11
            # The job stays queued: cancel it now, so stop() can run.
            self._timed_out = True
            self._flush()
            raise SourceError(f"camera delivered no frame for {self.timeout_seconds:.1f} s") from None
        except Exception as exc:
            raise SourceError(f"camera capture failed ({type(exc).__name__}: {exc})") from None

    def _metadata(self) -> dict[str, Any]:
        """The next frame's metadata (exposure, gains, focus), for the warm-up."""
        request = self._next_request()
        try:
            metadata: dict[str, Any] = request.get_metadata()
            return metadata
        finally:
            request.release()

    def _main_stream(self, request: Any, index: int) -> Any:
        """A copy of ``request``'s main stream, frame ``index``'s image; the request
        then goes back to the camera."""
        if request is not self._held:
            raise SourceError(
                f"camera: the image of frame {index} was asked for after the next frame was read or the camera closed; "
                "its buffer is back with the camera (read frame.image before the next read())"
            )
        try:
            return request.make_array("main")
        finally:
            self._release_held()

    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()

    def _warm_up(self, af_states: Any = None) -> None:
        """Let exposure, white balance and focus settle; then lock what is to be locked.

        :param af_states: libcamera's ``AfStateEnum`` while a focus scan was
            triggered: the warm-up then also lasts until the scan has ended
            (at most :data:`AF_SCAN_LIMIT_SECONDS` longer).
        """
        started = time.monotonic()
        metadata: dict[str, Any] = {}
        frames = 0
        scanned = af_states is None
        while True:
            metadata = self._metadata()
            frames += 1
            elapsed = time.monotonic() - started
            if not scanned:
                # The scan starts a frame or two after the trigger: wait for
                # Focused or Failed (as picamera2's autofocus_cycle does).
                scanned = metadata.get("AfState") in (af_states.Focused, af_states.Failed)
            if elapsed >= self.warmup_seconds and (scanned or elapsed >= self.warmup_seconds + AF_SCAN_LIMIT_SECONDS):
                break
        if af_states is not None and metadata.get("AfState") != af_states.Focused:
            log.warning(
                "autofocus found no focus (AfState %s): a plain bin floor may have too little "
                'contrast; set camera.af_mode = "manual" with lens_position = 1 / distance '
                "in metres",
                metadata.get("AfState"),
            )
        locked: dict[str, Any] = {}
        if self.exposure == "locked":
            locked.update(
                AeEnable=False, ExposureTime=int(metadata["ExposureTime"]), AnalogueGain=float(metadata["AnalogueGain"])
            )
        if self.white_balance == "locked":
            red, blue = metadata["ColourGains"]
            locked.update(AwbEnable=False, ColourGains=(float(red), float(blue)))
        if locked:
            self._camera.set_controls(locked)
        self.locked_controls = locked
        focus = ""
        if "LensPosition" in metadata:
            focus = f", lens at {metadata['LensPosition']:.2f} dioptres (AfState {metadata.get('AfState')})"
        log.info(
            "camera warmed up over %d frame(s): exposure %s us, gain %.2f, colour gains %s%s%s",
            frames,
            metadata.get("ExposureTime"),
            metadata.get("AnalogueGain", 0.0),
            metadata.get("ColourGains"),
            focus,
            "; locked: " + ", ".join(locked) if locked else "",
        )
