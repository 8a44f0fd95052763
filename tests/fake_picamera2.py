"""A stand-in for the ``picamera2`` and ``libcamera`` modules, which exist only on a Pi.

It follows the real API as read in raspberrypi/picamera2 (picamera2.py,
request.py): ``create_video_configuration`` returns a dict of streams;
``align_configuration`` rounds each width down to the hardware's alignment
(Pi 5: 64 pixels, 128 for YUV420); ``configure`` stores the configuration
with each stream's ``stride`` in ``camera_config``; ``make_array("lores")`` of a
YUV420 stream is ``(height * 3 // 2, stride)``; ``get_metadata`` has
``ExposureTime`` (us), ``AnalogueGain``, ``ColourGains`` ``(red, blue)``,
``AfState`` and ``LensPosition``; ``camera_controls`` lists ``AfMode`` only on a
camera with a focus motor, and ``AeFlickerMode``/``AeFlickerPeriod`` where libcamera has
them (``controls.AeFlickerModeEnum.Manual``, the period in microseconds). Every call that matters is recorded in ``calls``.

Sensor modes and jobs, as picamera2 0.3.20+ has them:

* ``sensor_modes`` lists ``{"format", "bit_depth", "size", "fps", "crop_limits"}``
  per mode (here the IMX219's, Camera Module 2: its 640x480 mode reads a
  1280x960 centre crop of the 3280x2464 pixel array); ``create_video_configuration``
  takes ``sensor={"output_size", "bit_depth"}`` and, as picamera2's
  ``_make_initial_configuration``/scoring does, without it the mode nearest
  the main size is used: ``camera_config["sensor"]`` says which.
* ``capture_request(wait=False)`` queues a job; ``wait(job, timeout)`` raises
  ``TimeoutError`` (concurrent.futures') when no frame comes, and the job stays
  queued; ``stop()`` then waits behind it (picamera2 dispatches ``stop_`` as a
  job) - for ever on a real camera, ``stop_hang_seconds`` here, after which it
  raises so a test cannot hang; ``cancel_all_and_flush()`` empties the queue.
* ``stop_blocks``: an event ``stop()`` waits for (at most 30 s), as a Pi 4's ISP
  driver stuck after a frontend timeout never returns from stopping the stream
  (picamera2 #1264, #1275; a real one holds the interpreter lock too, so no
  thread of the process runs meanwhile: that part a stand-in cannot show).
"""

from __future__ import annotations

import enum
import threading
import time
import types
from typing import Any, ClassVar

import numpy as np

Y_LEVEL = 90  # the Y plane's value
PADDING_LEVEL = 255  # the bytes past the width in each row, and the U/V planes
ROW_PADDING = 64  # libcamera may pad each row beyond the width


class AfModeEnum(enum.IntEnum):
    Manual = 0
    Auto = 1
    Continuous = 2


class AeFlickerModeEnum(enum.IntEnum):
    Off = 0
    Manual = 1


class AfTriggerEnum(enum.IntEnum):
    Start = 0
    Cancel = 1


class AfStateEnum(enum.IntEnum):
    Idle = 0
    Scanning = 1
    Focused = 2
    Failed = 3


class Transform:
    def __init__(self, hflip: int = 0, vflip: int = 0) -> None:
        self.hflip, self.vflip = hflip, vflip


def libcamera_module() -> types.ModuleType:
    module = types.ModuleType("libcamera")
    module.Transform = Transform  # type: ignore[attr-defined]
    module.controls = types.SimpleNamespace(  # type: ignore[attr-defined]
        AfModeEnum=AfModeEnum, AfTriggerEnum=AfTriggerEnum, AfStateEnum=AfStateEnum, AeFlickerModeEnum=AeFlickerModeEnum
    )
    return module


class Request:
    """A completed request: ``make_array`` copies a stream (as picamera2's does, every
    call); after ``release`` its buffers are back with the camera and ``make_array``
    fails (picamera2's request then has no buffers). Each call is in ``camera.calls``."""

    def __init__(self, camera: FakePicamera2, seq: int) -> None:
        self.camera, self.seq, self.released = camera, seq, False

    def make_array(self, name: str) -> np.ndarray:
        self.camera.calls.append(("make_array", (self.seq, name)))
        if self.released:
            raise AttributeError("'NoneType' object has no attribute 'buffers'")
        stream = self.camera.camera_config[name]
        width, height = stream["size"]
        if stream["format"] == "YUV420":
            array = np.full((height * 3 // 2, stream["stride"]), PADDING_LEVEL, np.uint8)
            array[:height, :width] = Y_LEVEL
            return array
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 0] = self.seq % 256  # which frame this is, for the tests
        return image

    def get_metadata(self) -> dict[str, Any]:
        self.camera.calls.append(("get_metadata", self.seq))
        return dict(self.camera.metadata_of(self.seq))

    def release(self) -> None:
        self.camera.calls.append(("release", self.seq))
        if self.released:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        self.released = True


IMX219_MODES: list[dict[str, Any]] = [
    {
        "format": "SRGGB10_CSI2P",
        "bit_depth": 10,
        "size": (640, 480),
        "fps": 103.33,
        "crop_limits": (1000, 752, 1280, 960),
    },
    {"format": "SRGGB10_CSI2P", "bit_depth": 10, "size": (1640, 1232), "fps": 41.85, "crop_limits": (0, 0, 3280, 2464)},
    {
        "format": "SRGGB10_CSI2P",
        "bit_depth": 10,
        "size": (1920, 1080),
        "fps": 47.57,
        "crop_limits": (680, 692, 1920, 1080),
    },
    {"format": "SRGGB10_CSI2P", "bit_depth": 10, "size": (3280, 2464), "fps": 21.19, "crop_limits": (0, 0, 3280, 2464)},
]
"""Camera Module 2's modes as picamera2 lists them (picamera2 issues #683, #1233)."""

IMX708_MODES: list[dict[str, Any]] = [
    {
        "format": "SRGGB10_CSI2P",
        "bit_depth": 10,
        "size": (1536, 864),
        "fps": 120.13,
        "crop_limits": (768, 432, 3072, 1728),
    },
    {"format": "SRGGB10_CSI2P", "bit_depth": 10, "size": (2304, 1296), "fps": 56.03, "crop_limits": (0, 0, 4608, 2592)},
    {"format": "SRGGB10_CSI2P", "bit_depth": 10, "size": (4608, 2592), "fps": 14.35, "crop_limits": (0, 0, 4608, 2592)},
]
"""Camera Module 3's modes (its 2x2 binned 2304x1296 mode reads the whole array)."""


class FakePicamera2:
    """One camera; ``instances`` keeps every one made, for the test to inspect."""

    instances: ClassVar[list[FakePicamera2]] = []
    has_autofocus = True
    has_flicker_control = True  # libcamera 0.2+ on the Pi (Bookworm's): AeFlickerMode, AeFlickerPeriod
    settle_frames = 5  # auto-exposure/white balance settle after this many frames
    scan_frames = 3  # a focus scan (AfTrigger Start) ends after this many frames
    scan_result = AfStateEnum.Focused
    frame_seconds = 0.01
    modes: list[dict[str, Any]] = IMX219_MODES
    stall_after: int | None = None  # no frame comes after this many
    stop_hang_seconds = 3.0  # how long stop() waits behind a queued job before the fake gives up
    stop_blocks: threading.Event | None = None  # stop() waits for it: a driver stuck in streamoff

    def __init__(self, camera_num: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.camera_config: dict[str, Any] = {}
        self.started = False
        self.seq = 0
        self.frame_times: dict[int, float] = {}
        self.controls_set: dict[str, Any] = {}
        self.scan_started: int | None = None
        self.jobs: list[int] = []
        FakePicamera2.instances.append(self)

    @property
    def sensor_modes(self) -> list[dict[str, Any]]:
        self.calls.append(("sensor_modes", None))
        return [dict(mode) for mode in self.modes]

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        controls = {
            "ExposureTime": (100, 1_000_000, 20_000),
            "AnalogueGain": (1.0, 16.0, 1.0),
            "ColourGains": (0.0, 32.0, None),
            "AeEnable": (False, True, True),
            "AwbEnable": (False, True, True),
            "FrameRate": (1.0, 120.0, 30.0),
        }
        if self.has_autofocus:
            controls.update(AfMode=(0, 2, 0), LensPosition=(0.0, 15.0, 1.0), AfTrigger=(0, 1, 0))
        if self.has_flicker_control:
            controls.update(AeFlickerMode=(0, 1, 0), AeFlickerPeriod=(100, 1_000_000, None))
        return controls

    def create_video_configuration(
        self,
        main: dict,
        lores: dict | None = None,
        transform: Any = None,
        controls: dict | None = None,
        buffer_count: int = 6,
        queue: bool = True,
        sensor: dict | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        self.calls.append(("create_video_configuration", {"controls": dict(controls or {}), "sensor": sensor}))
        return {
            "sensor": dict(sensor or {}),
            "main": {"format": "XBGR8888", **main},
            "lores": None if lores is None else dict(lores),
            "raw": None,
            "transform": transform,
            "controls": dict(controls or {}),
            "buffer_count": buffer_count,
            "queue": queue,
        }

    @staticmethod
    def align_stream(stream: dict, optimal: bool = True) -> None:
        align = 64 if optimal else 2
        if optimal and stream["format"] in ("YUV420", "YVU420"):
            align *= 2
        width, height = stream["size"]
        stream["size"] = (width - width % align, height - height % 2)

    def align_configuration(self, config: dict, optimal: bool = True) -> None:
        self.calls.append(("align_configuration", None))
        self.align_stream(config["main"], optimal)
        if config.get("lores") is not None:
            self.align_stream(config["lores"], optimal)

    def configure(self, config: dict) -> None:
        self.calls.append(("configure", {k: dict(config[k]) for k in ("main", "lores")}))
        config = dict(config)
        for name in ("main", "lores"):
            stream = dict(config[name])
            width = stream["size"][0]
            stream["stride"] = width * 3 if stream["format"] != "YUV420" else width + ROW_PADDING
            config[name] = stream
        config["sensor"] = self._chosen_mode(config)
        self.camera_config = config
        self.controls_set = dict(config["controls"])

    def _chosen_mode(self, config: dict) -> dict[str, Any]:
        """picamera2's choice: the mode scored nearest ``sensor.output_size``, else the main size."""
        wanted = (config.get("sensor") or {}).get("output_size") or config["main"]["size"]

        def score(mode: dict[str, Any]) -> float:
            def one(desired: float, actual: float) -> float:
                return -(desired - actual) / 4 if desired < actual else (desired - actual) * 2

            ratio = wanted[0] / wanted[1]
            return (
                one(wanted[0], mode["size"][0])
                + one(wanted[1], mode["size"][1])
                + 1500 * one(ratio, mode["size"][0] / mode["size"][1])
            )

        mode = min(self.modes, key=score)
        return {"output_size": mode["size"], "bit_depth": mode["bit_depth"], "crop_limits": mode["crop_limits"]}

    def start(self) -> None:
        self.calls.append(("start", time.monotonic()))
        self.started = True

    def set_controls(self, controls: dict[str, Any]) -> None:
        self.calls.append(("set_controls", dict(controls)))
        self.controls_set.update(controls)
        if controls.get("AfTrigger") == AfTriggerEnum.Start:
            self.scan_started = self.seq

    def capture_request(self, wait: Any = None) -> int:
        assert self.started, "capture before start"
        self.jobs.append(self.seq)
        return self.seq

    def wait(self, job: int, timeout: float | None = None) -> Request:
        if self.stall_after is not None and self.seq >= self.stall_after:
            time.sleep(min(timeout or 0.0, 0.05))
            raise TimeoutError()  # concurrent.futures.TimeoutError: the job stays queued
        time.sleep(self.frame_seconds)
        self.jobs.remove(job)
        seq = self.seq
        self.seq += 1
        self.frame_times[seq] = time.monotonic()
        return Request(self, seq)

    def metadata_of(self, seq: int) -> dict[str, Any]:
        settled = seq >= self.settle_frames
        metadata: dict[str, Any] = {
            "ExposureTime": 12_345 if settled else 30_000 - seq * 1000,
            "AnalogueGain": 2.5 if settled else 8.0,
            "ColourGains": (1.9, 1.6) if settled else (1.0, 1.0),
            "SensorTimestamp": seq * 10_000_000,
        }
        if self.has_autofocus:
            state, lens = AfStateEnum.Idle, 1.0
            if self.scan_started is not None and seq > self.scan_started:
                done = seq > self.scan_started + self.scan_frames
                state = self.scan_result if done else AfStateEnum.Scanning
                lens = 4.0 if done else 2.0
            metadata.update(AfState=state, LensPosition=lens)
        return metadata

    def cancel_all_and_flush(self) -> None:
        self.calls.append(("cancel_all_and_flush", list(self.jobs)))
        self.jobs = []

    def stop(self) -> None:
        self.calls.append(("stop", None))
        if self.stop_blocks is not None:
            self.stop_blocks.wait(30.0)
        if self.jobs:  # picamera2 dispatches stop_ as a job: it waits behind the queued one
            time.sleep(self.stop_hang_seconds)
            raise RuntimeError("stop() hung behind a capture job that never finished")
        self.started = False

    def close(self) -> None:
        self.calls.append(("close", None))


def picamera2_module() -> types.ModuleType:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    return module
